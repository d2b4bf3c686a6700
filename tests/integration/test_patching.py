"""Tests of flowroutes.patching on a tiny GPT-2 built by hand so that ONE known head, (1, 2), carries the task.

The task: the prompt is "IO x.. S S" (word tokens); the answer is the first token IO, the distractor the last one
S. Head (1, 2) attends from every position to position 0 (its key reads a marker that only position 0's
embedding has) and copies the token's one-hot embedding into the residual; every other weight is small noise.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

import flowroutes
from flowroutes import FlowroutesError
from flowroutes.patching import (
    ablated_metric,
    ablation_values,
    acdc_prune,
    active_masks,
    compare_patching,
    head_patching,
    intervene,
    output_projection,
    prepare,
    run_metric,
)
from flowroutes.patching.core import last_logits
from flowroutes.tasks import TaskExample
from tests.helpers.models import tiny_gpt2, tiny_llama, word_tokenizer
from tests.helpers.tolerances import OTHER_PATH, SAME_ARITHMETIC

V, D, H, DH, MARK = 16, 64, 4, 16, 40  # vocab, d_model, heads, head dim, the position-0 marker dimension
HEAD = (1, 2)


def one_head_model(seed: int = 0, noise: float = 0.02) -> GPT2LMHeadModel:
    """2 layers x 4 heads; head (1, 2) copies the token at position 0 to every position, the rest is noise."""
    cfg = GPT2Config(vocab_size=V, n_positions=32, n_embd=D, n_layer=2, n_head=H, resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0, tie_word_embeddings=True, bos_token_id=None, eos_token_id=None)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                p.fill_(1.0)
            else:
                p.copy_(noise * torch.randn(p.shape, generator=gen))
        model.transformer.wte.weight[:, :V] += torch.eye(V)  # one-hot token embeddings (tied unembedding)
        model.transformer.wpe.weight[0, MARK] += 1.0  # only position 0 carries the marker
        attn = model.transformer.h[HEAD[0]].attn
        s = HEAD[1] * DH  # Conv1D columns are [q | k | v], each H*dh wide
        attn.c_attn.bias[s] += 1.0  # constant query along the head's first dimension
        attn.c_attn.weight[MARK, D + s] += 10.0  # key: the marker -> a large score for position 0
        attn.c_attn.weight[:V, 2 * D + s: 2 * D + s + V] += torch.eye(V)  # value: copy the token
        attn.c_proj.weight[s: s + V, :V] += torch.eye(V)  # output: back into the token dimensions
    return model


def toy_examples(n: int, seed: int = 0) -> list[TaskExample]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        io, s, c, *rest = rng.sample(range(1, V - 1), 6)
        fill = rest[: rng.randint(1, 3)]  # prompts of 4-6 tokens: batches need padding
        prompt, contrastive = (" ".join(f"w{w}" for w in [first, *fill, s, s]) for first in (io, c))
        out.append(TaskExample(prompt, f" w{io}", f" w{s}", contrastive, {"task": "toy"}))
    return out


@pytest.fixture(scope="module")
def toy():
    return flowroutes.load_model(one_head_model(), tokenizer=word_tokenizer(V))


@pytest.fixture(scope="module")
def batch(toy):
    return prepare(toy, toy_examples(10))


def test_prepare_pads_and_drops(toy):
    exs = toy_examples(4)
    exs.append(TaskExample("w1 w2 w3", " w1", " w3", "w4 w2 w3 w3", {"task": "toy"}))  # lengths 3 vs 4
    b = prepare(toy, exs)
    assert b.n == 4 and b.dropped == 1
    for i, ex in enumerate(b.examples):
        n_tok = len(ex.prompt.split())
        assert int(b.lengths[i]) == n_tok
        assert b.ids[i, :n_tok].tolist() == [int(w[1:]) for w in ex.prompt.split()]
        assert b.plus[i] == [int(ex.answer.strip()[1:])] and b.minus[i] == [int(ex.wrong.strip()[1:])]
    with pytest.raises(FlowroutesError, match="single-token"):
        prepare(toy, [TaskExample("w1 w2", " w1 w2", " w2", "w3 w2", {})])
    with pytest.raises(FlowroutesError, match="different length"):
        prepare(toy, [TaskExample("w1 w2", " w1", " w2", "w3 w2 w2", {})])


def test_batched_metric_equals_one_by_one(toy, batch):
    together = run_metric(toy, batch)
    alone = torch.cat([run_metric(toy, batch.rows(i, i + 1)) for i in range(batch.n)])
    assert torch.allclose(together, alone, rtol=OTHER_PATH, atol=0)
    assert (together > 3).all()  # the hand-built head makes the answer win clearly


@pytest.mark.parametrize("build", [tiny_gpt2, tiny_llama])
def test_zero_ablation_hook_equals_zeroed_weights(build):
    """Intervening on the output projection's input == zeroing that head's slice of the projection weight."""
    model = build()
    loaded = flowroutes.load_model(model, tokenizer=word_tokenizer())
    ids = torch.tensor([[3, 17, 5, 9, 2], [8, 1, 4, 4, 6]])
    lengths = torch.tensor([5, 5])
    layer, head, dh = 1, 3, loaded.adapter.head_dim
    mask = torch.zeros(2, loaded.n_heads)
    mask[:, head] = 1.0
    with intervene(loaded, {layer: (mask, torch.zeros(loaded.n_heads * dh))}):
        hooked = last_logits(loaded, ids, lengths)
    own = flowroutes.patching.core.head_outputs(loaded, ids)
    with intervene(loaded, {layer: (torch.ones(2, loaded.n_heads), own[layer])}):  # patch with its own values
        same = last_logits(loaded, ids, lengths)
    plain = last_logits(loaded, ids, lengths)
    proj = output_projection(loaded, layer)
    with torch.no_grad():
        if isinstance(proj, torch.nn.Linear):  # weight [d, H*dh]
            proj.weight[:, head * dh:(head + 1) * dh] = 0.0
        else:  # GPT-2 Conv1D, weight [H*dh, d]
            proj.weight[head * dh:(head + 1) * dh, :] = 0.0
    zeroed = last_logits(loaded, ids, lengths)
    # a zeroed input column of the output projection and a zeroed weight column add the same exact zeros
    assert torch.allclose(same, plain, rtol=0, atol=SAME_ARITHMETIC)
    assert torch.allclose(hooked, zeroed, rtol=0, atol=SAME_ARITHMETIC)
    assert not torch.allclose(hooked, plain, rtol=OTHER_PATH, atol=0)


def test_output_projection_and_replay_in_every_family():
    """Every family: the head outputs have width H*dh, and replaying the blocks below a patched layer from the
    clean run gives the numbers of running them again."""
    from flowroutes.patching.core import clean_run, head_outputs
    from tests.helpers.families import FAMILIES, tiny_family

    exs = [TaskExample("w1 w2 w3 w4", " w5", " w6", "w7 w2 w3 w4", {}),
           TaskExample("w8 w9 w3", " w10", " w11", "w12 w9 w3", {})]
    checked = 0
    for name in FAMILIES:
        try:
            loaded = flowroutes.load_model(tiny_family(name), tokenizer=word_tokenizer())
        except FlowroutesError:
            continue  # a configuration the core engine refuses
        store = head_outputs(loaded, torch.tensor([[1, 2, 3]]))
        assert sorted(store) == list(range(loaded.n_layers)), name
        assert store[0].shape == (1, 3, loaded.n_heads * loaded.adapter.head_dim), name
        b = prepare(loaded, exs)
        corrupt = head_outputs(loaded, b.contrastive_ids)
        mask = torch.zeros(2, loaded.n_heads)
        mask[:, 1] = 1.0
        inter = {1: (mask, corrupt[1])}
        _, blocks = clean_run(loaded, b)
        replayed = run_metric(loaded, b, inter, clean_blocks=blocks)
        rerun = run_metric(loaded, b, inter)
        assert torch.allclose(replayed, rerun, rtol=0, atol=SAME_ARITHMETIC), name  # replayed blocks: the same numbers
        assert not torch.allclose(rerun, run_metric(loaded, b), rtol=OTHER_PATH, atol=0), name
        checked += 1
    assert checked >= 20


def test_patching_finds_the_head_first(toy, batch):
    p = head_patching(toy, batch, batch_size=4, progress=False)
    assert tuple(int(x) for x in np.unravel_index(np.argmax(p.importance), p.importance.shape)) == HEAD
    gap = float(p.clean.mean() - p.contrastive.mean())
    assert p.normalized[HEAD] == pytest.approx(float(p.importance[HEAD]) / gap)
    assert p.normalized[HEAD] > 0.8  # this one head is most of the clean - contrastive gap
    others = np.abs(np.delete(p.importance.ravel(), HEAD[0] * H + HEAD[1]))
    assert others.max() < 0.05 * p.importance[HEAD]
    # batching: the same numbers with another chunking (different padding)
    q = head_patching(toy, batch, batch_size=10, progress=False)
    assert np.allclose(p.patched, q.patched, rtol=OTHER_PATH, atol=0)
    # patched metric of the head == the metric with the head's output taken from the contrastive run by hand
    for i in range(3):
        row = batch.rows(i, i + 1)
        corrupt = flowroutes.patching.core.head_outputs(toy, row.contrastive_ids)[HEAD[0]]
        mask = torch.zeros(1, H)
        mask[0, HEAD[1]] = 1.0
        assert float(run_metric(toy, row, {HEAD[0]: (mask, corrupt)})[0]) == pytest.approx(
            float(p.patched[i, HEAD[0], HEAD[1]]), rel=OTHER_PATH)


def test_ablating_the_head_destroys_the_metric(toy, batch):
    clean = run_metric(toy, batch).numpy().mean()
    only = np.zeros((2, H), dtype=bool)
    only[HEAD] = True
    for mode in ("mean", "zero", "patch"):
        values = ablation_values(toy, batch, mode, batch_size=4)
        assert ablated_metric(toy, batch, only, values, 4).mean() < 0.2 * clean, mode
        everything_else = ~only
        assert ablated_metric(toy, batch, everything_else, values, 4).mean() > 0.9 * clean, mode
    # the mean of a head's output at position t is taken over the prompts that reach t, across chunks
    values = ablation_values(toy, batch, "mean", batch_size=4)
    outs = flowroutes.patching.core.head_outputs(toy, batch.ids)[1]  # [N, T, H*dh]
    for t in range(batch.ids.shape[1]):
        rows = [i for i in range(batch.n) if int(batch.lengths[i]) > t]
        assert torch.allclose(values[2][1][t], outs[rows, t].mean(dim=0), rtol=0, atol=OTHER_PATH)
    # per-example masks: ablating the head only in example 0
    per_row = np.zeros((batch.n, 2, H), dtype=bool)
    per_row[0, HEAD[0], HEAD[1]] = True
    vals = ablated_metric(toy, batch, per_row, ablation_values(toy, batch, "zero", 4), 4)
    assert vals[0] < 0 and np.allclose(vals[1:], run_metric(toy, batch).numpy()[1:], rtol=OTHER_PATH, atol=0)


def test_acdc_style_keeps_only_the_head(toy, batch):
    pr = acdc_prune(toy, batch, threshold=0.05, batch_size=5, progress=False)
    assert [tuple(int(x) for x in ix) for ix in np.argwhere(pr.kept)] == [HEAD]
    assert pr.metric_end == pytest.approx(pr.metric_start, rel=0.05)
    with pytest.raises(FlowroutesError, match="threshold"):
        acdc_prune(toy, batch, threshold=-1.0, progress=False)


def test_routes_make_the_head_active(toy, batch):
    traces = flowroutes.trace(toy, [e.prompt for e in batch.examples])
    act = active_masks(traces, 0.04, 2, H)  # [N, L, H]
    assert act[:, HEAD[0], HEAD[1]].all()
    assert act[:, 1].sum() == batch.n  # no other layer-1 head is active anywhere


def test_compare_patching_on_the_toy(toy, tmp_path):
    res = compare_patching(toy, "toy", examples=toy_examples(8, seed=1), batch_size=4, thresholds=(0.04, 0.2),
                           ks=[0, 1, 8], random_repeats=2, progress=False)
    s = res.summary
    assert "warning" not in s and s["accuracy (answer beats distractor)"] == 1.0
    assert s["top_route_heads [layer, head, freq]"][0] == [1, 2, 1.0]
    assert s["top_patching_heads [layer, head, effect]"][0][:2] == [1, 2]
    assert s["ACDC-style kept heads"] == 1
    assert s["share of ACDC-style heads among the top route heads (same count)"] == 1.0
    rows = res.extra_tables["patching_faithfulness_k"].to_pylist()
    pick = {(r["ranking"], r["k"], r["direction"]): r["remaining"] for r in rows}
    assert pick[("patching: effect", 1, "keep only top-k")] > 0.9
    assert pick[("routes: frequency", 1, "keep only top-k")] > 0.9
    assert pick[("routes: frequency", 1, "ablate top-k")] < 0.2
    assert pick[("routes: frequency", 0, "ablate top-k")] == 1.0  # SAME_ARITHMETIC: the clean metric over itself
    base, full = s["mean_metric_all_heads_ablated"], s["mean_metric_clean"]
    for r in rows:
        assert r["remaining"] == pytest.approx(r["metric"] / full)
        assert r["remaining_normalized"] == pytest.approx((r["metric"] - base) / (full - base))
    thr = res.extra_tables["patching_faithfulness_threshold"].to_pylist()
    assert [r["remaining"] > 0.9 for r in thr if r["kind"] == "routes"] == [True, True]
    written = res.write(tmp_path)
    names = {p.name for p in written}
    assert {"patching.parquet", "summary.json", "report.html", "patching-heatmaps.png",
            "patching-faithfulness-k.png", "patching-faithfulness-threshold.png"} <= names
    table = res.table.to_pylist()
    row = next(r for r in table if (r["layer"], r["head"]) == HEAD)
    assert row["acdc_kept"] and row["route_frequency_task"] == 1.0
    # the routes are timed before and after patching; the ratios divide by the slower run
    t = s["timings_s"]
    assert len(t["routes_task_runs_s"]) == 2 and t["routes_task_s"] == max(t["routes_task_runs_s"])
    ratio, eps = s["speed_ratio_head_patching_vs_routes"], 5e-4  # timings are rounded to 1 ms
    assert (t["head_patching_s"] - eps) / (t["routes_task_s"] + eps) <= ratio
    assert ratio <= (t["head_patching_s"] + eps) / max(t["routes_task_s"] - eps, 1e-9)


def test_a_task_the_model_cannot_do_is_reported_first(toy):
    swapped = [TaskExample(e.prompt, e.wrong, e.answer, e.contrastive, e.meta) for e in toy_examples(6)]
    with pytest.raises(FlowroutesError, match="cannot do the task"):
        compare_patching(toy, "toy", examples=swapped, progress=False)


def test_cli_stops_on_a_task_at_chance_and_forces(tiny_folder, tmp_path, capsys):
    from flowroutes.cli import main

    # a random tiny Llama with a w0..w95 vocabulary: every IOI name is [UNK], so answer and distractor tie
    assert main(["compare-patching", "--model", str(tiny_folder), "--n", "4", "--out", str(tmp_path)]) == 2
    assert "cannot do the task" in capsys.readouterr().err
    assert main(["compare-patching", "--thresholds", "0.1,x", "--out", str(tmp_path)]) == 2
    assert "comma-separated" in capsys.readouterr().err
    out = tmp_path / "forced"
    assert main(["compare-patching", "--model", str(tiny_folder), "--n", "4", "--out", str(out), "--force",
                 "--thresholds", "0.04", "--ablation", "zero", "--no-progress"]) == 0
    assert "WARNING" in capsys.readouterr().out
    assert "WARNING" in (out / "report.html").read_text()


@pytest.mark.slow
def test_smollm2_smoke(smollm2):
    """The real model: IOI is done, and zero-ablating a head by hook equals zeroing its o_proj columns."""
    from flowroutes.tasks import ioi

    b = prepare(smollm2, ioi(6, seed=0))
    clean = run_metric(smollm2, b)
    assert b.dropped == 0 and float((clean > 0).float().mean()) >= 0.6
    layer, head, dh = 20, 4, smollm2.adapter.head_dim
    mask = torch.zeros(b.n, smollm2.n_heads)
    mask[:, head] = 1.0
    hooked = run_metric(smollm2, b, {layer: (mask, torch.zeros(smollm2.n_heads * dh))})
    proj = output_projection(smollm2, layer)
    saved = proj.weight[:, head * dh:(head + 1) * dh].clone()
    try:
        with torch.no_grad():
            proj.weight[:, head * dh:(head + 1) * dh] = 0.0
        zeroed = run_metric(smollm2, b)
    finally:
        with torch.no_grad():
            proj.weight[:, head * dh:(head + 1) * dh] = saved
    assert torch.allclose(hooked, zeroed, rtol=0, atol=SAME_ARITHMETIC)  # the same exact zeros, as on the toy model
    assert torch.allclose(run_metric(smollm2, b), clean, rtol=0, atol=SAME_ARITHMETIC)  # the weights restored
