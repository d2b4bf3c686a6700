"""The paper's equations applied to a capture with weights sliced independently of the adapters.

Eq. 1 is `flowroutes.reference` (the package's literal float64 path); this module rebuilds f_h(x_j) from the
module weights with its own slicing (not the adapter's `ov_weights`), so that an adapter that reads the wrong
weights is caught as well.
"""

from __future__ import annotations

import numpy as np

from flowroutes import reference


def ov_matrices(model, layer: int):
    """Per-head (W_V, b_V, W_O, b_O, beta) as float64 numpy, x @ W convention, sliced independently."""
    mt = model.config.model_type
    if mt == "gpt2":
        block = model.transformer.h[layer]
        d = model.config.n_embd
        h = model.config.n_head
        dh = d // h
        w = block.attn.c_attn.weight.detach().double().numpy()
        b = block.attn.c_attn.bias.detach().double().numpy()
        wo = block.attn.c_proj.weight.detach().double().numpy()
        heads = []
        for i in range(h):
            cols = slice(2 * d + i * dh, 2 * d + (i + 1) * dh)
            heads.append((w[:, cols], b[cols], wo[i * dh:(i + 1) * dh, :]))
        return heads, block.attn.c_proj.bias.detach().double().numpy(), block.ln_1.bias.detach().double().numpy()
    attn = model.model.layers[layer].self_attn
    cfg = model.config
    h, kv = cfg.num_attention_heads, cfg.num_key_value_heads
    dh = cfg.hidden_size // h
    wv = attn.v_proj.weight.detach().double().numpy()  # [kv*dh, d]
    bv = attn.v_proj.bias.detach().double().numpy() if attn.v_proj.bias is not None else np.zeros(kv * dh)
    wo = attn.o_proj.weight.detach().double().numpy()  # [d, h*dh]
    heads = []
    for i in range(h):
        g = i // (h // kv)
        heads.append((wv[g * dh:(g + 1) * dh, :].T, bv[g * dh:(g + 1) * dh], wo[:, i * dh:(i + 1) * dh].T))
    bo = attn.o_proj.bias.detach().double().numpy() if attn.o_proj.bias is not None else np.zeros(wo.shape[0])
    return heads, bo, None


def eq1(parts: list[np.ndarray], y: np.ndarray) -> np.ndarray:
    """Eq. 1 literally, in float64 (`flowroutes.reference.importances`); equal shares when every proximity is 0."""
    return reference.importances(parts, y)[0]


def reference_layer(model, cap, positions=None):
    """float64 (attention [H,T,T], attention_residual [T], ffn [T], ffn_residual [T]) for one captured block."""
    heads, _bo, beta = ov_matrices(model, cap.layer)
    normed = cap.normed.double().numpy()
    lin = normed - beta if beta is not None else normed
    alpha = cap.alpha.double().numpy()
    x_in, y = cap.x_in.double().numpy(), cap.x_mid.double().numpy()
    n_heads, n_tok = len(heads), normed.shape[0]
    f = np.stack([lin @ wv @ wo for wv, _bv, wo in heads])  # [H, T, d]
    att = np.zeros((n_heads, n_tok, n_tok))
    res = np.zeros(n_tok)
    for p in range(n_tok) if positions is None else positions:
        parts = [alpha[h, p, j] * f[h, j] for h in range(n_heads) for j in range(p + 1)] + [x_in[p]]
        imp = eq1(parts, y[p])
        att[:, p, : p + 1] = imp[:-1].reshape(n_heads, p + 1)
        res[p] = imp[-1]
    x_mid, ffn_out, x_out = cap.x_mid.double().numpy(), cap.ffn_out.double().numpy(), cap.x_out.double().numpy()
    ffn = np.zeros(n_tok)
    ffn_res = np.zeros(n_tok)
    for p in range(n_tok):
        ffn[p], ffn_res[p] = eq1([ffn_out[p], x_mid[p]], x_out[p])
    return att, res, ffn, ffn_res
