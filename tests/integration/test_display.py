"""Notebook display (`_repr_html_`) and the short plain reprs of routes, traces and analysis results: they show the
real numbers, escape token text, stay a few lines long, and a lazy trace's display computes nothing."""

import base64
import dataclasses
import html
import re

import numpy as np
import pytest

import flowroutes
from flowroutes import display
from flowroutes.analyses.run import analyze
from tests.helpers.models import tiny_gpt2, tiny_llama, word_tokenizer

PROMPT = "w1 w2 w3 w4 w5 w6 w7 w8"
HOSTILE = "<script>alert(1)</script>"
MAX_LINES = 8


@pytest.fixture(scope="module")
def llama():
    return flowroutes.load_model(tiny_llama(), tokenizer=word_tokenizer())


def _short(text: str) -> None:
    assert len(text.splitlines()) <= MAX_LINES, text
    assert "tensor(" not in text and "array(" not in text and "Estimate(" not in text, text
    assert max(len(line) for line in text.splitlines()) <= display.LINE_MAX, text


def _edge_ids(svg: str) -> list[int]:
    return sorted(int(i) for i in re.findall(r'<g id="edge-(\d+)"', svg))


def test_routes_html_draws_every_edge_once(llama):
    routes = flowroutes.trace(llama, PROMPT).routes(0.02)
    assert len(routes.edges) > 10
    out = routes._repr_html_()
    assert out.count("<svg") == 1
    assert _edge_ids(out) == list(range(len(routes.edges)))  # one element per edge, no more
    assert out.count('<g id="ffn-block-') == sum(e.kind == "ffn" for e in routes.edges)
    caption = html.unescape(out[out.index("<figcaption>"):])
    assert f"{len(routes.nodes)} nodes, {len(routes.edges)} edges, {len(routes.active_heads)} active heads" in caption
    (layer, head), weight = next(iter(routes.head_weights().items()))
    assert f"strongest heads: L{layer}H{head} {weight:.2f}" in caption
    assert f"{routes.top_tokens[0]!r} (p={routes.top_probs[0]:.3f})" in caption
    text = repr(routes)
    _short(text)
    assert text.splitlines()[:2] == [
        f"<flowroutes.Routes of {routes.model_name}: {len(routes.nodes)} nodes, {len(routes.edges)} edges, "
        f"{len(routes.active_heads)} active heads, tau=0.02>",
        f"  explains position {routes.position} {routes.token_texts[-1]!r} -> {routes.top_tokens[0]!r} "
        f"(p={routes.top_probs[0]:.3f})"]
    assert text.splitlines()[2].startswith(f"  strongest heads: L{layer}H{head} {weight:.2f}, ")


def test_large_routes_are_drawn_cut_to_their_strongest(llama, monkeypatch):
    routes = flowroutes.trace(llama, PROMPT).routes(0.02)
    monkeypatch.setattr(display, "DRAW_MAX_EDGES", 10)
    out = routes._repr_html_()
    assert _edge_ids(out) == list(range(10))
    assert f"(drawn: the strongest 10 of its {len(routes.edges)} edges, routes.strongest(10))" in out
    assert f"{len(routes.edges)} edges, {len(routes.active_heads)} active heads" in out  # the caption: all of them


def test_trace_html_shows_predictions_heads_and_routes(llama):
    tr = flowroutes.trace(llama, PROMPT)
    out = html.unescape(tr._repr_html_())
    cells = re.findall(r"<td>(.*?)</td>", out)
    # the prediction table: the top-5 next tokens at the last position and their probabilities, in order
    preds = [(re.sub(r"</?code>", "", cells[2 * i]), cells[2 * i + 1]) for i in range(5)]
    assert preds == [(repr(t), f"{p:.3f}") for t, p in zip(tr.top_tokens[-1][:5], tr.top_probs[-1][:5])]
    # the head table's first row: the head whose sub-edges into x^{lA} of the last position sum highest
    into_last = tr.attention[:, :, -1, :].sum(axis=-1)  # [L, H]
    layer, head = np.unravel_index(into_last.argmax(), into_last.shape)
    assert cells[10:12] == [f"L{layer}H{head}", f"{into_last[layer, head]:.3f}"]
    # and the last position's routes at tau = 0.04, drawn edge by edge
    assert _edge_ids(out) == list(range(len(tr.routes(0.04).edges)))
    text = repr(tr)
    _short(text)
    assert f"next token: {tr.top_tokens[-1][0]!r} {tr.top_probs[-1][0]:.3f}" in text
    assert f"heads into the last position: L{layer}H{head} {into_last[layer, head]:.3f}" in text


def test_lazy_trace_display_computes_nothing(llama):
    lazy = flowroutes.trace(llama, PROMPT, lazy=True)
    out, text = lazy._repr_html_(), repr(lazy)
    assert lazy.n_computed_rows == 0  # neither display computed a row
    assert "<svg" not in out and "not computed yet" in out and "0 of 24 attention rows computed" in text
    _short(text)
    assert f"next token: {lazy.top_tokens[-1][0]!r} {lazy.top_probs[-1][0]:.3f}" in text
    lazy.routes(0.04)  # the walk computes the last position's rows of every layer: now the heads show
    full = lazy.full().attention[:, :, -1, :].sum(axis=-1)
    layer, head = np.unravel_index(full.argmax(), full.shape)
    assert f"<td>L{layer}H{head}</td><td>{full[layer, head]:.3f}</td>" in lazy._repr_html_()


def test_token_text_is_escaped(llama):
    tr = flowroutes.trace(llama, PROMPT)
    hostile = dataclasses.replace(
        tr, prompt=HOSTILE, token_texts=[HOSTILE] * tr.n_tokens,
        top_tokens=[[HOSTILE, *t[1:]] for t in tr.top_tokens])
    routes = hostile.routes(0.04)
    assert routes.top_tokens[0] == HOSTILE and routes.token_texts[0] == HOSTILE
    for out in (hostile._repr_html_(), routes._repr_html_()):
        assert "<script" not in out.lower()
        assert "&lt;script&gt;" in out  # the token is there, as text
    lazy = flowroutes.trace(llama, PROMPT, lazy=True)
    lazy.prompt, lazy.top_tokens[-1][0] = HOSTILE, HOSTILE
    assert "<script" not in lazy._repr_html_().lower()


def test_predictions_none_is_said(llama):
    tr = flowroutes.trace(llama, PROMPT, predictions="none")
    assert "not predicted" in tr._repr_html_() and "next token: not predicted" in repr(tr)


@pytest.fixture(scope="module")
def task_heads(tmp_path_factory):
    loaded = flowroutes.load_model(tiny_gpt2(), tokenizer=word_tokenizer())
    return analyze("task-heads", loaded, n=4, task="ioi", progress=False)


def test_result_html_shows_numbers_for_people_and_figures(task_heads):
    out = task_heads._repr_html_()
    est = task_heads.summary["mean_metric_task"]
    words = str(est)  # e.g. '0.759 [0.717, 0.803] (n=4 examples)'
    assert re.fullmatch(r"-?\d+\.\d{3} \[-?\d+\.\d{3}, -?\d+\.\d{3}\] \(n=4 examples\)", words), words
    assert f"<th style='text-align: left'>mean_metric_task</th><td>{html.escape(words)}</td>" in out
    assert "Estimate(" not in out
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', out)
    assert len(images) == len(task_heads.figures) >= 1
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    for _fig, caption in task_heads.figures.values():
        assert html.escape(caption) in out
    text = repr(task_heads)
    _short(text)
    assert text.splitlines()[0] == f"<flowroutes analysis 'task_heads': {task_heads.title}>"
    assert "figures: " + ", ".join(task_heads.figures) in text
    # the headline numbers first: the summary's estimates, in its order
    estimates = [k for k, v in task_heads.summary.items() if hasattr(v, "interval_text")]
    assert text.splitlines()[1:4] == [f"  {k}: {task_heads.summary[k]}" for k in estimates[:3]]
    assert f"... ({len(task_heads.summary) - display.SUMMARY_LINES} more in .summary)" in text


def test_generation_repr_is_short(llama):
    g = flowroutes.generate(llama, PROMPT, max_new_tokens=7)
    text = repr(g)
    _short(text)
    shown = ", ".join(f"{t!r} {p:.3f}" for t, p in zip(g.answer_tokens[:5], g.answer_probs[:5]))
    assert text.splitlines()[3] == f"  p(answer tokens): {shown} ... (2 more)"
    assert f"a prompt of {g.n_prompt} tokens, an answer of 7 (length)" in text.splitlines()[0]


def test_lazy_traces_show_one_line_each(llama):
    prompts = [f"w{i} w{i + 1} w{i + 2}" for i in range(1, 8)] + [HOSTILE]
    many = flowroutes.trace(llama, prompts, lazy=True)
    text = repr(many)
    _short(text)
    assert text.splitlines()[0] == f"<flowroutes.LazyTraces: 8 lazy traces of {many[0].model_name}>"
    assert text.splitlines()[1] == f"  [0] 'w1 w2 w3' -> {many[0].top_tokens[-1][0]!r} {many[0].top_probs[-1][0]:.3f}"
    assert text.splitlines()[-1] == "  ... (3 more)"
    out = many._repr_html_()
    assert out.count("<tr>") == 1 + 8 and "<script" not in out.lower()
    assert f"<td>{html.escape(repr(many[6].top_tokens[-1][0]))} {many[6].top_probs[-1][0]:.3f}</td>" in out
    assert sum(tr.n_computed_rows for tr in many) == 0
