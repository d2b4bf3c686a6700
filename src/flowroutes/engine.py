"""The full engine: one batched forward pass with the capture's callback on every block, and eq. 1 for every node
of every prompt (`trace_full`); also what the lazy engine shares with it (the forward pass, the FFN nodes, which
kernel a block goes to).

Data path: `forward` runs the model with `run_with_capture`; each block's capture (tensors [B, T, ...]) reaches
`_FullBatch.block`, which builds f_h(x_j) (importance.head_values_by_head), sends the attention node's parts to one
kernel call for the batch (or prompt by prompt, or to `flowroutes.reference`), and the FFN nodes to
`importance.ffn_importance`; `trace_full` cuts the batch's arrays into one `Trace` per prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .capture import BlockCapture, can_record, run_with_capture
from .importance import (
    attention_importance,
    backend,
    batch_attention_importance,
    ffn_importance,
    head_values_by_head,
)
from .predictions import logit_positions, prompt_fields
from .traces import Trace


@dataclass(frozen=True)
class Options:
    """How `trace` computes (its keyword arguments, checked)."""

    top_k: int
    kernel: str
    chunk_elements: int
    precision: str
    prune: float
    predictions: str


def importance_dtype(precision: str) -> torch.dtype:
    """The dtype importances are computed in: float64 when asked, float32 otherwise ("model" included)."""
    return torch.float64 if precision == "float64" else torch.float32


def batched_kernel(kernel: str, precision: str, device: torch.device) -> bool:
    """Whether a block's importances go to the fused numba kernel for the whole batch in one call: when that is
    the backend (`importance.backend`) for the importances' dtype on `device`."""
    return backend(kernel, device, importance_dtype(precision)) == "numba"


def head_dtype(loaded, precision: str) -> torch.dtype:
    """The dtype of the head values' matrix products: the importances' own, or the model's ("model")."""
    if precision == "model":
        return next(loaded.model.parameters()).dtype
    return importance_dtype(precision)


def kernel_dtype(f: torch.Tensor) -> torch.Tensor:
    """Head values in a dtype the fused CPU kernel reads: bfloat16 stays (it is widened exactly there), the rest
    becomes float32."""
    return f if f.dtype == torch.bfloat16 else f.float()


def pad_right(id_lists: list[torch.Tensor], pad_id: int) -> torch.Tensor:
    """[B, T_max] ids padded on the right: causal attention never lets a real token see the padding,
    and positions stay 0..T-1, so every real token's activations equal the unbatched ones."""
    batch = torch.full((len(id_lists), max(int(i.numel()) for i in id_lists)), pad_id, dtype=torch.long)
    for b, ids in enumerate(id_lists):
        batch[b, : ids.numel()] = ids
    return batch


def forward(loaded, id_lists, on_block, opts: Options, lazy: bool,
            keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The batch's forward pass with `on_block` on every block: (logits [B, T_max, V], or [B, K, V] at `keep`;
    keep [B, K] or None). `keep` [B, K]: where the LM head runs (default: where `opts.predictions` says). Lazy
    traces record the attention's inputs and keep activations in the model's dtype."""
    pad_id = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
    if keep is None:
        keep = logit_positions(opts.predictions, [int(i.numel()) for i in id_lists])
    extra = dict(keep_attention_call=True, record=can_record(loaded), dtype=None) if lazy else {}
    logits = run_with_capture(loaded, pad_right(id_lists, pad_id), on_block, logit_positions=keep, **extra)
    return logits, keep


def trace_meta(loaded, opts: Options, lazy: bool) -> dict:
    """What a trace records of how it was computed: "kernel" as asked, "backend" as chosen (`importance.backend`,
    for the device of the model's first weights and the importances' dtype)."""
    param = next(loaded.model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    meta = {"model_type": getattr(loaded.model.config, "model_type", None), "kernel": opts.kernel,
            "backend": backend(opts.kernel, device, importance_dtype(opts.precision))}
    if lazy:
        meta |= {"lazy": True, "precision": "model" if opts.precision == "model" else "float32"}
    else:
        meta |= {"prune": opts.prune, "precision": opts.precision}
    if opts.predictions != "all":
        meta["predictions"] = opts.predictions
    return meta


def parallel_flags(adapter) -> list[bool]:
    return [adapter.is_parallel(layer) for layer in range(adapter.n_layers)]


def trace_full(loaded, prompts, id_lists, opts: Options) -> list[Trace]:
    lengths = [int(i.numel()) for i in id_lists]
    full = _FullBatch(loaded, lengths, opts)
    logits, keep = forward(loaded, id_lists, full.block, opts, lazy=False)
    meta, parallel = trace_meta(loaded, opts, lazy=False), parallel_flags(loaded.adapter)
    return [
        Trace(**prompt_fields(loaded, prompt, ids, logits, keep, b, opts.top_k), attention=full.attention[b],
              **{name: a[:, b, : lengths[b]].copy() for name, a in full.per_node.items()}, meta=dict(meta),
              parallel=list(parallel))
        for b, (prompt, ids) in enumerate(zip(prompts, id_lists))
    ]


class _FullBatch:
    """Every importance of a batch of prompts, block by block (`block` is the capture's callback; tensors [B, ...]):
    sub-edges [L, H, T, T] per prompt, the other node parts per layer for the whole batch ([L, B, T_max])."""

    def __init__(self, loaded, lengths: list[int], opts: Options):
        self.adapter, self.lengths, self.opts = loaded.adapter, lengths, opts
        n_layers, n_heads = self.adapter.n_layers, self.adapter.n_heads
        wide = opts.precision == "float64" or opts.kernel == "reference"
        self.np_dtype, self.torch_dtype = (np.float64, torch.float64) if wide else (np.float32, torch.float32)
        self.head_dtype = head_dtype(loaded, opts.precision)
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
        fused = batched_kernel(self.opts.kernel, self.opts.precision, f.device)
        f = (kernel_dtype(f) if fused else f.to(self.torch_dtype)).view(adapter.n_heads, n_batch, t_max, d)
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
        ffn_nodes(batch, self.per_node, self.torch_dtype)

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


def ffn_nodes(cap: BlockCapture, per_node: dict[str, np.ndarray], dtype: torch.dtype) -> None:
    """The FFN nodes x^l_p of a sequential block for the whole batch at once (rows [B * T_max], in `dtype`), into
    per_node["ffn" | "ffn_residual" | "degenerate_ffn"][layer] ([B, T_max] each)."""
    ffn_nodes_of(cap.layer, cap.x_mid, cap.ffn_out, cap.x_out, per_node, dtype)


def ffn_nodes_of(layer: int, x_mid: torch.Tensor, ffn_out: torch.Tensor, x_out: torch.Tensor,
                 per_node: dict[str, np.ndarray], dtype: torch.dtype, start: int = 0) -> None:
    """`ffn_nodes` from the block's x^{lA}, FFN update and x^{l+1} ([B, t, d] each), for positions start..start+t."""
    n_batch, n_tok, d = x_out.shape
    ffn_all = ffn_importance(*(t.to(dtype).reshape(-1, d) for t in (x_mid, ffn_out, x_out)))
    for name, t in zip(("ffn", "ffn_residual", "degenerate_ffn"), ffn_all):
        per_node[name][layer, :, start:start + n_tok] = t.reshape(n_batch, n_tok).cpu().numpy()

