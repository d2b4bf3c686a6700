"""What the explorer's click-to-inspect views need beyond a Trace: attention weights, residual states, FFN
neuron activations, logit lens and projections onto the unembedding.

Model-specific lookups (final norm, unembedding, FFN down projection) come from the family adapter.
Never computes importances (the Trace does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..capture import BlockCapture, run_with_capture
from ..errors import FlowroutesError
from ..importance import head_values
from ..models.loading import LoadedModel


# --- model-specific lookups: the family adapter knows them ---------------------------------------------------
def final_norm(loaded: LoadedModel) -> torch.nn.Module:
    """The norm between the last block and the unembedding."""
    return loaded.adapter.final_norm()


def unembedding(loaded: LoadedModel) -> torch.Tensor:
    """W_U as [V, d] (the lm_head weight; tied or not)."""
    return loaded.adapter.unembedding()


def down_projection(loaded: LoadedModel, layer: int) -> tuple[torch.nn.Module, torch.Tensor]:
    """(module whose input is the neuron activations a [T, F], neuron output rows W_out [F, d])."""
    return loaded.adapter.down_projection(layer)


# --- captured internals of one prompt ---------------------------------------------------------------------------
@dataclass
class Internals:
    """One forward pass's states, float32 numpy. L layers, H heads, T tokens, d model width, F = d_ff."""

    alpha: np.ndarray  # [L, H, T, T] attention weights alpha[l, h, p, j]
    residual: np.ndarray  # [L+1, T, d] x^l_p (0 = embeddings, L = top)
    mid: np.ndarray  # [L, T, d]   x^{(l+1)A}_p, after block l's attention (parallel blocks: x^l_p - FFN)
    normed: np.ndarray  # [L, T, d]  LN(x^l), what block l's attention reads
    ffn_out: np.ndarray  # [L, T, d]  block l's FFN output
    neurons: np.ndarray  # [L, T, F]  block l's FFN activations (input to its down projection)
    logits: np.ndarray  # [T, V]
    post_scale: list  # per layer: None, or [T, d] the linearised post-norm on the attention output


def capture_internals(loaded: LoadedModel, input_ids: np.ndarray) -> Internals:
    """One forward pass with hooks. Registers hooks on the model: the caller must hold the model's lock."""
    n_layers = loaded.adapter.n_layers
    per_layer: dict[str, list] = {k: [None] * n_layers for k in ("alpha", "mid", "normed", "ffn_out", "neurons")}
    residual: list = [None] * (n_layers + 1)
    post_scale: list = [None] * n_layers
    adapter = loaded.adapter

    def on_block(cap: BlockCapture) -> None:
        layer = cap.layer
        if layer == 0:
            residual[0] = cap.x_in.cpu().numpy()
        residual[layer + 1] = cap.x_out.cpu().numpy()
        per_layer["alpha"][layer] = cap.alpha.cpu().numpy()
        mid = cap.x_out - cap.ffn_out if cap.x_mid is None else cap.x_mid
        per_layer["mid"][layer] = mid.cpu().numpy()
        scale_fn = getattr(adapter, "attention_post_scale", None)
        raw = getattr(cap, "attn_raw", None)  # [T, d] the attention output before its post-norm
        scale = None if scale_fn is None or raw is None else scale_fn(layer, raw)
        post_scale[layer] = None if scale is None else scale.detach().float().cpu().numpy()
        per_layer["normed"][layer] = cap.normed.cpu().numpy()
        per_layer["ffn_out"][layer] = cap.ffn_out.cpu().numpy()

    handles = []
    for layer in range(n_layers):
        module, _ = down_projection(loaded, layer)

        def on_down(_m, args, layer=layer):
            per_layer["neurons"][layer] = args[0][0].detach().float().cpu().numpy()  # [T, F]

        handles.append(module.register_forward_pre_hook(on_down))
    try:
        logits = run_with_capture(loaded, torch.as_tensor(input_ids, dtype=torch.long), on_block)  # [T, V]
    finally:
        for h in handles:
            h.remove()
    return Internals(residual=np.stack(residual), logits=logits.cpu().numpy(), post_scale=post_scale,
                     **{k: np.stack(v) for k, v in per_layer.items()})


# --- views ------------------------------------------------------------------------------------------------------
def _decode(loaded: LoadedModel, ids) -> list[str]:
    return [loaded.tokenizer.decode([int(i)]) for i in ids]


def logit_lens(loaded: LoadedModel, vector: np.ndarray) -> np.ndarray:
    """Next-token probabilities [V] read off a residual state [d]: softmax(W_U final_norm(x))."""
    with torch.no_grad():
        x = torch.as_tensor(vector, dtype=torch.float32)[None]  # [1, d]
        norm = final_norm(loaded)
        param = next(norm.parameters())
        logits = loaded.model.get_output_embeddings()(norm(x.to(param.device, param.dtype)))[0].float()  # [V]
        return torch.softmax(logits, dim=-1).cpu().numpy()


def lens_view(loaded: LoadedModel, now: np.ndarray, before: np.ndarray | None, k: int = 10) -> list[dict]:
    """Top-k tokens of the logit lens of `now` [d], each with its rank in the lens of `before` (None: no before)."""
    probs = logit_lens(loaded, now)  # [V]
    top = np.argsort(-probs, kind="stable")[:k]
    ranks_before = None
    if before is not None:
        prev = logit_lens(loaded, before)
        order = np.argsort(-prev, kind="stable")
        ranks_before = np.empty_like(order)
        ranks_before[order] = np.arange(order.size)  # token id -> rank (0 = top)
    return [
        {"token": t, "id": int(i), "prob": float(probs[i]), "rank": r,
         "rank_before": None if ranks_before is None else int(ranks_before[i])}
        for r, (i, t) in enumerate(zip(top, _decode(loaded, top)))
    ]


def promoted_tokens(loaded: LoadedModel, vector: np.ndarray, k: int = 8) -> dict[str, list[dict]]:
    """Tokens a component's output [d] promotes and suppresses: the largest / smallest entries of
    W_U (gamma * v), gamma = the final norm's elementwise weight (its centring, scale and bias left out)."""
    with torch.no_grad():
        w_u = unembedding(loaded).detach().float().cpu()  # [V, d]
        v = torch.as_tensor(vector, dtype=torch.float32)
        gamma = getattr(final_norm(loaded), "weight", None)
        if gamma is not None:
            v = v * gamma.detach().float().cpu()
        scores = (w_u @ v).numpy()  # [V]
    order = np.argsort(-scores, kind="stable")

    def rows(ids) -> list[dict]:
        return [{"token": t, "id": int(i), "score": float(scores[i])} for i, t in zip(ids, _decode(loaded, ids))]

    return {"promote": rows(order[:k]), "suppress": rows(order[::-1][:k])}


def head_output(loaded: LoadedModel, internals: Internals, layer: int, head: int, position: int) -> np.ndarray:
    """Head (layer, head)'s write into x^{(layer+1)A}_position, without the block's constant term: [d].

    sum_j alpha[h, p, j] f_h(x_j), f_h(x_j) = (LN(x_j) - beta) W_V W_O^h (eq. 2 of the paper), times the
    linearised post-norm of families that normalise the attention output."""
    adapter = loaded.adapter
    with torch.no_grad():
        normed = torch.as_tensor(internals.normed[layer])  # [T, d]
        ov = adapter.ov_weights(layer)
        beta = adapter.input_norm_bias(layer)
        f, _ = head_values(normed.to(ov.value.device), ov, beta, adapter)  # [H, T, d]
        a = torch.as_tensor(internals.alpha[layer, head, position]).to(f.device)  # [T]
        out = (a @ f[head].float()).cpu().numpy()  # [d]
    scale = internals.post_scale[layer]
    return out if scale is None else out * scale[position]


def top_neurons(loaded: LoadedModel, internals: Internals, layer: int, position: int, k: int = 12) -> dict:
    """FFN neurons of block `layer` at `position` ranked by their contribution to the FFN output y [d].

    Neuron i writes a_i w_i (a_i its activation, w_i its output row); its score is a_i w_i . y / ||y||, the
    length of its projection on y. Scores plus the bias's b . y / ||y|| add up to ||y||."""
    _, w_out = down_projection(loaded, layer)
    w = w_out.detach().float().cpu().numpy()  # [F, d]
    a = internals.neurons[layer, position].astype(np.float64)  # [F]
    y = internals.ffn_out[layer, position].astype(np.float64)  # [d]
    norm = float(np.linalg.norm(y))
    unit = y / norm if norm > 0 else y
    scores = a * (w.astype(np.float64) @ unit)  # [F]
    order = np.argsort(-scores, kind="stable")[:k]
    return {
        "ffn_norm": norm,
        "neurons": [{"neuron": int(i), "activation": float(a[i]), "score": float(scores[i])} for i in order],
    }


def neuron_output(loaded: LoadedModel, internals: Internals, layer: int, position: int, neuron: int) -> np.ndarray:
    """a_i w_i: what neuron `neuron` of block `layer` writes at `position` [d]."""
    _, w_out = down_projection(loaded, layer)
    if not 0 <= neuron < w_out.shape[0]:
        raise FlowroutesError(f"neuron {neuron} is out of range: block {layer} has {w_out.shape[0]} neurons")
    return float(internals.neurons[layer, position, neuron]) * w_out[neuron].detach().float().cpu().numpy()
