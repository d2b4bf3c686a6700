"""Export, from the product venv, what the peer tools need: the model as a local HF folder and the IOI prompts.

Runs in the product venv (flowroutes installed), never in the peers venv. Writes
- OUT/smollm2/: config.json + model.safetensors + tokenizer files of `flowroutes.load_model()` (the embedded
  SmolLM2-135M-Instruct, float32), for TransformerLens in the peers venv;
- benchmarks/peers/ioi_prompts.json: `flowroutes.tasks.ioi(N, seed=0)` with the token ids that flowroutes feeds
  the model (prompt and contrastive prompt, answer and wrong token), so both sides run the very same tokens,
  and flowroutes' logit differences on both prompts, to check that the peers' copy of the model computes the same.
Usage:
    .venv/bin/python benchmarks/peers/export.py [--out benchmarks/peers/work] [--n 50]
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / "work"), help="folder for the exported model (git-ignored)")
    ap.add_argument("--n", type=int, default=50, help="IOI prompts (default 50)")
    ap.add_argument("--prompts", default=str(HERE / "ioi_prompts.json"))
    args = ap.parse_args()
    warnings.filterwarnings("ignore")

    import flowroutes
    from flowroutes.commands import quiet_transformers
    from flowroutes.patching.core import prepare, run_metric
    from flowroutes.tasks import ioi

    quiet_transformers()
    loaded = flowroutes.load_model()
    from weights import hf_folder  # benchmarks/peers/weights.py, beside this script

    folder = hf_folder(loaded, Path(args.out) / "smollm2")
    config = json.loads((folder / "config.json").read_text())

    examples = ioi(args.n, seed=0)
    batch = prepare(loaded, examples)  # the pairs patching keeps (same length as their contrastive prompt)
    kept = {id(e) for e in batch.examples}
    clean = dict(zip(map(id, batch.examples), run_metric(loaded, batch).tolist()))  # logit diff answer - wrong
    contrast = dict(zip(map(id, batch.examples), run_metric(loaded, batch, contrastive=True).tolist()))
    rows = []
    for i, ex in enumerate(examples):
        tok = loaded.tokenizer
        rows.append({
            "index": i, "prompt": ex.prompt, "contrastive": ex.contrastive, "answer": ex.answer, "wrong": ex.wrong,
            "ids": tok(ex.prompt)["input_ids"], "contrastive_ids": tok(ex.contrastive)["input_ids"],
            "answer_id": tok(ex.answer, add_special_tokens=False)["input_ids"],
            "wrong_id": tok(ex.wrong, add_special_tokens=False)["input_ids"],
            "kept_by_patching": id(ex) in kept, "meta": ex.meta,
            "logit_diff": clean.get(id(ex)), "contrastive_logit_diff": contrast.get(id(ex)),
        })
    out = {
        "source": f"flowroutes.tasks.ioi({args.n}, seed=0)", "model": loaded.name, "flowroutes": flowroutes.__version__,
        "n_layers": loaded.n_layers, "n_heads": loaded.n_heads,
        "rope_theta": config.get("rope_theta", (config.get("rope_parameters") or {}).get("rope_theta")),
        "dropped_by_patching": batch.dropped, "examples": rows,
    }
    Path(args.prompts).write_text(json.dumps(out, indent=1) + "\n")
    print(f"model folder: {folder}\nprompts: {args.prompts} ({len(rows)} examples, {batch.dropped} dropped by "
          f"patching for a length mismatch)")


if __name__ == "__main__":
    main()
