"""`flowroutes serve`'s options and config file, checked without a server or model."""

from __future__ import annotations

import pytest

from flowroutes import FlowroutesError
from flowroutes.web.store import Settings


def test_serve_options_and_config(tmp_path, capsys):
    from flowroutes.cli import _parser
    from flowroutes.web.cli import settings_from_args

    parser = _parser()
    settings, host, port = settings_from_args(parser.parse_args(["serve", "--model", "a", "--model", "b"]))
    assert (host, port, list(settings.models), settings.max_prompt_tokens) == ("127.0.0.1", 8050, ["a", "b"], 256)
    conf = tmp_path / "serve.toml"
    conf.write_text('models = ["m1"]\nport = 9000\nmax_prompt_tokens = 64\n')
    settings, host, port = settings_from_args(parser.parse_args(["serve", "--config", str(conf), "--port", "9100"]))
    assert (host, port, list(settings.models), settings.max_prompt_tokens) == ("127.0.0.1", 9100, ["m1"], 64)
    settings, _, _ = settings_from_args(parser.parse_args(["serve"]))
    assert settings.models == {"SmolLM2-135M-Instruct": None}  # the embedded default
    bad = tmp_path / "bad.json"
    bad.write_text('{"models": ["m"], "paths": ["/"]}')
    with pytest.raises(FlowroutesError, match="unknown keys"):
        settings_from_args(parser.parse_args(["serve", "--config", str(bad)]))
    from flowroutes.cli import main

    assert main(["serve", "--config", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not found" in err
    assert main(["serve", "--model", "m", "--max-prompt-tokens", "0"]) == 2
    assert "positive integer" in capsys.readouterr().err
    assert main(["serve", "--model", "m", "--analyses", str(tmp_path / "nowhere")]) == 2
    assert "analysis folder" in capsys.readouterr().err
    settings, _, _ = settings_from_args(parser.parse_args(["serve", "--analyses", str(tmp_path)]))
    assert settings.analyses == [str(tmp_path.resolve())]
    settings, _, _ = settings_from_args(parser.parse_args(["serve", "--max-drawn-edges", "300"]))
    assert settings.max_drawn_edges == 300
    conf.write_text('models = ["m1"]\nmax_drawn_edges = 40\n')
    settings, _, _ = settings_from_args(parser.parse_args(["serve", "--config", str(conf)]))
    assert settings.max_drawn_edges == 40 and Settings(models={}).max_drawn_edges == 1500
    assert main(["serve", "--model", "m", "--max-drawn-edges", "0"]) == 2
    # generate mode's longest answer: option, config key, default, bounds
    settings, _, _ = settings_from_args(parser.parse_args(["serve", "--max-new-tokens", "12"]))
    assert settings.max_new_tokens == 12 and Settings(models={}).max_new_tokens == 32
    conf.write_text('models = ["m1"]\nmax_new_tokens = 5\n')
    assert settings_from_args(parser.parse_args(["serve", "--config", str(conf)]))[0].max_new_tokens == 5
    capsys.readouterr()
    assert main(["serve", "--model", "m", "--max-new-tokens", "2000"]) == 2
    assert capsys.readouterr().err.strip().endswith("--max-new-tokens must be 1..1024, got 2000")
