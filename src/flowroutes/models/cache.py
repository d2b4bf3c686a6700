"""The model cache: every GGUF's dequantized float32 copy, kept as safetensors so that a second load takes seconds
instead of a dequantization (20 s for SmolLM2, ~2 min for Gemma 3 270M).

An entry is a folder of `cache_root()` named by the GGUF's stem, the sha256 of its content and the transformers
version that dequantized it: a reinstall or a copy of the same file finds the same entry, an edited file gets a
new one. Its last file, CHECKSUM, lists every file's size and sha256 and the GGUF paths that used the entry; an
entry is read only when that checksum matches, and it is *in use* while one of those paths still holds its
content. Writing a new entry removes those no model file on this machine uses any more, so reinstalls leave one
entry per model. No cache problem ever stops a load, and every repair is said in one line (`flowroutes.repairs`).

`flowroutes cache` lists the entries (`entries`), `--prune` removes the unused ones, `--clear` all of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import repairs
from ..fileio import write_atomic

CHECKSUM = "flowroutes-checksum.json"  # written last into an entry: its files' sizes and sha256, and its sources
STALE_AFTER_S = 3600  # a leftover partial folder (~540 MB) of another host or an older flowroutes: removed after
_LEFTOVER = re.compile(r"\.(?:partial|stale)-(?P<host>.+)-(?P<pid>\d+)-[^-]+")
# an entry's name; older versions keyed entries by the file's size and mtime (`<size>-<mtime>`): listed and pruned
_ENTRY = re.compile(r"(?P<stem>.+?)-(?P<digest>[0-9a-f]{20}|\d+-\d+)-transformers(?P<transformers>[\w.+-]+)")


def cache_root() -> Path:
    """Where the dequantized models are kept: $FLOWROUTES_CACHE, else ~/.cache/flowroutes."""
    return Path(os.environ.get("FLOWROUTES_CACHE") or Path.home() / ".cache" / "flowroutes")


# --- content digests ------------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


_FILE_DIGESTS: dict[tuple, str] = {}  # (path, size, mtime_ns, inode) -> sha256, so a file is hashed once


def file_digest(path: Path) -> str:
    """The sha256 of a file, computed once per process and file state (~0.3 s per 250 MB)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _FILE_DIGESTS:
        _FILE_DIGESTS[key] = _sha256(path)
    return _FILE_DIGESTS[key]


def gguf_cache_folder(path: Path) -> Path:
    """The entry of a GGUF file: its stem, the sha256 of its content and the transformers version that
    dequantizes it."""
    import transformers

    return cache_root() / f"{path.stem}-{file_digest(path)[:20]}-transformers{transformers.__version__}"


# --- one entry: written whole, checked before use --------------------------------------------------------------------
def _record(folder: Path) -> dict:
    return json.loads((folder / CHECKSUM).read_text(encoding="utf-8"))


def _write_record(folder: Path, sources: list[str]) -> None:
    """Record every file of `folder` (sizes and sha256) and the GGUF paths that use it in CHECKSUM, durably, as
    the last file written (atomically: a reader sees the old record or the new one)."""
    files = {f.name: {"size": f.stat().st_size, "sha256": _sha256(f)}
             for f in sorted(folder.iterdir()) if f.is_file() and f.name != CHECKSUM}
    _put_record(folder, {"version": 1, "files": files, "sources": sorted(set(sources))})


def _put_record(folder: Path, record: dict) -> None:
    write_atomic(folder / CHECKSUM, json.dumps(record, indent=1).encode("utf-8"))


def verify_cache(folder: Path) -> bool:
    """Whether `folder` holds a complete entry: its checksum file, and every file it lists with that size and
    sha256 (config.json and model.safetensors among them). Never raises."""
    try:
        files = _record(folder)["files"]
        if not {"config.json", "model.safetensors"} <= set(files):
            return False
        for name, want in files.items():
            path = folder / name
            if path.stat().st_size != want["size"] or _sha256(path) != want["sha256"]:
                return False
        return True
    except Exception:  # noqa: BLE001 - missing, unreadable or malformed: not a valid entry
        return False


def _note_source(folder: Path, gguf: Path) -> None:
    """Add `gguf` to the paths an entry serves (once per new path; a reinstall's new path keeps it in use)."""
    try:
        record = _record(folder)
        where = str(gguf.resolve())
        if where not in record.get("sources", []):
            _put_record(folder, {**record, "sources": sorted({*record.get("sources", []), where})})
        os.utime(folder)  # its last use, for `flowroutes cache`
    except Exception:  # noqa: BLE001 - bookkeeping only
        pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def clean_leftovers(root: Path) -> None:
    """Remove `.partial-*` / `.stale-*` folders of writers that are gone: on this host, when their process is
    dead; any, when older than STALE_AFTER_S (those of other hosts, or named by older versions). Never raises."""
    try:
        found_entries = [e for e in root.iterdir() if e.name.startswith((".partial-", ".stale-")) and e.is_dir()]
    except OSError:
        return
    here = socket.gethostname()
    for entry in found_entries:
        found = _LEFTOVER.fullmatch(entry.name)
        try:
            old = time.time() - entry.stat().st_mtime > STALE_AFTER_S
        except OSError:
            continue
        if old or (found is not None and found["host"] == here and not _pid_alive(int(found["pid"]))):
            shutil.rmtree(entry, ignore_errors=True)
            repairs.say(f"the model cache ({root})", f"removed {entry.name}, a partial entry whose writer "
                                                     "is gone")


def _leftover_prefix(kind: str) -> str:
    return f".{kind}-{socket.gethostname()}-{os.getpid()}-"


def _save(model, tok, folder: Path, gguf: Path) -> None:
    """Write an entry: into a partial folder (checksum last), then swapped in. Never raises: a full disk, an
    unwritable folder or a safetensors error only mean the next load dequantizes again."""
    try:
        from safetensors.torch import save_model

        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=_leftover_prefix("partial")))
        try:
            save_model(model, str(tmp / "model.safetensors"))
            tok.save_pretrained(tmp)
            config = model.config.to_dict()
            config.pop("quantization_config", None)
            (tmp / "config.json").write_text(json.dumps(config, indent=1))
            for f in tmp.iterdir():  # on disk before the checksum says they are
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            _write_record(tmp, [str(gguf.resolve())])
            try:
                os.replace(tmp, folder)  # no folder there yet (or an empty one)
            except OSError:
                if verify_cache(folder):  # another process put a good one there meanwhile
                    return
                stale = Path(tempfile.mkdtemp(dir=folder.parent, prefix=_leftover_prefix("stale")))
                os.replace(folder, stale)  # the damaged one, out of the way ...
                try:
                    os.replace(tmp, folder)  # ... and ours in its place
                finally:
                    shutil.rmtree(stale, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except Exception:  # noqa: BLE001 - any cache problem only costs time
        pass


def load_cached(path: Path, dtype: torch.dtype, dequantize: Callable[[Path, torch.dtype], tuple]):
    """The model and tokenizer of the GGUF at `path`: from its entry when the checksum matches, else from
    `dequantize(path, torch.float32)`, then saved as the entry (and the entries no model file uses any more
    removed). A damaged entry is rebuilt, and said. FLOWROUTES_NO_CACHE=1 skips the cache."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if os.environ.get("FLOWROUTES_NO_CACHE"):
        return dequantize(path, dtype)
    root = cache_root()
    folder = gguf_cache_folder(path)
    clean_leftovers(root)
    if verify_cache(folder):
        try:
            tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
        except Exception:  # noqa: BLE001 - the files are intact, so this is no cache problem: keep them
            return dequantize(path, dtype)
        _note_source(folder, path)
        return model, tok
    if folder.exists():
        repairs.say(f"the model cache entry {folder}", "its checksum does not match its files (damaged or "
                                                      f"incomplete); rebuilding it from {path.name}")
    model, tok = dequantize(path, torch.float32)
    _save(model, tok, folder, path)
    prune(keep=folder)
    return (model if dtype == torch.float32 else model.to(dtype)), tok


# --- what the cache holds ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One cache entry, as `flowroutes cache` shows it."""

    folder: Path
    size: int  # bytes on disk
    transformers: str  # the version that dequantized it
    sources: tuple[str, ...]  # the GGUF paths recorded as using it
    state: str  # "in use", "unused", "unknown" or "damaged" (see `entries`)
    last_used: float  # the folder's mtime: its last load from the cache

    @property
    def removable(self) -> bool:
        return self.state in ("unused", "damaged")


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _state(digest: str, record: dict | None) -> str:
    if not digest.isalnum():  # keyed by size and mtime (before content keys): no load finds it any more
        return "unused"
    if record is None or "files" not in record:
        return "damaged"
    if "sources" not in record:  # written before sources were recorded: its next load records its file
        return "unknown"
    for source in record["sources"]:
        try:
            if file_digest(Path(source)).startswith(digest):
                return "in use"
        except OSError:  # the file is gone (an uninstalled package, a deleted clone)
            continue
    return "unused"


def entries(root: Path | None = None) -> list[Entry]:
    """The entries under `root` (default `cache_root()`), oldest use first, each with its state: "in use" (one
    of its recorded GGUF paths still holds the content it was made from), "unused" (none does, or it is keyed
    the pre-content way and no load can find it), "unknown" (written before paths were recorded; its next load
    records one) or "damaged" (no readable record). Only folders named like entries count: a cache root shared
    with other files leaves those alone."""
    root = cache_root() if root is None else root
    try:
        folders = sorted(f for f in root.iterdir() if f.is_dir() and _ENTRY.fullmatch(f.name))
    except OSError:
        return []
    out = []
    for folder in folders:
        name = _ENTRY.fullmatch(folder.name)
        try:
            record = _record(folder)
        except Exception:  # noqa: BLE001 - an entry without a readable record
            record = None
        sources = tuple((record or {}).get("sources", ()))
        out.append(Entry(folder, _size(folder), name["transformers"], sources, _state(name["digest"], record),
                         folder.stat().st_mtime))
    return sorted(out, key=lambda e: e.last_used)


def prune(root: Path | None = None, keep: Path | None = None) -> list[Entry]:
    """Remove the unused and damaged entries (see `entries`), except `keep`; say each, return them."""
    removed = []
    for entry in entries(root):
        if not entry.removable or entry.folder == keep:
            continue
        shutil.rmtree(entry.folder, ignore_errors=True)
        legacy = not _ENTRY.fullmatch(entry.folder.name)["digest"].isalnum()
        why = ("an older flowroutes keyed it by the file's size and mtime, so no load finds it any more" if legacy
               else {"unused": "no model file on this machine holds its content any more",
                     "damaged": "it has no readable checksum record"}[entry.state])
        repairs.say(f"the model cache ({entry.folder.parent})",
                    f"removed {entry.folder.name} ({entry.size / 1e6:.0f} MB): {why}")
        removed.append(entry)
    return removed


def clear(root: Path | None = None) -> list[Entry]:
    """Remove every entry and every leftover partial folder under `root`; return the entries removed."""
    root = cache_root() if root is None else root
    gone = entries(root)
    for entry in gone:
        shutil.rmtree(entry.folder, ignore_errors=True)
    try:
        for leftover in root.iterdir():
            if leftover.is_dir() and leftover.name.startswith((".partial-", ".stale-")):
                shutil.rmtree(leftover, ignore_errors=True)
    except OSError:
        pass
    return gone
