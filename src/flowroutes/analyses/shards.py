"""Sharded, resumable execution: items are cut into shards, each shard's rows are written as one Parquet file
atomically (temp file, fsync, rename), so a killed run (even kill -9) resumes at the first missing shard and the
final table holds every row exactly once. Optionally spreads shards over Ray workers. Never interprets the rows.

A shard counts as done only when its Parquet footer reads and says it holds the rows written for its items
(recorded in its metadata); anything else is computed again. One run at a time works in a folder: it holds a
lock file naming its process (pid, host, start time); a second run waits or stops with one line, and the lock of
a run that died is taken over. Both repairs (a shard computed again, a dead run's lock taken over) are said in one
line (`flowroutes.repairs`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .. import repairs
from ..errors import FlowroutesError
from ..fileio import write_atomic, write_parquet_atomic

try:
    import fcntl
except ImportError:  # not on Windows: a lock file created exclusively, with the holder's pid checked
    fcntl = None

MANIFEST = "manifest.json"
LOCK = "run.lock"
ROWS_KEY, ITEMS_KEY = b"flowroutes.rows", b"flowroutes.items"  # a shard's own record of what it holds


def shard_ranges(n_items: int, shard_size: int) -> list[tuple[int, int]]:
    if shard_size < 1:
        raise FlowroutesError(f"--shard-size must be a positive integer, not {shard_size}")
    return [(s, min(s + shard_size, n_items)) for s in range(0, n_items, shard_size)]


def _write_shard(table: pa.Table, path: Path, start: int, stop: int) -> None:
    write_parquet_atomic(table, path, metadata={ROWS_KEY: str(table.num_rows).encode(),
                                                ITEMS_KEY: f"{start}-{stop}".encode()})


def shard_is_valid(path: Path, start: int, stop: int) -> bool:
    """Whether `path` is a complete shard of items start..stop-1: its footer reads, and the row count and item
    range it records match the footer's. Never raises."""
    try:
        meta = pq.read_metadata(path)
        kv = meta.metadata or {}
        in_groups = sum(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
        return int(kv[ROWS_KEY]) == meta.num_rows == in_groups and kv[ITEMS_KEY] == f"{start}-{stop}".encode()
    except Exception:  # noqa: BLE001 - missing, truncated, not Parquet, or without our record: not done
        return False


def _read_shard(path: Path) -> pa.Table:
    table = pq.read_table(path)
    kept = {k: v for k, v in (table.schema.metadata or {}).items() if k not in (ROWS_KEY, ITEMS_KEY)}
    return table.replace_schema_metadata(kept or None)


# --- the run lock -----------------------------------------------------------------------------------------------
def _holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not holder:
        return "another run"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"pid {holder.get('pid')} on {holder.get('host')}, started {started}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _try_lock(path: Path) -> int | None:
    """An open descriptor holding the lock of `path`, or None when a live run holds it."""
    if fcntl is not None:  # the kernel drops the lock when its process dies, however it dies
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError:
            os.close(fd)
            return None
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        holder = _holder(path)
        if holder.get("host") == socket.gethostname() and not _pid_alive(int(holder.get("pid", 0) or 0)):
            with contextlib.suppress(OSError):
                os.unlink(path)  # a dead run's lock: take it over
                repairs.say(f"the run lock {path}", f"{_describe(holder)} ended without releasing it; taken over")
        return None


@contextlib.contextmanager
def run_lock(folder: Path, *, wait: float = 0.0) -> Iterator[None]:
    """Hold `folder`'s run lock (waiting up to `wait` seconds for another run to finish, else FlowroutesError).
    The lock file names its holder (pid, host, start time)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    deadline = time.monotonic() + max(0.0, wait)
    fd = _try_lock(path)
    while fd is None:
        if time.monotonic() >= deadline:
            raise FlowroutesError(f"{folder} is in use by another run ({_describe(_holder(path))}): wait for it to "
                                  "finish, or use another --out folder")
        time.sleep(0.2)
        fd = _try_lock(path)
    try:
        left = _holder(path)  # a run that ends clears its record, so one still there is a run that died
        if left and left.get("pid") != os.getpid():
            repairs.say(f"the run lock of {folder}", f"{_describe(left)} ended without releasing it; taken over")
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}).encode()
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, info)
        yield
    finally:
        if fcntl is None:
            with contextlib.suppress(OSError):
                os.unlink(path)
        else:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # released cleanly: no holder left for the next run to report
        os.close(fd)


# --- the run ------------------------------------------------------------------------------------------------------
def run_shards(
    n_items: int,
    compute: Callable[[int, int], pa.Table],
    folder: Path,
    shard_size: int,
    fingerprint: dict,
    *,
    progress: bool = True,
    ray: str | None = None,
    lock_wait: float = 0.0,
) -> pa.Table:
    """Compute rows of items [0, n_items) shard by shard into `folder`, skipping shards already written by an
    earlier run with the same `fingerprint`; return all rows in item order.

    compute(start, stop) -> rows of items start..stop-1 (picklable when `ray` is used).
    ray: None (this process), "local" / "local:N" (start a local Ray cluster, with N CPUs) or a cluster address.
    lock_wait: seconds to wait for another run working in `folder` (default: stop at once with an error).
    """
    if ray is not None:
        parse_ray_address(ray)  # a bad address stops the run before any work
    with run_lock(folder, wait=lock_wait):
        manifest = folder / MANIFEST
        want = json.dumps(fingerprint, sort_keys=True, default=str)
        if manifest.exists():
            if manifest.read_text(encoding="utf-8") != want:
                raise FlowroutesError(
                    f"{folder} holds shards of a different run (other data, model or options): "
                    "use another --out folder or delete it"
                )
        else:
            write_atomic(manifest, want.encode("utf-8"))
        ranges = shard_ranges(n_items, shard_size)
        paths = [folder / f"shard-{i:06d}.parquet" for i in range(len(ranges))]
        todo = [i for i, p in enumerate(paths) if not shard_is_valid(p, *ranges[i])]
        for i in todo:
            if paths[i].exists():  # a missing shard is work not yet done; a present, invalid one is a repair
                repairs.say(f"shard {paths[i]}", "its file is incomplete or not the rows of its items "
                                                 f"{ranges[i][0]}..{ranges[i][1] - 1}; computing it again")
        from tqdm.auto import tqdm

        missing = set(todo)
        done_items = sum(b - a for i, (a, b) in enumerate(ranges) if i not in missing)
        bar = tqdm(total=n_items, initial=done_items, unit="item", desc="shards", disable=not progress)
        if ray is None:
            for i in todo:
                _write_shard(compute(*ranges[i]), paths[i], *ranges[i])
                bar.update(ranges[i][1] - ranges[i][0])
        else:
            _run_ray(ray, compute, ranges, paths, todo, bar)
        bar.close()
        tables = []
        for i, p in enumerate(paths):
            try:
                tables.append(_read_shard(p))
            except Exception:  # noqa: BLE001 - a footer that reads but pages that do not: compute it again
                repairs.say(f"shard {p}", "its footer reads but its pages do not; computing it again")
                _write_shard(compute(*ranges[i]), p, *ranges[i])
                tables.append(_read_shard(p))
        return pa.concat_tables(tables) if tables else pa.table({})


def parse_ray_address(address: str) -> tuple[bool, int | None]:
    """(local?, CPUs) of a --ray value: "local", "local:N" (N >= 1) or a cluster address. FlowroutesError when bad."""
    if address == "local":
        return True, None
    if address.startswith("local:"):
        text = address.split(":", 1)[1]
        if not text.isdigit() or int(text) < 1:
            raise FlowroutesError(f"--ray {address}: the number of CPUs after 'local:' must be a positive integer, "
                                  "e.g. local:4")
        return True, int(text)
    if not address.strip():
        raise FlowroutesError("--ray is empty: pass local, local:N or a Ray cluster address")
    return False, None


def _run_ray(address: str, compute, ranges, paths, todo, bar) -> None:
    local, cpus = parse_ray_address(address)
    try:
        import ray
    except ImportError:
        raise FlowroutesError("--ray needs Ray: pip install 'ray==2.60.0'") from None
    started = not ray.is_initialized()
    if started:
        if local:
            # Ray's processes listen on every interface (docs/security.md); its token authentication is what keeps
            # others out, so say so when it has been turned off
            if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
                print("flowroutes: warning: RAY_AUTH_MODE=disabled: anyone who can reach this machine can run code "
                      "on the local Ray cluster", file=sys.stderr)
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        else:
            try:
                ray.init(address=address, log_to_driver=False)
            except Exception as exc:  # noqa: BLE001 - connection failures of any kind
                raise FlowroutesError(f"cannot connect to the Ray cluster at {address} ({exc}): check the address") \
                    from None
    try:
        use_gpu = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
        task = ray.remote(num_gpus=use_gpu)(lambda a, b: compute(a, b))
        pending = {task.remote(*ranges[i]): i for i in todo}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ready[0])
            _write_shard(ray.get(ready[0]), paths[i], *ranges[i])
            bar.update(ranges[i][1] - ranges[i][0])
    finally:
        if started:
            ray.shutdown()
