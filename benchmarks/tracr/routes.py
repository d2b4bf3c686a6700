"""Step 2 (product venv): the compiled tracr models as transformers GPT-2 models, traced by flowroutes.

A tracr model is a GPT-2-shaped decoder without LayerNorm: token + learned position embeddings, per layer a
multi-head attention (softmax(QK^T / sqrt(d_head)), no biases) then a ReLU MLP, residual connections, and a linear
unembedding. `gpt2_copy` writes tracr's weights (work/<name>/weights.npz, from compile.py) into a
`GPT2LMHeadModel` whose three LayerNorm kinds (ln_1, ln_2, ln_f) are `nn.Identity`, so the copy computes tracr's
function exactly; GPT-2 needs n_embd = n_head * head_dim, so the residual stream gets zero directions and each
head zero columns up to head_dim = max(d_head, ceil(d_model / n_head)) (W_Q scaled by sqrt(head_dim / d_head) so
the scores keep tracr's 1/sqrt(d_head)); zero directions add nothing to any norm eq. 1 takes.

Exactness: the copy's logits at every position equal tracr's own (float32, from its Haiku model) to 1e-5, checked
per input (the program is skipped with the reason if not).

Scores: for every input, the explained output is the last position. An element (component or component edge)
is in the routes at threshold tau iff some route path through it has every edge importance >= tau (routes.py
keeps edges >= tau reached from the top), so its score is the bottleneck (max over paths of the min importance)
of the paths that go through it; ROC AUC over tau is then the AUC of these scores. Computed by dynamic
programming on the trace's arrays and checked against `Trace.routes` at several taus:
- a head: the best path through any of its sub-edges; an MLP: through any of its FFN edges;
- an edge u -> v (the granularity of auto-circuit's graph, Q/K/V of a head merged): a path that goes through u's
  edge into a residual node at position p, then only residual edges at p, then through v's edge out of it (v a
  head reading x_p as a value source or as its query, i.e. a sub-edge into x_p^{lA} together with the residual
  edge x_p^l -> x_p^{lA}; v an MLP reading x_p^{lA}; v = the output reading x^L at the explained position).
  u = the embeddings ("Resid Start") sits at x^0_p with no edge of its own.

Usage: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/tracr/routes.py
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
TOL = 1e-5


def gpt2_copy(w: dict, cfg: dict):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    L, H, k, D, M = cfg["n_layers"], cfg["n_heads"], cfg["d_head"], cfg["d_model"], cfg["d_mlp"]
    dh = max(k, math.ceil(D / H))
    Dp = H * dh
    config = GPT2Config(vocab_size=cfg["d_vocab"], n_positions=cfg["n_ctx"], n_embd=Dp, n_layer=L, n_head=H,
                        n_inner=M, activation_function="relu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        tie_word_embeddings=False, scale_attn_weights=True, attn_implementation="eager",
                        bos_token_id=None, eos_token_id=None, pad_token_id=None)
    model = GPT2LMHeadModel(config).eval()
    t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.transformer.wte.weight[:, :D] = t(w["W_E"])
        model.transformer.wpe.weight[:, :D] = t(w["W_pos"])
        scale = math.sqrt(dh / k)
        for layer, blk in enumerate(model.transformer.h):
            blk.ln_1, blk.ln_2 = torch.nn.Identity(), torch.nn.Identity()
            qkv = blk.attn.c_attn.weight  # Conv1D [Dp, 3 Dp]: x @ W, outputs q | k | v, heads side by side
            for h in range(H):
                for part, (name, s) in enumerate((("W_Q", scale), ("W_K", 1.0), ("W_V", 1.0))):
                    col = part * Dp + h * dh
                    qkv[:D, col:col + k] = t(w[name][layer, h]) * s
                blk.attn.c_proj.weight[h * dh:h * dh + k, :D] = t(w["W_O"][layer, h])
            blk.mlp.c_fc.weight[:D, :] = t(w["W_in"][layer])
            blk.mlp.c_proj.weight[:, :D] = t(w["W_out"][layer])
        model.transformer.ln_f = torch.nn.Identity()
        model.lm_head = torch.nn.Linear(Dp, cfg["d_vocab_out"], bias=False)
        model.lm_head.weight.zero_()
        model.lm_head.weight[:, :D] = t(w["W_U"]).T
    return model


def tokenizer(vocab: dict):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(dict(vocab), unk_token="BOS"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="BOS")


def reach(tr, pos: int):
    """Bottleneck scores from the top node x^L_pos: RX[l, p] for x^l_p (l = 0..L), RA[l, p] for x^{lA}_p."""
    L, T = tr.ffn.shape
    RX = np.zeros((L + 1, T))
    RA = np.zeros((L, T))
    RX[L, pos] = np.inf
    att = tr.attention.astype(np.float64)
    for layer in range(L - 1, -1, -1):
        RA[layer] = np.minimum(RX[layer + 1], np.maximum(tr.ffn[layer], tr.ffn_residual[layer]))
        via_res = np.minimum(RA[layer], tr.attention_residual[layer])
        via_heads = np.minimum(RA[layer][None, :, None], att[layer]).max(axis=(0, 1))  # over heads, targets
        RX[layer] = np.maximum(via_res, via_heads)
    return RX, RA


def scores(tr, pos: int) -> tuple[dict, dict]:
    """(component -> score, (src, dst) -> score) for the explained position."""
    L, H, T, _ = tr.attention.shape
    RX, RA = reach(tr, pos)
    att = tr.attention.astype(np.float64)
    ffn, ffn_res, att_res = (np.asarray(a, dtype=np.float64) for a in (tr.ffn, tr.ffn_residual,
                                                                        tr.attention_residual))
    comp = {}
    through_head = np.minimum(RA[:, None, :, None], att)  # [L, H, p, j]: top -> sub-edge (p <- j)
    for layer in range(L):
        for h in range(H):
            comp[f"A{layer}.{h}"] = float(through_head[layer, h].max())
        comp[f"MLP {layer}"] = float(np.minimum(RX[layer + 1], ffn[layer]).max())

    # nodes along one position, bottom to top: level 2l = x^l, 2l+1 = x^{lA}; the residual edge into level n:
    def res_edge(n: int, p: int) -> float:  # into level n >= 1
        layer = (n - 1) // 2
        return float(att_res[layer, p] if n % 2 == 1 else ffn_res[layer, p])

    # sources: (name, level their contribution lands at, strength of their own edge per position [T])
    sources = [("Resid Start", 0, np.full(T, np.inf))]
    for layer in range(L):
        for h in range(H):
            sources.append((f"A{layer}.{h}", 2 * layer + 1, att[layer, h].max(axis=1)))  # edge into x^{lA}_p
        sources.append((f"MLP {layer}", 2 * layer + 2, ffn[layer]))
    # readers: (name, level they read, strength from the top through their reading edge, per position [T])
    readers = []
    for layer in range(L):
        for h in range(H):
            value = through_head[layer, h].max(axis=0)  # reading x^l_j as a value source
            query = np.minimum(np.minimum(RA[layer], att[layer, h].max(axis=1)), att_res[layer])  # as the query
            readers.append((f"A{layer}.{h}", 2 * layer, np.maximum(value, query)))
        readers.append((f"MLP {layer}", 2 * layer + 1, np.minimum(RX[layer + 1], ffn[layer])))
    top = np.zeros(T)
    top[pos] = np.inf
    readers.append(("Resid End", 2 * L, top))
    edges = {}
    for src, lo, own in sources:
        for dst, hi, top_part in readers:
            if hi < lo:  # v reads below where u writes (a head's own input, or an earlier layer)
                continue
            best = 0.0
            for p in range(T):
                chain = min([res_edge(n, p) for n in range(lo + 1, hi + 1)], default=np.inf)
                best = max(best, min(own[p], chain, top_part[p]))
            edges[(src, dst)] = float(best)
    return comp, edges


def check_against_routes(tr, pos: int, comp: dict) -> int:
    """Active heads and MLPs of `Trace.routes` at several taus equal those whose score is >= tau."""
    n = 0
    for tau in (0.01, 0.05, 0.1, 0.2, 0.3, 0.5):
        r = tr.routes(position=pos, attention_threshold=tau, ffn_threshold=tau)
        heads = {f"A{lh[0]}.{lh[1]}" for lh in r.active_heads}
        mlps = {f"MLP {e.layer}" for e in r.edges if e.kind == "ffn"}
        want = {c for c, s in comp.items() if s >= tau}
        if heads | mlps != want:
            raise SystemExit(f"bottleneck scores disagree with Trace.routes at tau {tau}: {heads | mlps} vs {want}")
        n += 1
    return n


def main() -> None:
    import torch

    import flowroutes

    torch.set_num_threads(1)
    for folder in sorted(p for p in WORK.iterdir() if (p / "meta.json").is_file()):
        meta = json.loads((folder / "meta.json").read_text())
        cfg = meta["config"]
        w = dict(np.load(folder / "weights.npz"))
        model = gpt2_copy(w, cfg)
        loaded = flowroutes.load_model(model, tokenizer=tokenizer(meta["vocab"]))
        out = {"name": meta["name"], "inputs": []}
        t0 = time.perf_counter()
        worst = 0.0
        for row in meta["inputs"]:
            ids = row["ids"]
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ids])).logits[0].numpy()
            diff = float(np.abs(logits - np.array(row["tracr_logits"])).max())
            worst = max(worst, diff)
            tr = flowroutes.trace(loaded, input_ids=ids)
            pos = len(ids) - 1
            comp, edges = scores(tr, pos)
            checked = check_against_routes(tr, pos, comp)
            out["inputs"].append({"tokens": row["tokens"], "max_abs_logit_diff": diff, "components": comp,
                                  "edges": [[s, d, v] for (s, d), v in edges.items()], "routes_checked": checked,
                                  "n_degenerate": int(tr.n_degenerate)})
        out["max_abs_logit_diff"] = worst
        out["exact"] = worst <= TOL
        out["seconds"] = round(time.perf_counter() - t0, 2)
        (folder / "routes.json").write_text(json.dumps(out))
        print(f"{meta['name']}: max |logit - tracr| = {worst:.2e} ({'exact' if out['exact'] else 'NOT exact'}); "
              f"{len(out['inputs'])} traces in {out['seconds']} s")


if __name__ == "__main__":
    main()
