"""Running an analysis: `analyze(name, model, data, out, ...)` -> `Result`.

Reads the data, computes the rows of the analysis' kind in resumable shards (shards.py, optionally on Ray), then
hands them to the analysis' own `summarize` (one module per analysis, found by `base.registry()`). No CLI parsing
and no analysis-specific numbers here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from .. import checks, report
from ..errors import FlowroutesError
from ..texts import hub_spec
from .base import Analysis, Context, registry
from .data import read_texts, tokenize_texts
from .domains import DEFAULT_DATA
from .stats import N_BOOT

ROWS_VERSION = 4  # bump when a row schema changes, so that old shards are never mixed with new ones
#: every corpus run includes the general domain (sec. 5: "C4"); the rest are the paper's domains (human-written
#: corpora shipped in data/corpora, see data/SOURCES.md; arithmetic is generated, as in the paper): the domains
#: analysis's own default data
DOMAINS = DEFAULT_DATA


@dataclass
class Options:
    """Options shared by the analyses (the CLI flags of `flowroutes analyze`)."""

    threshold: float | None = None  # tau; default: each analysis's `default_threshold`
    task: str = "ioi"  # task-heads: ioi | greater-than | greater-than-00
    n: int = 100  # task-heads: number of examples
    seed: int = 0
    limit: int | None = None  # corpus analyses: at most this many texts per data source
    text_field: str = "text"  # JSONL field / Parquet column holding the text
    long: str = "skip"  # texts longer than max_tokens: skip | truncate
    max_tokens: int | None = None  # default: the model's context
    batch_size: int = 8
    shard_size: int = 32
    spacy: bool = True  # POS tags and words from spaCy (False: regex words, POS 'X')
    tsne_max: int = 2000  # vectors: at most this many points in the t-SNE plots
    heads: list[tuple[int, int]] = field(default_factory=list)  # svd: heads to show; default domain-specific ones
    svd_vectors: int = 4  # svd: singular vectors per head
    svd_tokens: int = 6  # svd: top tokens per singular vector
    n_boot: int = N_BOOT  # bootstrap replicates of every interval (stats.N_BOOT)
    progress: bool = True
    ray: str | None = None


def analyze(name: str, model: Any = None, data: list[str] | None = None, out: str | Path | None = None,
            options: Options | None = None, inputs: dict | None = None, **kwargs) -> report.Result:
    """Run one analysis; write its table, figures and report into `out` when given (shards go to out/shards).

    model: a LoadedModel or anything `flowroutes.load_model` accepts (with --ray: a string or None).
    data: data sources for corpus analyses: file paths, sample:NAME or corpus:NAME, optionally as DOMAIN=SOURCE
    (domains adds the general domain, corpus:general, when no source is called "general").
    inputs: results of other analyses (name -> Result) the analysis may use, e.g. domains for svd.
    """
    spec = analysis(name)
    opts = make_options(options, **kwargs)
    sources = read_sources(spec, data, opts) if spec.kind == "corpus" else []  # bad data fails before loading
    out_dir = check_out(out)
    loaded, source = load(model, opts)
    # attention weights cost one more forward pass: only for analyses that read them
    table, counts = compute_rows(spec.kind, loaded, source, opts, out_dir, sources=sources,
                                 attention_domains=None if spec.reads_attention else ())
    result = spec.summarize(Context(table, loaded.n_layers, loaded.n_heads, opts, counts, loaded, inputs or {}))
    if out_dir is not None:
        result.write(out_dir)
    return result


def analysis(name: str) -> Analysis:
    found = registry()
    if name not in found:
        raise FlowroutesError(f"unknown analysis '{name}': choose one of {', '.join(found)}")
    return found[name]


def make_options(options: Options | None, **kwargs) -> Options:
    opts = Options(**asdict(options)) if options is not None else Options()
    for key, value in kwargs.items():
        if not hasattr(opts, key):
            raise FlowroutesError(f"unknown option '{key}' for analyze()")
        setattr(opts, key, value)
    checks.threshold("the threshold", opts.threshold)
    if opts.ray is not None:
        check_ray_address(opts.ray)
    return opts


def check_ray_address(address: str) -> None:
    """--ray: 'local', 'local:N' (N CPUs) or a cluster address, checked before any model loads."""
    from .shards import parse_ray_address

    parse_ray_address(address)


def check_out(out) -> Path | None:
    """The output folder, refused before any work when no file can be written there (fileio.writable_folder,
    as every command's --out)."""
    if out is None:
        return None
    from ..fileio import writable_folder

    return writable_folder(out)


def load(model: Any, opts: Options):
    """(LoadedModel, source): source is what Ray workers load (a path or id), None for an in-memory model."""
    from ..models.loading import LoadedModel, load_model

    if opts.ray is not None and not (model is None or isinstance(model, (str, Path))):
        raise FlowroutesError("with ray, pass the model as a path or id (workers load it themselves)")
    source = model if (model is None or isinstance(model, (str, Path))) else None
    if source is not None and Path(source).expanduser().exists():  # workers may run elsewhere: absolute path
        source = str(Path(source).expanduser().resolve())
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    return loaded, source


class Texts(list):
    """The texts of one data source, with the source they came from (`source`: the SRC of DOMAIN=SRC), so that
    the counts of a run name each domain's source."""

    def __init__(self, texts: list[str], source: str):
        super().__init__(texts)
        self.source = source


def domain_sources(data: list[str] | None) -> list[str]:
    """DOMAINS with each DOMAIN=SRC of `data` in place of that domain's default (`flowroutes reproduce --data`).
    A spec without DOMAIN=, an unknown domain or a domain named twice is a FlowroutesError (exit 2)."""
    default = dict(item.split("=", 1) for item in DOMAINS)
    out, seen = dict(default), set()
    for item in data or ():
        domain, sep, src = str(item).partition("=")
        if not sep or not domain or not src:
            raise FlowroutesError(f"--data {item}: write DOMAIN=SRC (e.g. general=my-c4.jsonl) with DOMAIN one of "
                                  f"{', '.join(default)}")
        if domain not in default:
            raise FlowroutesError(f"--data {item}: unknown domain '{domain}': choose one of {', '.join(default)}")
        if domain in seen:
            raise FlowroutesError(f"--data names the domain '{domain}' twice: give one source per domain")
        seen.add(domain)
        out[domain] = src
    return [f"{domain}={src}" for domain, src in out.items()]


def read_sources(spec: Analysis, data: list[str] | None, opts: Options) -> list[tuple[str, list[str]]]:
    """(domain, texts) per data source; sources are paths, sample:NAME or corpus:NAME, optionally DOMAIN=SOURCE.
    Analyses that measure against the general domain (domains) always get it."""
    out = []
    specs = list(data) if data else list(spec.default_data)
    for item in specs:
        plain = Path(item).exists() or item.startswith("hf:")  # hf:NAME?config=... has '=' of its own
        domain, src = item.split("=", 1) if "=" in item and not plain else (None, item)
        if domain is None:
            path = Path(src)
            stem = Path(path.stem).stem if path.suffix.lower() == ".gz" else path.stem  # x.jsonl.gz: x
            domain = src.split(":", 1)[1] if src.startswith(("sample:", "corpus:")) else stem
            if src.startswith("hf:"):  # the dataset's name: hf:allenai/c4:validation?config=en -> c4
                domain = hub_spec(src[3:])[0].rstrip("/").rsplit("/", 1)[-1]
        out.append((domain, Texts(read_texts(src, opts.text_field, opts.limit), src)))
    if spec.needs_general and "general" not in [d for d, _ in out]:
        out.insert(0, ("general", Texts(read_texts("corpus:general", opts.text_field, opts.limit), "corpus:general")))
    return out


# --- rows in shards (picklable jobs: Ray workers load the model from `source`) ---------------------------------

_MODELS: dict[str, Any] = {}


@dataclass
class _Job:
    kind: str  # "corpus" | "task" | "weights"
    source: Any
    opts: dict
    items: list = field(default_factory=list)
    loaded: Any = None

    def __getstate__(self):  # never pickle a loaded model: workers load their own
        state = dict(self.__dict__)
        state["loaded"] = None
        return state

    def model(self):
        if self.loaded is not None:
            return self.loaded
        import torch

        from ..models.loading import load_model

        key = str(self.source)
        if key not in _MODELS:  # a Ray worker: load once per process, on its GPU when it has one
            _MODELS[key] = load_model(self.source, device="cuda" if torch.cuda.is_available() else None)
        return _MODELS[key]

    def __call__(self, start: int, stop: int) -> pa.Table:
        from . import rows

        loaded = self.model()
        if self.kind == "corpus":
            return rows.corpus_rows(loaded, self.items[start:stop], **self.opts)
        if self.kind == "task":
            return rows.task_rows(loaded, self.items[start:stop], **self.opts)
        from .svd import svd_rows

        return svd_rows(loaded, list(range(start, stop)), **self.opts)


def compute_rows(kind: str, loaded, source, opts: Options, out: Path | None, sources=(), task: str | None = None,
                 tau: float | None = None, shards_dir: Path | None = None,
                 attention_domains: tuple[str, ...] | None = None) -> tuple[pa.Table, dict]:
    """The rows of one kind and counts describing them. Shards go to `shards_dir` (default out/shards).
    attention_domains: corpus domains whose attention weights are measured (None: all)."""
    folder = shards_dir if shards_dir is not None else (out / "shards" if out is not None else None)
    # one sub-folder per kind of rows: a reproduce run shares them between analyses
    if kind == "corpus":
        items, counts = corpus_items(loaded, sources, opts)
        for it in items:
            it["attention"] = attention_domains is None or it["domain"] in attention_domains
        job_opts = {"batch_size": opts.batch_size, "use_spacy": opts.spacy}
        digest = hashlib.sha256(json.dumps([[i["domain"], i["ids"], i["attention"]] for i in items]).encode()
                                ).hexdigest()
        job = _Job("corpus", source, job_opts, items, loaded)
        table = _shards(job, len(items), {"data": digest, **job_opts}, loaded, opts, folder, "corpus")
        counts["predictions"] = table.num_rows
        return table, counts
    if kind == "task":
        from ..tasks import describe_form, task_examples
        from .task_heads import TAU as TASK_TAU

        task = task or opts.task
        examples = task_examples(task, opts.n, opts.seed, tokenizer=loaded.tokenizer)
        items = [{"index": i, "example": asdict(e)} for i, e in enumerate(examples)]
        tau = tau if tau is not None else (opts.threshold or TASK_TAU)
        job = _Job("task", source, {"tau": tau, "batch_size": opts.batch_size}, items, loaded)
        fp = {"task": task, "n": opts.n, "seed": opts.seed, "tau": tau}
        table = _shards(job, len(items), fp, loaded, opts, folder, f"task-{task}")
        return table, {"task": task, "examples": len(items), "tau": tau, "form": describe_form(examples)}
    job = _Job("weights", source, {"k": opts.svd_vectors, "top": opts.svd_tokens}, [], loaded)
    n_items = loaded.n_layers * loaded.n_heads
    table = _shards(job, n_items, {"k": opts.svd_vectors, "top": opts.svd_tokens}, loaded, opts, folder, "svd")
    return table, {"heads": n_items}


def corpus_items(loaded, sources, opts: Options) -> tuple[list[dict], dict]:
    items, skipped, truncated = [], 0, 0
    max_tokens = opts.max_tokens or loaded.adapter.max_context
    for domain, texts in sources:
        tok = tokenize_texts(loaded.tokenizer, texts, max_tokens, opts.long)
        skipped, truncated = skipped + tok.skipped, truncated + tok.truncated
        for text, ids, offs in zip(tok.texts, tok.ids, tok.offsets):
            items.append({"doc": len(items), "domain": domain, "text": text, "ids": ids, "offsets": offs})
    per_domain = {}
    for it in items:
        per_domain[it["domain"]] = per_domain.get(it["domain"], 0) + 1
    counts = {"texts": len(items), "texts_per_domain": per_domain, "skipped_long_or_short": skipped,
              "truncated": truncated}
    named = {domain: texts.source for domain, texts in sources if isinstance(texts, Texts)}
    if named:
        counts["sources"] = named  # domain -> SRC (corpus:general, a file, ...)
    return items, counts


def _shards(job: _Job, n_items: int, fingerprint: dict, loaded, opts: Options, folder: Path | None,
            what: str) -> pa.Table:
    from .shards import run_shards, shard_ranges

    fingerprint = {"rows": what, "rows_version": ROWS_VERSION, "model": _model_id(loaded), **fingerprint,
                   "shard_size": opts.shard_size}
    if folder is None:  # in memory: one pass, no files
        tables = [job(a, b) for a, b in shard_ranges(n_items, opts.shard_size)]
        return pa.concat_tables(tables) if tables else pa.table({})
    job.loaded = None if opts.ray else loaded
    return run_shards(n_items, job, folder / what, opts.shard_size, fingerprint, progress=opts.progress,
                      ray=opts.ray)


def _model_id(loaded) -> Any:
    """The model in a run's fingerprint: its config and a hash of its weights (a retrained model in a folder of
    the same name never reuses old shards)."""
    from ..models.loading import model_fingerprint

    return {"name": loaded.name, **model_fingerprint(loaded)}
