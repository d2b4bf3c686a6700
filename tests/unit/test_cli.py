"""The CLI end to end (files written, JSON round-trips) and every bad input: one line, exit code 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import flowroutes
from flowroutes import FlowroutesError, Routes
from flowroutes.cli import main
from flowroutes.models import embedded_gguf_path


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, pattern):
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("flowroutes: error: "), err
    assert "Traceback" not in err
    assert pattern in err, err


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


def test_help_explains_every_option():
    proc = subprocess.run([sys.executable, "-m", "flowroutes", "trace", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for option in ("--model", "--threshold", "--attention-threshold", "--ffn-threshold", "--position", "--out",
                   "--no-renormalize", "--debug"):
        assert option in proc.stdout


@pytest.mark.parametrize("prompt", ["", "   \n\t"])
def test_empty_prompt(capsys, tmp_path, prompt):
    code, _, err = run_cli(capsys, "trace", prompt, "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "prompt is empty")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flag,value", [("--threshold", "0"), ("--threshold", "1.5"), ("--ffn-threshold", "-1"),
                                        ("--attention-threshold", "1")])
def test_threshold_out_of_range(capsys, tmp_path, flag, value):
    code, _, err = run_cli(capsys, "trace", "hello", flag, value, "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "(0, 1)")


def test_position_out_of_range(capsys, tiny_folder, tmp_path):
    code, _, err = run_cli(capsys, "trace", "w1 w2 w3", "--model", str(tiny_folder), "--position", "3",
                           "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "position 3 is out of range")
    assert not (tmp_path / "o").exists()


def test_prompt_longer_than_the_context(capsys, tiny_folder, tmp_path):
    code, _, err = run_cli(capsys, "trace", " ".join(["w1"] * 65), "--model", str(tiny_folder),
                           "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "65 tokens but")


def test_model_path_that_does_not_exist(capsys, tmp_path):
    code, _, err = run_cli(capsys, "trace", "hi", "--model", str(tmp_path / "nope.gguf"))
    assert_one_line_error(code, err, "does not exist")
    with pytest.raises(FlowroutesError, match="does not exist"):
        flowroutes.load_model(str(tmp_path / "missing-folder") + "/")


def test_hub_id_not_cached_while_offline(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    code, _, err = run_cli(capsys, "trace", "hi", "--model", "someone/not-a-cached-model")
    assert_one_line_error(code, err, "HF_HUB_OFFLINE")


def test_corrupted_and_truncated_model_files(capsys, tmp_path):
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"this is not a gguf file" * 100)
    code, _, err = run_cli(capsys, "trace", "hi", "--model", str(garbage))
    assert_one_line_error(code, err, "cannot read the GGUF file")
    truncated = tmp_path / "truncated.gguf"
    with open(embedded_gguf_path(), "rb") as fh:
        truncated.write_bytes(fh.read(3_000_000))
    code, _, err = run_cli(capsys, "trace", "hi", "--model", str(truncated))
    assert_one_line_error(code, err, "cannot read the GGUF file")


def test_unsupported_architecture(capsys, tmp_path):
    from models import word_tokenizer
    from transformers import BertConfig, BertForMaskedLM

    folder = tmp_path / "bert"
    BertForMaskedLM(BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64)).save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    code, _, err = run_cli(capsys, "trace", "w1", "--model", str(folder))
    assert_one_line_error(code, err, "'bert' model, which is not supported yet; supported: bloom, falcon")
    assert "llama" in err and "gpt2" in err


def test_debug_shows_the_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "flowroutes", "--debug", "trace", "hi", "--model",
                           str(tmp_path / "nope")], capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


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
    assert "' Mary'" in proc.stdout.split("top next tokens:")[1].splitlines()[1]
    data = json.loads(Path(out / "routes.json").read_text())
    assert data["model"] == "SmolLM2-135M-Instruct" and data["n_layers"] == 30


# --- option errors: one line, exit code 2, before any model loads -------------------------------------------------
@pytest.mark.parametrize("argv, pattern", [
    (["trace"], "the following arguments are required: prompt"),
    (["trace", "hi", "--threshold", "lots"], "argument --threshold: invalid float value: 'lots'"),
    (["trace", "hi", "--bogus"], "unrecognized arguments: --bogus"),
    (["serve", "--port", "eighty"], "argument --port: invalid int value"),
    (["nosuch"], "invalid choice: 'nosuch'"),
    (["compare-patching", "--task", "sudoku"], "argument --task: invalid choice"),
])
def test_argparse_errors_are_one_line(capsys, argv, pattern):
    code, _, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, pattern)
    assert "--help" in err  # and where to look


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


@pytest.mark.parametrize("argv, pattern", [
    (["--out", "{file}/sub"], "which is a file"),
    (["--top", "-1"], "--top must be 0 or more"),
])
def test_trace_options_checked_before_the_model_loads(capsys, tmp_path, argv, pattern):
    (tmp_path / "file").write_text("x")
    argv = [a.replace("{file}", str(tmp_path / "file")) for a in argv]
    code, _, err = run_cli(capsys, "trace", "hi", "--model", str(tmp_path / "no-model"), *argv)
    assert_one_line_error(code, err, pattern)


@pytest.mark.parametrize("argv, pattern", [
    (["--port", "70000"], "--port must be 1..65535, got 70000"),
    (["--port", "0"], "--port must be 1..65535"),
    (["--cache-mb", "0"], "--cache-mb must be"),
    (["--min-threshold", "1.5"], "--min-threshold must be in (0, 1)"),
    (["--max-edges", "-5"], "--max-edges must be a positive integer"),
    (["--config", '{"host": 8050}'], "'host' must be a string, got 8050"),
    (["--config", '{"port": true}'], "'port' must be an integer, got True"),
    (["--config", '{"cache_size": false}'], "'cache_size' must be an integer, got False"),
    (["--config", '{"no_auth": 1}'], "'no_auth' must be true or false, got 1"),
    (["--config", '{"min_threshold": "0.01"}'], "'min_threshold' must be a number"),
    (["--config", '{"port": 80.5}'], "'port' must be an integer"),
])
def test_serve_options_and_config_values_are_checked(capsys, tmp_path, argv, pattern):
    if argv[0] == "--config":
        (tmp_path / "serve.json").write_text(argv[1])
        argv = ["--config", str(tmp_path / "serve.json")]
    code, _, err = run_cli(capsys, "serve", "--model", str(tmp_path / "no-model"), *argv)
    assert_one_line_error(code, err, pattern)


@pytest.mark.parametrize("argv, pattern", [
    (["--acdc-threshold", "-0.1"], "--acdc-threshold is a share of the clean - contrastive gap in [0, 1], got -0.1"),
    (["--acdc-threshold", "nan"], "--acdc-threshold is a share"),
    (["--acdc-threshold", "3"], "--acdc-threshold is a share"),
    (["--min-accuracy", "1.5"], "--min-accuracy is a share of examples in [0, 1], got 1.5"),
    (["--min-accuracy", "-1"], "--min-accuracy is a share"),
])
def test_compare_patching_options_checked_before_the_model_loads(capsys, tmp_path, argv, pattern):
    code, _, err = run_cli(capsys, "compare-patching", "--model", str(tmp_path / "no-model"), "--out",
                           str(tmp_path / "o"), *argv)
    assert_one_line_error(code, err, pattern)
