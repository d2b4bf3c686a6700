"""Sharded, resumable execution: items are cut into shards, each shard's rows are written as one Parquet file
atomically (temp file + rename), so a killed run (even kill -9) resumes at the first missing shard and the final
table holds every row exactly once. Optionally spreads shards over Ray workers. Never interprets the rows.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import FlowroutesError

MANIFEST = "manifest.json"


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; results are for everyone who may read the folder
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def shard_ranges(n_items: int, shard_size: int) -> list[tuple[int, int]]:
    if shard_size < 1:
        raise FlowroutesError(f"--shard-size must be a positive integer, not {shard_size}")
    return [(s, min(s + shard_size, n_items)) for s in range(0, n_items, shard_size)]


def run_shards(
    n_items: int,
    compute: Callable[[int, int], pa.Table],
    folder: Path,
    shard_size: int,
    fingerprint: dict,
    *,
    progress: bool = True,
    ray: str | None = None,
) -> pa.Table:
    """Compute rows of items [0, n_items) shard by shard into `folder`, skipping shards already written by an
    earlier run with the same `fingerprint`; return all rows in item order.

    compute(start, stop) -> rows of items start..stop-1 (picklable when `ray` is used).
    ray: None (this process), "local" / "local:N" (start a local Ray cluster, with N CPUs) or a cluster address.
    """
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / MANIFEST
    want = json.dumps(fingerprint, sort_keys=True, default=str)
    if manifest.exists():
        if manifest.read_text(encoding="utf-8") != want:
            raise FlowroutesError(
                f"{folder} holds shards of a different run (other data, model or options): "
                "use another --out folder or delete it"
            )
    else:
        from ..cli import write_atomic

        write_atomic(manifest, want.encode("utf-8"))
    ranges = shard_ranges(n_items, shard_size)
    paths = [folder / f"shard-{i:06d}.parquet" for i in range(len(ranges))]
    todo = [i for i, p in enumerate(paths) if not p.exists()]
    from tqdm.auto import tqdm

    done_items = sum(b - a for i, (a, b) in enumerate(ranges) if i not in set(todo))
    bar = tqdm(total=n_items, initial=done_items, unit="item", desc="shards", disable=not progress)
    if ray is None:
        for i in todo:
            write_parquet_atomic(compute(*ranges[i]), paths[i])
            bar.update(ranges[i][1] - ranges[i][0])
    else:
        _run_ray(ray, compute, ranges, paths, todo, bar)
    bar.close()
    tables = [pq.read_table(p) for p in paths]
    return pa.concat_tables(tables) if tables else pa.table({})


def _run_ray(address: str, compute, ranges, paths, todo, bar) -> None:
    try:
        import ray
    except ImportError:
        raise FlowroutesError("--ray needs Ray: pip install 'ray==2.60.0'") from None
    started = not ray.is_initialized()
    if started:
        if address == "local" or address.startswith("local:"):  # local:N = a local cluster with N CPUs
            cpus = int(address.split(":", 1)[1]) if ":" in address else None
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
            write_parquet_atomic(ray.get(ready[0]), paths[i])
            bar.update(ranges[i][1] - ranges[i][0])
    finally:
        if started:
            ray.shutdown()
