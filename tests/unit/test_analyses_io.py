"""Analyses without a model: data input, bad input, and the shards' durability. On a tiny model and in
subprocesses (the CLI's refusals, kill -9 then resume, locks, Ray): tests/integration/test_analyses_io.py."""

import json
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flowroutes import FlowroutesError
from flowroutes.analyses.data import SAMPLES, read_texts, tokenize_texts
from flowroutes.analyses.run import analyze
from tests.helpers.models import word_tokenizer


def _texts(n, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(f"w{v}" for v in rng.integers(0, 90, 6 + i % 5)) for i in range(n)]


def test_read_txt_jsonl_parquet(tmp_path):
    texts = ["w1 w2", "w3 w4 w5"]
    (tmp_path / "a.txt").write_text("w1 w2\n\n  w3 w4 w5  \n")
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"body": t}) for t in texts) + "\n")
    pq.write_table(pa.table({"body": texts}), tmp_path / "a.parquet")
    assert read_texts(tmp_path / "a.txt") == texts
    assert read_texts(tmp_path / "a.jsonl", field="body") == texts
    assert read_texts(tmp_path / "a.parquet", field="body", limit=1) == texts[:1]


def test_shipped_samples_are_there():
    sizes = {name: len(read_texts(f"sample:{name}")) for name in SAMPLES}
    assert min(sizes.values()) >= 90 and sizes["addition"] == sizes["subtraction"] == 1200
    assert "\n" in read_texts("sample:code")[0]
    for op, name in ((1, "addition"), (-1, "subtraction")):
        for line in read_texts(f"sample:{name}")[4::5]:  # the "A + B = C" / "A - B = C" lines
            a, _sign, b, _eq, c = line.split()
            assert int(a) + op * int(b) == int(c) >= 0


@pytest.mark.parametrize("content, match", [
    (b"", "holds no text"),
    (b"\n  \n", "holds no text"),
    (b"caf\xe9 au lait\n", "not UTF-8"),
])
def test_bad_files(tmp_path, content, match):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(FlowroutesError, match=match):
        read_texts(path)


def test_bad_sources(tmp_path, monkeypatch):
    with pytest.raises(FlowroutesError, match="does not exist"):
        read_texts(tmp_path / "missing.txt")
    with pytest.raises(FlowroutesError, match="is a folder"):
        read_texts(tmp_path)
    (tmp_path / "x.jsonl").write_text('{"text": "w1"}\nnot json\n')
    with pytest.raises(FlowroutesError, match="line 2 is not valid JSON"):
        read_texts(tmp_path / "x.jsonl")
    (tmp_path / "x.parquet").write_bytes(b"PAR1 garbage")
    with pytest.raises(FlowroutesError, match="Parquet"):
        read_texts(tmp_path / "x.parquet")
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "datasets", None)  # as if not installed
        with pytest.raises(FlowroutesError, match="needs the `datasets` package"):
            read_texts("hf:allenai/c4:validation")
    with pytest.raises(FlowroutesError, match="unknown sample"):
        read_texts("sample:klingon")
    with pytest.raises(FlowroutesError, match="unknown analysis 'nope'"):
        analyze("nope", model=object())


def test_long_lines_skip_or_truncate():
    tok = word_tokenizer()
    texts = ["w1 w2 w3", "w1 w2 w3 w4 w5 w6", "w7"]
    skip = tokenize_texts(tok, texts, max_tokens=4, long="skip")
    assert skip.texts == ["w1 w2 w3"] and skip.skipped == 2 and skip.truncated == 0
    trunc = tokenize_texts(tok, texts, max_tokens=4, long="truncate")
    assert [len(i) for i in trunc.ids] == [3, 4] and trunc.truncated == 1 and trunc.skipped == 1
    with pytest.raises(FlowroutesError, match="no usable text"):
        tokenize_texts(tok, ["w1 w2 w3 w4 w5"], max_tokens=3)


# --- shards: concurrent runs, locks, durability ---------------------------------------------------------------------
def _squares(calls):
    def compute(start, stop):
        calls.append((start, stop))
        return pa.table({"item": list(range(start, stop))})

    return compute


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc/self/fd")
def test_shards_reach_the_disk_before_their_rename(tmp_path, monkeypatch):
    from flowroutes.analyses.shards import run_shards

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src), str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    run_shards(2, _squares([]), tmp_path, 2, {"run": 1}, progress=False)
    (moved,) = [e for e in events if e[0] == "replace" and e[2].endswith("shard-000000.parquet")]
    at = events.index(moved)
    assert ("fsync", moved[1]) in events[:at]  # the temp file's bytes were flushed before it became the shard
    assert ("fsync", str(tmp_path)) in events[at:]  # and then the folder's new entry
