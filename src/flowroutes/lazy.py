"""The lazy engine: a batch's forward pass keeps per block what attention rows need later (x^{lA}, the residual
edges' proximities, the attention's recorded inputs); a `LazyTrace` computes the rows (block, target) that its routes
reach, one attention call and one kernel call per block for every prompt of the batch that asks, and memoises them.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from .capture import BlockCapture, RecordedAttention, attention_rows_batch
from .engine import Options, batched_kernel, ffn_nodes, forward, head_dtype, kernel_dtype, trace_meta
from .errors import FlowroutesError
from .importance import (
    attention_importance,
    batch_attention_importance,
    centred_values,
    head_outputs,
    head_values_by_head,
    numba_threads,
)
from .predictions import prompt_fields
from .traces import Trace, TraceBase

#: the most elements of head values [heads, B, T, d] that a lazy trace's rows hold at once (float32: 4 bytes each)
HEAD_VALUE_ELEMENTS = 1 << 25


#: a lazy trace asked for routes at a third position computes all its rows at once when they take at most this
#: many bytes (float32 [L, H, T, T]: SmolLM2 at 354 tokens, 135 MB; at 2048 tokens, 4.5 GB: row by row instead)
PREFETCH_BYTES = 1 << 30


def trace_lazy(loaded, prompts, id_lists, opts: Options, *, with_logits: bool = False,
               keep: torch.Tensor | None = None):
    """Lazy traces of a batch of prompts (sequential blocks only): one forward pass; per block, the FFN nodes of every
    prompt and what the attention rows need later. `with_logits`: (traces, the batch's logits [B, T_max, V] or
    [B, K, V] at the positions kept). `keep` [B, K]: the positions with predictions (default: `opts.predictions`)."""
    lengths = [int(i.numel()) for i in id_lists]
    batch, per_node = lazy_batch(loaded, lengths, opts)

    def on_block(cap: BlockCapture) -> None:  # tensors [B, ...] in the model's dtype
        batch.keep(cap)  # what the attention rows need later; the weights go now
        ffn_nodes(cap, per_node, torch.float32)

    logits, keep = forward(loaded, id_lists, on_block, opts, lazy=True, keep=keep)
    traces = lazy_traces(loaded, prompts, id_lists, logits, keep, opts, batch, per_node)
    return (traces, logits) if with_logits else traces


def lazy_batch(loaded, lengths: list[int], opts: Options) -> tuple[_LazyBatch, dict[str, np.ndarray]]:
    """An empty `_LazyBatch` for prompts of `lengths` and the FFN nodes' arrays it goes with (per_node[name]
    [L, B, T_max]: "ffn", "ffn_residual" float32, "degenerate_ffn" bool), for the blocks to fill."""
    batch = _LazyBatch(loaded, lengths, opts.kernel, opts.prune,
                       head_dtype(loaded, "model" if opts.precision == "model" else "float32"))
    return batch, ffn_arrays(loaded.adapter.n_layers, len(lengths), max(lengths))


def ffn_arrays(n_layers: int, n_batch: int, t_max: int) -> dict[str, np.ndarray]:
    """Empty FFN node arrays [L, B, T_max]: "ffn", "ffn_residual" float32, "degenerate_ffn" bool."""
    per_node = {name: np.zeros((n_layers, n_batch, t_max), dtype=np.float32) for name in ("ffn", "ffn_residual")}
    per_node["degenerate_ffn"] = np.zeros((n_layers, n_batch, t_max), dtype=bool)
    return per_node


def residual_proximities(x_in: torch.Tensor, x_mid: torch.Tensor) -> np.ndarray:
    """[B, T] float64: the residual edges' proximities proximity(x^l_p, x^{lA}_p) by the fused CPU kernel."""
    from .kernels import proximities

    with numba_threads():  # numba's OpenMP layer would otherwise leave torch on its own thread count
        return proximities(x_in.float().cpu().numpy(), x_mid.float().cpu().numpy())


def lazy_traces(loaded, prompts, id_lists, logits, keep, opts: Options, batch: _LazyBatch,
                per_node: dict[str, np.ndarray]) -> list[LazyTrace]:
    """One `LazyTrace` per prompt of a filled `batch` (`lazy_batch`; every block kept), from the batch's logits."""
    lengths = batch.lengths
    meta = trace_meta(loaded, opts, lazy=True)
    traces = [
        LazyTrace(**prompt_fields(loaded, prompt, ids, logits, keep, b, opts.top_k),
                  **{name: a[:, b, : lengths[b]].copy() for name, a in per_node.items()}, meta=dict(meta),
                  n_heads=loaded.adapter.n_heads, loaded=loaded, batch=batch, index=b, kernel=opts.kernel,
                  prune=opts.prune)
        for b, (prompt, ids) in enumerate(zip(prompts, id_lists))
    ]
    batch.members = [weakref.ref(t) for t in traces]
    return traces


@dataclass(kw_only=True)
class LazyTrace(TraceBase):
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
        """Attention rows (block, position) of this prompt computed so far."""
        return len(self._rows)

    @property
    def n_kernel_calls(self) -> int:
        """Calls of the importance kernels this trace's batch has made so far: the fused CPU kernel is called once
        per block and chunk of heads for every prompt of the batch that asks (the torch and Triton kernels, once
        per block and prompt). What batching the routes' requests saves."""
        return self.batch.kernel_calls

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

    def __repr__(self) -> str:
        from .display import trace_text

        return trace_text(self, lazy=True)

    def _repr_html_(self) -> str:
        """The notebook display: top predictions, and the strongest heads when their rows are computed; computes
        no row."""
        from .display import trace_html

        return trace_html(self, lazy=True)

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
        base = {f.name: getattr(self, f.name) for f in fields(TraceBase)}
        return Trace(**base, attention=attention, attention_residual=residual, degenerate_attention=degenerate)


class LazyTraces(list):
    """The lazy traces of several prompts (`trace(model, prompts, lazy=True)`), a list of `LazyTrace`s."""

    def __repr__(self) -> str:
        from .display import traces_text

        return traces_text(self)

    def _repr_html_(self) -> str:
        from .display import traces_html

        return traces_html(self)

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
        self.kernel_calls = 0  # calls of the importance kernels so far (`LazyTrace.n_kernel_calls`)

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
                                     fetch=fetch_rows)
        for t, r in zip(group[1:], routes[1:]):
            self.walked[(key, t.index)] = r
        return routes[0]

    def keep(self, cap: BlockCapture) -> None:
        """Keep what block `cap.layer`'s attention rows need (tensors [B, ...] in the model's dtype)."""
        self.keep_parts(cap.layer, cap.x_in, cap.x_mid, cap.attention_call, cap.normed,
                        self.loaded.adapter.attention_post_scale(cap.layer, cap.attn_raw.float()))

    def keep_parts(self, layer: int, x_in: torch.Tensor | None, x_mid: torch.Tensor, call, normed: torch.Tensor | None,
                   scale: torch.Tensor | None, residual: np.ndarray | None = None) -> None:
        """`keep` from the parts of a block's capture: x^l, x^{lA} [B, T, d], the attention call, LN(x^l) [B, T, d]
        (read only without a `RecordedAttention`) and the post-norm diagonal [B, T, d] (or None). Blocks come in
        order, bottom to top. `residual` [B, T]: the residual edges' proximities, already computed
        (`residual_proximities`, where `fused` says the fused kernel computes this batch; x^l is then not read)."""
        if residual is not None:
            self.residual.append(residual)
            self.x_in.append(None)
        elif self.fused(x_mid.device):  # the residual edges now, x^l never again
            self.residual.append(residual_proximities(x_in, x_mid))
            self.x_in.append(None)
        else:
            self.residual.append(None)
            self.x_in.append(self._slot("x_in", layer, x_in))
        self.x_mid.append(self._slot("x_mid", layer, x_mid))
        if isinstance(call, RecordedAttention):
            call = dataclasses.replace(call, query=self._slot("query", layer, call.query),
                                       key=self._slot("key", layer, call.key),
                                       values=self._slot("values", layer, call.values))
        # with recorded attention inputs, the head values come from the recorded value vectors: no normed states
        self.normed.append(None if isinstance(call, RecordedAttention) else normed)
        self.call.append(call)
        self.scale.append(scale)

    def fused(self, device: torch.device) -> bool:
        """Whether the rows of tensors on `device` go to the fused CPU kernel (which reads the residual edges'
        proximities, computed when kept, instead of x^l)."""
        return batched_kernel(self.kernel, "float32", device)

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
                return kernel_dtype(f).view(h1 - h0, n_sel, n_tok, d)

            return from_values, max(1, HEAD_VALUE_ELEMENTS // (n_sel * n_tok * d))
        normed = self.normed[layer][sel.to(self.normed[layer].device)]  # kept where values were not recorded
        f = head_values_by_head(normed.float(), ov, beta, adapter.kv_heads, self.head_dtype)
        f = kernel_dtype(f).view(-1, n_sel, n_tok, d)  # [H, B', T, d]
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
            self.kernel_calls += -(-n_heads // per_call)  # one per chunk of heads
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
            self.kernel_calls += 1
            sub, res, degen, _ = attention_importance(
                alpha[k, :, :n, :n_b], f[:, k, :n_b], x_in[k, :n_b].float(), x_mid[k, :n_b].float(),
                rows=rows[k, :n].to(f.device), kernel=self.kernel, alpha_rows=True, prune=self.prune,
                scale=None if scale is None else scale[k, :n_b].float())
            out.append((sub.cpu().numpy(), res.cpu().numpy(), degen.cpu().numpy()))
        return out

