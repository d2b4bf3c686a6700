"""`flowroutes reproduce` end to end on a tiny model: every claim of the paper gets a row and a verdict, the report
is written, and a second run resumes from the shards on disk with the same numbers."""

import json
import re
import subprocess
import sys

import pytest

from flowroutes.analyses import reproduce as rep
from flowroutes.analyses.base import VERDICTS
from tests.helpers.readable import assert_readable

#: the claims the issue lists; every reproduce run reports each of them
CLAIMS = {
    "ioi-generic-heads", "greater-than-contrast", "pos-function-words", "first-vs-later-subwords",
    "input-vs-next-pos", "bottom-to-top", "last-layer-ffn", "previous-token-heads-lead", "subword-merging-heads",
    "domain-specific-heads", "last-ffn-non-english", "ffn-zero-arithmetic", "svd-topic-tokens", "first-period-bos",
    "routes-vs-patching", "hundred-times-faster",
}


@pytest.fixture
def tiny_size(monkeypatch):
    monkeypatch.setitem(rep.SIZE, "quick", rep.Size(texts_per_domain=4, task_examples=4, patching_examples=4,
                                                    n_boot=50, tsne_max=40))


def test_reproduce_reports_every_claim_and_resumes(tiny_folder, tmp_path, tiny_size):
    out = tmp_path / "rep"
    # the tiny model's context is 64 tokens, shorter than many texts of the shipped corpora: cut them, at 32 to keep
    # the test short (measured on 2 shared cores: 52 s at 64 tokens, 32 s at 32)
    opts = rep.Options(long="truncate", max_tokens=32)
    doc = rep.reproduce(str(tiny_folder), size="quick", out=out, progress=False, options=opts)
    # the default data, each domain's source named in the report
    assert doc["counts"]["sources"] == {"general": "corpus:general", "english": "corpus:english",
                                        "code": "corpus:code", "russian": "corpus:russian",
                                        "italian": "corpus:italian", "spanish": "corpus:spanish",
                                        "addition": "sample:addition", "subtraction": "sample:subtraction"}
    assert doc["counts"]["texts_per_domain"] == dict.fromkeys(doc["counts"]["sources"], 4)
    assert doc["counts"]["truncated"] > 0
    keys = [c["claim"] for c in doc["claims"]]
    assert set(keys) == CLAIMS and len(keys) == len(CLAIMS)
    for c in doc["claims"]:
        assert c["verdict"] in VERDICTS and c["paper"] and c["why"]
        if c["verdict"] != "cannot be tested":
            # the numbers the verdict compares, and the rule as a pass condition
            assert c["conditions"] and c["rule"].startswith("holds if ")
            assert (c["verdict"] == "holds") == all(cond["met"] for cond in c["conditions"])
            est = c["estimate"]
            if est is not None and None not in est["ci95"]:
                assert est["n"] > 0 and est["ci95"][0] <= est["value"] <= est["ci95"][1]
        assert all((out / f).is_file() for f in c["figures"]), c["claim"]
        if c["verdict"] != "cannot be tested" and c["claim"] != "hundred-times-faster":  # a timing has no figure
            assert c["figures"], c["claim"]
    assert json.loads((out / "claims.json").read_text())["claims"] == json.loads(json.dumps(doc["claims"]))
    html = (out / "report.html").read_text()
    assert html.count("<tr id='claim-") == len(CLAIMS)
    assert "sources: general corpus:general, english corpus:english" in html
    assert_readable(html)
    for link in re.findall(r"href='([^']+)'", html):
        if link.startswith("#"):  # the glance table's links to each claim's row
            assert f" id='{link[1:]}'" in html, link
        else:
            assert (out / link).is_file(), link
    for page in out.glob("*/report.html"):  # every analysis's page too
        assert_readable(page.read_text())
    for sub in ("vectors", "bottom-to-top", "head-roles", "periods", "domains", "svd", "task-heads-ioi",
                "task-heads-greater-than", "task-heads-greater-than-00", "patching"):
        assert (out / sub / "report.html").exists(), sub
    shards = sorted((out / "shards").rglob("shard-*.parquet"))
    stamps = {p: p.stat().st_mtime_ns for p in shards}
    again = rep.reproduce(str(tiny_folder), size="quick", out=out, progress=False, options=opts)
    assert {p: p.stat().st_mtime_ns for p in shards} == stamps  # nothing recomputed
    assert [c["estimate"] for c in again["claims"] if c["claim"] != "hundred-times-faster"] == \
        [c["estimate"] for c in doc["claims"] if c["claim"] != "hundred-times-faster"]


def test_reproduce_cli_refuses_bad_input_before_loading(tmp_path):
    afile = tmp_path / "f"
    afile.write_text("x")
    for args, words in ((["--size", "huge"], "invalid choice"), (["--out", str(afile / "sub")], "is a file"),
                        (["--batch-size", "0"], "positive integer"),
                        (["--model", str(tmp_path / "missing")], "missing")):
        run = subprocess.run([sys.executable, "-m", "flowroutes", "reproduce", *args, "--out",
                              str(tmp_path / "o")] if "--out" not in args else
                             [sys.executable, "-m", "flowroutes", "reproduce", *args],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 2, (args, run.stderr)
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], (args, run.stderr)
    assert not (tmp_path / "o").exists()  # nothing half-written
