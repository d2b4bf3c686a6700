"""The CLI's bad inputs that need no model: one line, exit code 2. End to end runs: tests/integration/test_cli.py."""


import pytest

import flowroutes
from flowroutes import FlowroutesError
from flowroutes.models import embedded_gguf_path
from tests.helpers.cli import assert_one_line_error, run_cli


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


@pytest.mark.parametrize("command", [["trace", "hi"], ["analyze", "head-roles"], ["reproduce"],
                                     ["compare-patching"]])
def test_an_unwritable_out_is_refused_before_the_model_loads(capsys, tmp_path, command):
    # /proc refuses new files even to root, whose permission bits say it may write anywhere
    code, _, err = run_cli(capsys, *command, "--model", str(tmp_path / "no-model"), "--out", "/proc/flowroutes/x")
    assert_one_line_error(code, err, "--out /proc/flowroutes/x: cannot write there")
    missing = tmp_path / "new" / "deeper"  # a folder to create: checked by creating it, then removed again
    code, _, err = run_cli(capsys, *command, "--model", str(tmp_path / "no-model"), "--out", str(missing))
    assert_one_line_error(code, err, "does not exist")  # now the model path is what is wrong
    assert not (tmp_path / "new").exists()
