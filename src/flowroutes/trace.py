"""`trace`: one forward pass -> every edge importance of the information flow graph, as plain arrays.

The `Trace` holds raw importances (before any threshold) and the model's predictions; routes,
figures, the CLI and analyses only read it. Tokenisation follows the tokenizer's own defaults
(e.g. whether it prepends BOS) unless `add_special_tokens` or `input_ids` says otherwise.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from . import checks
from .capture import BlockCapture, RecordedAttention, attention_rows_batch, can_record, run_with_capture
from .errors import FlowroutesError
from .importance import (
    CHUNK_ELEMENTS,
    attention_importance,
    batch_attention_importance,
    centred_values,
    ffn_importance,
    head_outputs,
    head_values_by_head,
)
from .models.loading import LoadedModel, load_model

#: the most elements of head values [heads, B, T, d] that a lazy trace's rows hold at once (float32: 4 bytes each)
HEAD_VALUE_ELEMENTS = 1 << 25


@dataclass(kw_only=True)
class _TraceBase:
    """What every trace knows: the prompt, the model's predictions, and the FFN-node importances."""

    model_name: str
    prompt: str
    input_ids: np.ndarray  # [T] int64
    tokens: list[str]  # as the tokenizer shows them (e.g. 'ĠMary')
    token_texts: list[str]  # each token decoded alone (e.g. ' Mary'), for display
    ffn: np.ndarray  # [L, T] importance of the FFN edge into x^{l+1}_p
    ffn_residual: np.ndarray  # [L, T] importance of the residual edge into x^{l+1}_p
    top_ids: np.ndarray  # [T, k] the model's top next tokens at every position (-1 where not predicted)
    top_probs: np.ndarray  # [T, k] (NaN where not predicted)
    top_tokens: list[list[str]]  # [T][k] decoded ([] where not predicted)
    degenerate_ffn: np.ndarray  # [L, T] bool: both proximities of x^{l+1}_p were 0
    parallel: list[bool] | None = None  # per layer: attention and FFN both read x^l (no x^{lA} node)
    meta: dict[str, Any] = field(default_factory=dict)

    def is_parallel(self, layer: int) -> bool:
        """A parallel block has one node x^{l+1}_p whose parts are the sub-edges, the residual and the FFN;
        there `attention_residual` and `ffn_residual` hold the same residual importance."""
        return bool(self.parallel[layer]) if self.parallel is not None else False

    @property
    def n_layers(self) -> int:
        return self.ffn.shape[0]

    @property
    def n_tokens(self) -> int:
        return self.ffn.shape[1]

    def resolve_position(self, position: int) -> int:
        """A 0-based position; negative counts from the end. Raises FlowroutesError when out of range."""
        n = self.n_tokens
        if not isinstance(position, (int, np.integer)) or isinstance(position, bool):
            raise FlowroutesError(f"position must be an integer, got {position!r}")
        if not -n <= position < n:
            raise FlowroutesError(
                f"position {position} is out of range for a prompt of {n} tokens: use 0..{n - 1} or -{n}..-1"
            )
        return int(position) % n

    def attention_rows(self, layer: int, positions: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Importances into x^{layer+1,A}_p for p in `positions`: (sub-edges [H, R, T], residual [R])."""
        raise NotImplementedError

    def routes(
        self,
        threshold: float = 0.04,
        position: int = -1,
        *,
        attention_threshold: float | None = None,
        ffn_threshold: float | None = None,
        renormalize: bool = True,
    ):
        """The information flow routes of the prediction at `position` (fig. 3, appendix B.2)."""
        from .routes import extract_routes

        return extract_routes(
            self,
            position=position,
            attention_threshold=threshold if attention_threshold is None else attention_threshold,
            ffn_threshold=threshold if ffn_threshold is None else ffn_threshold,
            renormalize=renormalize,
        )


@dataclass(kw_only=True)
class Trace(_TraceBase):
    """Raw edge importances of one prompt. L layers, H heads, T tokens; layers and heads 0-based.

    attention[l, h, p, j]:  sub-edge x^l_j -> (head h of block l) -> x^{lA}_p   [L, H, T, T]
    attention_residual[l, p]: residual edge x^l_p -> x^{lA}_p                 [L, T]
    ffn[l, p], ffn_residual[l, p]: FFN and residual edges into x^{l+1}_p           [L, T]
    (Block l reads the residual x^l, l = 0 being the embeddings, its attention writes x^{lA} and its FFN x^{l+1}:
    docs/architecture.md, "Nodes and layers".)
    """

    attention: np.ndarray  # [L, H, T, T] float32
    attention_residual: np.ndarray  # [L, T]
    degenerate_attention: np.ndarray  # [L, T] bool: all proximities of x^{lA}_p were 0

    @property
    def n_heads(self) -> int:
        return self.attention.shape[1]

    @property
    def n_degenerate(self) -> int:
        """Nodes whose parts all had zero proximity (eq. 1 is 0/0); their parts share importance equally."""
        return int(self.degenerate_attention.sum() + self.degenerate_ffn.sum())

    def attention_rows(self, layer: int, positions: list[int]) -> tuple[np.ndarray, np.ndarray]:
        return self.attention[layer][:, positions], self.attention_residual[layer, positions]


#: a lazy trace asked for routes at a third position computes all its rows at once when they take at most this
#: many bytes (float32 [L, H, T, T]: SmolLM2 at 354 tokens, 135 MB; at 2048 tokens, 4.5 GB: row by row instead)
PREFETCH_BYTES = 1 << 30


class _LazyBatch:
    """What the attention rows of a batch of lazy traces need, per block: x^{lA} [B, T, d] in the model's own dtype,
    the residual edges' proximities (the fused CPU kernel; other kernels get x^l [B, T, d] instead), what the
    attention needs to compute weights again (its recorded inputs, with the value vectors that give the head values,
    or its call and LN(x^l)) and the post-norm diagonal where there is one."""

    def __init__(self, loaded, lengths: list[int], kernel: str, prune: float, head_dtype=torch.float32):
        self.loaded, self.lengths, self.kernel, self.prune, self.head_dtype = loaded, lengths, kernel, prune, head_dtype
        self.x_in: list[torch.Tensor | None] = []  # None where the residual proximities are kept instead
        self.residual: list[np.ndarray | None] = []  # [B, T] float64 proximity(x^l_p, x^{lA}_p)
        self.x_mid: list[torch.Tensor] = []
        self.normed: list[torch.Tensor | None] = []
        self.call: list = []
        self.scale: list[torch.Tensor | None] = []
        self._slots: dict[str, torch.Tensor] = {}  # kind -> [L, ...] on the CPU
        self.members: list[weakref.ref] = []  # the batch's LazyTraces, by index
        self.asked: dict[tuple, set[int]] = {}  # routes arguments -> the prompts whose routes have been walked
        self.walked: dict[tuple, Any] = {}  # (arguments, prompt) -> Routes walked for a prompt not yet asked

    def walk(self, trace: LazyTrace, key: tuple):
        """The routes of `trace` for key = (tau_attn, tau_ffn, renormalize, position), walked with the rest of the
        batch when a second prompt asks with the same arguments: the natural loop `for tr in traces: tr.routes()`
        then costs one walk alone and one walk of every other prompt together, as `LazyTraces.routes` does. The
        routes of prompts not yet asked are kept until they are (each handed out once)."""
        from .routes import extract_routes_many

        done = self.walked.pop((key, trace.index), None)
        if done is not None:
            return done
        asked = self.asked.setdefault(key, set())
        group = [trace]
        if asked:  # a second prompt asks: walk every prompt not yet asked, together
            live = [ref() for ref in self.members]
            group += [t for t in live if t is not None and t.index not in asked and t.index != trace.index
                      and -t.n_tokens <= key[3] < t.n_tokens]
        asked.update(t.index for t in group)
        tau_a, tau_f, renormalize, position = key
        routes = extract_routes_many(group, [position] * len(group), tau_a, tau_f, renormalize,
                                     fetch=lambda block, requests: fetch_rows(block, requests))
        for t, r in zip(group[1:], routes[1:]):
            self.walked[(key, t.index)] = r
        return routes[0]

    def keep(self, cap: BlockCapture) -> None:
        """Keep what block `cap.layer`'s attention rows need (tensors [B, ...] in the model's dtype)."""
        layer, call = cap.layer, cap.attention_call
        if _batched_kernel(self.kernel, "float32", cap.x_in.device):  # the residual edges now, x^l never again
            from .kernels import proximities

            self.residual.append(proximities(cap.x_in.float().cpu().numpy(), cap.x_mid.float().cpu().numpy()))
            self.x_in.append(None)
        else:
            self.residual.append(None)
            self.x_in.append(self._slot("x_in", layer, cap.x_in))
        self.x_mid.append(self._slot("x_mid", layer, cap.x_mid))
        if isinstance(call, RecordedAttention):
            call = dataclasses.replace(call, query=self._slot("query", layer, call.query),
                                       key=self._slot("key", layer, call.key),
                                       values=self._slot("values", layer, call.values))
        # with recorded attention inputs, the head values come from the recorded value vectors: no normed states
        self.normed.append(None if isinstance(call, RecordedAttention) else cap.normed)
        self.call.append(call)
        self.scale.append(self.loaded.adapter.attention_post_scale(layer, cap.attn_raw.float()))

    def _slot(self, kind: str, layer: int, t: torch.Tensor) -> torch.Tensor:
        """`t` copied into slot `layer` of one [L, ...] CPU buffer per kind: a few large allocations instead of many
        medium ones among the forward pass's temporaries, which would fragment the C heap (on a 7B model at 1024
        tokens, peak RSS ~1 GiB lower). Tensors on other devices, or of another shape than the first layer's, are
        kept as they are."""
        if t.device.type != "cpu":
            return t
        slots = self._slots.get(kind)
        if slots is None:
            slots = self._slots[kind] = torch.empty(self.loaded.adapter.n_layers, *t.shape, dtype=t.dtype)
        if slots.shape[1:] != t.shape or slots.dtype != t.dtype:
            return t
        slots[layer].copy_(t)
        return slots[layer]

    def head_values(self, layer: int, sel: torch.Tensor, shape: torch.Size) -> tuple[Callable, int]:
        """(values, heads per call): values(h0, h1) gives f_h(x_j) [h1 - h0, B', T, d] (float32 or bfloat16) of heads
        h0..h1-1 for the prompts `sel` [B'] (shape: [B', T, d]). From recorded value vectors, a chunk of heads at a
        time holds at most HEAD_VALUE_ELEMENTS; from the normed states, all heads at once."""
        adapter = self.loaded.adapter
        ov, beta = adapter.ov_weights(layer), adapter.input_norm_bias(layer)
        call = self.call[layer]
        n_sel, n_tok, d = shape
        if isinstance(call, RecordedAttention):  # the value vectors the model computed: [B', KV, T, dh]
            values = call.values[sel.to(call.values.device)]
            values = values.transpose(1, 2).reshape(n_sel * n_tok, *values.shape[1:2], values.shape[-1])
            with torch.no_grad():
                by_kv = centred_values(values, ov, beta, self.head_dtype)  # [KV, B' * T, dh], once per block
            kv_heads = list(adapter.kv_heads)

            def from_values(h0: int, h1: int) -> torch.Tensor:  # -> [h1 - h0, B', T, d]
                with torch.no_grad():
                    f = head_outputs(by_kv, ov.output[h0:h1], kv_heads[h0:h1], self.head_dtype)
                return _kernel_dtype(f).view(h1 - h0, n_sel, n_tok, d)

            return from_values, max(1, HEAD_VALUE_ELEMENTS // (n_sel * n_tok * d))
        normed = self.normed[layer][sel.to(self.normed[layer].device)]  # kept where values were not recorded
        f = head_values_by_head(normed.float(), ov, beta, adapter.kv_heads, self.head_dtype)
        f = _kernel_dtype(f).view(-1, n_sel, n_tok, d)  # [H, B', T, d]
        return (lambda h0, h1: f[h0:h1]), f.shape[0]

    def compute(self, layer: int, requests: list[tuple[int, list[int]]]) -> list[tuple]:
        """Importances into x^{layer+1,A}_p of prompts b at positions p, for requests [(b, [p, ...]), ...] (positions
        ascending): one attention call and one kernel call for all of them. Returns per request (sub [H, R, T_b],
        residual [R], degenerate [R])."""
        adapter = self.loaded.adapter
        n_heads = adapter.n_heads
        sel = torch.tensor([b for b, _ in requests])
        n_rows = [len(p) for _, p in requests]
        rows = torch.tensor([p + [p[-1]] * (max(n_rows) - len(p)) for _, p in requests])  # [B', R], padded
        x_mid = self.x_mid[layer][sel.to(self.x_mid[layer].device)]  # [B', T, d] in the model's dtype
        n_sel = x_mid.shape[0]
        with torch.no_grad():
            values, per_call = self.head_values(layer, sel, x_mid.shape)  # values(h0, h1): [h1 - h0, B', T, d]
            alpha = attention_rows_batch(self.loaded, layer, self.call[layer], sel, rows)  # [B', H, R, T]

        def at_rows(t):  # [B', R, d] float32 on the CPU
            return None if t is None else t[torch.arange(n_sel, device=t.device)[:, None], rows.to(t.device)].to(
                "cpu", torch.float32)

        scale = None if self.scale[layer] is None else self.scale[layer][sel.to(self.scale[layer].device)]
        out = []
        if self.residual[layer] is not None:  # the fused CPU kernel
            residual = torch.from_numpy(self.residual[layer][sel.numpy()[:, None], rows.numpy()])  # [B', R]
            sub, res, degen, _ = batch_attention_importance(
                alpha.cpu(), lambda h0, h1: values(h0, h1).cpu(), None, at_rows(x_mid), rows, n_rows,
                scale=at_rows(scale), prune=self.prune, heads_per_call=per_call, residual=residual)
            sub, res, degen = sub.numpy(), res.numpy(), degen.numpy()
            for k, (b, positions) in enumerate(requests):
                n = len(positions)
                out.append((sub[k, :, :n, : self.lengths[b]], res[k, :n], degen[k, :n]))
            return out
        f = values(0, n_heads).float()  # [H, B', T, d]
        x_in = self.x_in[layer][sel.to(self.x_in[layer].device)]  # [B', T, d]
        for k, (b, positions) in enumerate(requests):  # the torch or Triton kernel: prompt by prompt
            n, n_b = len(positions), self.lengths[b]
            sub, res, degen, _ = attention_importance(
                alpha[k, :, :n, :n_b], f[:, k, :n_b], x_in[k, :n_b].float(), x_mid[k, :n_b].float(),
                rows=rows[k, :n].to(f.device), kernel=self.kernel, alpha_rows=True, prune=self.prune,
                scale=None if scale is None else scale[k, :n_b].float())
            out.append((sub.cpu().numpy(), res.cpu().numpy(), degen.cpu().numpy()))
        return out


def _kernel_dtype(f: torch.Tensor) -> torch.Tensor:
    """Head values in a dtype the fused CPU kernel reads: bfloat16 stays (it is widened exactly there), the rest
    becomes float32."""
    return f if f.dtype == torch.bfloat16 else f.float()


@dataclass(kw_only=True)
class LazyTrace(_TraceBase):
    """A trace whose attention importances are computed only for the rows (layer, target) asked for.

    `routes()` asks only for the rows its top-down walk reaches; rows are memoised. `full()` computes the
    rest and returns a `Trace`. Holds the block activations ([L, T, d] each, in the model's dtype), never
    [L, H, T, T] weights. The prompts of one batched call share their activations (`batch`, row `index`);
    `LazyTraces.routes` walks all of their routes at once.
    """

    n_heads: int
    loaded: Any = field(repr=False)
    batch: _LazyBatch = field(repr=False)
    index: int = 0
    kernel: str = "auto"
    prune: float = 0.0
    _rows: dict[tuple[int, int], tuple[np.ndarray, float, bool]] = field(default_factory=dict, repr=False)

    _positions: set[int] = field(default_factory=set, repr=False)  # positions whose routes were walked

    @property
    def n_computed_rows(self) -> int:
        return len(self._rows)

    def routes(self, threshold: float = 0.04, position: int | list[int] = -1, *,
               attention_threshold: float | None = None, ffn_threshold: float | None = None,
               renormalize: bool = True):
        """The routes of the prediction at `position` (fig. 3, appendix B.2), computing only the rows the walk
        reaches; a list of positions gives a list of routes, walked together (each block's rows in one call).

        Asked at a third position, the trace computes every row (one call per block, the full trace's cost) when
        they fit in PREFETCH_BYTES: walks from many positions reach most rows anyway, and row by row they would
        cost many small calls. Several prompts of one batched call asking with the same arguments share one walk
        (`_LazyBatch.walk`)."""
        tau_a = threshold if attention_threshold is None else attention_threshold
        tau_f = threshold if ffn_threshold is None else ffn_threshold
        if isinstance(position, (list, tuple)):
            return LazyTraces([self] * len(position)).routes(
                threshold, list(position), attention_threshold=tau_a, ffn_threshold=tau_f, renormalize=renormalize)
        p = self.resolve_position(position)
        self._positions.add(p)
        if len(self._positions) >= 3:
            self.compute_all_rows()
        return self.batch.walk(self, (tau_a, tau_f, bool(renormalize), position))

    def compute_all_rows(self) -> bool:
        """Compute every row not yet computed, one call per block, when all rows fit in PREFETCH_BYTES (float32
        [L, H, T, T]); returns whether every row is now there."""
        n_tok = self.n_tokens
        if self.n_layers * self.n_heads * n_tok * n_tok * 4 > PREFETCH_BYTES:
            return False
        everything = list(range(n_tok))
        for layer in range(self.n_layers):
            fetch_rows(layer, [(self, everything)])
        return True

    def missing_rows(self, layer: int, positions: list[int]) -> list[int]:
        return sorted({p for p in positions if (layer, p) not in self._rows})

    def attention_rows(self, layer: int, positions: list[int]) -> tuple[np.ndarray, np.ndarray]:
        fetch_rows(layer, [(self, positions)])
        got = [self._rows[(layer, p)] for p in positions]
        sub = np.stack([g[0] for g in got], axis=1) if got else np.zeros((self.n_heads, 0, self.n_tokens), np.float32)
        return sub, np.array([g[1] for g in got], dtype=np.float32)

    def full(self) -> Trace:
        """Every row: the same `Trace` that `trace(..., lazy=False)` returns."""
        n_layers, n_tok = self.n_layers, self.n_tokens
        attention = np.zeros((n_layers, self.n_heads, n_tok, n_tok), np.float32)
        residual = np.zeros((n_layers, n_tok), np.float32)
        degenerate = np.zeros((n_layers, n_tok), bool)
        everything = list(range(n_tok))
        for layer in range(n_layers):
            attention[layer], residual[layer] = self.attention_rows(layer, everything)
            degenerate[layer] = [self._rows[(layer, p)][2] for p in everything]
        base = {f.name: getattr(self, f.name) for f in fields(_TraceBase)}
        return Trace(**base, attention=attention, attention_residual=residual, degenerate_attention=degenerate)


def fetch_rows(layer: int, requests: list[tuple[LazyTrace, list[int]]]) -> None:
    """Compute and memoise the rows (layer, p) that lazy traces lack, for requests [(trace, positions), ...]: the
    traces of one batched call together, in one attention call and one kernel call."""
    merged: dict[int, tuple[LazyTrace, set[int]]] = {}  # one request per trace (a trace may be walked at several
    for tr, positions in requests:  # positions at once)
        merged.setdefault(id(tr), (tr, set()))[1].update(positions)
    groups: dict[int, tuple[_LazyBatch, list]] = {}
    for tr, positions in merged.values():
        missing = tr.missing_rows(layer, sorted(positions))
        if missing:
            groups.setdefault(id(tr.batch), (tr.batch, []))[1].append((tr, missing))
    for batch, items in groups.values():
        results = batch.compute(layer, [(tr.index, missing) for tr, missing in items])
        for (tr, missing), (sub, res, degen) in zip(items, results):
            for i, p in enumerate(missing):
                tr._rows[(layer, p)] = (sub[:, i].copy(), float(res[i]), bool(degen[i]))


class LazyTraces(list):
    """The lazy traces of several prompts (`trace(model, prompts, lazy=True)`), a list of `LazyTrace`s."""

    def routes(self, threshold: float = 0.04, position: int | list[int] = -1, *,
               attention_threshold: float | None = None, ffn_threshold: float | None = None,
               renormalize: bool = True) -> list:
        """Every trace's routes (as `LazyTrace.routes`), walked together: each block's rows are computed for all
        prompts of a batch at once. `position`: one for all, or one per trace."""
        from .routes import extract_routes_many

        positions = position if isinstance(position, (list, tuple)) else [position] * len(self)
        if len(positions) != len(self):
            raise FlowroutesError(f"got {len(positions)} positions for {len(self)} traces: give one, or one per trace")

        def fetch(block, requests):  # traces of models with parallel blocks are full `Trace`s
            fetch_rows(block, [(t, p) for t, p in requests if isinstance(t, LazyTrace)])

        return extract_routes_many(
            list(self), list(positions), threshold if attention_threshold is None else attention_threshold,
            threshold if ffn_threshold is None else ffn_threshold, renormalize, fetch=fetch)


def tokenize(loaded: LoadedModel, prompt: str, add_special_tokens: bool | None = None) -> torch.Tensor:
    """The prompt's token ids [T], with the tokenizer's own defaults unless told otherwise."""
    checks.prompt(prompt)
    kwargs = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
    ids = loaded.tokenizer(prompt, **kwargs)["input_ids"]
    return torch.as_tensor(ids, dtype=torch.long)


def trace(
    model: Any,
    prompt: str | list[str] | None = None,
    *,
    input_ids: Any = None,
    add_special_tokens: bool | None = None,
    top_k: int = 10,
    lazy: bool = False,
    batch_size: int = 8,
    kernel: str = "auto",
    chunk_elements: int = CHUNK_ELEMENTS,
    progress: bool = False,
    precision: str = "float32",
    prune: float = 0.0,
    predictions: str = "all",
):
    """Trace prompts: forward passes, then eq. 1 for every node of the information flow graph.

    model: a `LoadedModel` (from `load_model`) or anything `load_model` accepts.
    prompt: the text, or a list of texts (then a list of traces comes back, computed in batched forward
        passes of `batch_size` prompts; each equals its unbatched trace); or pass `input_ids` (a sequence of
        ints, or a list of them) to skip tokenisation.
    lazy: return a `LazyTrace` that computes attention rows only when routes ask for them (models with
        parallel blocks are traced in full: a `Trace` comes back).
    kernel: "auto" (fused numba kernel on CPU, fused Triton kernel on CUDA), "numba", "triton", "torch" (the
        chunked torch path), or "reference": the paper's equations part by part in float64 (`flowroutes.reference`;
        slow, every node, importances stored in float64).
    precision: "float32" (default, whatever the model's dtype), "float64" (importances computed and stored
        in float64, by the torch path), or "model": the head values f_h(x_j) = LN(x_j) W_V W_O by the model's own
        (half-precision) matrix products, rounded once to its dtype as its own activations are, the rest in
        float32 (importances within ~1e-3 of "float32"). Lazy traces of models whose attention can be recorded
        read the value vectors v_j = LN(x_j) W_V + b_V that the forward pass computed (in the model's dtype) and
        apply W_O^h in `precision`. On CPUs with fast bfloat16 products, "model" is the faster choice for a bfloat16
        model: the fused kernel reads its bfloat16 head values as they are.
    prune: a tolerance > 0 skips sub-edges whose proximity is bounded (alpha ||f||_1) too small to change any
        importance by more than it; every importance stays within `prune` of the exact one (0: exact).
    predictions: where the model's top-k next tokens are computed: "all" positions (default), only the "last"
        of each prompt, or "none"; the LM head runs only there. Positions left out have top_ids -1, top_probs
        NaN and no top_tokens. Importances do not depend on it.
    """
    _check_options(precision, prune, predictions, kernel, lazy)
    opts = _Options(top_k, "torch" if precision == "float64" else kernel, chunk_elements, precision, prune,
                    predictions)
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    if _several(prompt, input_ids):
        texts, id_lists = _several_inputs(loaded, prompt, input_ids, add_special_tokens)
        return _trace_several(loaded, texts, id_lists, lazy, batch_size, progress, opts)
    prompt, ids = _one_input(loaded, prompt, input_ids, add_special_tokens)
    return _trace_chunk(loaded, [prompt], [ids], lazy, opts)[0]


@dataclass(frozen=True)
class _Options:
    """How `trace` computes (its keyword arguments, checked)."""

    top_k: int
    kernel: str
    chunk_elements: int
    precision: str
    prune: float
    predictions: str


KERNELS = ("auto", "numba", "triton", "torch", "reference")


def _check_options(precision: str, prune: float, predictions: str, kernel: str = "auto", lazy: bool = False) -> None:
    if kernel not in KERNELS:
        raise FlowroutesError(f"kernel must be one of {', '.join(map(repr, KERNELS))}, got {kernel!r}")
    if kernel == "reference" and (lazy or prune):
        raise FlowroutesError("kernel='reference' computes every node exactly: use it without lazy=True or prune")
    if predictions not in PREDICTIONS:
        raise FlowroutesError(f"predictions must be one of {', '.join(map(repr, PREDICTIONS))}, got {predictions!r}")
    if not 0.0 <= prune < 1.0:
        raise FlowroutesError(f"prune must be a tolerance in [0, 1), got {prune}: try 1e-4")
    if precision not in ("float32", "float64", "model"):
        raise FlowroutesError(f"precision must be 'float32', 'float64' or 'model', got {precision!r}")


def _several(prompt, input_ids) -> bool:
    """Whether the call traces a list of prompts (or of id sequences) rather than one."""
    return isinstance(prompt, (list, tuple)) or (
        input_ids is not None and len(input_ids) > 0 and not isinstance(input_ids[0], (int, np.integer))
        and not (isinstance(input_ids, (np.ndarray, torch.Tensor)) and np.ndim(input_ids) == 1)
    )


def _several_inputs(loaded, prompt, input_ids, add_special_tokens) -> tuple[list[str], list[torch.Tensor]]:
    """(texts, ids [T_b] per prompt) of a list of prompts or of id sequences."""
    if input_ids is not None:
        id_lists = [_check_ids(loaded, torch.as_tensor(i, dtype=torch.long).reshape(-1)) for i in input_ids]
        return [loaded.tokenizer.decode(i.tolist()) for i in id_lists], id_lists
    texts = list(prompt)
    return texts, [_check_ids(loaded, tokenize(loaded, t, add_special_tokens)) for t in texts]


def _one_input(loaded, prompt, input_ids, add_special_tokens) -> tuple[str, torch.Tensor]:
    """(text, ids [T]) of one prompt or id sequence."""
    if input_ids is None:
        return prompt, _check_ids(loaded, tokenize(loaded, prompt, add_special_tokens))
    ids = torch.as_tensor(input_ids, dtype=torch.long).reshape(-1)
    if ids.numel() == 0:
        raise FlowroutesError("input_ids is empty: give at least one token")
    return (loaded.tokenizer.decode(ids.tolist()) if prompt is None else prompt), _check_ids(loaded, ids)


def _trace_several(loaded, texts, id_lists, lazy: bool, batch_size: int, progress: bool, opts: _Options) -> list:
    """Traces of many prompts in batched forward passes of `batch_size`; batches of similar lengths waste little on
    padding, and the results come back in the caller's order."""
    order = sorted(range(len(texts)), key=lambda i: int(id_lists[i].numel()))
    out = (LazyTraces if lazy else list)([None] * len(texts))
    bar = _progress(len(texts), progress)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        traces = _trace_chunk(loaded, [texts[i] for i in chunk], [id_lists[i] for i in chunk], lazy, opts)
        for i, tr in zip(chunk, traces):
            out[i] = tr
        bar.update(len(chunk))
    bar.close()
    return out


def _trace_chunk(loaded, texts, id_lists, lazy: bool, opts: _Options) -> list:
    """The traces of one batch (one forward pass); lazy ones where the model allows."""
    # a parallel block's FFN importance needs the whole node's normalisation: such models are traced in full
    if lazy and not any(_parallel_flags(loaded.adapter)):
        return _trace_lazy(loaded, texts, id_lists, opts)
    return _trace_batch(loaded, texts, id_lists, opts)


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="prompt", disable=not enabled, desc="tracing")


def _check_ids(loaded: LoadedModel, ids: torch.Tensor) -> torch.Tensor:
    if ids.numel() == 0:
        raise FlowroutesError("the prompt has no tokens after tokenisation: give some text")
    if ids.numel() > loaded.adapter.max_context:
        raise FlowroutesError(
            f"the prompt has {ids.numel()} tokens but {loaded.name} reads at most {loaded.adapter.max_context}: "
            "shorten it"
        )
    return ids


def _pad_right(id_lists: list[torch.Tensor], pad_id: int) -> torch.Tensor:
    """[B, T_max] ids padded on the right: causal attention never lets a real token see the padding,
    and positions stay 0..T-1, so every real token's activations equal the unbatched ones."""
    batch = torch.full((len(id_lists), max(int(i.numel()) for i in id_lists)), pad_id, dtype=torch.long)
    for b, ids in enumerate(id_lists):
        batch[b, : ids.numel()] = ids
    return batch


PREDICTIONS = ("all", "last", "none")


def _logit_positions(predictions: str, lengths: list[int]) -> torch.Tensor | None:
    """Where the LM head runs: None (everywhere) or [B, K] positions."""
    if predictions == "all":
        return None
    if predictions == "last":
        return torch.tensor([[n - 1] for n in lengths], dtype=torch.long)
    return torch.zeros(len(lengths), 0, dtype=torch.long)


_TOKEN_TEXTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _token_texts(tokenizer) -> Callable[[int], str]:
    """id -> the token decoded alone (`tokenizer.decode([id])`), memoised per tokenizer: a batch decodes each of its
    T * (k + 1) tokens once per distinct id, not once per occurrence."""
    try:
        cache = _TOKEN_TEXTS.setdefault(tokenizer, {})
    except TypeError:  # a tokenizer that cannot be weakly referenced: no memo
        cache = {}

    def text_of(i: int) -> str:
        text = cache.get(i)
        if text is None:
            text = cache[i] = tokenizer.decode([i])
        return text

    return text_of


def _base_fields(loaded: LoadedModel, prompt: str, ids: torch.Tensor, logits: torch.Tensor, top_k: int,
                 positions: list[int] | None = None) -> dict:
    """logits: [T, V], or [K, V] at `positions` (the other positions get no prediction)."""
    k = min(top_k, logits.shape[-1])
    top_probs, top_ids = [], []
    for chunk in logits.split(256):  # [<=256, V] at a time: no [T, V] temporaries
        values, indices = chunk.topk(k, dim=-1)
        top_probs.append(torch.exp(values - torch.logsumexp(chunk, dim=-1, keepdim=True)))  # softmax of the top k
        top_ids.append(indices)
    top_probs = torch.cat(top_probs) if top_probs else torch.zeros(0, k)  # [T, k] or [K, k]
    top_ids = torch.cat(top_ids) if top_ids else torch.zeros(0, k, dtype=torch.long)
    tok = loaded.tokenizer
    id_list = ids.tolist()
    ids_np, probs_np = top_ids.cpu().numpy(), top_probs.cpu().numpy()
    text_of = _token_texts(tok)
    top_tokens = [[text_of(i) for i in row] for row in top_ids.tolist()]
    if positions is not None:  # spread the predicted rows over a [T, k] table
        n = len(id_list)
        table_ids, table_probs = np.full((n, k), -1, ids_np.dtype), np.full((n, k), np.nan, probs_np.dtype)
        table_ids[positions], table_probs[positions] = ids_np, probs_np
        table_tokens: list[list[str]] = [[] for _ in range(n)]
        for p, row in zip(positions, top_tokens):
            table_tokens[p] = row
        ids_np, probs_np, top_tokens = table_ids, table_probs, table_tokens
    return dict(
        model_name=loaded.name,
        prompt=prompt,
        input_ids=np.asarray(id_list, dtype=np.int64),
        tokens=list(tok.convert_ids_to_tokens(id_list)),
        token_texts=[text_of(i) for i in id_list],
        top_ids=ids_np,
        top_probs=probs_np,
        top_tokens=top_tokens,
    )


def _batched_kernel(kernel: str, precision: str, device: torch.device) -> bool:
    """Whether a block's importances go to the fused numba kernel for the whole batch in one call."""
    return precision != "float64" and (kernel == "numba" or (kernel == "auto" and device.type == "cpu"))


def _head_dtype(loaded, precision: str) -> torch.dtype:
    """The dtype of the head values' matrix products: the importances' own, or the model's ("model")."""
    if precision == "model":
        return next(loaded.model.parameters()).dtype
    return torch.float64 if precision == "float64" else torch.float32


class _FullBatch:
    """Every importance of a batch of prompts, block by block (`block` is the capture's callback; tensors [B, ...]):
    sub-edges [L, H, T, T] per prompt, the other node parts per layer for the whole batch ([L, B, T_max])."""

    def __init__(self, loaded, lengths: list[int], opts: _Options):
        self.adapter, self.lengths, self.opts = loaded.adapter, lengths, opts
        n_layers, n_heads = self.adapter.n_layers, self.adapter.n_heads
        wide = opts.precision == "float64" or opts.kernel == "reference"
        self.np_dtype, self.torch_dtype = (np.float64, torch.float64) if wide else (np.float32, torch.float32)
        self.head_dtype = _head_dtype(loaded, opts.precision)
        n_batch, t_max = len(lengths), max(lengths)
        self.attention = [np.zeros((n_layers, n_heads, n, n), dtype=self.np_dtype) for n in lengths]
        self.per_node = {name: np.zeros((n_layers, n_batch, t_max), dtype=self.np_dtype)
                         for name in ("attention_residual", "ffn", "ffn_residual")}
        self.per_node |= {name: np.zeros((n_layers, n_batch, t_max), dtype=bool)
                          for name in ("degenerate_attention", "degenerate_ffn")}
        self.buffer: torch.Tensor | None = None  # [B, H, T_max, T_max] sub-edges of one block, reused

    def block(self, batch: BlockCapture) -> None:
        layer, adapter = batch.layer, self.adapter
        if self.opts.kernel == "reference":
            self.reference_block(batch)
            return
        n_batch, t_max, d = batch.x_out.shape
        f = head_values_by_head(batch.normed, adapter.ov_weights(layer), adapter.input_norm_bias(layer),
                                adapter.kv_heads, self.head_dtype)
        fused = _batched_kernel(self.opts.kernel, self.opts.precision, f.device)
        f = (_kernel_dtype(f) if fused else f.to(self.torch_dtype)).view(adapter.n_heads, n_batch, t_max, d)
        # sequential: the node is x^{lA} (sub-edges + residual); parallel: x^l (sub-edges + residual + FFN)
        y = batch.x_out if batch.parallel else batch.x_mid
        extra = batch.ffn_out if batch.parallel else None
        scale = adapter.attention_post_scale(layer, batch.attn_raw)  # [B, T, d] or None
        parts = (batch.alpha, f, batch.x_in, y, scale, extra)  # f: [H, B, T, d]
        if fused:
            res, degen, extra_imp = self.attention_fused(layer, *parts)
        else:
            res, degen, extra_imp = self.attention_by_prompt(layer, *parts)
        self.per_node["attention_residual"][layer] = res
        self.per_node["degenerate_attention"][layer] = degen
        if batch.parallel:
            self.per_node["ffn"][layer], self.per_node["ffn_residual"][layer] = extra_imp, res
            self.per_node["degenerate_ffn"][layer] = degen
            return
        _ffn_nodes(batch, self.per_node, self.torch_dtype)

    def reference_block(self, batch: BlockCapture) -> None:
        """The block by `flowroutes.reference`, prompt by prompt, from float64 copies of the captured tensors."""
        from . import reference

        layer, adapter = batch.layer, self.adapter
        ov, beta = adapter.ov_weights(layer), adapter.input_norm_bias(layer)
        scale = adapter.attention_post_scale(layer, batch.attn_raw)

        def np64(t):
            return None if t is None else t.detach().cpu().double().numpy()

        value, output = np64(ov.value), np64(ov.output)
        for b, n in enumerate(self.lengths):
            def rows(t, b=b, n=n):
                return None if t is None else np64(t[b, :n])

            f = reference.head_values(rows(batch.normed), value, output, adapter.kv_heads, np64(beta))
            got = reference.block(np64(batch.alpha[b, :, :n, :n]), f, rows(batch.x_in), rows(batch.x_mid),
                                  rows(batch.ffn_out), rows(batch.x_out), rows(scale), parallel=batch.parallel)
            self.attention[b][layer] = got["attention"]
            for name, arr in self.per_node.items():
                arr[layer, b, :n] = got[name]

    def attention_fused(self, layer, alpha, f, x_in, y, scale, extra) -> tuple:
        """The whole batch in one call of the fused numba kernel: (residual, degenerate, extra) [B, T_max]."""
        n_batch, n_heads, t_max, _ = alpha.shape
        if n_batch == 1:  # straight into the trace's own array
            out = torch.from_numpy(self.attention[0][layer])[None]
        else:
            if self.buffer is None:
                self.buffer = torch.zeros(n_batch, n_heads, t_max, t_max, dtype=torch.float32)
            out = self.buffer
        rows = torch.arange(t_max).expand(n_batch, t_max)
        cpu = [None if t is None else t.cpu() for t in (alpha, f, x_in, y, scale, extra)]
        sub, res, degen, extra_imp = batch_attention_importance(
            cpu[0], cpu[1], cpu[2], cpu[3], rows, self.lengths, scale=cpu[4], extra=cpu[5], prune=self.opts.prune,
            out=out)
        if n_batch > 1:
            sub_np = sub.numpy()
            for b, n_tok in enumerate(self.lengths):
                self.attention[b][layer] = sub_np[b, :, :n_tok, :n_tok]
        return res.numpy(), degen.numpy(), None if extra_imp is None else extra_imp.numpy()

    def attention_by_prompt(self, layer, alpha, f, x_in, y, scale, extra) -> tuple:
        """The torch or Triton kernel, or float64: prompt by prompt. (residual, degenerate, extra) [B, T_max]."""
        n_batch, _, t_max, _ = alpha.shape
        res = np.zeros((n_batch, t_max), self.np_dtype)
        degen = np.zeros((n_batch, t_max), bool)
        extra_imp = None if extra is None else np.zeros((n_batch, t_max), self.np_dtype)
        for b, n_tok in enumerate(self.lengths):

            def take(t, b=b, n_tok=n_tok):  # this prompt's rows, in the precision of the importances
                return None if t is None else t[b, :n_tok].to(self.torch_dtype)

            alpha_b = alpha[b, :, :n_tok, :n_tok].to(self.torch_dtype)
            on_cpu = alpha_b.device.type == "cpu"
            sub, r, g, e = attention_importance(
                alpha_b, f[:, b, :n_tok], take(x_in), take(y), kernel=self.opts.kernel,
                chunk_elements=self.opts.chunk_elements, out=torch.from_numpy(self.attention[b][layer]) if on_cpu
                else None, scale=take(scale), extra=take(extra), prune=self.opts.prune)
            if not on_cpu:
                self.attention[b][layer] = sub.cpu().numpy()
            res[b, :n_tok], degen[b, :n_tok] = r.cpu().numpy(), g.cpu().numpy()
            if e is not None:
                extra_imp[b, :n_tok] = e.cpu().numpy()
        return res, degen, extra_imp


def _ffn_nodes(cap: BlockCapture, per_node: dict[str, np.ndarray], dtype: torch.dtype) -> None:
    """The FFN nodes x^l_p of a sequential block for the whole batch at once (rows [B * T_max], in `dtype`), into
    per_node["ffn" | "ffn_residual" | "degenerate_ffn"][layer] ([B, T_max] each)."""
    n_batch, t_max, d = cap.x_out.shape
    ffn_all = ffn_importance(*(t.to(dtype).reshape(-1, d) for t in (cap.x_mid, cap.ffn_out, cap.x_out)))
    for name, t in zip(("ffn", "ffn_residual", "degenerate_ffn"), ffn_all):
        per_node[name][cap.layer] = t.reshape(n_batch, t_max).cpu().numpy()


def _forward(loaded, id_lists, on_block, opts: _Options, lazy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The batch's forward pass with `on_block` on every block: (logits [B, T_max, V], or [B, K, V] at `keep`;
    keep [B, K] or None). Lazy traces record the attention's inputs and keep activations in the model's dtype."""
    pad_id = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
    keep = _logit_positions(opts.predictions, [int(i.numel()) for i in id_lists])
    extra = dict(keep_attention_call=True, record=can_record(loaded), dtype=None) if lazy else {}
    logits = run_with_capture(loaded, _pad_right(id_lists, pad_id), on_block, logit_positions=keep, **extra)
    return logits, keep


def _meta(loaded, opts: _Options, lazy: bool) -> dict:
    meta = {"model_type": getattr(loaded.model.config, "model_type", None), "kernel": opts.kernel}
    if lazy:
        meta |= {"lazy": True, "precision": "model" if opts.precision == "model" else "float32"}
    else:
        meta |= {"prune": opts.prune, "precision": opts.precision}
    if opts.predictions != "all":
        meta["predictions"] = opts.predictions
    return meta


def _predictions(loaded, prompt, ids, logits, keep, b: int, top_k: int) -> dict:
    """The base fields of prompt b of a batch from the batch's logits."""
    n_tok = int(ids.numel())
    return _base_fields(loaded, prompt, ids, logits[b, :n_tok] if keep is None else logits[b], top_k,
                        None if keep is None else keep[b].tolist())


def _trace_batch(loaded, prompts, id_lists, opts: _Options) -> list[Trace]:
    lengths = [int(i.numel()) for i in id_lists]
    full = _FullBatch(loaded, lengths, opts)
    logits, keep = _forward(loaded, id_lists, full.block, opts, lazy=False)
    meta, parallel = _meta(loaded, opts, lazy=False), _parallel_flags(loaded.adapter)
    return [
        Trace(**_predictions(loaded, prompt, ids, logits, keep, b, opts.top_k), attention=full.attention[b],
              **{name: a[:, b, : lengths[b]].copy() for name, a in full.per_node.items()}, meta=dict(meta),
              parallel=list(parallel))
        for b, (prompt, ids) in enumerate(zip(prompts, id_lists))
    ]


def _parallel_flags(adapter) -> list[bool]:
    return [adapter.is_parallel(layer) for layer in range(adapter.n_layers)]


def _trace_lazy(loaded, prompts, id_lists, opts: _Options) -> list[LazyTrace]:
    """Lazy traces of a batch of prompts (sequential blocks only): one forward pass; per block, the FFN nodes of every
    prompt and what the attention rows need later."""
    adapter = loaded.adapter
    lengths = [int(i.numel()) for i in id_lists]
    n_batch, t_max = len(lengths), max(lengths)
    per_node = {name: np.zeros((adapter.n_layers, n_batch, t_max), dtype=np.float32) for name in ("ffn",
                                                                                                  "ffn_residual")}
    per_node["degenerate_ffn"] = np.zeros((adapter.n_layers, n_batch, t_max), dtype=bool)
    batch = _LazyBatch(loaded, lengths, opts.kernel, opts.prune,
                       _head_dtype(loaded, "model" if opts.precision == "model" else "float32"))

    def on_block(cap: BlockCapture) -> None:  # tensors [B, ...] in the model's dtype
        batch.keep(cap)  # what the attention rows need later; the weights go now
        _ffn_nodes(cap, per_node, torch.float32)

    logits, keep = _forward(loaded, id_lists, on_block, opts, lazy=True)
    meta = _meta(loaded, opts, lazy=True)
    traces = [
        LazyTrace(**_predictions(loaded, prompt, ids, logits, keep, b, opts.top_k),
                  **{name: a[:, b, : lengths[b]].copy() for name, a in per_node.items()}, meta=dict(meta),
                  n_heads=adapter.n_heads, loaded=loaded, batch=batch, index=b, kernel=opts.kernel, prune=opts.prune)
        for b, (prompt, ids) in enumerate(zip(prompts, id_lists))
    ]
    batch.members = [weakref.ref(t) for t in traces]
    return traces
