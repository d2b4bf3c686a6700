"""The public inspection API: what a Trace does not hold, read from one captured forward pass: attention
weights, residual states, head outputs, FFN neuron activations, logit lens, direct logit attribution and
projections onto the unembedding. The explorer uses it; nothing here knows about web requests.

Model-specific lookups (final norm, unembedding, FFN down projection) come from the family adapter.
Never computes importances (the Trace does).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from . import deadline
from .capture import BlockCapture, run_with_capture
from .errors import FlowroutesError
from .importance import head_values
from .models.loading import LoadedModel


# --- captured internals of one prompt ---------------------------------------------------------------------------
@dataclass
class Internals:
    """One forward pass's states, float32 numpy. L layers, H heads, T tokens, d model width, F = d_ff."""

    alpha: np.ndarray  # [L, H, T, T] attention weights alpha[l, h, p, j]
    residual: np.ndarray  # [L+1, T, d] x^l_p (0 = embeddings, L = top)
    mid: np.ndarray  # [L, T, d]   x^{lA}_p, after block l's attention (parallel blocks: x^{l+1}_p - FFN)
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
        module, _ = loaded.adapter.down_projection(layer)

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
def logit_lens(loaded: LoadedModel, vector: np.ndarray, normalize: bool = True) -> np.ndarray:
    """Next-token probabilities [V] read off a residual state [d]: softmax(W_U final_norm(x)) (normalize=False:
    softmax(W_U x), without the final norm)."""
    with torch.no_grad():
        head = loaded.adapter.unembedding_module()
        param = head.weight
        x = torch.as_tensor(vector, dtype=torch.float32)[None].to(param.device, param.dtype)  # [1, d]
        if normalize:
            x = loaded.adapter.final_norm()(x)
        logits = head(x)[0].float()  # [V]
        return torch.softmax(logits, dim=-1).cpu().numpy()


def lens_view(loaded: LoadedModel, now: np.ndarray, before: np.ndarray | None, k: int = 10,
              normalize: bool = True) -> list[dict]:
    """Top-k tokens of the logit lens of `now` [d], each with its rank in the lens of `before` (None: no before)."""
    probs = logit_lens(loaded, now, normalize)  # [V]
    top = np.argsort(-probs, kind="stable")[:k]
    ranks_before = None
    if before is not None:
        prev = logit_lens(loaded, before, normalize)
        order = np.argsort(-prev, kind="stable")
        ranks_before = np.empty_like(order)
        ranks_before[order] = np.arange(order.size)  # token id -> rank (0 = top)
    return [
        {"token": token_bytes(loaded, int(i)), "id": int(i), "prob": float(probs[i]), "rank": r,
         "rank_before": None if ranks_before is None else int(ranks_before[i])}
        for r, i in enumerate(top)
    ]


def promoted_tokens(loaded: LoadedModel, vector: np.ndarray, k: int = 8, normalize: bool = True) -> dict:
    """Tokens a component's output [d] promotes and suppresses: the largest / smallest entries of
    W_U (gamma * v), gamma = the final norm's elementwise weight (its centring, scale and bias left out);
    normalize=False: of W_U v."""
    with torch.no_grad():
        w_u = loaded.adapter.unembedding().detach().float().cpu()  # [V, d]
        v = torch.as_tensor(vector, dtype=torch.float32)
        gamma = getattr(loaded.adapter.final_norm(), "weight", None) if normalize else None
        if gamma is not None:
            v = v * gamma.detach().float().cpu()
        scores = (w_u @ v).numpy()  # [V]
    order = np.argsort(-scores, kind="stable")

    def rows(ids) -> list[dict]:
        return [{"token": token_bytes(loaded, int(i)), "id": int(i), "score": float(scores[i])} for i in ids]

    return {"promote": rows(order[:k]), "suppress": rows(order[::-1][:k])}


def head_output(loaded: LoadedModel, internals: Internals, layer: int, head: int, position: int) -> np.ndarray:
    """Head (layer, head)'s write into x^{lA}_position (l = layer), without the block's constant term: [d].

    sum_j alpha[h, p, j] f_h(x_j), f_h(x_j) = (LN(x_j) - beta) W_V W_O^h (eq. 2 of the paper), times the
    linearised post-norm of families that normalise the attention output."""
    adapter = loaded.adapter
    with torch.no_grad():
        normed = torch.as_tensor(internals.normed[layer])  # [T, d]
        ov = adapter.ov_weights(layer)
        beta = adapter.input_norm_bias(layer)
        f, _ = head_values(normed.to(ov.value.device), ov, beta, adapter.kv_heads)  # [H, T, d]
        a = torch.as_tensor(internals.alpha[layer, head, position]).to(f.device)  # [T]
        out = (a @ f[head].float()).cpu().numpy()  # [d]
    scale = internals.post_scale[layer]
    return out if scale is None else out * scale[position]


def top_neurons(loaded: LoadedModel, internals: Internals, layer: int, position: int, k: int = 12) -> dict:
    """FFN neurons of block `layer` at `position` ranked by their contribution to the FFN output y [d].

    Neuron i writes a_i w_i (a_i its activation, w_i its output row); its score is a_i w_i . y / ||y||, the
    length of its projection on y. Scores plus the bias's b . y / ||y|| add up to ||y||."""
    _, w_out = loaded.adapter.down_projection(layer)
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
    _, w_out = loaded.adapter.down_projection(layer)
    if not 0 <= neuron < w_out.shape[0]:
        raise FlowroutesError(f"neuron {neuron} is out of range: block {layer} has {w_out.shape[0]} neurons")
    return float(internals.neurons[layer, position, neuron]) * w_out[neuron].detach().float().cpu().numpy()


# --- explaining any token: logit lens chart and direct logit attribution ------------------------------------------
def target_direction(loaded: LoadedModel, target: int, other: int | None = None) -> np.ndarray:
    """The unembedding row of `target` [d], or the difference of the rows of `target` and `other`."""
    w_u = loaded.adapter.unembedding().detach().float().cpu().numpy()  # [V, d]
    return w_u[target] - (w_u[other] if other is not None else 0.0)


def final_norm_linear(loaded: LoadedModel, top: np.ndarray) -> tuple[bool, np.ndarray, np.ndarray]:
    """The final norm linearised at its own scale at the top residual x^L_p [d]: (centred, diag [d], bias [d]),
    so that N(x^L_p) = diag * P(x^L_p) + bias, P centring (LayerNorm) or the identity (RMSNorm), as the adapter
    says the family's norms are (`Adapter.centred_norms`, `Adapter.norm_offset`). Checked against the norm itself:
    a norm of another kind is refused rather than approximated."""
    adapter = loaded.adapter
    norm = adapter.final_norm()
    centred = bool(adapter.centred_norms)
    eps = getattr(norm, "eps", None)
    if eps is None:
        eps = getattr(norm, "variance_epsilon", 1e-6)
    x = top.astype(np.float64)
    px = x - x.mean() if centred else x
    sigma = float(np.sqrt((px ** 2).mean() + float(eps)))
    weight = getattr(norm, "weight", None)
    gain = np.ones_like(x) if weight is None else weight.detach().double().cpu().numpy() + adapter.norm_offset
    bias = getattr(norm, "bias", None)
    b = np.zeros_like(x) if bias is None else bias.detach().double().cpu().numpy()
    diag = gain / sigma
    with torch.no_grad():
        param = next(norm.parameters(), None)
        want = norm(torch.as_tensor(top, dtype=torch.float32)[None].to(
            param.device if param is not None else "cpu"))[0].double().cpu().numpy()
    if not np.allclose(diag * px + b, want, rtol=1e-3, atol=1e-3 * (np.abs(want).max() + 1e-6)):
        raise FlowroutesError(f"the final norm ({type(norm).__name__}) is neither a LayerNorm nor an RMSNorm as "
                              f"the {adapter.family} adapter describes it: direct logit attribution is not "
                              "available for this model")
    return centred, diag, b


def head_outputs_at(loaded: LoadedModel, internals: Internals, layer: int,
                    position: int) -> tuple[np.ndarray, np.ndarray]:
    """(every head's write into x^{lA}_position (as `head_output`) [H, d], the attention block's constant [d])."""
    adapter = loaded.adapter
    with torch.no_grad():
        normed = torch.as_tensor(internals.normed[layer])  # [T, d]
        ov = adapter.ov_weights(layer)
        f, const = head_values(normed.to(ov.value.device), ov, adapter.input_norm_bias(layer),
                               adapter.kv_heads)  # [H, T, d]
        a = torch.as_tensor(internals.alpha[layer, :, position]).to(f.device)  # [H, T]
        out = torch.einsum("ht,htd->hd", a.float(), f.float()).cpu().numpy()  # [H, d]
        const = const.float().reshape(-1).cpu().numpy()
    scale = internals.post_scale[layer]
    if scale is not None:
        out, const = out * scale[position], const * scale[position]
    return out, const


def direct_logit_attribution(loaded: LoadedModel, internals: Internals, position: int, direction: np.ndarray) -> dict:
    """Each component's direct effect on the logit (or logit difference) of `direction` [d] at `position`: its
    output through the final norm linearised at its own scale (at x^L_position), dotted with `direction`.

    heads [L][H], ffn [L], attention constants [L] (biases of the attention block), embeddings (x^0), and bias
    (the final norm's bias); these add up to the logit read off x^L (tested) up to the unembedding's own bias."""
    n_layers = internals.alpha.shape[0]
    centred, diag, b = final_norm_linear(loaded, internals.residual[n_layers, position])
    u = diag * direction.astype(np.float64)  # [d]: the linear map's transpose applied to the direction

    def score(v: np.ndarray) -> np.ndarray:  # [..., d] -> [...]
        v = v.astype(np.float64)
        if centred:
            v = v - v.mean(axis=-1, keepdims=True)
        return v @ u

    heads, ffn, consts = [], [], []
    for layer in range(n_layers):
        outs, const = head_outputs_at(loaded, internals, layer, position)
        heads.append(score(outs).tolist())
        consts.append(float(score(const)))
        ffn.append(float(score(internals.ffn_out[layer, position])))
    return {"heads": heads, "ffn": ffn, "attention_constant": consts,
            "embedding": float(score(internals.residual[0, position])), "bias": float(b @ direction)}


def lens_chart(loaded: LoadedModel, internals: Internals, position: int, target: int, other: int | None = None,
               normalize: bool = True) -> list[dict]:
    """Per residual state x^0..x^L (and after each attention, x^{lA}) at `position`: the target's probability
    and rank in the logit lens, its logit (or the logit difference with `other`). normalize=False skips the
    final norm (raw W_U x)."""
    rows = []
    n_layers = internals.alpha.shape[0]
    states = []
    for layer in range(n_layers + 1):
        states.append(("residual", layer, internals.residual[layer, position]))
        if layer < n_layers:
            states.append(("attention", layer, internals.mid[layer, position]))
    vecs = np.stack([s[2] for s in states])  # [S, d]
    with torch.no_grad():
        x = torch.as_tensor(vecs, dtype=torch.float32)
        if normalize:
            norm = loaded.adapter.final_norm()
            param = next(norm.parameters(), None)
            x = norm(x.to(param.device, param.dtype) if param is not None else x)
        logits = loaded.adapter.unembedding_module()(x.to(next(loaded.model.parameters()).device)).float().cpu()
        probs = torch.softmax(logits, dim=-1).numpy()
        logits = logits.numpy()
    for (kind, layer, _), lg, pr in zip(states, logits, probs):
        rank = int((pr > pr[target]).sum())
        row = {"kind": kind, "layer": layer, "prob": float(pr[target]), "rank": rank, "logit": float(lg[target])}
        if other is not None:
            row["difference"] = float(lg[target] - lg[other])
            row["prob_other"] = float(pr[other])
        rows.append(row)
    return rows


def token_display(loaded: LoadedModel, ids) -> list[str]:
    """What to show for each token: its text, with characters that span several tokens (emoji, CJK in byte-level
    BPE or byte-fallback pieces) shown whole, each of their tokens marked '(1/3)'-style. A token that no run of up
    to `MAX_CHARACTER_TOKENS` tokens makes whole is shown as its bytes (`token_bytes`). A U+FFFD that the text
    itself holds is a whole character and is shown as one. At most `MAX_CHARACTER_TOKENS` byte joins per token."""
    tok = loaded.tokenizer
    ids = [int(i) for i in ids]
    texts = [tok.decode([i]) for i in ids]
    pieces = [None if "\ufffd" not in t else _piece_bytes(tok, i) for t, i in zip(texts, ids)]
    out = list(texts)
    p = 0
    while p < len(ids):
        deadline.check()
        n, text = _whole_run(texts, pieces, p)
        if n == 0:  # no run from p ends on a character boundary: its bytes
            out[p] = _bytes_label(pieces[p], tok, ids[p])
            n = 1
        elif n > 1:
            out[p:p + n] = [f"{text}({k + 1}/{n})" for k in range(n)]
        p += n
    return out


MAX_CHARACTER_TOKENS = 8  # a UTF-8 character has at most 4 bytes; byte-fallback pieces can split it no further


def _whole_run(texts: list[str], pieces: list[bytes | None], p: int) -> tuple[int, str]:
    """(n, text) of the shortest run of tokens p..p+n-1 whose bytes end on a character boundary (n = 1 for a token
    whose text is whole), or (0, "") when none of up to MAX_CHARACTER_TOKENS tokens does."""
    if pieces[p] is None and "\ufffd" not in texts[p]:
        return 1, texts[p]
    data = b""
    for n in range(1, min(MAX_CHARACTER_TOKENS, len(texts) - p) + 1):
        piece = pieces[p + n - 1] if pieces[p + n - 1] is not None else texts[p + n - 1].encode("utf-8")
        if pieces[p + n - 1] is None and "\ufffd" in texts[p + n - 1]:
            return 0, ""  # bytes this tokenizer does not tell: no run through it can be checked
        data += piece
        try:
            return n, data.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return 0, ""


def token_bytes(loaded: LoadedModel, token: int) -> str:
    """One token as text; a token that is part of a character is shown as the whole characters it holds and
    its other bytes in hex ('<E2 80>'), or as its raw form when the tokenizer does not tell its bytes."""
    tok = loaded.tokenizer
    text = tok.decode([int(token)])
    if "\ufffd" not in text:
        return text
    return _bytes_label(_piece_bytes(tok, int(token)), tok, int(token))


_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _piece_bytes(tok, token: int) -> bytes | None:
    """The UTF-8 bytes a token stands for: a byte-fallback piece '<0xE2>', or a byte-level BPE token (GPT-2's
    byte alphabet); None when the tokenizer's piece is neither."""
    raw = tok.convert_ids_to_tokens(int(token))
    if not isinstance(raw, str):
        return None
    byte = _BYTE_PIECE.fullmatch(raw)
    if byte is not None:
        return bytes([int(byte.group(1), 16)])
    try:
        return bytes(_UNICODE_TO_BYTE[c] for c in raw)
    except KeyError:
        return None


def _bytes_label(data: bytes | None, tok, token: int) -> str:
    """Whole characters of `data` as text, the bytes of partial ones in hex: b' \xe2\x80' -> ' <E2 80>'."""
    if not data:
        return f"<{tok.convert_ids_to_tokens(int(token))}>"
    text, stray = [], []
    for chunk in data.decode("utf-8", errors="surrogateescape"):
        if "\udc80" <= chunk <= "\udcff":  # a byte that is not part of a whole character
            stray.append(f"{ord(chunk) - 0xDC00:02X}")
        else:
            if stray:
                text.append("<" + " ".join(stray) + ">")
                stray = []
            text.append(chunk)
    if stray:
        text.append("<" + " ".join(stray) + ">")
    return "".join(text)


def _byte_level_alphabet() -> dict[str, int]:
    """Byte-level BPE's printable character for each byte (GPT-2's table), inverted: character -> byte."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


_UNICODE_TO_BYTE = _byte_level_alphabet()
