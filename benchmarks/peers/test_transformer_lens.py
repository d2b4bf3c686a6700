"""flowroutes.load_model(HookedTransformer) on TransformerLens 2.9.0: the importances equal those of the same
weights loaded through transformers.

TransformerLens 2.x needs transformers 4.x and flowroutes traces with transformers 5.x, so this runs in two venvs:
1. the peers venv (TransformerLens 2.9.0, transformers 4.46.3): tiny random GPT-2 and Llama models are built with
   transformers, turned into HookedTransformers by TransformerLens' own weight conversion (with no processing,
   with folded norms and value biases, and with TransformerLens' default processing, which also centres the
   writing weights), and handed to `flowroutes.load_model`. Its transformers copy must reproduce the
   HookedTransformer's residual stream (every `hook_resid_pre`) and predictions; the copies and the original
   models are saved as safetensors folders.
2. the product venv (`.venv`, or $FLOWROUTES_PYTHON): each folder is traced; the importances of the unprocessed
   and the fold-only conversions must equal those of the original model (same weights through transformers) to
   1e-5. The default processing centres the residual stream, so its importances differ: the test reports by how
   much and checks that the predictions still agree. (A folded final LayerNorm bias is the copy's `lm_head.bias`;
   GPT-2's class drops it when reloading a folder, so the product phase puts it back before comparing predictions.)
Usage (from the repository root):
    benchmarks/peers/.venv/bin/python benchmarks/peers/test_transformer_lens.py
Exit status 0 when every check passes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IDS = [5, 17, 3, 17, 40, 8, 22, 5, 61, 2]
VOCAB = 97
VARIANTS = {  # name -> keyword arguments of HookedTransformer.load_and_process_state_dict
    "raw": dict(fold_ln=False, center_writing_weights=False, center_unembed=False, fold_value_biases=False),
    "fold": dict(fold_ln=True, center_writing_weights=False, center_unembed=True, fold_value_biases=True),
    "default": dict(fold_ln=True, center_writing_weights=True, center_unembed=True, fold_value_biases=True),
}


def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(VOCAB - 1)}
    vocab["[UNK]"] = VOCAB - 1
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def randomise(model, seed: int):
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 1 and ("norm" in name or "ln" in name) and name.endswith("weight"):
                param.copy_(1.0 + 0.3 * torch.randn(param.shape, generator=gen))
            elif param.ndim == 1:
                param.copy_(0.2 * torch.randn(param.shape, generator=gen))
            else:
                param.copy_(0.15 * torch.randn(param.shape, generator=gen))
    return model.eval()


def tiny(arch: str):
    """(transformers model, HookedTransformerConfig) of the same tiny architecture."""
    from transformer_lens import HookedTransformerConfig
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    if arch == "gpt2":
        hf = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=48, n_layer=3, n_head=4,
                                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
        cfg = HookedTransformerConfig(n_layers=3, d_model=48, n_ctx=64, d_head=12, n_heads=4, d_mlp=192,
                                      d_vocab=VOCAB, act_fn="gelu_new", normalization_type="LN", eps=1e-5,
                                      positional_embedding_type="standard", original_architecture="GPT2LMHeadModel",
                                      default_prepend_bos=False)
    else:  # TransformerLens' Llama conversion keeps no q/k/v/o or MLP biases: the model has none
        hf = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=48, intermediate_size=96,
                                          num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                                          max_position_embeddings=64, rms_norm_eps=1e-6, tie_word_embeddings=False))
        cfg = HookedTransformerConfig(n_layers=3, d_model=48, n_ctx=64, d_head=12, n_heads=4, d_mlp=96,
                                      d_vocab=VOCAB, act_fn="silu", normalization_type="RMS", eps=1e-6,
                                      positional_embedding_type="rotary", rotary_dim=12, rotary_base=10000,
                                      gated_mlp=True, n_key_value_heads=2, final_rms=True,
                                      original_architecture="LlamaForCausalLM", default_prepend_bos=False)
    return randomise(hf, seed=1), cfg


def hooked(arch: str, hf, cfg, variant: str):
    from transformer_lens import HookedTransformer
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights, convert_llama_weights

    state = (convert_gpt2_weights if arch == "gpt2" else convert_llama_weights)(hf, cfg)
    ht = HookedTransformer(cfg)
    ht.load_and_process_state_dict(state, refactor_factored_attn_matrices=False, **VARIANTS[variant])
    return ht.eval()


def rel_err(a, b) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def convert_phase(out: Path) -> dict:
    """Peers venv: HookedTransformers -> flowroutes.load_model -> folders, with the residual-stream checks."""
    import torch

    sys.path.insert(0, str(ROOT / "src"))
    import flowroutes
    from flowroutes.models.transformer_lens import transformer_lens_kind

    ids = torch.tensor(IDS)[None]
    report = {}
    for arch in ("gpt2", "llama"):
        hf, cfg = tiny(arch)
        tok = word_tokenizer()
        hf.save_pretrained(out / f"{arch}-reference", safe_serialization=True)
        tok.save_pretrained(out / f"{arch}-reference")
        for variant in VARIANTS:
            ht = hooked(arch, hf, cfg, variant)
            assert transformer_lens_kind(ht) == "hooked"
            loaded = flowroutes.load_model(ht, tokenizer=tok)
            model = loaded.model
            with torch.no_grad():
                logits_ht, cache = ht.run_with_cache(ids)
                out_hf = model(input_ids=ids, output_hidden_states=True)
                logits_ref = hf(input_ids=ids).logits
            resid = max(rel_err(out_hf.hidden_states[layer][0], cache[f"blocks.{layer}.hook_resid_pre"][0])
                        for layer in range(cfg.n_layers))
            logp = rel_err(torch.log_softmax(out_hf.logits, -1), torch.log_softmax(logits_ht, -1))
            logp_ref = rel_err(torch.log_softmax(out_hf.logits, -1), torch.log_softmax(logits_ref, -1))
            print(f"[peers] {arch:5s} {variant:7s} {type(model).__name__}: resid_pre vs HookedTransformer "
                  f"{resid:.1e}, log-probs vs HookedTransformer {logp:.1e}, vs the original {logp_ref:.1e}")
            assert resid < 1e-5, (arch, variant, resid)
            assert logp < 1e-5 and logp_ref < 1e-4, (arch, variant, logp, logp_ref)
            folder = out / f"{arch}-{variant}"
            model.save_pretrained(folder, safe_serialization=True)
            tok.save_pretrained(folder)
            report[f"{arch}-{variant}"] = {"resid_rel_err": resid, "logprob_rel_err": logp}
    return report


TRACE_SCRIPT = r"""
import json, sys, warnings
warnings.filterwarnings("ignore")
import numpy as np, torch, flowroutes
import transformers
transformers.logging.set_verbosity_error()
out, ids = sys.argv[1], torch.tensor(json.loads(sys.argv[2]))
from safetensors.torch import load_file


def load(folder):
    # a folded final LayerNorm bias becomes lm_head.bias, which GPT-2's class has no place for when reloaded
    loaded = flowroutes.load_model(folder)
    bias = load_file(f"{folder}/model.safetensors").get("lm_head.bias")
    if bias is not None:
        head = loaded.model.lm_head
        new = torch.nn.Linear(head.in_features, head.out_features, bias=True)
        with torch.no_grad():
            new.weight.copy_(head.weight)
            new.bias.copy_(bias)
        loaded.model.lm_head = new
    return loaded


res = {}
for arch in ("gpt2", "llama"):
    ref = flowroutes.trace(load(f"{out}/{arch}-reference"), input_ids=ids)
    for variant in ("raw", "fold", "default"):
        loaded = load(f"{out}/{arch}-{variant}")
        tr = flowroutes.trace(loaded, input_ids=ids)
        res[f"{arch}-{variant}"] = {
            "type": type(loaded.model).__name__,
            "attention": float(np.abs(tr.attention - ref.attention).max()),
            "attention_residual": float(np.abs(tr.attention_residual - ref.attention_residual).max()),
            "ffn": float(np.abs(tr.ffn - ref.ffn).max()),
            "top1_same": bool(all(a[0] == b[0] for a, b in zip(tr.top_tokens, ref.top_tokens))),
            "top_probs": float(np.abs(np.asarray(tr.top_probs) - np.asarray(ref.top_probs)).max()),
            "ref_attention_mean": float(ref.attention.sum(axis=(1, 3)).mean()),
        }
print(json.dumps(res))
"""


def trace_phase(out: Path) -> dict:
    """Product venv: trace every folder with flowroutes (transformers 5) and compare with the reference."""
    python = os.environ.get("FLOWROUTES_PYTHON") or str(ROOT / ".venv" / "bin" / "python")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([python, "-c", TRACE_SCRIPT, str(out), json.dumps(IDS)], capture_output=True, text=True,
                          env=env, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"the product venv's trace failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from importlib.metadata import version

    import transformers

    print(f"[peers] transformer-lens {version('transformer-lens')}, transformers {transformers.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        convert_phase(out)
        traced = trace_phase(out)
    failures = []
    for key, r in traced.items():
        worst = max(r["attention"], r["attention_residual"], r["ffn"])
        print(f"[product] {key:13s} {r['type']}: max |importance - reference| attention {r['attention']:.1e}, "
              f"attention residual {r['attention_residual']:.1e}, ffn {r['ffn']:.1e}; top-1 same "
              f"{r['top1_same']}, max |prob diff| {r['top_probs']:.1e}")
        if not r["top1_same"] or r["top_probs"] > 1e-4:
            failures.append(f"{key}: predictions differ")
        if not key.endswith("-default") and worst > 1e-5:
            failures.append(f"{key}: importances differ by {worst:.1e}")
    if failures:
        print("FAILED:", "; ".join(failures))
        return 1
    print("OK: unprocessed and fold-only HookedTransformers trace exactly like their transformers weights")
    return 0


if __name__ == "__main__":
    sys.exit(main())
