"""Interventions from the explorer: zero, mean-ablate or patch (from a second prompt) one head, one FFN block or
one attention edge, with `flowroutes.patching`'s own interventions, so the page and the CLI give the same numbers.

Runs hooked forward passes: the caller holds the model's lock. Computes no importances (the trace does).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

from ..errors import FlowroutesError
from ..models.loading import LoadedModel
from ..patching.core import TaskBatch, head_outputs, intervene, intervene_ffn, output_projection
from ..patching.methods import ablation_values

MODES = ("zero", "mean", "patch")


def task_batch(ids: np.ndarray, ids_b: np.ndarray | None, target: int, other: int | None) -> TaskBatch:
    """One prompt (and its patching source) as the patching package's TaskBatch, metric: the target's logit, or
    its logit difference with `other`, at the prompt's last position."""
    a = torch.as_tensor(np.asarray(ids), dtype=torch.long)[None]  # [1, T]
    b = a if ids_b is None else torch.as_tensor(np.asarray(ids_b), dtype=torch.long)[None]
    return TaskBatch(a, b, torch.tensor([a.shape[1]]), [[int(target)]], [[] if other is None else [int(other)]],
                     "logit_diff", [None])


def _ffn_outputs(loaded: LoadedModel, ids: np.ndarray, layer: int) -> torch.Tensor:
    """Block `layer`'s FFN output on `ids`: [1, T, d]."""
    module = loaded.adapter.block_modules(layer).ffn
    if module is None:
        raise FlowroutesError(f"the FFN output of block {layer} is not a module's output in this family: "
                              "it cannot be replaced")
    got = {}

    def hook(_m, _a, output):
        got["y"] = (output[0] if isinstance(output, tuple) else output).detach()

    handle = module.register_forward_hook(hook)
    try:
        device = next(loaded.model.parameters()).device
        with torch.no_grad():
            loaded.model(input_ids=torch.as_tensor(np.asarray(ids))[None].to(device), use_cache=False)
    finally:
        handle.remove()
    return got["y"]


def build(loaded: LoadedModel, internals, ids: np.ndarray, ids_b: np.ndarray | None, component: dict, mode: str,
          batch: TaskBatch) -> tuple[dict, dict]:
    """(head interventions for `patching.core.intervene`, FFN interventions for `intervene_ffn`)."""
    adapter = loaded.adapter
    kind, layer = component.get("kind"), int(component.get("layer", -1))
    if mode not in MODES:
        raise FlowroutesError(f"unknown intervention {mode!r}: choose one of {', '.join(MODES)}")
    if not 0 <= layer < adapter.n_layers:
        raise FlowroutesError(f"layer {layer} is out of range: use 0..{adapter.n_layers - 1}")
    if mode == "patch" and ids_b is None:
        raise FlowroutesError("patching needs a second prompt (prompt B) to patch from")
    if mode == "patch" and len(ids_b) != len(ids):
        raise FlowroutesError(f"prompt B has {len(ids_b)} tokens and this prompt {len(ids)}: patching replaces "
                              "outputs position by position, so both need the same number of tokens")
    n_heads = adapter.n_heads
    if kind == "head":
        head = int(component.get("head", -1))
        if not 0 <= head < n_heads:
            raise FlowroutesError(f"head {head} is out of range: use 0..{n_heads - 1}")
        mask = torch.zeros(1, n_heads)
        mask[0, head] = 1.0
        if mode == "mean":  # the head's mean output over this prompt's positions
            values = head_outputs(loaded, batch.ids)[layer][0].mean(dim=0)  # [H*dh]
        else:
            values = ablation_values(loaded, batch, mode)[0][layer]
        return {layer: (mask, values)}, {}
    if kind == "ffn":
        if mode == "zero":
            values = torch.zeros(adapter.d_model)
        elif mode == "mean":
            values = torch.as_tensor(internals.ffn_out[layer]).mean(dim=0)  # [d]
        else:
            values = _ffn_outputs(loaded, ids_b, layer)  # [1, T, d]
        return {}, {layer: values}
    if kind == "edge":  # x^l_j -> x^{lA}_p through `heads`: their messages from j to p removed
        if mode != "zero":
            raise FlowroutesError("an attention edge can only be zeroed (its message removed); mean-ablate or "
                                  "patch one of its heads instead")
        source, target = int(component.get("source", -1)), int(component.get("target", -1))
        heads = [int(h) for h in component.get("heads", [])]
        if not 0 <= source <= target < len(ids):
            raise FlowroutesError(f"edge {source} -> {target} is not an attention edge of this prompt")
        if not heads or not all(0 <= h < n_heads for h in heads):
            raise FlowroutesError(f"an edge needs its heads (0..{n_heads - 1})")
        dh = adapter.head_dim
        values = head_outputs(loaded, batch.ids)[layer].clone()  # [1, T, H*dh] the clean head outputs
        ov = adapter.ov_weights(layer)
        x = torch.as_tensor(internals.normed[layer][source]).to(ov.value.device)  # [d] LN(x_j)
        mask = torch.zeros(1, n_heads)
        for h in heads:
            kv = adapter.kv_head(h)
            v = x @ ov.value[kv].float()  # [dh]
            if ov.value_bias is not None:
                v = v + ov.value_bias[kv].float()
            alpha = float(internals.alpha[layer, h, target, source])
            values[0, target, h * dh:(h + 1) * dh] -= (alpha * v).to(values.device, values.dtype)
            mask[0, h] = 1.0
        return {layer: (mask, values)}, {}
    raise FlowroutesError(f"unknown component kind {kind!r}: choose head, ffn or edge")


def logits_at(loaded: LoadedModel, ids: np.ndarray, heads: dict, ffn: dict, position: int) -> np.ndarray:
    """[V] logits at `position` with the interventions applied."""
    device = next(loaded.model.parameters()).device
    with torch.no_grad(), intervene(loaded, heads), intervene_ffn(loaded, ffn):
        out = loaded.model(input_ids=torch.as_tensor(np.asarray(ids))[None].to(device), use_cache=False).logits
    return out[0, position].float().cpu().numpy()


@contextlib.contextmanager
def traced_as_intervened(loaded: LoadedModel, heads: dict) -> Iterator[None]:
    """For tracing the intervened model: each intervened head leaves the decomposition (its output projection
    columns are zeroed for the pass) and what the intervention makes it write is added after the projection, so
    the model computes the same states as under `intervene` while the routes no longer attribute anything to
    that head's sub-edges (its new output counts like the block's constant). FFN interventions need nothing:
    the trace reads the replaced FFN output. The weights are restored on exit; the caller holds the model's lock,
    which every other reader of W_O in the explorer takes too."""
    undo, handles = [], []
    dh = loaded.adapter.head_dim
    try:
        for layer, (mask, values) in heads.items():
            module = output_projection(loaded, layer)
            w = module.weight
            by_column = isinstance(module, torch.nn.Linear)  # Linear: [d, H*dh]; GPT-2's Conv1D: [H*dh, d]
            extra = 0.0
            for h in torch.nonzero(mask[0]).flatten().tolist():
                cols = slice(h * dh, (h + 1) * dh)
                part = w[:, cols] if by_column else w[cols, :]
                v = values[..., cols].to(w.device, w.dtype)  # [1, T, dh] or [dh]
                with torch.no_grad():
                    extra = extra + (v @ part.T if by_column else v @ part)  # [.., d]
                undo.append((part, part.detach().clone()))
                with torch.no_grad():
                    part.zero_()

            def add(_m, _a, output, extra=extra):
                return output + (extra[:, : output.shape[1]] if getattr(extra, "ndim", 0) == 3 else extra)

            handles.append(module.register_forward_hook(add))
        yield
    finally:
        for h in handles:
            h.remove()
        with torch.no_grad():
            for part, saved in undo:
                part.copy_(saved)
