"""Sub-edge proximities on CPU (numba) vs CUDA (Triton kernel, torch reference path), on a random-init Llama.

All numbers come from one run of this script, on one machine: the kernel alone (one layer's node rows, every
target) and whole traces (forward pass, every importance, copied back to numpy), each the median of
`--repeats` runs after a warm-up, with the largest difference from the numba kernel's result. Needs a CUDA
device (and triton for the kernel). Usage:
    python benchmarks/gpu_kernel.py [--tokens 256 1024] [--hidden 2048 --heads 32 --kv-heads 8 --layers 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import torch


def word_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(vocab_size - 1)}
    vocab["[UNK]"] = vocab_size - 1
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def llama(args):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.ffn,
                      num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
                      max_position_embeddings=max(args.tokens), tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # norm weights away from 1, as in a trained model
        for param in model.parameters():
            if param.ndim == 1:
                param.mul_(1.0 + 0.3 * torch.randn(param.shape))
    return model


def timed(repeats: int, cuda: bool, fn, *args, **kwargs) -> tuple[float, object]:
    """Median seconds of fn(*args, **kwargs) over `repeats` runs after a warm-up (compilation, autotuning)."""
    result = fn(*args, **kwargs)
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def layer_inputs(loaded, ids: torch.Tensor, layer: int):
    """alpha [H, T, T], f [H, T, d], x_in, y [T, d] of one sequential block, on the model's device."""
    from flowroutes.capture import run_with_capture
    from flowroutes.importance import head_values

    caps = []
    run_with_capture(loaded, ids, lambda cap: caps.append(cap) if cap.layer == layer else None)
    cap = caps[0]
    adapter = loaded.adapter
    f, _ = head_values(cap.normed, adapter.ov_weights(layer), adapter.input_norm_bias(layer), adapter.kv_heads)
    return cap.alpha, f, cap.x_in, cap.x_mid


def bench_kernel(args, gpu, ids: torch.Tensor, gpu_kernels: list[str]) -> dict:
    """The kernel alone: every attention node of layer 0 (its sub-edge importances, eq. 1)."""
    from flowroutes.importance import attention_importance

    def sub_edges(*parts, kernel):
        return attention_importance(*parts, kernel=kernel)[0]

    cuda, n_tok = args.device == "cuda", int(ids.numel())
    alpha, f, x_in, y = layer_inputs(gpu, ids, 0)
    rows = torch.arange(n_tok, device=args.device)
    cpu_args = [t.cpu() for t in (alpha, f, x_in, y, rows)]
    base, expected = timed(args.repeats, False, sub_edges, *cpu_args, kernel="numba")
    row = {"tokens": n_tok, "what": "kernel, one layer", "numba_cpu_s": base}
    print(f"{n_tok:>5} tokens, kernel (one layer):  numba CPU {base * 1e3:9.2f} ms", flush=True)
    for kernel in gpu_kernels:
        seconds, got = timed(args.repeats, cuda, sub_edges, alpha, f, x_in, y, rows, kernel=kernel)
        err = float((got.cpu() - expected).abs().max() / expected.abs().max())
        row[f"{kernel}_gpu_s"], row[f"{kernel}_max_rel_diff"] = seconds, err
        print(f"{'':>5}   {kernel:>6} GPU {seconds * 1e3:9.2f} ms  = numba / {base / seconds:7.1f}   "
              f"max |diff| / max |numba| = {err:.1e}", flush=True)
    if "triton" in gpu_kernels:
        print(f"{'':>5}   triton is {row['torch_gpu_s'] / row['triton_gpu_s']:.1f}x the GPU torch path", flush=True)
    return row


def bench_trace(args, cpu, gpu, ids: torch.Tensor, gpu_kernels: list[str]) -> dict:
    """Whole traces: forward pass and every importance, back in numpy."""
    import flowroutes

    cuda, n_tok = args.device == "cuda", int(ids.numel())
    base, expected = timed(args.repeats, False, flowroutes.trace, cpu, input_ids=ids, kernel="numba")
    row = {"tokens": n_tok, "what": "whole trace", "numba_cpu_s": base}
    print(f"{n_tok:>5} tokens, whole trace:  numba CPU {base:8.3f} s", flush=True)
    for kernel in gpu_kernels:
        seconds, got = timed(args.repeats, cuda, flowroutes.trace, gpu, input_ids=ids, kernel=kernel)
        err = float(abs(got.attention - expected.attention).max())
        row[f"{kernel}_gpu_s"], row[f"{kernel}_max_abs_diff"] = seconds, err
        print(f"{'':>5}   {kernel:>6} GPU {seconds:8.3f} s  = numba / {base / seconds:7.1f}   "
              f"max |importance diff| = {err:.1e}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--ffn", type=int, default=5632)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-trace", action="store_true", help="time the kernels only, not whole traces")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--device", default="cuda", help="where the GPU columns run ('cpu': a smoke test)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    import flowroutes

    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark compares the CPU kernel with the GPU ones")
    from flowroutes.kernels_gpu import triton_available

    gpu_kernels = ["triton", "torch"] if cuda and triton_available() else ["torch"]
    cpu = flowroutes.load_model(llama(args), tokenizer=word_tokenizer(args.vocab))
    gpu = flowroutes.load_model(llama(args), tokenizer=word_tokenizer(args.vocab), device=args.device)
    device_name = torch.cuda.get_device_name(0) if cuda else args.device
    print(f"{device_name}; torch {torch.__version__}, {torch.get_num_threads()} CPU threads; "
          f"Llama d={args.hidden} H={args.heads} KV={args.kv_heads} L={args.layers}; median of {args.repeats}",
          flush=True)
    results = []
    gen = torch.Generator().manual_seed(0)
    for n_tok in args.tokens:
        ids = torch.randint(0, args.vocab - 1, (n_tok,), generator=gen)
        results.append(bench_kernel(args, gpu, ids, gpu_kernels))
        if not args.no_trace:
            results.append(bench_trace(args, cpu, gpu, ids, gpu_kernels))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": device_name, "args": vars(args), "results": results}, fh, indent=1)


if __name__ == "__main__":
    main()
