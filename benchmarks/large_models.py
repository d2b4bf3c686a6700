"""Large model shapes, random-init: the forward pass vs lazy last-position routes and the full trace, peak RSS.

Builds (without the hub) a Llama-shaped model of 1B parameters in float32 and of Llama-2-7B's shape in bfloat16
(weights drawn straight into their dtype: no float32 copy of a 7B model ever exists), then, in one process and in
this order, times the model's own forward pass (sdpa, logits at every position), lazy routes of the last position
(tau = 0.04; the LM head at the last position only, predictions="last") and, at 256 tokens, the full trace,
each with trace(precision="float32") (the default) and "model".
Prints [model shape | precision | tokens | forward | lazy last-position routes | full trace | peak RSS] with ratios
to the forward pass measured in the same run. Peak RSS is the process's maximum after each step (steps only add),
next to the weights' own size. Building the 7B shape takes minutes and needs ~14 GB: this is not part of
`make test`. `--layers N` keeps N blocks of a shape (same per-block work and memory); `--profile` prints where one
lazy-routes run spends its time.
Usage:
    .venv/bin/python benchmarks/large_models.py [--shapes 1b-fp32 7b-bf16] [--tokens 256 1024] [--layers N]
        [--precisions float32 model] [--profile]
"""

from __future__ import annotations

import argparse
import gc
import resource
import time

import torch

SHAPES = {  # name: (config, dtype)
    "1b-fp32": (dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                     num_key_value_heads=4, vocab_size=32000), torch.float32),  # TinyLlama-1.1B's shape
    "7b-bf16": (dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=32, vocab_size=32000), torch.bfloat16),  # Llama-2-7B's shape
}


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def build(shape: str, layers: int | None):
    """A random-init LlamaForCausalLM of `shape`: modules made on the meta device, then each parameter drawn in its
    own dtype (std 0.02, norms 1), so the float32 copy of a half-precision model never exists."""
    from transformers import LlamaConfig, LlamaForCausalLM

    kwargs, dtype = SHAPES[shape]
    kwargs = dict(kwargs, max_position_embeddings=4096, tie_word_embeddings=False)
    if layers:
        kwargs["num_hidden_layers"] = layers
    config = LlamaConfig(**kwargs)
    with torch.device("meta"):
        model = LlamaForCausalLM(config).to(dtype)
    model = model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                param.normal_(0.0, 0.02, generator=gen)
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)  # its inv_freq buffer is no parameter
    return model.eval(), config


def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(31999)} | {"[UNK]": 31999}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


HEADER = (f"{'model shape':>16} {'precision':>9} {'tokens':>6} {'forward s':>9} {'lazy routes s':>13} {'x fwd':>5} "
          f"{'full trace s':>12} {'x fwd':>5} {'weights GiB':>11} {'peak RSS GiB (fwd/lazy/full)':>28}")


def profile(fn, top: int = 12) -> None:
    """One run of `fn` under cProfile: its costliest functions by own time."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.runcall(fn)
    pstats.Stats(prof).sort_stats("tottime").print_stats(top)


def measure(shape: str, args) -> list[str]:
    """The table rows of one shape (built, measured and dropped here)."""
    import flowroutes

    t0 = time.perf_counter()
    model, config = build(shape, args.layers)
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    name = f"{shape}" + (f" ({config.num_hidden_layers} blocks)" if args.layers else "")
    print(f"{name}: built in {time.perf_counter() - t0:.0f} s, {weights:.2f} GiB of weights, RSS {rss_gib():.2f}",
          flush=True)
    loaded = flowroutes.load_model(model, tokenizer=word_tokenizer())
    gen = torch.Generator().manual_seed(1)
    rows = []
    for n_tok in sorted(args.tokens):
        ids = torch.randint(0, 31999, (n_tok,), generator=gen)

        def forward(ids=ids):
            with torch.no_grad():
                model(input_ids=ids[None], use_cache=False)

        forward()  # warm-up
        t_fwd = timed(forward, args.repeats)
        rss_fwd = rss_gib()
        flowroutes.trace(loaded, input_ids=ids[:8], lazy=True).routes(0.04)  # warm-up: numba's cached kernels
        for precision in args.precisions:

            def lazy_routes(ids=ids, precision=precision):
                flowroutes.trace(loaded, input_ids=ids, lazy=True, precision=precision, predictions="last").routes(0.04)

            def full_trace(ids=ids, precision=precision):
                flowroutes.trace(loaded, input_ids=ids, precision=precision)

            t_lazy = timed(lazy_routes, args.repeats)
            rss_lazy = rss_gib()
            if args.profile:  # where the lazy routes' time goes, beyond the forward pass
                profile(lazy_routes)
            t_full, rss_full = float("nan"), float("nan")
            if n_tok == args.full_tokens:
                t_full = timed(full_trace, args.repeats)
                rss_full = rss_gib()
            rows.append(f"{name:>16} {precision:>9} {n_tok:>6} {t_fwd:>9.2f} {t_lazy:>13.2f} {t_lazy / t_fwd:>5.2f} "
                        f"{t_full:>12.2f} {t_full / t_fwd:>5.2f} {weights:>11.2f} "
                        f"{rss_fwd:>9.2f}/{rss_lazy:.2f}/{rss_full:.2f}")
            print(HEADER + "\n" + rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--tokens", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--full-tokens", type=int, default=256, help="prompt length of the full trace")
    parser.add_argument("--layers", type=int, default=None, help="keep only this many blocks of each shape")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--precisions", nargs="+", default=["float32", "model"], choices=["float32", "model"],
                        help="trace(precision=...): head values in float32, or by the model's own products")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one lazy-routes run per row")
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}", flush=True)
    rows = []
    for shape in args.shapes:
        rows += measure(shape, args)
        gc.collect()
    print("\n" + HEADER + "\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
