"""Step 3 (peers venv): auto-circuit's EAP and ACDC on the same compiled tracr models and outputs.

Each model is rebuilt as a TransformerLens 2.9 `HookedTransformer` from tracr's weights (work/<name>/weights.npz:
normalization_type=None, ReLU MLPs, causal attention, zero biases); its logits must equal tracr's own to 1e-5.
auto-circuit's factorised edge graph (every head's Q, K and V inputs apart, MLPs, embeddings "Resid Start", output
"Resid End") is scored at the last position (slice_output="last_seq"), the explained output of the routes:
- EAP: auto-circuit's mask-gradient EAP, |d metric / d edge mask| with the metric the logit of the program's
  output at the last position (for frac_prevs, the numerical output itself);
- ACDC: auto-circuit's `acdc_prune_scores` over its default 20 thresholds (1,3,5,7,9 x 10^-5..10^-2), KL
  divergence (MSE for the numerical output); an edge's score is the largest threshold it survives.
Both with the two usual ablations: "resample" (each input patched with the next input's activations, the inputs
all of one length) and "zero" (ablated edges carry zeros; the ACDC paper's tracr setting). Q/K/V edges into a
head are merged (max) to compare with the routes, which have one edge per head.

Usage: benchmarks/peers/.venv/bin/python benchmarks/tracr/peers.py
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
TOL = 1e-5
os.environ.setdefault("WANDB_MODE", "disabled")


def hooked(w: dict, cfg: dict):
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    c = HookedTransformerConfig(n_layers=cfg["n_layers"], d_model=cfg["d_model"], d_head=cfg["d_head"],
                                n_heads=cfg["n_heads"], d_mlp=cfg["d_mlp"], d_vocab=cfg["d_vocab"],
                                d_vocab_out=cfg["d_vocab_out"], n_ctx=cfg["n_ctx"], act_fn="relu",
                                normalization_type=None, attention_dir="causal", default_prepend_bos=False,
                                device="cpu", seed=0)
    model = HookedTransformer(c)
    t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embed.W_E.copy_(t(w["W_E"]))
        model.pos_embed.W_pos.copy_(t(w["W_pos"]))
        for layer, blk in enumerate(model.blocks):
            for name in ("W_Q", "W_K", "W_V", "W_O"):
                getattr(blk.attn, name).copy_(t(w[name][layer]))
            blk.mlp.W_in.copy_(t(w["W_in"][layer]))
            blk.mlp.W_out.copy_(t(w["W_out"][layer]))
        model.unembed.W_U.copy_(t(w["W_U"]))
    model.eval()
    return model


def patchable(model):
    import torch
    from auto_circuit.utils.graph_utils import patchable_model

    model.set_use_attn_result(True)
    model.set_use_split_qkv_input(True)
    model.set_use_hook_mlp_in(True)
    for p in model.parameters():
        p.requires_grad_(False)
    return patchable_model(model, factorized=True, slice_output="last_seq", separate_qkv=True,
                           device=torch.device("cpu"))


def loader(meta: dict, categorical: bool):
    import torch
    from auto_circuit.data import PromptDataLoader, PromptDataset

    rows = meta["inputs"]
    clean = torch.tensor([r["ids"] for r in rows])
    corrupt = torch.roll(clean, -1, dims=0)  # resample: the next input
    answers = [torch.tensor([int(np.argmax(r["tracr_logits"][-1])) if categorical else 0]) for r in rows]
    wrong = [torch.tensor([int(np.argmax(rows[(i + 1) % len(rows)]["tracr_logits"][-1])) if categorical else 0])
             for i in range(len(rows))]
    return PromptDataLoader(PromptDataset(clean, corrupt, answers, wrong), seq_len=None, diverge_idx=0,
                            batch_size=len(rows), shuffle=False)


def merged(model, scores: dict, transform) -> dict:
    """(src, dst) -> score, the Q/K/V inputs of a head merged by max."""
    out: dict = {}
    for edge in model.edges:
        s = transform(float(scores[edge.dest.module_name][edge.patch_idx]))
        dst = edge.dest.name
        for suffix in (".Q", ".K", ".V"):
            if dst.endswith(suffix):
                dst = dst[: -len(suffix)]
        key = (edge.src.name, dst)
        out[key] = max(out.get(key, -np.inf), s)
    return out


def run_eap(model, dl, ablation: str) -> dict:
    import torch
    from auto_circuit.prune_algos.mask_gradient import mask_gradient_prune_scores
    from auto_circuit.types import AblationType

    kind = AblationType.RESAMPLE if ablation == "resample" else AblationType.ZERO
    scores = mask_gradient_prune_scores(model, dl, None, grad_function="logit", answer_function="avg_val",
                                        mask_val=0.0, ablation_type=kind,
                                        clean_corrupt="corrupt" if ablation == "resample" else None)
    for p in model.parameters():
        p.requires_grad_(False)
    torch.set_grad_enabled(True)
    return merged(model, scores, abs)


def run_acdc(model, dl, ablation: str, target: str) -> dict:
    import auto_circuit.prune_algos.ACDC as acdc_module
    import torch
    from auto_circuit.types import AblationType
    from auto_circuit.utils.ablation_activations import src_ablations

    corrupt = next(iter(dl)).corrupt

    def ablations(m, batch, *args, **kwargs):  # zero ablation: the patches for the corrupt batch are zeros
        if ablation == "zero" and torch.equal(batch, corrupt):
            return src_ablations(m, batch, AblationType.ZERO)
        return src_ablations(m, batch, *args, **kwargs)

    acdc_module.src_ablations = ablations
    try:
        scores = acdc_module.acdc_prune_scores(model, dl, None, faithfulness_target=target)
    finally:
        acdc_module.src_ablations = src_ablations
    return merged(model, scores, lambda s: 1e9 if not np.isfinite(s) else s)


def main() -> None:
    import torch
    from auto_circuit.utils.custom_tqdm import tqdm  # noqa: F401 (auto-circuit's progress bars stay quiet below)

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    os.environ["TQDM_DISABLE"] = "1"
    for folder in sorted(p for p in WORK.iterdir() if (p / "meta.json").is_file()):
        meta = json.loads((folder / "meta.json").read_text())
        cfg = meta["config"]
        w = dict(np.load(folder / "weights.npz"))
        ht = hooked(w, cfg)
        with torch.no_grad():
            logits = ht(torch.tensor([r["ids"] for r in meta["inputs"]]), return_type="logits").numpy()
        diff = float(np.abs(logits - np.array([r["tracr_logits"] for r in meta["inputs"]])).max())
        model = patchable(ht)
        dl = loader(meta, cfg["categorical"])
        out = {"name": meta["name"], "max_abs_logit_diff": diff, "exact": diff <= TOL, "methods": {}}
        for ablation in ("resample", "zero"):
            t0 = time.perf_counter()
            eap = run_eap(model, dl, ablation)
            t1 = time.perf_counter()
            acdc = run_acdc(model, dl, ablation, "kl_div" if cfg["categorical"] else "mse")
            t2 = time.perf_counter()
            out["methods"][f"eap_{ablation}"] = {"seconds": round(t1 - t0, 2),
                                                 "edges": [[s, d, v] for (s, d), v in eap.items()]}
            out["methods"][f"acdc_{ablation}"] = {"seconds": round(t2 - t1, 2),
                                                  "edges": [[s, d, v] for (s, d), v in acdc.items()]}
        (folder / "peers.json").write_text(json.dumps(out))
        secs = {k: v["seconds"] for k, v in out["methods"].items()}
        print(f"{meta['name']}: HookedTransformer max |logit - tracr| = {diff:.2e}; {len(eap)} merged edges; "
              f"seconds {secs}")


if __name__ == "__main__":
    main()
