"""The CLI end to end on a tiny model folder (files written, JSON round-trips) and the bad inputs that need a model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import flowroutes
from flowroutes import FlowroutesError, Routes
from tests.helpers.cli import assert_one_line_error, run_cli


def test_cli_end_to_end_on_a_local_folder(tiny_folder, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "flowroutes", "trace", "w1 w2 w3 w1 w5 w6", "--model", str(tiny_folder),
         "--threshold", "0.05", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "top next tokens" in proc.stdout and "routes:" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["routes.json", "routes.png", "routes.svg"]
    assert (out / "routes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (out / "routes.svg").read_bytes()[:500]
    # the JSON is the same graph the API builds
    from_cli = Routes.from_json((out / "routes.json").read_text())
    model = flowroutes.load_model(str(tiny_folder))
    api = flowroutes.trace(model, "w1 w2 w3 w1 w5 w6").routes(0.05)
    assert from_cli.edges == api.edges and from_cli.nodes == api.nodes
    assert from_cli.active_heads == api.active_heads
    assert f"{len(api.edges)} edges" in proc.stdout


def test_position_out_of_range(capsys, tiny_folder, tmp_path):
    code, _, err = run_cli(capsys, "trace", "w1 w2 w3", "--model", str(tiny_folder), "--position", "3",
                           "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "position 3 is out of range")
    assert not (tmp_path / "o").exists()


def test_prompt_longer_than_the_context(capsys, tiny_folder, tmp_path):
    code, _, err = run_cli(capsys, "trace", " ".join(["w1"] * 65), "--model", str(tiny_folder),
                           "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "65 tokens but")


def test_unsupported_architecture(capsys, tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    from tests.helpers.models import word_tokenizer

    folder = tmp_path / "bert"
    BertForMaskedLM(BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64)).save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    code, _, err = run_cli(capsys, "trace", "w1", "--model", str(folder))
    assert_one_line_error(code, err, "'bert' model, which is not supported yet; supported: bloom, falcon")
    assert "llama" in err and "gpt2" in err


def test_api_bad_inputs(tiny):
    for prompt in ("", "  "):
        with pytest.raises(FlowroutesError, match="empty"):
            flowroutes.trace(tiny, prompt)
    tr = flowroutes.trace(tiny, "w1 w2")
    with pytest.raises(FlowroutesError, match="out of range"):
        tr.routes(0.04, position=2)


@pytest.mark.slow
def test_cli_on_the_default_model(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "flowroutes", "trace",
                           "When Mary and John went to the store, John gave a drink to", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    assert '" Mary"' in proc.stdout.split("top next tokens:")[1].splitlines()[1]
    data = json.loads(Path(out / "routes.json").read_text())
    assert data["model"] == "SmolLM2-135M-Instruct" and data["n_layers"] == 30


def test_trace_refuses_to_overwrite_earlier_routes(capsys, tmp_path, tiny_folder):
    out = tmp_path / "o"
    out.mkdir()
    (out / "routes.svg").write_text("<svg>an earlier run</svg>")
    code, _, err = run_cli(capsys, "trace", "w1 w2", "--model", str(tmp_path / "no-model"), "--out", str(out))
    assert_one_line_error(code, err, "already holds routes.svg: pass --force")  # before the model load
    assert (out / "routes.svg").read_text() == "<svg>an earlier run</svg>"
    code, _, err = run_cli(capsys, "trace", "w1 w2", "--model", str(tiny_folder), "--out", str(out), "--force")
    assert code == 0, err
    assert (out / "routes.svg").read_bytes().startswith(b"<?xml") and (out / "routes.json").is_file()


def test_help_explains_every_option():
    proc = subprocess.run([sys.executable, "-m", "flowroutes", "trace", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for option in ("--model", "--threshold", "--attention-threshold", "--ffn-threshold", "--position", "--out",
                   "--no-renormalize", "--debug"):
        assert option in proc.stdout


def test_debug_shows_the_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "flowroutes", "--debug", "trace", "hi", "--model",
                           str(tmp_path / "nope")], capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_a_bad_position_is_refused_before_the_weights_load(capsys, tiny_folder, monkeypatch):
    from flowroutes.models import loading
    from tests.helpers.cli import assert_one_line_error, run_cli

    def no_load(*_a, **_k):
        raise AssertionError("the weights were loaded before --position was checked")

    monkeypatch.setattr(loading, "load_model", no_load)
    monkeypatch.setattr("flowroutes.models.load_model", no_load)
    code, _, err = run_cli(capsys, "trace", "w1 w2 w3", "--model", str(tiny_folder), "--position", "7",
                           "--out", str(tiny_folder.parent / "out-bad-position"))
    assert_one_line_error(code, err, "position 7 is out of range for a prompt of 3 tokens")


def test_tokens_that_are_parts_of_a_character_print_and_draw_whole(capsys, tmp_path, monkeypatch):
    """Issue 24 defect 6: ' \ufffd' was printed for each byte token of an emoji and drawn as an empty box."""
    from flowroutes import figures
    from tests.helpers.bpe import bpe
    from tests.helpers.models import tiny_llama

    tok = bpe(years=False)  # every non-ASCII character falls apart into its UTF-8 bytes
    folder = tmp_path / "bytes-model"
    tiny_llama(vocab_size=len(tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    drawn: list = []
    real = figures.draw_routes
    monkeypatch.setattr(figures, "draw_routes", lambda routes, ax, *a: (drawn.append(ax), real(routes, ax, *a))[1])
    code, out, _ = run_cli(capsys, "trace", "ab \U0001F642", "--model", str(folder), "--out", str(tmp_path / "o"))
    assert code == 0
    assert "\ufffd" not in out
    assert 'position: 6 ("\U0001F642(4/4)")' in out  # 'a', 'b', ' ', then the four bytes F0 9F 99 82
    tops = out.split("top next tokens:\n")[1].split("\nroutes:")[0].splitlines()
    assert len(tops) == 5 and all("\ufffd" not in t for t in tops)
    # the PNG and the SVG: the emoji is joined on each of its tokens, and written as its code point because the
    # figure's font has no glyph for it (an empty box before)
    assert len(drawn) == 2
    for ax in drawn:
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert labels == ["a", "b", " "] + [f"U+1F642({k}/4)" for k in range(1, 5)]
        glyphs = figures._glyphs()
        texts = labels + [a.get_text() for a in ax.texts]
        assert all(ord(c) in glyphs or c == " " for t in texts for c in t), texts


def test_drawable_keeps_what_the_font_draws_and_names_the_rest():
    from flowroutes.figures import drawable

    assert drawable(" Mary") == " Mary"
    assert drawable("caf\u00e9\n") == "caf\u00e9\\n"
    assert drawable("\U0001F642(1/4)") == "U+1F642(1/4)"
    assert drawable("\ufffd") in ("\ufffd", "U+FFFD")


def test_max_edges_cuts_to_the_explorers_strongest_paths(capsys, tiny_folder, tmp_path):
    """`flowroutes trace --max-edges N` writes the same cut the explorer draws (`routes.strongest`, moved out of
    web/app.py): at most N edges, every kept edge on a path up to the explained node, and the strongest edge into it
    kept; `Routes.strongest` gives library users the same."""
    from flowroutes.routes import level, residual_id, strongest

    prompt = "w1 w2 w3 w1 w5 w6 w7 w2"
    full = flowroutes.trace(flowroutes.load_model(str(tiny_folder)), prompt).routes(0.02)
    assert len(full.edges) > 12
    code, out, _ = run_cli(capsys, "trace", prompt, "--model", str(tiny_folder), "--threshold", "0.02",
                           "--max-edges", "12", "--out", str(tmp_path / "cut"))
    assert code == 0 and f"cut to the 12 strongest of {len(full.edges)} edges (--max-edges 12)" in out
    cut = Routes.from_json((tmp_path / "cut" / "routes.json").read_text())
    assert cut.edges == full.strongest(12).edges and len(cut.edges) == 12
    top = residual_id(full.n_layers, full.position)
    up = {top}
    nodes = {n.id: n for n in cut.nodes}
    for e in sorted(cut.edges, key=lambda e: -level(nodes[e.target])):  # down the levels from the explained node
        assert e.target in up, e
        up.add(e.source)
    best_into_top = max((e for e in full.edges if e.target == top), key=lambda e: e.weight)
    assert best_into_top in cut.edges
    assert strongest(full, len(full.edges)) == (full, None)
    assert_one_line_error(*run_cli(capsys, "trace", prompt, "--model", str(tiny_folder), "--max-edges", "0",
                                   "--out", str(tmp_path / "no"))[::2], "--max-edges must be a positive integer")
