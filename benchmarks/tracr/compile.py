"""Step 1 (peers venv): compile the RASP programs with tracr and write what the other steps read.

For each program, `work/<name>/`:
- `weights.npz`: tracr's own parameters (token/position embeddings, per layer W_Q, W_K, W_V, W_O of every head and
  the MLP's two matrices; tracr's biases are all zero and are checked to be) and the unembedding W_U
  (the projection of the residual stream onto the output space, what tracr's `unembed` multiplies by before its
  argmax);
- `meta.json`: the configuration, the residual basis labels, the input vocabulary, the inputs (ids, BOS first),
  tracr's own logits for every input (float32, computed by tracr's Haiku model), what the RASP program evaluates
  to, and the ground-truth circuit (see `ground_truth`).

Every model is compiled with `causal=True`: flowroutes traces decoder (causally masked) transformers. The explained
output is the prediction at the last position, which in a causal model sees the whole input. A program whose
last-position output needs attention to later positions (sort) is compiled both ways and reported as not
expressible (its causal model no longer computes the program).

Usage: benchmarks/peers/.venv/bin/python benchmarks/tracr/compile.py [--n 16]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
BOS = "BOS"


def programs():
    """name -> (RASP program, vocabulary, max_seq_len, input sampler(rng) -> list of tokens, description)."""
    from tracr.compiler import lib
    from tracr.rasp import rasp

    def draw(vocab, n, unique=False):
        def sample(rng):
            return rng.sample(sorted(vocab), n) if unique else [rng.choice(sorted(vocab)) for _ in range(n)]
        return sample

    is_x = rasp.numerical(rasp.Map(lambda t: t == "x", rasp.tokens)).named("is_x")
    out = {
        "reverse": (lib.make_reverse(rasp.tokens), {"a", "b", "c"}, 5, draw({"a", "b", "c"}, 5),
                    "reverse(tokens); last position = first token"),
        "frac_prevs": (lib.make_frac_prevs(is_x), {"w", "x", "y", "z"}, 5, draw({"w", "x", "y", "z"}, 5),
                       "fraction of tokens so far that are 'x' (numerical output)"),
        "hist": (lib.make_hist(), {"a", "b", "c", "d"}, 5, draw({"a", "b", "c", "d"}, 5),
                 "histogram: how many tokens equal this one"),
        "shuffle_dyck": (lib.make_shuffle_dyck(["()"]), {"(", ")"}, 6, draw({"(", ")"}, 6),
                         "shuffle-Dyck-1: 1 when the parentheses are balanced"),
        "sort": (lib.make_sort_unique(rasp.tokens, rasp.tokens), {1, 2, 3, 4, 5}, 5,
                 draw({1, 2, 3, 4, 5}, 5, unique=True), "sort unique tokens; last position = largest token"),
    }
    return out


def flat_params(params) -> dict[str, np.ndarray]:
    return {f"{module}/{name}": np.asarray(value, dtype=np.float32)
            for module, inner in params.items() for name, value in inner.items()}


def unembedding(model, out_label: str, categorical: bool) -> np.ndarray:
    """W_U [D, V_out]: tracr's `project(residual_space, output_space)`, rebuilt from the residual basis labels in the
    output encoder's id order (checked against tracr's decoded outputs by the caller)."""
    labels = model.residual_labels
    if not categorical:
        w = np.zeros((len(labels), 1), dtype=np.float32)
        w[labels.index(out_label), 0] = 1.0
        return w
    enc = model.output_encoder.encoding_map  # value -> id
    w = np.zeros((len(labels), len(enc)), dtype=np.float32)
    for value, idx in enc.items():
        w[labels.index(f"{out_label}:{value}"), idx] = 1.0
    return w


def split_weights(p: dict[str, np.ndarray], cfg: dict) -> dict[str, np.ndarray]:
    """tracr's fused layouts -> per-head arrays: W_Q/W_K/W_V [L, H, D, k], W_O [L, H, k, D], W_in [L, D, M],
    W_out [L, M, D]; W_E [V_in, D], W_pos [T, D]."""
    L, H, k = cfg["n_layers"], cfg["n_heads"], cfg["d_head"]
    out: dict[str, list] = {n: [] for n in ("W_Q", "W_K", "W_V", "W_O", "W_in", "W_out")}
    for layer in range(L):
        pre = f"transformer/layer_{layer}"
        for name, key in (("W_Q", "query"), ("W_K", "key"), ("W_V", "value")):
            w = p[f"{pre}/attn/{key}/w"]  # [D, H*k]
            out[name].append(w.reshape(w.shape[0], H, k).transpose(1, 0, 2))
        out["W_O"].append(p[f"{pre}/attn/linear/w"].reshape(H, k, -1))
        out["W_in"].append(p[f"{pre}/mlp/linear_1/w"])
        out["W_out"].append(p[f"{pre}/mlp/linear_2/w"])
        for key in ("attn/query", "attn/key", "attn/value", "attn/linear", "mlp/linear_1", "mlp/linear_2"):
            b = p.get(f"{pre}/{key}/b")
            if b is not None and np.any(b != 0):
                raise SystemExit(f"{pre}/{key} has a nonzero bias: this script assumes tracr's zero biases")
    arrays = {n: np.stack(v) for n, v in out.items()}
    arrays["W_E"] = p["token_embed/embeddings"]
    arrays["W_pos"] = p["pos_embed/embeddings"]
    return arrays


def ground_truth(w: dict[str, np.ndarray], labels: list[str]) -> dict:
    """The compiled circuit, from the weights (the residual basis is tracr's named basis directions):
    a component *reads* the residual directions where its input matrices (W_Q, W_K, W_V of a head, W_in of the MLP)
    have a nonzero row, and *writes* the directions where its output matrix (W_O of the head, W_out) has a nonzero
    column. The embedding writes the token, position and 'one' directions; the output reads the program's output
    directions (the nonzero rows of W_U). Edge u -> v when u comes before v and writes a direction v reads. The
    circuit is every edge on a path into the output (the program's computation graph for the explained output);
    its components are the heads and MLPs on those edges. Padding heads and empty MLP slots (all-zero weights)
    are in no edge."""
    L, H = w["W_Q"].shape[:2]
    nz = lambda a, axis: set(np.nonzero(np.any(a != 0, axis=axis))[0].tolist())  # noqa: E731
    nodes = []  # (name, order, reads, writes); order: position in the forward pass
    emb = np.concatenate([w["W_E"], w["W_pos"]], 0)
    nodes.append(("Resid Start", -1.0, set(), nz(emb, 0)))
    for layer in range(L):
        for h in range(H):
            reads = nz(w["W_Q"][layer, h], 1) | nz(w["W_K"][layer, h], 1) | nz(w["W_V"][layer, h], 1)
            nodes.append((f"A{layer}.{h}", layer, reads, nz(w["W_O"][layer, h], 0)))
        nodes.append((f"MLP {layer}", layer + 0.5, nz(w["W_in"][layer], 1), nz(w["W_out"][layer], 0)))
    nodes.append(("Resid End", L + 1.0, nz(w["W_U"], 1), set()))
    edges = {}
    for src, so, _, writes in nodes:
        for dst, do, reads, _ in nodes:
            if do > so and writes & reads:
                edges[(src, dst)] = sorted(labels[i] for i in writes & reads)
    keep = {"Resid End"}
    changed = True
    while changed:  # backwards reachability from the output
        changed = False
        for src, dst in edges:
            if dst in keep and src not in keep:
                keep.add(src)
                changed = True
    circuit = {e: d for e, d in edges.items() if e[1] in keep}
    comps = sorted({n for e in circuit for n in e} - {"Resid Start", "Resid End"})
    roles = {n: sorted({labels[i].split(":")[0] for i in writes})
             for n, _, _, writes in nodes if n in comps}
    return {"components": comps, "edges": [[s, d, dirs] for (s, d), dirs in sorted(circuit.items())],
            "writes": roles,
            "how": "weights: u -> v iff u writes a residual direction v reads; edges on a path into the output"}


def tracr_logits(model, ids: list[int], w_u: np.ndarray) -> np.ndarray:
    import jax.numpy as jnp

    out = model.forward(model.params, jnp.array([ids]))
    final = np.asarray(out.transformer_output.output[0], dtype=np.float32)  # no layer norm: the residual stream
    return final @ w_u, np.asarray(out.unembedded_output[0])


def compile_one(name, program, vocab, max_seq_len, sample, desc, n, causal, seed=0):
    from tracr.compiler import compiling
    from tracr.rasp import rasp

    model = compiling.compile_rasp_to_model(program, vocab=vocab, max_seq_len=max_seq_len, compiler_bos=BOS,
                                            causal=causal)
    c = model.model_config
    categorical = model.output_encoder is not None and hasattr(model.output_encoder, "encoding_map")
    cfg = {"n_layers": int(c.num_layers), "n_heads": int(c.num_heads), "d_head": int(c.key_size),
           "d_mlp": int(c.mlp_hidden_size), "d_model": len(model.residual_labels), "causal": causal,
           "n_ctx": max_seq_len + 1, "categorical": categorical}
    w = split_weights(flat_params(model.params), cfg)
    w["W_U"] = unembedding(model, program.label, categorical)
    cfg["d_vocab"] = int(w["W_E"].shape[0])
    cfg["d_vocab_out"] = int(w["W_U"].shape[1])
    enc = model.input_encoder.encoding_map
    rng = random.Random(seed)
    seen, inputs = set(), []
    for _ in range(2000):  # distinct inputs
        toks = sample(rng)
        if tuple(toks) not in seen:
            seen.add(tuple(toks))
            inputs.append(toks)
        if len(inputs) == n:
            break
    rows = []
    for toks in inputs:
        ids = model.input_encoder.encode([BOS] + toks)
        logits, unembedded = tracr_logits(model, ids, w["W_U"])
        want = rasp.evaluate(program, toks)
        got = model.apply([BOS] + toks).decoded[1:]
        mine = (logits.argmax(-1) if categorical else logits[:, 0])
        if categorical:  # our W_U reproduces tracr's argmax (in the encoder's id order)
            assert np.array_equal(mine, unembedded), (name, mine, unembedded)
        else:
            assert np.allclose(mine, unembedded, atol=1e-6), (name, mine, unembedded)
        last_ok = (got[-1] == want[-1]) if categorical else abs(float(got[-1]) - float(want[-1])) < 1e-2
        rows.append({"tokens": [str(t) for t in toks], "ids": [int(i) for i in ids],
                     "rasp": [str(v) for v in want], "tracr": [str(v) for v in got],
                     "last_correct": bool(last_ok), "tracr_logits": logits.tolist()})
    vocab_map = {str(k): int(v) for k, v in enc.items()}
    out_map = ({str(k): int(v) for k, v in model.output_encoder.encoding_map.items()} if categorical else None)
    return model, cfg, w, rows, vocab_map, out_map


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16, help="inputs per program")
    ap.add_argument("--only", default="", help="comma list of programs (default: all)")
    args = ap.parse_args()
    import jax

    jax.config.update("jax_platform_name", "cpu")
    for name, (program, vocab, max_len, sample, desc) in programs().items():
        if args.only and name not in args.only.split(","):
            continue
        model, cfg, w, rows, vocab_map, out_map = compile_one(name, program, vocab, max_len, sample, desc, args.n,
                                                              causal=True)
        meta = {"name": name, "description": desc, "config": cfg, "residual_labels": model.residual_labels,
                "vocab": vocab_map, "output_vocab": out_map, "bos": BOS, "inputs": rows,
                "ground_truth": ground_truth(w, model.residual_labels),
                "last_correct": sum(r["last_correct"] for r in rows)}
        if name == "sort":  # tracr's default (bidirectional) model of the same program, for the exactness report
            *_, rows_bi, _, _ = compile_one(name, program, vocab, max_len, sample, desc, args.n, causal=False)
            meta["bidirectional"] = {"last_correct": sum(r["last_correct"] for r in rows_bi),
                                     "max_logit_diff_vs_causal": float(max(
                                         np.abs(np.array(a["tracr_logits"]) - np.array(b["tracr_logits"])).max()
                                         for a, b in zip(rows, rows_bi)))}
        folder = WORK / name
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "weights.npz", **w)
        (folder / "meta.json").write_text(json.dumps(meta, indent=1))
        gt = meta["ground_truth"]
        print(f"{name}: {cfg['n_layers']} layers x {cfg['n_heads']} heads, d_model {cfg['d_model']}, d_head "
              f"{cfg['d_head']}, d_mlp {cfg['d_mlp']}; circuit: {len(gt['components'])} components, "
              f"{len(gt['edges'])} edges; causal model right at the last position on {meta['last_correct']}/"
              f"{len(rows)} inputs" + (f"; bidirectional {meta['bidirectional']['last_correct']}/{len(rows)}"
                                      if "bidirectional" in meta else ""))


if __name__ == "__main__":
    main()
