"""Every numerical tolerance of the tests, each with where it comes from, so that none holds only for the kernels
of one CPU (issue 22). Four kinds:

- *Same arithmetic*: 0. Where flowroutes runs the very operations the model runs (the captured residual against
  the model's own eager run), the result is bit for bit the model's on any CPU, dispatch level and thread count:
  torch picks one kernel per operation and process, and the capture adds hooks, not arithmetic.
- *Derived*: a count of roundings times the unit roundoff, U32 = 2**-24 for float32, U64 = 2**-53 for float64.
- *Measured*: where two computations round differently and no count bounds the gap (sdpa against eager
  attention; another path through a whole model), a bound measured on the tests' models under every setting CI
  runs (`make test-cpus`: torch CPU dispatch DEFAULT and AVX2 with MKL and oneDNN capped to AVX2; 1 and 2
  threads) with its margin written next to it. The exactness tests print theirs (`pytest -s`);
  tests/helpers/tolerance_gaps.py measures the others, so a drift is seen before it fails.
- *Not a floating-point tolerance*: a value printed to k decimals is within half a unit of its k-th decimal
  (`printed_to`), an 8-bit colour channel within one step (`EIGHT_BIT`).

tests/unit/test_tolerances.py fails on any literal tolerance elsewhere in tests/; docs/tolerances.md lists these
constants with their derivations and measured worst cases.
"""

from __future__ import annotations

U32 = 2.0**-24  # float32 unit roundoff (5.96e-8)
U64 = 2.0**-53  # float64 unit roundoff (1.11e-16)

#: the capture against the model's own eager forward pass: the same operations in the same order
SAME_ARITHMETIC = 0.0

#: the capture's residual (eager attention) against the user's default run (sdpa), relative to the largest
#: element: measured worst 1.50e-6 (SmolLM2, layer 11 of 30, DEFAULT and AVX2 dispatch; 3.0e-7 under AVX-512),
#: any thread count; 1e-5 is a margin of 6.7x
ATTENTION_ORDER_REL = 1e-5

#: logits of the capture against the sdpa run, relative: measured worst 1.96e-6 (SmolLM2, DEFAULT dispatch;
#: 1.18e-6 AVX2, 1.42e-6 AVX-512); 1e-5 is a margin of 5x
LOGITS_REL = 1e-5

#: parts summed in float64 against the float32 activation they rebuild, relative to its largest element. Each
#: part element is one float32 product with an inner dimension of d (576 for SmolLM2) rounded once more when
#: stored; measured worst 2.6e-7 (SmolLM2 attention, every setting) and 4.7e-8 (FFN). 4e-6 (67 U32) is a margin
#: of 15x, and 6x below what the *smallest* head's part moves x^lA on SmolLM2 (2.4e-5: the test sees a missing
#: head, which 1e-4 did not)
REBUILD_REL = 4e-6

#: importances (eq. 1, float32 kernels) against eq. 1 in float64, absolute (importances lie in [0, 1]): each is
#: a difference of two float32 L1 norms over d elements (pairwise sums: ~log2(d) = 9 roundings each for d = 576,
#: 18 U32 = 1.1e-6 of ||y||_1 together) over the node's sum of proximities. Measured worst 5.0e-8 (SmolLM2, every
#: setting); 2e-6 is a margin of 40x
IMPORTANCE_ABS = 2e-6

#: two float32 kernels of eq. 1 (the fused numba kernel against the torch path), each within IMPORTANCE_ABS of
#: eq. 1 in float64 by its derivation: within 2 IMPORTANCE_ABS = 4e-6 of each other (it was 1e-5). Measured worst
#: 6.0e-8 (SmolLM2, test_exactness, every setting)
KERNELS_ABS = 2 * IMPORTANCE_ABS

#: each node's importances sum to 1: a float32 sum of at most H * T + 1 values in [0, 1], worst case
#: (H * T + 1) U32 = 7.6e-6 for SmolLM2's 9 heads over 14 tokens; measured worst 1.2e-7
IMPORTANCE_SUM_ABS = 1e-5

#: one prompt's float32 numbers by another path through the same model against the plain trace: batched with padding,
#: lazy rows by the fused kernel, only the last position's predictions, a KV cache. The model's forward runs at other
#: shapes (other matmul blockings) and the kernels sum in other orders, so the numbers round differently; no count of
#: roundings bounds that through a whole model, so this is a measured bound. Importances and route weights (absolute, in
#: [0, 1]): measured worst 1.25e-6 (tests/integration/test_fast_paths.py, the tiny families, lazy against full; 7.8e-7
#: for a generation's trace put together from its KV-cached passes, flowroutes.decoding, against the one-pass trace);
#: top probabilities (relative): 9.8e-7 (predictions="last"); probabilities (absolute): 2.2e-6 (SmolLM2's greedy answer
#: with a KV cache against the trace, test_generation); patching's logit-difference metrics (relative) batched against
#: one by one: 3.0e-7 (tests/integration/test_patching.py); W_OV singular vectors' token scores (relative, float32
#: against float64): 9.6e-8 (test_analyses_svd); route weights of the float32 trace against the reference walk on the
#: float64 trace: 1.3e-7 (test_reference); the explorer's logit differences (of order 1, absolute) against an
#: independent forward: 9.5e-7 (test_web_explorer); every setting. 1e-5 is a margin of 4.5x or more (it was 1e-5 for
#: traces, 1e-6, a margin of 1.1x, for route weights and probabilities, 1e-4 absolute on metrics of about 7)
OTHER_PATH = 1e-5

#: importances of a model in bfloat16 or float16 against the float32 model with the same weights: the model's own
#: activations round to 8 or 11 bits (2^-8 = 3.9e-3, 2^-11 = 4.9e-4 per operation), which no count bounds through
#: a whole model, so these are measured bounds, every setting. Largest gap: 2.5e-3 (test_families, tiny Llama at
#: its own initialisation scale; a margin of 4x), 6.9e-3 (SmolLM2 in bfloat16, sub-edges, test_precision; 1.45x)
HALF_MODEL_ABS = 1e-2
#: the same for lazy half-precision traces of tests.helpers.models.tiny_llama (larger weights): measured 1.35e-2
#: (test_precision), a margin of 1.5x
HALF_MODEL_LAZY_ABS = 2e-2
#: and the mean gap over a trace's importances: measured 2.4e-3 (tiny Llama, lazy; a margin of 2x) and 1.5e-3
#: (SmolLM2's node importances, whose bound was 1e-2)
HALF_MODEL_MEAN = 5e-3

#: the direct logit attribution's components (float32 captures, the final norm linearised in float64) summed,
#: against the norm module's own float32 logit, relative: measured worst 1.4e-5 (every tiny family, every
#: setting); 1e-4 is a margin of 7x (it was rel 1e-4 or abs 1e-4 (|logit| + 1))
DLA_REL = 1e-4

#: probabilities read off the tool's run of SmolLM2 (eager attention, ATTENTION_ORDER_REL) against the model's own
#: default run (sdpa): the logits differ by up to LOGITS_REL of the largest, which moves a probability p by up to
#: about 2 p times that logit difference; measured worst 7.8e-6 (test_analyses' IOI task table, every setting);
#: 1e-4 is a margin of 13x
SDPA_PROBS_ABS = 1e-4

# --- hand-worked answers, small planted cases, float64 formulas -----------------------------------------------

#: a value computed from inputs stored in float32 with at most one more float32 operation (or only float64 ones),
#: against its hand answer: the storing and the operation round by at most U32 of the value each, 2 U32 = 1.2e-7
#: relative (absolute for values in [0, 1]). Measured worst 3.0e-8 absolute (test_attribution's ALTI by hand) and
#: 2.5e-8 relative (test_importance's 1e-4 next to 700, where only the storing of 1e-4 rounds), every setting
F32_STORED = 2 * U32

#: a statistic of a few float32 values in [0, 1] (hand-built rows in tests/unit/test_analyses_*, a head's
#: importances summed over <= 8 sources) against its hand answer or a float64 sum: each input is stored in
#: float32 (one rounding), a sum or mean over <= 16 values takes at most 4 more (numpy's pairwise sums), a share
#: or a difference of two means one more each: at most 8 roundings of at most U32 each, 8 U32 = 4.8e-7. Measured
#: worst 2.5e-8 (test_analyses_domains), every setting (it was 1e-6)
FEW_F32_ABS = 8 * U32

#: a float64 result of a few operations on values in [0, 1] (at most 7 roundings: a sum of <= 5 kept parts, a
#: division, a sum over heads) against the float64 literal of its hand answer (one rounding), or copies and short
#: sums of the same float64 weights (the circuit-tracer export): 8 U64 = 8.9e-16. Measured worst 1.1e-16
#: (test_attribution's unroll by hand), every setting
F64_HAND = 8 * U64

#: two float64 evaluations of one formula in different orders (vectorised against literal loops, a closed form
#: against the chain it solves, the routes' flow against an absorbing chain) on values in [0, 1] whose rows sum to
#: at most 1: each rounding moves a result by at most U64 of a running total <= 1, and the tests' formulas take at
#: most 128 roundings per value (<= 3 blocks of sums over <= 2 H T + 2 = 26 parts or <= 10 tokens, <= 6 chained
#: answer tokens), so each side is within 128 U64 of the exact value and the two within 256 U64 = 2.8e-14.
#: Measured worst 4.4e-16 (test_attribution's absorbing chain, test_generation's ALTI rows), every setting
F64_REORDER = 256 * U64

#: an ALTI row R^L[q] sums to 1 (at most 3 blocks: test_attribution's traces, the tiny models of test_generation
#: and test_explain_cli): the Trace stores each part in float32, so each row of each A^l sums to 1 within U32
#: (each part moves by <= U32 of itself, the parts sum to 1), and the product of 3 such matrices in float64 to 1
#: within 3 U32 plus float64 noise: 4 U32 = 2.4e-7. Measured worst
#: 5.8e-8 (test_generation; it was 1e-6 and 1e-5)
ALTI_ROW_SUM_ABS = 4 * U32

#: the numba kernel's importances for a chunk of heads at a time against one call for all heads: the kernel
#: carries each node's sums across chunks in the same head order, so the arithmetic is the same (measured 0 under
#: every setting)
HEAD_CHUNKS = SAME_ARITHMETIC

#: the singular values past the rank of a float64 product a @ b (inner dimension 3, 20 x 15) relative to the
#: largest: the product's entries round by <= 3 U64 of |a| |b| and LAPACK's SVD is backward stable to a small
#: multiple of n U64 ||a b|| (n = 20), so the null singular values are <= 64 U64 sigma_max. Measured 0.93 U64
SVD_NULL_REL = 64 * U64

#: the blocked sub-edge proximity algorithm (float32, as the Triton kernel tiles it) against the float64 path,
#: relative to the largest proximity: measured worst 1.2e-7 (2 U32; tests/unit/test_gpu_kernel.py's CPU cases,
#: d <= 20, every setting); 2e-6 is a margin of 16x
BLOCKED_PROXIMITY_REL = 2e-6

# --- not floating-point tolerances --------------------------------------------------------------------------------

#: not a floating-point tolerance: a colour channel stored in 8 bits is within one step, 1/255, of the value it
#: shows (rounded or truncated)
EIGHT_BIT = 1 / 255


def printed_to(decimals: int) -> float:
    """Not a floating-point tolerance: a number printed (or written by hand) to `decimals` decimals is within half
    a unit of its last decimal of the value it stands for."""
    return 0.5 * 10.0**-decimals
