"""Analyses on a tiny model and in subprocesses: sharded runs equal in-memory ones, kill -9 mid-run then resume, a Ray
cluster, the CLI's refusals, and runs that share a folder (locks)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import flowroutes
from flowroutes import FlowroutesError
from flowroutes.analyses.run import analyze
from tests.helpers.models import tiny_llama, word_tokenizer
from tests.helpers.tolerances import OTHER_PATH


def _texts(n, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(f"w{v}" for v in rng.integers(0, 90, 6 + i % 5)) for i in range(n)]


def _cli(args, **kw):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.Popen([sys.executable, "-m", "flowroutes", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


@pytest.fixture(scope="module")
def llama():
    return flowroutes.load_model(tiny_llama(), tokenizer=word_tokenizer())


def test_sharded_equals_in_memory_and_counts_skips(llama, tmp_path):
    data = tmp_path / "d.txt"
    data.write_text("\n".join(_texts(9) + ["w1 " * 40]))
    mem = analyze("vectors", llama, data=[str(data)], spacy=False, progress=False, max_tokens=30)
    assert set(mem.figures) == {"tsne-pos_in", "tsne-pos_next", "tsne-subword"}
    analyze("vectors", llama, data=[str(data)], out=tmp_path / "o", spacy=False, progress=False,
            shard_size=4, batch_size=3, max_tokens=30, tsne_max=0)
    assert mem.summary["skipped_long_or_short"] == 1 and mem.summary["texts"] == 9
    assert len(list((tmp_path / "o" / "shards" / "corpus").glob("shard-*.parquet"))) == 3
    a, b = mem.table.to_pydict(), pq.read_table(tmp_path / "o" / "vectors.parquet").to_pydict()
    assert a["doc"] == b["doc"] and a["token"] == b["token"]
    np.testing.assert_allclose(np.array(a["vector"]), np.array(b["vector"]), rtol=0, atol=OTHER_PATH)
    # a second run with other data refuses to mix shards
    data.write_text("\n".join(_texts(5, seed=3)))
    with pytest.raises(FlowroutesError, match="different run"):
        analyze("vectors", llama, data=[str(data)], out=tmp_path / "o", spacy=False, progress=False, shard_size=4,
                tsne_max=0)


def test_kill_9_then_resume_gives_every_row_once(tiny_folder, tmp_path):
    data = tmp_path / "d.txt"
    data.write_text("\n".join(_texts(80)))
    ref = analyze("bottom-to-top", str(tiny_folder), data=[str(data)], spacy=False, progress=False, shard_size=2,
                  out=tmp_path / "ref")
    shards = tmp_path / "cut" / "shards" / "corpus"
    run = _cli(["analyze", "bottom-to-top", "--model", str(tiny_folder), "--data", str(data), "--no-spacy",
                "--shard-size", "2", "--no-progress", "--out", str(tmp_path / "cut")])
    deadline = time.time() + 120
    while time.time() < deadline and len(list(shards.glob("shard-*.parquet"))) < 3:
        time.sleep(0.005)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    n_before = len(list(shards.glob("shard-*.parquet")))
    assert 3 <= n_before < 40, "the run must be killed mid-way"
    assert not (tmp_path / "cut" / "bottom_to_top.parquet").exists()
    again = analyze("bottom-to-top", str(tiny_folder), data=[str(data)], spacy=False, progress=False, shard_size=2,
                    out=tmp_path / "cut")
    a = ref.table.to_pydict()
    b = pq.read_table(tmp_path / "cut" / "bottom_to_top.parquet").to_pydict()
    assert again.table.num_rows == len(b["doc"]) == len(a["doc"]) == sum(len(t.split()) for t in _texts(80))
    assert len(set(zip(b["doc"], b["position"]))) == len(b["doc"])
    assert a.keys() == b.keys()
    for key in a:
        kind = object if isinstance(a[key][0], str) else None
        np.testing.assert_array_equal(np.array(a[key], dtype=kind), np.array(b[key], dtype=kind))
    assert (tmp_path / "cut" / "report.html").stat().st_size > 1000


@pytest.mark.slow  # starts a Ray cluster (~30-60 s on 2 cores); no SmolLM2
def test_ray_local_two_workers_give_the_same_table(tiny_folder, tmp_path):
    pytest.importorskip("ray")
    data = tmp_path / "d.txt"
    data.write_text("\n".join(_texts(10)))
    kw = dict(data=[str(data)], spacy=False, progress=False, shard_size=3)
    single = analyze("vectors", str(tiny_folder), out=tmp_path / "one", **kw)
    spread = analyze("vectors", str(tiny_folder), out=tmp_path / "ray", ray="local:2", **kw)
    assert len(list((tmp_path / "ray" / "shards" / "corpus").glob("shard-*.parquet"))) == 4
    a, b = single.table.to_pydict(), spread.table.to_pydict()
    assert a["doc"] == b["doc"] and a["token"] == b["token"] and a["position"] == b["position"]
    np.testing.assert_allclose(np.array(a["vector"]), np.array(b["vector"]), rtol=0, atol=OTHER_PATH)


def _squares(calls):
    def compute(start, stop):
        calls.append((start, stop))
        return pa.table({"item": list(range(start, stop))})

    return compute


def test_cli_bad_input(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    p = _cli(["analyze", "vectors", "--data", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "o")])
    _out, err = p.communicate(timeout=120)
    assert p.returncode == 2 and err.strip().count("\n") == 0 and "holds no text" in err
    p = _cli(["analyze", "sideways", "--out", str(tmp_path / "o")])
    _out, err = p.communicate(timeout=120)
    assert p.returncode == 2 and "unknown analysis 'sideways'" in err
    afile = tmp_path / "f"
    afile.write_text("x")
    # refused before the model or the data load: a missing model would otherwise be the first error
    for args, words in ((["--ray", "local:x"], "positive integer"), (["--out", str(afile)], "is a file"),
                        (["--out", str(afile / "sub")], "is a file"), (["--threshold", "2"], "(0, 1)")):
        out = [] if "--out" in args else ["--out", str(tmp_path / "o")]
        p = _cli(["analyze", "vectors", "--model", str(tmp_path / "missing"), *args, *out])
        _out, err = p.communicate(timeout=120)
        assert p.returncode == 2 and err.strip().count("\n") == 0 and words in err, (args, err)
    assert not (tmp_path / "o").exists()


HOLD = """
import sys, time
from pathlib import Path
import pyarrow as pa
from flowroutes.analyses.shards import run_shards

def slow(start, stop):
    print("computing", start, flush=True)
    time.sleep(float(sys.argv[2]))
    return pa.table({"item": list(range(start, stop))})

run_shards(6, slow, Path(sys.argv[1]), 2, {"run": 1}, progress=False)
print("done", flush=True)
"""


def _holder(folder, pause):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(pause)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("computing")  # it holds the lock now
    return proc


def test_a_second_run_on_the_same_folder_is_refused_or_waits(tmp_path):
    import socket

    from flowroutes.analyses.shards import run_shards

    proc = _holder(tmp_path, 0.5)
    try:
        with pytest.raises(FlowroutesError, match=rf"in use by another run \(pid {proc.pid} on "
                                                  rf"{socket.gethostname()}, started .*\): wait for it"):
            run_shards(6, _squares([]), tmp_path, 2, {"run": 1}, progress=False)
        calls = []  # waiting instead: the first run computes every shard, the second none
        table = run_shards(6, _squares(calls), tmp_path, 2, {"run": 1}, progress=False, lock_wait=120)
        assert calls == [] and table.column("item").to_pylist() == list(range(6))
    finally:
        proc.kill()
        proc.wait()


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path, caplog):
    from flowroutes.analyses.shards import LOCK, run_shards

    proc = _holder(tmp_path, 60)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads((tmp_path / LOCK).read_text())["pid"] == proc.pid  # its lock file is still there
    calls = []
    table = run_shards(6, _squares(calls), tmp_path, 2, {"run": 1}, progress=False)
    assert calls == [(0, 2), (2, 4), (4, 6)] and table.num_rows == 6
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"flowroutes: repaired the run lock of {tmp_path}: pid {proc.pid} on ") and \
        line.endswith("ended without releasing it; taken over")
    caplog.clear()  # a run that ended cleanly leaves no holder behind: the next run repairs nothing
    run_shards(6, _squares([]), tmp_path, 2, {"run": 1}, progress=False)
    assert caplog.records == []
