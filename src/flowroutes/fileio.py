"""Durable atomic file writes (bytes and Parquet tables): a temp file in the same folder, flushed to disk (fsync),
then renamed over the target, and the folder's entry flushed too. A reader sees the old file or the whole new
one, also after a crash or a power cut; a killed writer leaves at most a hidden `.NAME.*.tmp` file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def _usual_mode(path: str) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)  # mkstemp makes 0600 files; results are for everyone who may read the folder


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename in it) to disk, where the platform allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a folder; the rename itself is still atomic
    finally:
        os.close(fd)


def write_with(path: Path, write: Callable[[str], None], *, fsync: bool = True) -> None:
    """Write `path` atomically: `write(tmp_name)` fills a temp file next to it, which then replaces `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        _usual_mode(tmp)
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
        if fsync:
            fsync_folder(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_atomic(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Write `data` to `path` atomically (and durably unless fsync=False)."""

    def put(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    write_with(path, put, fsync=fsync)


def write_parquet_atomic(table, path: Path, *, metadata: dict[bytes, bytes] | None = None,
                         fsync: bool = True) -> None:
    """Write the pyarrow Table `table` to `path` atomically and durably (unless fsync=False); `metadata` joins its
    schema's. Needs pyarrow (the `analyses` extra)."""
    import pyarrow.parquet as pq

    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    write_with(Path(path), lambda tmp: pq.write_table(table, tmp), fsync=fsync)


def writable_folder(path: str | os.PathLike, flag: str = "--out") -> Path:
    """The output folder, checked before any slow work: it (or the nearest existing parent) is a folder in which a
    file can really be created (a probe file, removed at once; permission bits say nothing for root or for /proc).
    Folders it had to create for the probe are removed again: the command creates them when it writes, and a
    refused path or a failed run leaves nothing behind."""
    from .errors import FlowroutesError

    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise FlowroutesError(f"{flag} {out} is a file, not a folder: pass a folder path")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise FlowroutesError(f"{flag} {out} is inside {parent}, which is a file: pass a folder path")
    created = [p for p in (out, *out.parents) if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".flowroutes-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise FlowroutesError(f"{flag} {out}: cannot write there ({reason}): pass a folder you may write to") \
            from None
    finally:
        for folder in created:  # deepest first
            try:
                folder.rmdir()
            except OSError:
                pass
    return out
