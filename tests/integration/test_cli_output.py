"""What every command prints, as a person reads it: estimates as '0.759 [0.717, 0.803] (n=348 in 20 texts)', never a
Python repr (Estimate(...), {'...}, tensor(...)), long lists cut with a count of what was left out, and one 'wrote'
line per file written, saying what it holds and where it went. Each command runs in-process on the tiny model
folder (serve is left out: it prints no summary, only the address it listens on)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flowroutes.analyses import reproduce as rep
from flowroutes.analyses.base import registry
from tests.helpers.cli import run_cli

#: the signs of a Python repr or of a number no person should read
REPRS = [
    ("a dataclass repr", r"\b[A-Z]\w*\(\w+="),  # Estimate(value=..., Namespace(model=...
    ("a dict repr", r"\{['\"]"),
    ("a tensor or an array", r"\b(tensor|array|np\.\w+)\("),
    ("a tuple or list repr of strings", r"[\[(]'[^']*', '"),
    ("'nan' or 'inf'", r"\b(nan|inf)\b"),
    ("a number with more than 4 significant decimals", r"\b0\.\d{5,}|\b[1-9]\d*\.\d{5,}"),
]
#: texts of the tiny model's words ('w0'..'w95'), a few per domain, short enough for its 64-token context
TEXTS = "\n".join(" ".join(f"w{(7 * i + 3 * j) % 96}" for j in range(6 + i % 5)) + " ." for i in range(8))


def assert_for_people(printed: str) -> None:
    for what, pattern in REPRS:
        found = re.findall(r".{0,40}(?:" + pattern + r").{0,30}", printed)
        assert not found, f"{what} in the output: {found[:3]}"


def wrote_lines(printed: str) -> dict[str, str]:
    """{path: what it holds} of the 'wrote NAME (WHAT) → PATH' lines."""
    out = {}
    for line in printed.splitlines():
        m = re.fullmatch(r"wrote (\S+) \((.+)\) → (\S+)", line)
        if m:
            assert Path(m.group(3)).name == m.group(1) or m.group(3).endswith("/"), line
            out[m.group(3)] = m.group(2)
    return out


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("texts") / "t.txt"
    path.write_text(TEXTS + "\n")
    return path


def test_trace_says_what_it_wrote_where(capsys, tiny_folder, tmp_path):
    out = tmp_path / "out"
    code, printed, _ = run_cli(capsys, "trace", "w1 w2 w3 w1 w5 w6", "--model", str(tiny_folder), "--out", str(out))
    assert code == 0
    assert_for_people(printed)
    wrote = wrote_lines(printed)
    assert sorted(wrote) == sorted(str(out / n) for n in ("routes.json", "routes.svg", "routes.png"))
    n_edges = re.search(r"routes: \d+ nodes, (\d+) edges", printed).group(1)
    assert wrote[str(out / "routes.json")] == f"routes of position 5, {n_edges} edges"
    assert wrote[str(out / "routes.svg")] == wrote[str(out / "routes.png")] == "the routes' picture"
    assert all(Path(p).is_file() for p in wrote)
    # the tokens are shown in quotes, not as Python string reprs
    assert "position: 5 (\"w6\")" in printed


def test_trace_for_circuit_tracer_says_what_it_wrote_where(capsys, tiny_folder, tmp_path):
    code, printed, _ = run_cli(capsys, "trace", "w1 w2 w3", "--model", str(tiny_folder), "--out", str(tmp_path),
                               "--format", "circuit-tracer")
    assert code == 0
    assert_for_people(printed)
    wrote = wrote_lines(printed)
    assert len(wrote) == 2 and all(Path(p).is_file() for p in wrote)
    assert wrote[str(tmp_path / "graph-metadata.json")] == "circuit-tracer's list of graphs"


def test_explain_says_what_it_wrote_where(capsys, tiny_folder, tmp_path):
    code, printed, _ = run_cli(capsys, "explain", "w1 w2 w3 w4", "--generate", "3", "--model", str(tiny_folder),
                               "--out", str(tmp_path))
    assert code == 0
    assert_for_people(printed)
    assert wrote_lines(printed) == {
        str(tmp_path / "generation.json"): "3 answer tokens attributed to 4 prompt tokens",
        str(tmp_path / "generation.html"): "the page to explore them",
    }


def test_cache_lists_for_people(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWROUTES_CACHE", str(tmp_path / "cache"))
    code, printed, _ = run_cli(capsys, "cache")
    assert code == 0 and printed.startswith(f"model cache: {tmp_path / 'cache'} (0 entries")
    assert_for_people(printed)


@pytest.mark.parametrize("analysis", sorted(registry()))
def test_analyze_summaries_are_for_people(capsys, tiny_folder, texts, tmp_path, analysis):
    out = tmp_path / analysis
    code, printed, err = run_cli(capsys, "analyze", analysis, "--model", str(tiny_folder), "--data",
                                 f"general={texts}", f"code={texts}", "--n", "4", "--out", str(out), "--no-progress",
                                 "--no-spacy")
    assert code == 0, err
    assert_for_people(printed)
    wrote = wrote_lines(printed)
    assert wrote[str(out / "report.html")].startswith("the report")
    assert wrote[str(out / "summary.json")] == "the summary's numbers"
    assert all(Path(p).exists() for p in wrote)
    # every line that a cut list ends with says how many were left out
    for line in printed.splitlines():
        assert not line.rstrip().endswith("..."), line


def test_compare_patching_summary_is_for_people(capsys, tiny_folder, tmp_path):
    code, printed, err = run_cli(capsys, "compare-patching", "--model", str(tiny_folder), "--n", "4", "--force",
                                 "--out", str(tmp_path), "--no-progress", "--thresholds", "0.04")
    assert code == 0, err
    assert_for_people(printed)
    assert re.search(r"^  timings:\n(    .+: [\d.]+ (s|min).*\n)+", printed, flags=re.M), printed
    wrote = wrote_lines(printed)
    assert wrote[str(tmp_path / "report.html")].startswith("the report")
    assert all(Path(p).exists() for p in wrote)


def test_reproduce_summary_is_for_people(capsys, tiny_folder, texts, tmp_path, monkeypatch):
    monkeypatch.setitem(rep.SIZE, "quick", rep.Size(texts_per_domain=4, task_examples=4, patching_examples=4,
                                                    n_boot=50, tsne_max=40))
    data = [f"{d}={texts}" for d in ("general", "english", "code", "russian", "italian", "spanish", "addition",
                                     "subtraction")]
    code, printed, err = run_cli(capsys, "reproduce", "--model", str(tiny_folder), "--data", *data, "--out",
                                 str(tmp_path), "--no-progress")
    assert code == 0, err
    assert_for_people(printed)
    wrote = wrote_lines(printed)
    assert wrote[str(tmp_path / "report.html")].startswith("the claims report: 16 claims")
    assert wrote[str(tmp_path / "claims.json")] == "every claim's numbers and verdict"
    assert all(Path(p).exists() for p in wrote)
