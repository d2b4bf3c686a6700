"""`flowroutes explain` on a tiny model folder: one-line errors before the model loads, --force, generation.json's
numbers against the API, and generation.html in a browser (no network, clicks recolour the prompt); the embedded
SmolLM2 end to end (the issue's done-when command)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import flowroutes
from flowroutes.explain_cli import parse_span
from flowroutes.generation import generate
from tests.helpers.cli import assert_one_line_error, run_cli
from tests.helpers.tolerances import ALTI_ROW_SUM_ABS, EIGHT_BIT, printed_to

PROMPT = "w1 w2 w3 w4 w5"


@pytest.fixture
def no_load(monkeypatch):
    """The model must not load: fail the test if the command gets that far."""
    def refuse(_model):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("flowroutes.explain_cli.load_for_command", refuse)


@pytest.mark.parametrize("argv, message", [
    (["--generate", "0"], "--generate must be a positive integer, got 0"),
    (["--threshold", "1.5"], "--threshold must be in (0, 1), got 1.5"),
    (["--span", "3:2"], "--span 3:2 is empty or negative"),
    (["--span", "x"], "--span must be A:B with integers"),
    (["--generate", "4", "--span", "0:5"], "--span 0:5 is not within the answer's 4 tokens"),
    (["--seed", "3"], "--seed is the seed of --sample"),
    (["--method", "shap"], "argument --method: invalid choice: 'shap'"),
    (["--generate", "2", "--target", "w1"], "not allowed with argument"),
    (["--target", ""], "the target must be the answer's text, got ''"),
])
def test_bad_input_is_one_line_before_the_model_loads(capsys, tmp_path, no_load, argv, message):
    code, _, err = run_cli(capsys, "explain", PROMPT, "--out", str(tmp_path / "out"), *argv)
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "out").exists()


def test_a_span_beyond_the_target_is_refused_before_the_weights_load(capsys, tmp_path, tiny_folder, no_load):
    code, _, err = run_cli(capsys, "explain", PROMPT, "--target", "w3 w4", "--span", "1:3", "--model",
                           str(tiny_folder), "--out", str(tmp_path))
    assert_one_line_error(code, err, "--span 1:3 is not within the answer's 2 tokens")


def test_parse_span():
    assert parse_span("1:3") == (1, 3) and parse_span(":2", 5) == (0, 2) and parse_span("2:", 5) == (2, 5)
    assert parse_span(None) is None


def test_writes_json_and_html_and_replaces_only_with_force(capsys, tmp_path, tiny_folder, browser):
    out = tmp_path / "out"
    code, printed, err = run_cli(capsys, "explain", PROMPT, "--generate", "5", "--span", "1:4", "--model",
                                 str(tiny_folder), "--out", str(out))
    assert code == 0, err
    data = json.loads((out / "generation.json").read_text())
    assert data["schema"] == "flowroutes.generation" and data["version"] == 1
    g = generate(flowroutes.load_model(str(tiny_folder)), PROMPT, 5)  # the same answer and numbers by the API
    assert data["answer"]["ids"] == g.answer_ids.tolist() and data["prompt_tokens"] == g.prompt_tokens
    assert data["answer"]["positions"] == [4, 5, 6, 7, 8]
    np.testing.assert_allclose(data["answer"]["probs"], g.answer_probs, atol=printed_to(6))  # JSON: 6 decimals
    np.testing.assert_allclose(data["methods"]["alti"]["matrix"], g.matrix("alti"), atol=printed_to(6))
    np.testing.assert_allclose(data["methods"]["routes"]["matrix"], g.matrix("routes", 0.04), atol=printed_to(6))
    # the span's attribution is the mean of the rounded rows, rounded again
    np.testing.assert_allclose(data["attribution"], g.attribution((1, 4), "alti"), atol=printed_to(6) + printed_to(6))
    np.testing.assert_allclose(data["methods"]["routes"]["through_answer"],
                               g.matrix("routes", 0.04, through_answer=True), atol=printed_to(6))
    for k in range(5):  # each row: prompt + earlier answer tokens = 1 (ALTI)
        values = data["methods"]["alti"]["matrix"][k] + data["methods"]["alti"]["to_answer"][k]
        # each value is rounded to 6 decimals, and the unrounded row sums to 1 within ALTI_ROW_SUM_ABS
        assert sum(values) == pytest.approx(1.0, abs=len(values) * printed_to(6) + ALTI_ROW_SUM_ABS)
        assert all(v == 0.0 for v in data["methods"]["alti"]["to_answer"][k][k:])
    assert data["routes"][2]["top_heads"][0]["weight"] == pytest.approx(
        list(g.routes(2).head_weights().values())[0], abs=printed_to(5))  # 5 decimals
    top = int(np.argmax(data["attribution"]))  # the printed list starts with the span's top prompt token
    lines = printed.splitlines()
    first = lines[lines.index(next(x for x in lines if x.startswith("prompt tokens"))) + 1]
    assert f"#{top} " in first and f'"{g.prompt_tokens[top]}"' in first
    assert "np.float" not in printed and "[" not in printed

    page_html = (out / "generation.html").read_text()
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page_html)  # nothing loads from the network
    assert page_html.count("<svg") == 5
    page = browser.new_page()
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto((out / "generation.html").as_uri())
    colours = page.eval_on_selector_all("#prompt .tok", "els => els.map(e => e.style.background)")
    alphas = [float(c.split(",")[3].rstrip(")")) if c.startswith("rgba") else 1.0 for c in colours]
    span_mean = np.asarray(data["attribution"])  # the span's mean, each token's share of the largest
    np.testing.assert_allclose(alphas, span_mean / span_mean.max(), atol=EIGHT_BIT)
    page.click("#answer .tok >> nth=2")
    assert page.locator(".pic >> nth=2").is_visible() and not page.locator(".pic >> nth=0").is_visible()
    titles = page.eval_on_selector_all("#prompt .tok", "els => els.map(e => e.title)")
    assert titles == [f"#{j}: {100 * v:.1f}%" for j, v in enumerate(data["methods"]["alti"]["matrix"][2])]
    assert "L" in page.inner_text("#info") and "active heads" in page.inner_text("#info")
    page.check("input[value=routes]")
    titles = page.eval_on_selector_all("#prompt .tok", "els => els.map(e => e.title)")
    assert titles == [f"#{j}: {100 * v:.1f}%" for j, v in enumerate(data["methods"]["routes"]["matrix"][2])]
    page.check("#hops")
    titles = page.eval_on_selector_all("#prompt .tok", "els => els.map(e => e.title)")
    assert titles == [f"#{j}: {100 * v:.1f}%" for j, v in enumerate(data["methods"]["routes"]["through_answer"][2])]
    assert all(u.startswith("file://") for u in requests)
    page.close()

    before = (out / "generation.json").read_bytes()
    code, _, err = run_cli(capsys, "explain", PROMPT, "--target", "w3 w4", "--model", str(tiny_folder), "--out",
                           str(out))
    assert_one_line_error(code, err, "already holds generation.json, generation.html: pass --force")
    assert (out / "generation.json").read_bytes() == before
    code, printed, err = run_cli(capsys, "explain", PROMPT, "--target", "w3 w4", "--method", "routes",
                                 "--through-answer", "--model", str(tiny_folder), "--out", str(out), "--force")
    assert code == 0, err
    data = json.loads((out / "generation.json").read_text())
    assert data["mode"] == "target" and data["answer"]["ids"] == [3, 4] and data["method"] == "routes"
    forced = generate(flowroutes.load_model(str(tiny_folder)), PROMPT, target="w3 w4")
    np.testing.assert_allclose(data["attribution"], forced.attribution(method="routes", through_answer=True),
                               atol=printed_to(6) + printed_to(6))
    assert data["through_answer"] and "through earlier answer tokens" in printed
    assert sorted(p.name for p in out.iterdir()) == ["generation.html", "generation.json"]  # no temp files left


@pytest.mark.slow
def test_smollm2_done_when(capsys, tmp_path):
    """The issue's command on the embedded default model, offline."""
    code, printed, err = run_cli(capsys, "explain", "When Mary and John went to the store, John gave a drink to",
                                 "--generate", "16", "--out", str(tmp_path))
    assert code == 0, err
    data = json.loads((tmp_path / "generation.json").read_text())
    assert data["answer"]["tokens"][0] == " Mary" and len(data["answer"]["ids"]) == 16
    assert data["prompt_tokens"][1] == " Mary" and len(data["attribution"]) == 14
    assert (tmp_path / "generation.html").read_text().count("<svg") == 16
    assert 'answer: " Mary' in printed
