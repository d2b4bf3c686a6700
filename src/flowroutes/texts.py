"""Texts to trace: the shipped per-domain samples and corpora and user files (txt, JSONL, Parquet), read and
validated.

Reads only; never tokenises or runs a model. Every bad input raises FlowroutesError with one line. Used by the
analyses and by the explorer's prompt sets.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import zlib
from importlib import resources
from pathlib import Path

from .errors import FlowroutesError

#: shipped samples (src/flowroutes/data/<name>.txt), see SOURCES.md there
SAMPLES: tuple[str, ...] = (
    "general", "english", "code", "russian", "italian", "spanish", "addition", "subtraction",
)

#: shipped corpora of human-written texts (src/flowroutes/data/corpora/<name>.jsonl.gz, built by `make corpora`
#: from Debian packages, see SOURCES.md): the analyses' default data
CORPORA: tuple[str, ...] = ("general", "english", "code", "russian", "italian", "spanish")


def corpus_path(name: str) -> Path:
    if name not in CORPORA:
        raise FlowroutesError(f"unknown corpus '{name}': choose one of {', '.join(CORPORA)}")
    return Path(str(resources.files("flowroutes") / "data" / "corpora" / f"{name}.jsonl.gz"))


def sample_path(name: str) -> Path:
    if name not in SAMPLES:
        raise FlowroutesError(f"unknown sample '{name}': choose one of {', '.join(SAMPLES)}")
    return Path(str(resources.files("flowroutes") / "data" / f"{name}.txt"))


def read_texts(source: str | Path, field: str = "text", limit: int | None = None) -> list[str]:
    """The texts of a data file: .txt (one text per non-blank line), .jsonl (field `field`), .parquet (column
    `field`), any of them gzipped (.gz); `sample:NAME` for a shipped sample; `corpus:NAME` for a shipped corpus
    (field "text"); `hf:NAME[:SPLIT][?config=CONFIG&field=FIELD]` for a Hugging Face dataset (needs `datasets`;
    its own `field` wins over `field`).
    The code sample keeps one snippet per line with literal '\\n' escapes (decoded here). `limit` keeps the first
    texts only."""
    src = str(source)
    code = False
    if src.startswith("hf:"):
        return _read_hub_dataset(src[3:], field, limit)
    if src.startswith("sample:"):
        name = src.split(":", 1)[1]
        path = sample_path(name)
        code = name == "code"
    elif src.startswith("corpus:"):
        path, field = corpus_path(src.split(":", 1)[1]), "text"
    else:
        path = Path(src).expanduser()
    if not path.exists():
        raise FlowroutesError(f"data file {src} does not exist: pass a .txt, .jsonl or .parquet file, sample:NAME "
                              "or corpus:NAME")
    if path.is_dir():
        raise FlowroutesError(f"data path {src} is a folder: pass a .txt, .jsonl or .parquet file")
    suffix = path.suffix.lower()
    zipped = suffix == ".gz"
    if zipped:
        suffix = Path(path.stem).suffix.lower()
        if suffix == ".parquet":
            raise FlowroutesError(f"data file {src} is a gzipped Parquet file: pass the .parquet file itself")
    try:
        if suffix == ".parquet":
            texts = _read_parquet(path, field)
        else:
            try:
                raw = _unzip(path, src) if zipped else path.read_bytes()
                raw = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise FlowroutesError(
                    f"data file {src} is not UTF-8 text (byte {exc.start}): convert it to UTF-8"
                ) from None
            texts = _read_jsonl(raw, field, src) if suffix in (".jsonl", ".ndjson") else _read_lines(raw)
    except OSError as exc:
        raise FlowroutesError(f"cannot read data file {src} ({exc.strerror or exc}): check its permissions") from None
    if code:
        texts = [t.replace("\\n", "\n") for t in texts]
    if not texts:
        raise FlowroutesError(f"data file {src} holds no text: give at least one non-empty line")
    return texts[:limit] if limit else texts


def _unzip(path: Path, src: str) -> bytes:
    data = path.read_bytes()
    try:
        return gzip.decompress(data)
    except (gzip.BadGzipFile, EOFError, zlib.error):
        raise FlowroutesError(f"data file {src} is not a complete gzip file: check the file") from None


HUB_SYNTAX = "hf:NAME[:SPLIT][?config=CONFIG&field=FIELD]"
HUB_OPTIONS = ("config", "field")


def hub_spec(spec: str) -> tuple[str, str, str | None, str | None]:
    """NAME[:SPLIT][?config=CONFIG&field=FIELD] (what follows `hf:`) -> (name, split, config, field); split
    "train" and config / field None when not given. A bad option raises FlowroutesError with one line."""
    base, _, query = spec.partition("?")
    name, _, split = base.partition(":")
    if not name:
        raise FlowroutesError(f"hf:{spec} names no dataset: write {HUB_SYNTAX}")
    opts: dict[str, str] = {}
    for part in query.split("&") if query else []:
        key, eq, value = part.partition("=")
        if key not in HUB_OPTIONS or not eq or not value:
            raise FlowroutesError(f"hf:{spec}: '{part}' is no option (config=CONFIG or field=FIELD): write "
                                  f"{HUB_SYNTAX}")
        if key in opts:
            raise FlowroutesError(f"hf:{spec} gives {key} twice: write {HUB_SYNTAX}")
        opts[key] = value
    return name, split or "train", opts.get("config"), opts.get("field")


@contextlib.contextmanager
def _offline_if_asked(datasets):
    """HF_HUB_OFFLINE as the environment says now, even when `datasets` and `huggingface_hub` read it (at their
    import) before it was set: an uncached dataset fails instead of being downloaded."""
    import huggingface_hub.constants as hub

    asked = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    saved = datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE
    if asked:
        datasets.config.HF_HUB_OFFLINE = hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE = saved


def _read_hub_dataset(spec: str, field: str, limit: int | None) -> list[str]:
    """hf:NAME[:SPLIT][?config=CONFIG&field=FIELD] with the `datasets` library (network, or only its local cache
    when HF_HUB_OFFLINE is set; not installed by flowroutes). NAME may be a local dataset folder."""
    name, split, config, own_field = hub_spec(spec)
    field = own_field or field
    try:
        import datasets
    except ImportError:
        raise FlowroutesError("hf:NAME data needs the `datasets` package (pip install datasets), or pass a "
                              ".txt/.jsonl/.parquet file") from None
    what = f"'{name}'" + (f" (config '{config}', split '{split}')" if config else f" (split '{split}')")
    try:
        with _offline_if_asked(datasets):
            ds = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # noqa: BLE001 - offline, unknown name, bad config or split: all bad input
        raise FlowroutesError(f"cannot load the dataset {what} ({type(exc).__name__}): check the name, config and "
                              "split, and that it is cached when HF_HUB_OFFLINE is set") from None
    if field not in ds.column_names:
        raise FlowroutesError(f"the dataset {what} has no column '{field}' (columns: {', '.join(ds.column_names)})"
                              f": name it with ?field=COLUMN ({HUB_SYNTAX})")
    rows = ds if limit is None else ds.select(range(min(limit, len(ds))))
    texts = [t.strip() for t in rows[field] if isinstance(t, str) and t.strip()]
    if not texts:
        raise FlowroutesError(f"the dataset {what} holds no text in column '{field}'")
    return texts


def _read_lines(raw: str) -> list[str]:
    return [line.strip() for line in raw.splitlines() if line.strip()]


def _read_jsonl(raw: str, field: str, src: str) -> list[str]:
    out = []
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            raise FlowroutesError(f"{src} line {n} is not valid JSON: write one JSON object per line") from None
        if not isinstance(obj, dict) or not isinstance(obj.get(field), str):
            raise FlowroutesError(f"{src} line {n} has no string field '{field}': use --field to name the text field")
        if obj[field].strip():
            out.append(obj[field].strip())
    return out


def _read_parquet(path: Path, field: str) -> list[str]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad file
        raise FlowroutesError(f"cannot read {path} as Parquet ({type(exc).__name__}): check the file") from None
    if field not in table.column_names:
        raise FlowroutesError(
            f"{path} has no column '{field}' (columns: {', '.join(table.column_names)}): use --field"
        )
    return [t.strip() for t in table.column(field).to_pylist() if isinstance(t, str) and t.strip()]


