"""The hostile-client suite's option checks that need no server or model (the rest: tests/integration)."""

from __future__ import annotations


def test_serve_binds_loopback_and_wants_a_token_elsewhere():
    from flowroutes.cli import _parser
    from flowroutes.web.cli import settings_from_args

    parser = _parser()
    settings, host, _ = settings_from_args(parser.parse_args(["serve", "--model", "m"]))
    assert host == "127.0.0.1" and settings.token is None
    assert sorted(settings.allowed_hosts) == ["127.0.0.1", "::1", "localhost"]
    settings, host, _ = settings_from_args(parser.parse_args(["serve", "--model", "m", "--host", "0.0.0.0"]))
    assert host == "0.0.0.0" and settings.allowed_hosts == ["*"] and len(settings.token) >= 24
    settings, _, _ = settings_from_args(parser.parse_args(["serve", "--model", "m", "--host", "0.0.0.0", "--no-auth"]))
    assert settings.token is None
    settings, _, _ = settings_from_args(parser.parse_args(["serve", "--model", "m", "--host", "lab.local"]))
    assert "lab.local" in settings.allowed_hosts and "evil.example" not in settings.allowed_hosts and settings.token


def test_trace_cache_size_has_an_upper_bound(capsys):
    from flowroutes.cli import main

    assert main(["serve", "--model", "m", "--cache-size", "100000000"]) == 2
    assert "--cache-size must be 1..10000" in capsys.readouterr().err
