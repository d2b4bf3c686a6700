"""The tolerances of the exactness tests, each with where it comes from, so that none holds only for the kernels
of one CPU (issue 22). Two kinds:

- *Same arithmetic*: 0. Where flowroutes runs the very operations the model runs (the captured residual against
  the model's own eager run), the result is bit for bit the model's on any CPU, dispatch level and thread count:
  torch picks one kernel per operation and process, and the capture adds hooks, not arithmetic.
- *Other arithmetic*: where two computations round differently (sdpa against eager attention; float32 parts
  against float64 sums), a bound measured on the real models under every setting CI runs (`make test-cpus`:
  torch CPU dispatch DEFAULT, AVX2 with MKL and oneDNN capped to AVX2, and AVX-512; 1 and 2 threads) with its
  margin written next to it. The measured values are printed by the tests (`pytest -s`), so a drift is seen
  before it fails.

U32 = 2**-24 is float32's unit roundoff; each derived bound is a count of float32 roundings times U32.
"""

from __future__ import annotations

U32 = 2.0**-24  # float32 unit roundoff (5.96e-8)

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

#: each node's importances sum to 1: a float32 sum of at most H * T + 1 values in [0, 1], worst case
#: (H * T + 1) U32 = 7.6e-6 for SmolLM2's 9 heads over 14 tokens; measured worst 1.2e-7
IMPORTANCE_SUM_ABS = 1e-5

#: importances of a generation's trace, put together from its KV-cached passes (flowroutes.decoding), against the
#: trace of the same tokens in one pass, absolute: the cached passes multiply matrices of other shapes, so their
#: activations round differently (a few U32 relative). Measured worst 7.8e-7 over the 17 decodable tiny families
#: (stablelm's residual edge; 1.2e-7 to 4.3e-7 for the rest); 1e-5 is a margin of 13x
DECODED_IMPORTANCE_ABS = 1e-5
