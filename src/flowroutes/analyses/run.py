"""The analyses of the paper at data-set scale: `analyze(name, model, data, out, ...)` -> `Result`.

task-heads (sec. 3, figs. 6-7), vectors (sec. 4.1, fig. 8), bottom-to-top and head-roles (secs. 4.2-4.3, fig. 9a),
domains (sec. 5.1, fig. 10), svd (sec. 5.2, fig. 11), periods (appendix D, fig. 9b). Rows are computed in
resumable shards (shards.py); aggregation and figures happen after all rows exist. No CLI parsing here.
"""

from __future__ import annotations

import collections
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import FlowroutesError
from . import compute, report
from .data import read_texts, tokenize_texts, words_and_pos
from .tasks import greater_than_digit_sets, task_examples

ANALYSES: tuple[str, ...] = ("task-heads", "vectors", "bottom-to-top", "head-roles", "domains", "svd", "periods")
ROWS_VERSION = 1  # bump when a row schema changes, so that old shards are never mixed with new ones
CORPUS_ANALYSES = ("vectors", "bottom-to-top", "head-roles", "domains", "periods")
DEFAULT_DATA = {"vectors": ["sample:english"], "bottom-to-top": ["sample:english"], "head-roles": ["sample:english"],
                "periods": ["sample:english"],
                "domains": ["english=sample:english", "code=sample:code", "russian=sample:russian",
                            "italian=sample:italian", "spanish=sample:spanish", "addition=sample:addition",
                            "subtraction=sample:subtraction"]}


@dataclass
class Options:
    """Options shared by the analyses (the CLI flags of `flowroutes analyze`)."""

    threshold: float | None = None  # tau; default per analysis (0.04 task heads, 0.01 bottom-to-top)
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
    heads: list[tuple[int, int]] = field(default_factory=list)  # svd: heads to show; default the 6 strongest
    svd_vectors: int = 4  # svd: singular vectors per head
    svd_tokens: int = 6  # svd: top tokens per singular vector
    min_untouched: float = 0.5  # periods: share of untouched blocks that flags a position
    progress: bool = True
    ray: str | None = None


def analyze(name: str, model: Any = None, data: list[str] | None = None, out: str | Path | None = None,
            options: Options | None = None, **kwargs) -> report.Result:
    """Run one analysis; write its table, figures and report into `out` when given (shards go to out/shards).

    model: a LoadedModel or anything `flowroutes.load_model` accepts (with --ray: a string or None).
    data: data sources for corpus analyses: file paths or sample:NAME, optionally as DOMAIN=SOURCE.
    """
    from ..models.loading import LoadedModel, load_model

    if name not in ANALYSES:
        raise FlowroutesError(f"unknown analysis '{name}': choose one of {', '.join(ANALYSES)}")
    opts = options or Options()
    for key, value in kwargs.items():
        if not hasattr(opts, key):
            raise FlowroutesError(f"unknown option '{key}' for analyze()")
        setattr(opts, key, value)
    if opts.threshold is not None and not 0.0 < opts.threshold < 1.0:
        raise FlowroutesError(f"the threshold must be in (0, 1), got {opts.threshold}")
    if opts.ray is not None and not (model is None or isinstance(model, (str, Path))):
        raise FlowroutesError("with ray, pass the model as a path or id (workers load it themselves)")
    if opts.ray is not None and out is None:
        raise FlowroutesError("with ray, give an output folder (out=...): workers' shards are written there")
    sources = read_sources(name, data, opts) if name in CORPUS_ANALYSES else []  # bad data fails before loading
    source = model if (model is None or isinstance(model, (str, Path))) else None
    if source is not None and Path(source).expanduser().exists():  # workers may run elsewhere: absolute path
        source = str(Path(source).expanduser().resolve())
    loaded = load_model(model) if not isinstance(model, LoadedModel) else model
    out_dir = Path(out).expanduser() if out is not None else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise FlowroutesError(f"--out {out_dir} is a file: pass a folder")
    runner = _Runner(name, loaded, source, opts, out_dir)
    result = runner.run(sources)
    if out_dir is not None:
        result.write(out_dir)
    return result


# --- the per-shard jobs (picklable: Ray workers load the model from `source`) ----------------------------------

_MODELS: dict[str, Any] = {}


def _model_for(job) -> Any:
    if job.loaded is not None:
        return job.loaded
    import torch

    from ..models.loading import load_model

    key = str(job.source)
    if key not in _MODELS:  # a Ray worker: load once per process, on its GPU when it has one
        _MODELS[key] = load_model(job.source, device="cuda" if torch.cuda.is_available() else None)
    return _MODELS[key]


@dataclass
class _Job:
    kind: str  # "corpus" | "task" | "svd"
    source: Any
    opts: dict
    items: list = field(default_factory=list)
    loaded: Any = None

    def __getstate__(self):  # never pickle a loaded model: workers load their own
        state = dict(self.__dict__)
        state["loaded"] = None
        return state

    def __call__(self, start: int, stop: int) -> pa.Table:
        loaded = _model_for(self)
        if self.kind == "corpus":
            return corpus_rows(loaded, self.items[start:stop], **self.opts)
        if self.kind == "task":
            return task_rows(loaded, self.items[start:stop], **self.opts)
        return svd_rows(loaded, list(range(start, stop)), **self.opts)


class _Runner:
    def __init__(self, name, loaded, source, opts: Options, out: Path | None):
        self.name, self.loaded, self.source, self.opts, self.out = name, loaded, source, opts, out

    def shards(self, job: _Job, n_items: int, fingerprint: dict) -> pa.Table:
        fingerprint = {"analysis": self.name, "rows_version": ROWS_VERSION, "model": self.loaded.name, **fingerprint,
                       "shard_size": self.opts.shard_size}
        if self.out is None:  # in memory: one pass, no files
            from .shards import shard_ranges

            tables = [job(a, b) for a, b in shard_ranges(n_items, self.opts.shard_size)]
            return pa.concat_tables(tables)
        from .shards import run_shards

        job.loaded = None if self.opts.ray else self.loaded
        return run_shards(n_items, job, self.out / "shards", self.opts.shard_size, fingerprint,
                          progress=self.opts.progress, ray=self.opts.ray)

    def run(self, data) -> report.Result:
        if self.name == "task-heads":
            return self.task_heads()
        if self.name == "svd":
            return self.svd()
        return self.corpus(data)

    # --- task heads -----------------------------------------------------------------------------------------
    def task_heads(self) -> report.Result:
        o = self.opts
        tau = o.threshold or 0.04
        examples = task_examples(o.task, o.n, o.seed)
        items = [{"index": i, "example": asdict(e)} for i, e in enumerate(examples)]
        job = _Job("task", self.source, {"tau": tau, "batch_size": o.batch_size}, items, self.loaded)
        table = self.shards(job, len(items), {"task": o.task, "n": o.n, "seed": o.seed, "tau": tau})
        return summarize_task_heads(table, self.loaded.n_layers, self.loaded.n_heads, o.task, tau)

    # --- svd --------------------------------------------------------------------------------------------------
    def svd(self) -> report.Result:
        o = self.opts
        n_items = self.loaded.n_layers * self.loaded.n_heads
        job = _Job("svd", self.source, {"k": o.svd_vectors, "top": o.svd_tokens}, [], self.loaded)
        table = self.shards(job, n_items, {"k": o.svd_vectors, "top": o.svd_tokens})
        return summarize_svd(table, o.heads)

    # --- corpus analyses ------------------------------------------------------------------------------------
    def corpus(self, data) -> report.Result:
        o = self.opts
        items, skipped, truncated = [], 0, 0
        max_tokens = o.max_tokens or self.loaded.adapter.max_context
        for domain, texts in data:
            tok = tokenize_texts(self.loaded.tokenizer, texts, max_tokens, o.long)
            skipped, truncated = skipped + tok.skipped, truncated + tok.truncated
            for text, ids, offs in zip(tok.texts, tok.ids, tok.offsets):
                items.append({"doc": len(items), "domain": domain, "text": text, "ids": ids, "offsets": offs})
        routes_tau = (o.threshold or 0.01) if self.name == "bottom-to-top" else None
        shares = self.name in ("bottom-to-top", "head-roles")
        job_opts = {"batch_size": o.batch_size, "use_spacy": o.spacy, "routes_tau": routes_tau, "shares": shares}
        digest = hashlib.sha256(json.dumps([[i["domain"], i["ids"]] for i in items]).encode()).hexdigest()
        job = _Job("corpus", self.source, job_opts, items, self.loaded)
        table = self.shards(job, len(items), {"data": digest, **job_opts})
        counts = {"texts": len(items), "predictions": table.num_rows, "skipped_long_or_short": skipped,
                  "truncated": truncated}
        n_layers, n_heads = self.loaded.n_layers, self.loaded.n_heads
        if self.name == "vectors":
            return summarize_vectors(table, n_layers, n_heads, counts, o.tsne_max, o.seed)
        if self.name in ("bottom-to-top", "head-roles"):
            return summarize_bottom_to_top(table, n_layers, n_heads, counts, routes_tau, self.name)
        if self.name == "domains":
            return summarize_domains(table, n_layers, n_heads, counts)
        return summarize_periods(table, n_layers, n_heads, counts, o.min_untouched)


def read_sources(name: str, data: list[str] | None, opts: Options) -> list[tuple[str, list[str]]]:
    """(domain, texts) per data source; sources are paths or sample:NAME, optionally DOMAIN=SOURCE."""
    out = []
    for spec in list(data) if data else DEFAULT_DATA[name]:
        domain, src = spec.split("=", 1) if "=" in spec and not Path(spec).exists() else (None, spec)
        if domain is None:
            domain = src.split(":", 1)[1] if src.startswith("sample:") else Path(src).stem
        out.append((domain, read_texts(src, opts.text_field, opts.limit)))
    return out


# --- rows -------------------------------------------------------------------------------------------------------

def corpus_rows(loaded, items: list[dict], batch_size: int = 8, use_spacy: bool = True,
                routes_tau: float | None = None, shares: bool = False) -> pa.Table:
    """One row per prediction (every position of every text) with its importance vector and labels."""
    import flowroutes

    cols = collections.defaultdict(list)
    traces = flowroutes.trace(loaded, input_ids=[it["ids"] for it in items], batch_size=batch_size, top_k=1) \
        if items else []
    n_layers, n_heads = loaded.n_layers, loaded.n_heads
    for it, tr in zip(items, traces):
        text = it["text"]
        spans, tags = words_and_pos(text, use_spacy)
        word_ids = compute.token_words(it["offsets"], text, spans)
        vectors = compute.importance_vectors(tr)  # [T, L*H + L]
        untouched = compute.untouched_layers(tr)  # [T]
        part = compute.head_shares(tr, word_ids) if shares else None
        n_tok = len(it["ids"])
        for p in range(n_tok):
            w = word_ids[p]
            nxt = word_ids[p + 1] if p + 1 < n_tok else None
            cols["doc"].append(it["doc"])
            cols["domain"].append(it["domain"])
            cols["position"].append(p)
            cols["token"].append(tr.token_texts[p])
            cols["next_token"].append(tr.token_texts[p + 1] if nxt is not None else "")
            cols["word"].append(text[spans[w][0]:spans[w][1]] if w >= 0 else "")
            cols["subword"].append("first" if p == 0 or w != word_ids[p - 1] else "later")
            cols["pos_in"].append(tags[w] if w >= 0 else "X")
            cols["pos_next"].append((tags[nxt] if nxt >= 0 else "X") if nxt is not None else "")
            cols["vector"].append(vectors[p])
            cols["untouched"].append(float(untouched[p]))
            if part is not None:
                cols["total"].append(part["total"][:, :, p].ravel())
                cols["previous"].append(part["previous"][:, :, p].ravel())
                cols["same_word"].append(part["same_word"][:, :, p].ravel())
            if routes_tau is not None:
                act = compute.active_heads_matrix(tr.routes(routes_tau, position=p), n_layers, n_heads)
                cols["active"].append(np.flatnonzero(act.ravel()).astype(np.int32))
    return _table(cols)


def task_rows(loaded, items: list[dict], tau: float = 0.04, batch_size: int = 8) -> pa.Table:
    """Two rows per task example (variant 'task' and 'contrastive'): prediction, metric and active heads."""
    import flowroutes

    from .tasks import TaskExample

    examples = [TaskExample(**it["example"]) for it in items]
    prompts = [e.prompt for e in examples] + [e.contrastive for e in examples]
    traces = flowroutes.trace(loaded, prompts, batch_size=batch_size, top_k=50) if items else []
    cols = collections.defaultdict(list)
    n_layers, n_heads = loaded.n_layers, loaded.n_heads
    for k, tr in enumerate(traces):
        it, ex = items[k % len(items)], examples[k % len(items)]
        probs = dict(zip(tr.top_tokens[-1], (float(x) for x in tr.top_probs[-1])))
        top = tr.top_tokens[-1][0]
        if ex.meta.get("task") == "greater-than":
            greater, smaller = greater_than_digit_sets(ex)
            metric = sum(probs.get(d, 0.0) for d in greater) - sum(probs.get(d, 0.0) for d in smaller)
            valid = top in greater or top == str(ex.meta["first_digit"])  # a first digit some valid year starts with
        else:
            metric = probs.get(ex.answer, 0.0) - probs.get(ex.wrong, 0.0)
            valid = top == ex.answer
        act = compute.active_heads_matrix(tr.routes(tau, position=-1), n_layers, n_heads)
        cols["example"].append(int(it["index"]))
        cols["variant"].append("task" if k < len(items) else "contrastive")
        cols["prompt"].append(tr.prompt)
        cols["answer"].append(ex.answer)
        cols["wrong"].append(ex.wrong)
        cols["top_token"].append(top)
        cols["top_valid"].append(bool(valid))
        cols["p_answer"].append(probs.get(ex.answer, 0.0))
        cols["p_wrong"].append(probs.get(ex.wrong, 0.0))
        cols["metric"].append(float(metric))
        cols["active"].append(np.flatnonzero(act.ravel()).astype(np.int32))
    return _table(cols)


def svd_rows(loaded, heads: list[int], k: int = 4, top: int = 6) -> pa.Table:
    """Thin SVD of W_OV = W_V^{kv(h)} W_O^h per head (flat index); right singular vectors projected on W_U."""
    import torch

    adapter = loaded.adapter
    n_heads = adapter.n_heads
    w_u = loaded.model.get_output_embeddings().weight.detach().float()  # [V, d]
    tok = loaded.tokenizer
    cols = collections.defaultdict(list)
    cache = {}
    for flat in heads:
        layer, head = divmod(flat, n_heads)
        if layer not in cache:
            cache = {layer: adapter.ov_weights(layer)}
        ov = cache[layer]
        s, vt = thin_svd(ov.value[adapter.kv_head(head)].double(), ov.output[head].double())  # [r], [r, d]
        s, vt = s.float(), vt.float()
        logits = vt[:k] @ w_u.T  # [k, V]
        # singular vectors have no sign: orient each so that its strongest token score is positive
        flip = torch.where(logits.max(dim=-1).values >= -logits.min(dim=-1).values, 1.0, -1.0)  # [k]
        logits = logits * flip[:, None]
        top_ids = logits.topk(top, dim=-1).indices  # [k, top]
        for i in range(min(k, len(s))):
            for rank, tid in enumerate(top_ids[i].tolist()):
                cols["layer"].append(layer)
                cols["head"].append(head)
                cols["vector"].append(i)
                cols["singular_value"].append(float(s[i]))
                cols["rank"].append(rank)
                cols["token_id"].append(int(tid))
                cols["token"].append(tok.decode([tid]))
                cols["score"].append(float(logits[i, tid]))
    return _table(cols)


def thin_svd(a, b):
    """Singular values [r] and right singular vectors [r, d] (rows) of W = a @ b, a: [d, r], b: [r, d'], r << d.

    W = Qa Ra Rb^T Qb^T (QR of a and of b^T), so the SVD of the small r x r matrix Ra Rb^T = Um S Vm^T gives
    W = (Qa Um) S (Qb Vm)^T without ever forming or decomposing the d x d' matrix.
    """
    import torch

    qa, ra = torch.linalg.qr(a)  # [d, r], [r, r]
    qb, rb = torch.linalg.qr(b.T)  # [d', r], [r, r]
    _um, s, vmt = torch.linalg.svd(ra @ rb.T)  # [r, r], [r], [r, r]
    return s, vmt @ qb.T  # [r], [r, d']


def _table(cols: dict[str, list]) -> pa.Table:
    arrays = {}
    for key, values in cols.items():
        if values and isinstance(values[0], np.ndarray):
            arrays[key] = pa.array([v.tolist() for v in values], type=pa.list_(
                pa.int32() if values[0].dtype.kind == "i" else pa.float32()))
        else:
            arrays[key] = pa.array(values)
    return pa.table(arrays)


# --- aggregation and figures ------------------------------------------------------------------------------------

def active_frequency(active_lists, n_layers: int, n_heads: int) -> np.ndarray:
    """[L, H] share of rows in which each head is active (lists of flat head indices)."""
    counts = np.zeros(n_layers * n_heads)
    n = 0
    for act in active_lists:
        counts[np.asarray(act, dtype=np.int64)] += 1
        n += 1
    return (counts / max(n, 1)).reshape(n_layers, n_heads)


def _top_heads(mat: np.ndarray, k: int = 8, largest: bool = True) -> list[list]:
    order = np.argsort(mat.ravel())
    order = order[::-1] if largest else order
    n_heads = mat.shape[1]
    return [[int(i // n_heads), int(i % n_heads), round(float(mat.ravel()[i]), 4)] for i in order[:k]]


def summarize_task_heads(table: pa.Table, n_layers: int, n_heads: int, task: str, tau: float) -> report.Result:
    variant = table.column("variant").to_pylist()
    active = table.column("active").to_pylist()
    f_task = active_frequency([a for a, v in zip(active, variant) if v == "task"], n_layers, n_heads)
    f_con = active_frequency([a for a, v in zip(active, variant) if v == "contrastive"], n_layers, n_heads)
    diff = f_task - f_con
    task_rows_mask = np.array([v == "task" for v in variant])
    valid = np.array(table.column("top_valid").to_pylist())
    metric = np.array(table.column("metric").to_pylist())
    summary = {
        "task": task, "threshold": tau, "examples": int(task_rows_mask.sum()),
        "top1_valid": float(valid[task_rows_mask].mean()),
        "mean_metric_task": float(metric[task_rows_mask].mean()),
        "mean_metric_contrastive": float(metric[~task_rows_mask].mean()),
        "mean_active_heads_task": float(f_task.sum()), "mean_active_heads_contrastive": float(f_con.sum()),
        "most_frequent_heads_task [layer, head, freq]": _top_heads(f_task),
        "most_task_specific_heads [layer, head, diff]": _top_heads(diff),
    }
    fig = report.heatmaps([f_task, f_con, diff], ["task", "contrastive", "task - contrastive"],
                          ["viridis", "viridis", "RdBu_r"],
                          suptitle=f"{task}: head activation frequency (tau = {tau})")
    metric_name = ("P(first digit > d1) - P(first digit < d1)" if task.startswith("greater")
                   else "P(answer) - P(subject)")
    explanation = (
        f"Each example of the {task} task and its contrastive version is traced; a head is active when it has at "
        f"least one sub-edge in the information flow routes of the last position at tau = {tau}. The heatmaps show "
        "the share of predictions in which each head (x: head, y: layer, 0-based) is active, for the task, the "
        f"contrastive prompts and their difference (figs. 6 and 7 of the paper). Metric: {metric_name}, from the "
        "model's top-50 next tokens; for the contrastive prompts it uses the digit sets of the original example. "
        "top1_valid: the top token is the answer (IOI), or a first digit that some valid end year starts with "
        "(greater-than: a digit >= the first digit of YY). For greater-than, SmolLM2 reads years digit by digit, "
        "so the prediction after 'to the year XX' is the first digit of the end year."
    )
    extra = {"task_heads_frequency": _freq_table({"task": f_task, "contrastive": f_con, "difference": diff})}
    return report.Result("task_heads", f"Task heads: {task}", explanation, table, summary,
                         {"task-heads": (fig, "Head activation frequency: task, contrastive, difference.")}, extra)


def _freq_table(mats: dict[str, np.ndarray]) -> pa.Table:
    first = next(iter(mats.values()))
    n_layers, n_heads = first.shape
    cols = {"layer": np.repeat(np.arange(n_layers), n_heads), "head": np.tile(np.arange(n_heads), n_layers)}
    for name, mat in mats.items():
        cols[name] = np.asarray(mat, dtype=np.float64).ravel()
    return pa.table(cols)


def _vectors(table: pa.Table) -> np.ndarray:
    col = table.column("vector").combine_chunks()
    return np.asarray(col.values.to_numpy(zero_copy_only=False)).reshape(table.num_rows, -1)


def _list_column(table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name).combine_chunks()
    return np.asarray(col.values.to_numpy(zero_copy_only=False), dtype=np.float64).reshape(table.num_rows, -1)


def _one_thread():
    """scikit-learn's OpenMP threads spin-wait: on a busy 2-core machine t-SNE of 1,000 points took 42 s with two
    threads and 5 s with one. Numbers do not depend on it."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def knn_separability(x: np.ndarray, labels: list[str], k: int = 5, folds: int = 5, seed: int = 0) -> dict:
    """Cross-validated k-NN accuracy of predicting `labels` from vectors `x`, against the majority baseline."""
    from sklearn.model_selection import KFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    counts = collections.Counter(labels)
    majority = counts.most_common(1)[0][1] / len(labels)
    n_splits = min(folds, len(labels))
    if n_splits < 2 or len(counts) < 2:
        return {"knn_accuracy": majority, "majority_baseline": majority, "classes": len(counts), "n": len(labels)}
    clf = KNeighborsClassifier(n_neighbors=min(k, len(labels) - len(labels) // n_splits))
    with _one_thread():
        scores = cross_val_score(clf, x, np.asarray(labels), cv=KFold(n_splits, shuffle=True, random_state=seed))
    return {"knn_accuracy": float(scores.mean()), "majority_baseline": float(majority), "classes": len(counts),
            "n": len(labels)}


def summarize_vectors(table, n_layers, n_heads, counts, tsne_max, seed) -> report.Result:
    from sklearn.manifold import TSNE

    x = _vectors(table)
    rng = np.random.default_rng(seed)
    summary = dict(counts)
    figures = {}
    labels = {"pos_in": "input token POS", "pos_next": "next token POS", "subword": "first or later subword"}
    idx_all = np.arange(table.num_rows)
    sub = idx_all if len(idx_all) <= tsne_max else np.sort(rng.choice(idx_all, tsne_max, replace=False))
    points = None
    if len(sub) >= 5:
        perplexity = float(min(30, max(2, (len(sub) - 1) // 3)))
        with _one_thread():
            points = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x[sub])
    for col, title in labels.items():
        values = table.column(col).to_pylist()
        keep = [i for i, v in enumerate(values) if v != ""]
        summary[f"{col}: k-NN separability"] = knn_separability(x[keep], [values[i] for i in keep], seed=seed)
        if points is not None:
            sel = [i for i, j in enumerate(sub) if values[j] != ""]
            fig = report.scatter_by_label(points[sel], [values[sub[i]] for i in sel], f"t-SNE coloured by {title}")
            figures[f"tsne-{col}"] = (fig, f"t-SNE of component importance vectors, coloured by {title} (fig. 8).")
    explanation = (
        "Every prediction of the corpus gets a component importance vector: for each head the sum of its sub-edge "
        "importances into the position's residual stream, and for each layer the FFN importance (sec. 4). The "
        "t-SNE plots colour these vectors by the input token's part of speech, the next token's part of speech "
        "(spaCy universal tags, all subwords of a word get its tag) and whether the input token is the first or a "
        "later subword of its word (fig. 8). The k-NN numbers say how well the vectors separate each label: "
        "5-fold cross-validated 5-nearest-neighbour accuracy against always guessing the most common label."
    )
    return report.Result("vectors", "Component importance vectors", explanation, table, summary, figures)


def head_role_masks(table: pa.Table, n_layers: int, n_heads: int) -> dict[str, np.ndarray]:
    """Head roles (sec. 4.3) from the per-prediction shares stored in `table`."""
    shape = (n_layers, n_heads)
    positions = np.array(table.column("position").to_pylist())
    subword = np.array(table.column("subword").to_pylist())
    prev = _list_column(table, "previous").reshape(-1, *shape)
    same = _list_column(table, "same_word").reshape(-1, *shape)
    total = _list_column(table, "total").reshape(-1, *shape)
    later = subword == "later"
    first = (subword == "first") & (positions > 0)
    return compute.head_roles(prev[positions > 0], same[later], total[first])


def summarize_bottom_to_top(table, n_layers, n_heads, counts, tau, name) -> report.Result:
    roles = head_role_masks(table, n_layers, n_heads)
    x = _vectors(table)
    ffn_mean = x[:, n_layers * n_heads:].mean(axis=0)
    head_mean = x[:, : n_layers * n_heads].mean(axis=0).reshape(n_layers, n_heads)
    prev_heads = [[int(a), int(b)] for a, b in zip(*np.nonzero(roles["previous_token"]))]
    merge_heads = [[int(a), int(b)] for a, b in zip(*np.nonzero(roles["subword_merging"]))]
    summary = dict(counts)
    summary.update({"previous_token_heads [layer, head]": prev_heads,
                    "subword_merging_heads [layer, head]": merge_heads,
                    "mean_ffn_importance_per_layer": [round(float(v), 4) for v in ffn_mean]})
    marks = {"gold": roles["previous_token"], "red": roles["subword_merging"]}
    roles_table = _freq_table({"previous_frequency": roles["previous_frequency"],
                               "merging_frequency": roles["merging_frequency"],
                               "first_quiet_frequency": roles["first_quiet_frequency"],
                               "previous_token": roles["previous_token"].astype(float),
                               "subword_merging": roles["subword_merging"].astype(float),
                               "mean_importance": head_mean})
    figures = {}
    if name == "bottom-to-top":
        freq = active_frequency(table.column("active").to_pylist(), n_layers, n_heads)
        summary["threshold"] = tau
        summary["most_active_heads [layer, head, freq]"] = _top_heads(freq)
        roles_table = roles_table.append_column("active_frequency", pa.array(freq.ravel()))
        fig = report.heatmaps([freq], [f"head activation frequency (tau = {tau})"], marks=marks,
                              suptitle="gold: previous-token heads, red: subword-merging heads")
        figures["bottom-to-top-heads"] = (fig, "Activation frequency of every head in the routes of every "
                                          "prediction (fig. 9a); outlined: head roles.")
        explanation = (
            f"Routes of every prediction of the corpus at a small threshold tau = {tau}: a head's activation "
            "frequency is the share of predictions whose routes contain at least one of its sub-edges (fig. 9a); "
            "the line plot gives the mean FFN importance per layer. Outlined heads are previous-token heads (gold: "
            "in >= 70% of predictions more than half of the head's influence, measured by contributions, goes to "
            "the previous token) and subword-merging heads (red: the paper's footnote definition)."
        )
    else:
        fig = report.heatmaps([roles["previous_frequency"], roles["merging_frequency"]],
                              ["share of cases: > 1/2 influence on previous token",
                               "share of later subwords: > 1/2 on own word"], marks=marks,
                              suptitle="gold: previous-token heads, red: subword-merging heads")
        figures["head-roles"] = (fig, "How often each head puts more than half of its influence on the previous "
                                 "token / on earlier subwords of the same word.")
        explanation = (
            "Head roles from contributions, not attention weights (sec. 4.3). A previous-token head puts more than "
            "half of its influence on the previous token in at least 70% of the predictions. A subword-merging head "
            "(i) puts more than half of its influence on previous subwords of the same word for at least 70% of "
            "later subwords, (ii) has an overall influence of at most 0.005% for at least 70% of first subwords, "
            "and is not a previous-token head."
        )
    figures["ffn-per-layer"] = (report.layer_lines({"FFN": ffn_mean}, "mean importance", "FFN importance per "
                                                   "layer"), "Mean FFN importance per layer (fig. 9a, right).")
    return report.Result(name.replace("-", "_"), name.replace("-", " ").capitalize(), explanation, table, summary,
                         figures, {"head_roles_per_head": roles_table})


def summarize_domains(table, n_layers, n_heads, counts) -> report.Result:
    x = _vectors(table)
    domains = np.array(table.column("domain").to_pylist())
    names = list(dict.fromkeys(domains.tolist()))
    nh = n_layers * n_heads
    means = {d: x[domains == d].mean(axis=0) for d in names}
    overall = np.mean([means[d] for d in names], axis=0)
    summary = dict(counts)
    summary["predictions_per_domain"] = {d: int((domains == d).sum()) for d in names}
    mats, titles, spec_cols = [], [], {}
    for d in names:
        others = np.mean([means[e] for e in names if e != d], axis=0) if len(names) > 1 else overall * 0
        spec = (means[d] - others)[:nh].reshape(n_layers, n_heads)
        summary[f"{d}: most specific heads [layer, head, mean - others]"] = _top_heads(spec, 5)
        mats.append(means[d][:nh].reshape(n_layers, n_heads))
        titles.append(d)
        spec_cols[f"{d}_mean"] = means[d][:nh]
        spec_cols[f"{d}_specificity"] = spec.ravel()
    figures = {
        "domains-heads": (report.heatmaps(mats, titles, suptitle="mean head importance per domain", shared=True),
                          "Mean importance of every head per domain (fig. 10)."),
        "domains-specific": (report.heatmaps([m - overall[:nh].reshape(n_layers, n_heads) for m in mats], titles,
                                             ["RdBu_r"] * len(mats), suptitle="domain mean - mean over domains",
                                             shared=True),
                             "Where a domain's head importance differs from the average over domains."),
        "domains-ffn": (report.layer_lines({d: means[d][nh:] for d in names}, "mean importance",
                                           "FFN importance per layer and domain"), "FFN importance per domain."),
    }
    explanation = (
        "Mean component importance (sum of sub-edge importances per head, FFN importance per layer) over all "
        "predictions of each domain (sec. 5, fig. 10). A head's specificity to a domain is its mean importance "
        "there minus its mean importance over the other domains; the most specific heads are listed in the summary."
    )
    extra = {"domains_heads": _freq_table({k: v.reshape(n_layers, n_heads) for k, v in spec_cols.items()})}
    return report.Result("domains", "Domain-specific components", explanation, table, summary, figures, extra)


def summarize_periods(table, n_layers, n_heads, counts, min_untouched) -> report.Result:
    x = _vectors(table)
    untouched = np.array(table.column("untouched").to_pylist())
    tokens = np.array(table.column("token").to_pylist())
    positions = np.array(table.column("position").to_pylist())
    flagged = untouched >= min_untouched
    tok_counts = collections.Counter(tokens[flagged].tolist())
    summary = dict(counts)
    summary.update({
        "min_untouched": min_untouched, "flagged_positions": int(flagged.sum()),
        "flagged_tokens (token, count)": tok_counts.most_common(15),
        "flagged_at_position_0": int((flagged & (positions == 0)).sum()),
        "periods_flagged / periods": f"{int((flagged & (np.char.strip(tokens) == '.')).sum())} / "
                                     f"{int((np.char.strip(tokens) == '.').sum())}",
    })
    nh = n_layers * n_heads
    figures = {}
    if flagged.any():
        sel = x[flagged]
        mean_heads = sel[:, :nh].mean(axis=0).reshape(n_layers, n_heads)
        rest = x[~flagged][:, :nh].mean(axis=0).reshape(n_layers, n_heads) if (~flagged).any() else mean_heads * 0
        figures["periods-heads"] = (report.heatmaps([mean_heads, rest], ["flagged positions", "other positions"],
                                                    suptitle="mean head importance"),
                                    "Mean importance of heads for positions whose residual stream is left untouched "
                                    "(fig. 9b) and for the others.")
        figures["periods-ffn"] = (report.layer_lines({"flagged": sel[:, nh:].mean(axis=0),
                                                      "others": x[~flagged][:, nh:].mean(axis=0)
                                                      if (~flagged).any() else sel[:, nh:].mean(axis=0) * 0},
                                                     "mean FFN importance", "FFN importance per layer"),
                                  "FFN importance per layer, flagged vs other positions.")
    explanation = (
        "Appendix D: some positions (in Llama 2 the first period of a text) pass through most layers untouched: "
        "every attention block and FFN has near-zero importance (< 0.02) for their residual stream, which then "
        f"acts like the BOS token. Positions where at least {min_untouched:.0%} of the blocks leave the residual "
        "untouched are flagged; the summary lists their tokens. When the tokenizer adds no BOS token (SmolLM2), "
        "the first token of each text plays that role and is expected among them."
    )
    return report.Result("periods", "Positions acting as BOS", explanation, table, summary, figures)


def summarize_svd(table: pa.Table, heads: list[tuple[int, int]]) -> report.Result:
    layer = np.array(table.column("layer").to_pylist())
    head = np.array(table.column("head").to_pylist())
    vec = np.array(table.column("vector").to_pylist())
    sv = np.array(table.column("singular_value").to_pylist())
    tokens = table.column("token").to_pylist()
    if not heads:
        first = vec == 0
        pairs = sorted({(int(a), int(b), float(s)) for a, b, s in zip(layer[first], head[first], sv[first])},
                       key=lambda t: -t[2])
        heads = [(a, b) for a, b, _ in pairs[:6]]
    rows = [["head", "sigma", "top tokens"]]
    for a, b in heads:
        for i in sorted(set(vec[(layer == a) & (head == b)].tolist())):
            sel = np.flatnonzero((layer == a) & (head == b) & (vec == i))
            if len(sel) == 0:
                continue
            rows.append([f"L{a}H{b} v{i}", f"{sv[sel[0]]:.2f}", " | ".join(repr(tokens[j])[1:-1] for j in sel)])
    if len(rows) == 1:
        raise FlowroutesError("none of the --heads exist in this model: give heads as LAYER.HEAD, 0-based")
    summary = {"heads_shown": [list(h) for h in heads], "rows": table.num_rows}
    fig = report.text_table(rows, "top tokens of W_OV right singular vectors projected on the unembedding")
    explanation = (
        "For every head, the thin SVD W_OV = U S V^T of W_V^{kv(h)} W_O^h (the map from the normalised residual of "
        "a source token to what the head adds); each right singular vector v_i is projected on the unembedding "
        "matrix and the tokens with the largest scores are shown (sec. 5.2, fig. 11). The table holds every head; "
        "the figure shows the heads given with --heads (default: the six with the largest singular value)."
    )
    return report.Result("svd", "What heads write: W_OV singular vectors", explanation, table, summary,
                         {"svd-top-tokens": (fig, "Top tokens per singular vector (fig. 11).")})
