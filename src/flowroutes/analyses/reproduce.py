"""`flowroutes reproduce`: every analysis of the paper and the patching comparison on one model, and one report
with a row per claim of the paper: its statement, the number on this model with its interval, and a verdict.

Runs each kind of rows once (the corpus rows serve every corpus analysis) in resumable shards under out/shards;
the patching comparison is cached in out/patching. Writes each analysis into out/<name>/ and the claims report
(claims.json, report.html) into out/. No analysis-specific numbers here: they come from the analysis modules.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import formatting, report
from ..errors import FlowroutesError
from ..formatting import number as fmt
from .base import VERDICTS, Claim, Condition, Context, registry, untestable, verdict_of
from .rows import column
from .run import Options, check_out, compute_rows, domain_sources, load, make_options, read_sources
from .stats import N_BOOT, Estimate, statistic_ci
from .task_heads import TAU as TASK_TAU

SIZES = ("quick", "paper")


@dataclass(frozen=True)
class Size:
    texts_per_domain: int | None  # None: every shipped text (the paper used 1000 per domain)
    task_examples: int
    patching_examples: int
    n_boot: int
    tsne_max: int
    full_faithfulness: bool = False  # patching: every k and threshold (quick: k = 10 and tau = 0.03 only)


SIZE = {
    "quick": Size(texts_per_domain=48, task_examples=48, patching_examples=16, n_boot=N_BOOT, tsne_max=800),
    "paper": Size(texts_per_domain=None, task_examples=200, patching_examples=50, n_boot=N_BOOT, tsne_max=2000,
                  full_faithfulness=True),
}
#: the general-domain analyses (sec. 4 uses C4 only), the ones over every domain, the ones from weights
GENERAL = ("head-roles", "bottom-to-top", "vectors", "periods")
TASKS = ("ioi", "greater-than", "greater-than-00")


def reproduce(model: Any = None, size: str = "quick", out: str | Path = "flowroutes-reproduce",
              options: Options | None = None, progress: bool = True, patching: bool = True,
              data: list[str] | None = None) -> dict:
    """Run the paper's programme on `model` and write the claims report into `out`; returns the claims report
    as a dict (also out/claims.json). Re-running with the same arguments resumes from the shards on disk.
    data: DOMAIN=SRC items that replace those domains' default sources (run.DOMAINS; `read_texts` reads SRC)."""
    if size not in SIZES:
        raise FlowroutesError(f"--size must be one of {', '.join(SIZES)}, not {size!r}")
    plan = SIZE[size]
    opts = make_options(options, limit=plan.texts_per_domain, n=plan.task_examples, n_boot=plan.n_boot,
                        tsne_max=plan.tsne_max, progress=progress, threshold=None)
    out_dir = check_out(out)
    specs = registry()
    sources = read_sources(specs["domains"], domain_sources(data), opts)  # bad data fails before the model loads
    steps = ["corpus rows", *GENERAL, "domains", "svd", *[f"task-heads:{t}" for t in TASKS]]
    steps += ["patching"] if patching else []
    say = _Progress(steps, progress)
    loaded, source = load(model, opts)
    shards = out_dir / "shards"
    results: dict[str, report.Result] = {}
    timings: dict[str, float] = {}

    say("corpus rows")
    t0 = time.perf_counter()
    corpus, counts = compute_rows("corpus", loaded, source, opts, out_dir, sources=sources, shards_dir=shards,
                                  attention_domains=("general",))  # only periods reads them, on general text
    timings["corpus rows"] = time.perf_counter() - t0
    general = corpus.filter(np.asarray(column(corpus, "domain") == "general"))
    general_counts = {"texts": int(len(set(column(general, "doc").tolist()))), "predictions": general.num_rows,
                      "domain": "general"}
    for name in (*GENERAL, "domains"):
        say(name)
        t0 = time.perf_counter()
        table, cnt = (general, general_counts) if name != "domains" else (corpus, counts)
        results[name] = _summarize(specs[name], table, cnt, loaded, opts, results)
        timings[name] = time.perf_counter() - t0
    task_prompts: list[str] = []
    say("svd")
    t0 = time.perf_counter()
    table, cnt = compute_rows("weights", loaded, source, opts, out_dir, shards_dir=shards)
    results["svd"] = _summarize(specs["svd"], table, cnt, loaded, opts, results)
    timings["svd"] = time.perf_counter() - t0
    for task in TASKS:
        say(f"task-heads:{task}")
        t0 = time.perf_counter()
        table, cnt = compute_rows("task", loaded, source, opts, out_dir, task=task, tau=TASK_TAU, shards_dir=shards)
        results[f"task-heads:{task}"] = _summarize(specs["task-heads"], table, cnt, loaded, opts, results)
        task_prompts += column(table, "prompt").tolist()
        timings[f"task-heads:{task}"] = time.perf_counter() - t0
    patch = None
    if patching:
        say("patching")
        t0 = time.perf_counter()
        patch = patching_summary(loaded, out_dir, plan.patching_examples, opts, plan.full_faithfulness)
        timings["patching"] = time.perf_counter() - t0
    say.done()

    claims: list[Claim] = []
    for spec in specs.values():
        if spec.claims is not None:
            claims += spec.claims(results)
    claims += patching_claims(patch, opts.n_boot)
    for key, res in results.items():
        res.write(out_dir / folder_of(key))
    doc = claims_doc(loaded.name, size, plan.__dict__, counts, timings, claims, out_dir,
                     bos=bos_report(loaded.tokenizer, corpus, task_prompts))
    from ..fileio import write_atomic

    write_atomic(out_dir / "claims.json", json.dumps(doc, indent=1, default=report._json_default).encode())
    write_atomic(out_dir / "report.html", claims_html(doc, claims, results).encode("utf-8"))
    return doc


def bos_report(tokenizer, corpus, task_prompts: list[str]) -> dict:
    """Whether the corpus texts (their rows' first tokens) and the task prompts (tokenised as the traces were:
    the tokenizer's defaults) start with the tokenizer's BOS; see `data.bos_status`."""
    from .data import bos_status

    first = column(corpus, "position") == 0 if corpus.num_rows else np.zeros(0, dtype=bool)
    corpus_ids = [[int(i)] for i in column(corpus, "token_id")[first]] if corpus.num_rows else []
    prompt_ids = [list(tokenizer(p)["input_ids"][:1]) for p in task_prompts]
    return bos_status(tokenizer, {"corpus texts": corpus_ids, "task prompts": prompt_ids})


def claims_doc(model: str, size: str, plan: dict, counts: dict, timings: dict, claims: list[Claim],
               out_dir: Path, bos: dict | None = None) -> dict:
    """The claims report as a dict (claims.json): each claim with the figures of out_dir that show it; `bos`:
    whether a BOS token was prepended (`bos_report`)."""
    return {
        "model": model, "size": size, "plan": plan, "counts": counts, "bos": bos, "timings_s": timings,
        "claims": [{**c.to_dict(), "figures": claim_figures(c.key, out_dir)} for c in claims],
        "verdicts": {v: sum(c.verdict == v for c in claims) for v in VERDICTS},
    }


def folder_of(run: str) -> str:
    """The folder of out/ that a run's result is written to ("task-heads:ioi" -> "task-heads-ioi")."""
    return run.replace(":", "-")


#: claim -> the figures that show it: (run of the reproduce, figure name); linked when the run wrote them
CLAIM_FIGURES: dict[str, tuple[tuple[str, str], ...]] = {
    "ioi-generic-heads": (("task-heads:ioi", "task-heads"),),
    "greater-than-contrast": (("task-heads:greater-than", "task-heads"), ("task-heads:greater-than-00", "task-heads")),
    "pos-function-words": (("vectors", "tsne-pos_in"),),
    "first-vs-later-subwords": (("vectors", "tsne-subword"),),
    "input-vs-next-pos": (("vectors", "tsne-pos_in"), ("vectors", "tsne-pos_next")),
    "bottom-to-top": (("bottom-to-top", "bottom-to-top-heads"), ("bottom-to-top", "ffn-per-layer")),
    "last-layer-ffn": (("bottom-to-top", "ffn-per-layer"),),
    "previous-token-heads-lead": (("bottom-to-top", "bottom-to-top-heads"),),
    "subword-merging-heads": (("head-roles", "head-roles"),),
    "first-period-bos": (("periods", "periods-blocks"), ("periods", "periods-contrib-shares")),
    "domain-specific-heads": (("domains", "domains-specificity"),),
    "last-ffn-non-english": (("domains", "domains-ffn"),),
    "ffn-zero-arithmetic": (("domains", "domains-ffn"),),
    "svd-topic-tokens": (("svd", "svd-top-tokens"),),
    "routes-vs-patching": (("patching", "patching-heatmaps"), ("patching", "patching-scatter")),
    "hundred-times-faster": (),  # a timing: no figure
}


def claim_figures(key: str, out_dir: Path) -> list[str]:
    """The figure files (PNG, relative to out_dir) of a claim that exist in out_dir."""
    paths = [f"{folder_of(run)}/{name}.png" for run, name in CLAIM_FIGURES.get(key, ())]
    return [p for p in paths if (Path(out_dir) / p).is_file()]


def _summarize(spec, table, counts, loaded, opts, results) -> report.Result:
    thr = spec.default_threshold
    o = make_options(opts, threshold=thr)
    return spec.summarize(Context(table, loaded.n_layers, loaded.n_heads, o, dict(counts), loaded, dict(results)))


class _Progress:
    """One line per step on stderr: '[3/12] bottom-to-top (41 s so far)'."""

    def __init__(self, steps: list[str], enabled: bool):
        self.steps, self.enabled, self.t0 = steps, enabled, time.perf_counter()

    def __call__(self, step: str) -> None:
        if self.enabled:
            k = self.steps.index(step) + 1
            print(f"[{k}/{len(self.steps)}] {step} ({time.perf_counter() - self.t0:.0f} s so far)",
                  file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.enabled:
            print(f"done in {time.perf_counter() - self.t0:.0f} s", file=sys.stderr, flush=True)


# --- routes vs patching -----------------------------------------------------------------------------------------

def patching_summary(loaded, out_dir: Path, n: int, opts: Options, full: bool = True,
                     examples: list | None = None) -> dict:
    """The IOI patching comparison (cached in out/patching/comparison.json for the same model and n). Without
    `full`, the faithfulness curves keep one k (10 heads) and one threshold (0.03): the claims do not read them.
    examples: TaskExamples to compare on instead of IOI's (the planted models' tasks); never cached."""
    cache = out_dir / "patching" / "comparison.json"
    key = {"model": loaded.name, "n": n, "seed": opts.seed, "full": full, "version": 2}  # 2: per-example effects
    if examples is not None:
        key["examples"] = [e.prompt for e in examples]
    if cache.exists():
        try:
            saved = json.loads(cache.read_text())
            if saved.get("key") == key:
                return saved
        except (OSError, ValueError):
            pass
    from ..patching.compare import compare_patching

    lean = {} if full else {"ks": [10], "thresholds": (TASK_TAU,), "random_repeats": 1}
    res = compare_patching(loaded, task="ioi", examples=examples, n=n, seed=opts.seed, tau=TASK_TAU,
                           batch_size=min(n, 64), progress=opts.progress, force=True, **lean)
    res.write(out_dir / "patching")
    active = res.extra_tables["patching_examples"].column("routes_active_heads").to_pylist()
    effect = np.asarray(res.table.column("patching_effect").to_pylist(), dtype=np.float64)
    effects = res.extra_tables["patching_examples"].column("patching_effects").to_pylist()  # [N][L * H]
    saved = {"key": key, "summary": json.loads(json.dumps(res.summary, default=report._json_default)),
             "active": active, "effect": effect.tolist(), "effects": effects}
    from ..fileio import write_atomic

    write_atomic(cache, json.dumps(saved).encode())
    return saved


def patching_claims(patch: dict | None, n_boot: int = N_BOOT) -> list[Claim]:
    statement = ("When looking at overall contributions, Figure 6 (left) shows that our routes largely consist of "
                 "the heads discovered previously")
    speed = "In contrast, our method accomplishes this task in 5 seconds, around 100x in time reduction."
    if patch is None:
        return [untestable("routes-vs-patching", "3.1, fig. 6", statement, "the patching comparison was skipped"),
                untestable("hundred-times-faster", "3.3", speed, "the patching comparison was skipped")]
    effects = np.asarray(patch["effects"], dtype=np.float64)  # [N, L * H]: each example's patching effects
    active = patch["active"]
    n_heads_total = effects.shape[1]
    ind = np.zeros((len(active), n_heads_total))
    for i, heads in enumerate(active):
        ind[i, np.asarray(heads, dtype=np.int64)] = 1.0

    def circuit_of(idx: np.ndarray) -> np.ndarray:
        """The "patching circuit" of the examples idx: the 10 heads of largest |mean patching effect| over them.
        Chosen again in every resample, so that the intervals carry the patching side's noise too."""
        return np.argsort(-np.abs(effects[idx].mean(axis=0)), kind="stable")[:10]

    def covered(idx: np.ndarray) -> float:
        return float((ind[idx][:, circuit_of(idx)].mean(axis=0) >= 0.5).mean())

    def enrichment(idx: np.ndarray) -> float:
        """The circuit's share in the routes (as `covered`) over the share of all heads in the routes of at least
        half the examples (the base rate): 1 when the routes hold circuit heads no more often than any head."""
        frequent = ind[idx].mean(axis=0) >= 0.5
        base = frequent.mean()
        return float(frequent[circuit_of(idx)].mean() / base) if base > 0 else 0.0

    est = statistic_ci(covered, len(active), unit="examples", n_boot=n_boot)
    enriched = statistic_ci(enrichment, len(active), unit="examples", n_boot=n_boot)
    s = patch["summary"]
    spearman = s.get("spearman(route frequency, |patching effect|)")
    conditions = (Condition("the share of the patching circuit's 10 heads that are in the routes of at least half "
                            "of the examples", est, "low", ">", 0.5),
                  Condition("that share over the share of all heads in the routes of at least half the examples "
                            "(enrichment over the base rate)", enriched, "low", ">", 1.0))
    out = [Claim("routes-vs-patching", "3.1, fig. 6", statement,
                 "share of the 10 heads with the largest |head patching effect| (the patching circuit) that are "
                 f"active in the IOI routes (tau = {TASK_TAU}) of at least half of the examples; the interval "
                 "resamples the examples, routes and patching effects together (the circuit chosen again in each "
                 "resample)",
                 est, verdict_of(conditions),
                 "'largely consist of the heads discovered previously' read as: more than half of the patching "
                 "circuit is in the routes, in 95% of resamples, and more often than heads at large (enrichment "
                 f"over the base rate {enriched}, lower bound above 1); the routes also hold generic heads the circuit "
                 f"lacks (fig. 6). Spearman(route frequency, |effect|) over all "
                 f"{n_heads_total} heads: {_number(spearman)}", conditions)]
    ratio_patch = float(s.get("speed_ratio_head_patching_vs_routes", float("nan")))
    ratio_acdc = float(s.get("speed_ratio_acdc_style_vs_routes", float("nan")))
    est = Estimate(ratio_acdc, float("nan"), float("nan"), int(s.get("examples", 0)), 1, "timed run")
    conditions = (Condition("the wall time of the ACDC-style run over heads divided by that of the routes", est,
                            "value", ">=", 100),)
    out.append(Claim("hundred-times-faster", "3.3", speed,
                     "wall time of the ACDC-style run over heads / wall time of the routes of the same examples "
                     "(one timed run, no interval)", est, verdict_of(conditions),
                     f"head patching / routes = {fmt(ratio_patch)}x; the ACDC-style run prunes heads, not edges, so "
                     "real edge-level ACDC costs more: this ratio is a lower bound", conditions))
    return out


def _number(x) -> str:
    """A number from a summary (float, or an {value, ci95, ...} dict) as the report prints it."""
    if isinstance(x, dict) and "value" in x:
        low, high = (x.get("ci95") or [None, None])[:2]
        interval = f" [{fmt(low)}, {fmt(high)}]" if low is not None and high is not None else ""
        return f"{fmt(x['value'])}{interval}"
    try:
        return fmt(float(x))
    except (TypeError, ValueError):
        return "not computed" if x is None else str(x)


# --- the claims report ------------------------------------------------------------------------------------------

def size_text(size: str, plan: dict) -> str:
    """'quick: 48 texts per domain, 48 examples per task, ...'."""
    per = plan.get("texts_per_domain")
    parts = [f"{per:,} texts per domain" if per else "every shipped text of each domain",
             f"{plan['task_examples']:,} examples per task" if "task_examples" in plan else "",
             (f"{plan['patching_examples']:,} IOI examples for the patching comparison"
              if "patching_examples" in plan else ""),
             f"{plan['n_boot']:,} bootstrap resamples" if "n_boot" in plan else "",
             f"t-SNE of at most {plan['tsne_max']:,} predictions" if "tsne_max" in plan else "",
             ("faithfulness curves over every k and threshold" if plan.get("full_faithfulness")
              else f"faithfulness curves at k = 10 and tau = {TASK_TAU} only")]
    return f"{size}: " + ", ".join(p for p in parts if p)


def counts_text(counts: dict) -> str:
    """'384 texts (general 48, code 48, ...), 11,931 predictions; 0 skipped (too long or one token), 0 truncated'."""
    per = counts.get("texts_per_domain") or {}
    texts = f"{counts.get('texts', sum(per.values())):,} texts"
    if per:
        texts += " (" + ", ".join(f"{d} {n:,}" for d, n in per.items()) + ")"
    parts = [texts]
    if "predictions" in counts:
        parts.append(f"{counts['predictions']:,} predictions")
    rest = [f"{counts.get('skipped_long_or_short', 0):,} skipped (too long, or a single token)",
            f"{counts.get('truncated', 0):,} truncated"]
    named = counts.get("sources") or {}
    sources = "; sources: " + ", ".join(f"{d} {s}" for d, s in named.items()) if named else ""
    return ", ".join(parts) + "; " + ", ".join(rest) + sources


def timings_text(timings: dict) -> str:
    """'corpus rows 13 min 14 s, head-roles 3.2 s, ...; total 57 min 3 s'."""
    if not timings:
        return "not timed"
    steps = ", ".join(f"{step} {report.duration(s)}" for step, s in timings.items())
    return f"{steps}; total {report.duration(sum(timings.values()))}"


def _figure_links(paths: list[str]) -> str:
    import html

    if not paths:
        return "no figure"
    return "<br>".join(f"<a href='{html.escape(p)}'>{html.escape(p)}</a>" for p in paths)


#: each verdict's colour (a light background under dark text) and sign, so that it reads without the colour too
VERDICT_LOOK = {"holds": ("#d8f0d8", "✓"), "does not hold": ("#f6d6d6", "✗"),
                "not enough data to tell": ("#f6ecc8", "?"), "cannot be tested": ("#eeeeee", "–")}


def _verdict_badge(verdict: str) -> str:
    colour, sign = VERDICT_LOOK[verdict]
    return f"<span class='verdict' style='background:{colour}'><span aria-hidden='true'>{sign} </span>{verdict}</span>"


def _glance_row(c: Claim, figures: list[str]) -> str:
    """One claim at a glance: its name (a link to its row below), the verdict, the headline number, and its
    figures as thumbnails that open the full figure."""
    import html

    number = str(c.estimate) if c.estimate is not None else (c.conditions[0].shown() if c.conditions else "-")
    thumbs = " ".join(f"<a href='{html.escape(p)}'><img class='thumb' src='{html.escape(p)}' "
                      f"alt='figure {html.escape(p)} (opens the full figure)'></a>" for p in figures) or "no figure"
    return (f"<tr><th scope='row'><a href='#claim-{html.escape(c.key)}'>{html.escape(c.key)}</a>"
            f"<br><small>section {html.escape(c.section)}</small></th><td>{_verdict_badge(c.verdict)}</td>"
            f"<td>{html.escape(number)}</td><td>{thumbs}</td></tr>")


def _claim_row(c: Claim, figures: list[str]) -> str:
    import html

    from .calibration import calibration

    colour = {v: look[0] for v, look in VERDICT_LOOK.items()}
    if c.conditions:
        shown = "<ul>" + "".join(f"<li>{html.escape(d.label)}: <b>{html.escape(d.shown())}</b></li>"
                                 for d in c.conditions) + "</ul>"
        rule = (f"{html.escape(c.rule())}.<ul>" + "".join(
            f"<li>{html.escape(d.check())}{' (undecided)' if d.undecided else ''}"
            f"{'; ' + html.escape(d.power()) if d.detectable is not None else ''}</li>"
            for d in c.conditions) + "</ul>")
    else:
        shown, rule = "-", "cannot be tested (see the details)"
    checked = calibration(c.key)
    rule += f"<p><small>{html.escape(checked['text'])}</small></p>"
    return (f"<tr id='claim-{html.escape(c.key)}' style='background:{colour[c.verdict]}'>"
            f"<td>{html.escape(c.section)}</td><td><i>{html.escape(c.statement)}</i></td>"
            f"<td>{html.escape(c.measure) or '-'}</td><td>{shown}</td><td><b>{html.escape(c.verdict)}</b></td>"
            f"<td>{rule}</td><td>{html.escape(c.why)}</td><td>{_figure_links(figures)}</td></tr>")


def claims_html(doc: dict, claims: list[Claim], results: dict) -> str:
    """The claims report: one row per claim with the numbers its verdict compares, its rule as a pass condition
    and links to its figures (doc["claims"][i]["figures"])."""
    import html

    figures = {c["claim"]: c.get("figures", []) for c in doc["claims"]}
    rows = [_claim_row(c, figures.get(c.key, [])) for c in claims]
    glance = [_glance_row(c, figures.get(c.key, [])) for c in claims]
    links = "".join(f"<li><a href='{html.escape(folder_of(k))}/report.html'>{html.escape(r.title)}</a>"
                    f" ({html.escape(k)})</li>" for k, r in results.items())
    verdicts = ", ".join(f"{v}: {n}" for v, n in doc["verdicts"].items())
    return "\n".join([
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>flowroutes reproduce</title>",
        "<style>body{font-family:sans-serif;max-width:1400px;margin:2em auto;line-height:1.4;color:#1a1a1a}"
        "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:4px 8px;font-size:88%;"
        "vertical-align:top}th[scope=row]{text-align:left;font-weight:normal}ul{margin:0;padding-left:1.2em}"
        ".verdict{display:inline-block;padding:1px 8px;border-radius:3px;border:1px solid #888;font-weight:bold;"
        "white-space:nowrap}img.thumb{height:72px;border:1px solid #bbb;vertical-align:middle}</style></head>"
        "<body><main>",
        f"<h1>Information flow routes: the paper's claims on {html.escape(doc['model'])}</h1>",
        "<table id='glance'><caption>Every claim at a glance: its verdict, the number on this model and its "
        "figures (a thumbnail opens the full figure; a claim's name leads to its details below).</caption>"
        "<tr><th scope='col'>claim</th><th scope='col'>verdict</th><th scope='col'>on this model</th>"
        "<th scope='col'>figures</th></tr>", *glance, "</table>",
        "<h2>The run</h2>",
        "<ul>",
        f"<li><b>Size</b> {html.escape(size_text(doc['size'], doc['plan']))}</li>",
        f"<li><b>Data</b> {html.escape(counts_text(doc['counts']))}</li>",
        *([f"<li><b>BOS</b> {html.escape(doc['bos']['text'])}</li>"] if doc.get("bos") else []),
        f"<li><b>Verdicts</b> {html.escape(verdicts)}</li>",
        "</ul>",
        "<p>Every number is a mean, frequency or difference with its 95% bootstrap interval and n. The column "
        "'on this model' shows exactly the numbers the verdict compares; 'rule' states when the claim holds, "
        "whether each condition is met, the smallest effect this run could see (80% power) and whether the claim's "
        "detector was seen to flip on planted models. A condition that is not met while its interval still reaches "
        "the paper's effect is undecided; a verdict whose unmet conditions are all undecided reads 'not enough data "
        "to tell'.</p>",
        "<h2>Each claim in detail</h2>",
        "<table><tr><th>section</th><th>the paper</th><th>measured</th><th>on this model</th><th>verdict</th>"
        "<th>rule</th><th>details</th><th>figure</th></tr>", *rows, "</table>",
        f"<h2>The analyses</h2><ul>{links}</ul>",
        f"<p><small>Time: {html.escape(timings_text(doc['timings_s']))}</small></p></main></body></html>"])


def wrote_lines(doc: dict, out: Path) -> list[str]:
    """What `reproduce` wrote into `out`, a line each, for the terminal."""
    verdicts = ", ".join(f"{n} {v}" for v, n in doc["verdicts"].items() if n)
    reports = sorted(p.parent for p in Path(out).glob("*/report.html"))
    return [formatting.wrote(out / "report.html", f"the claims report: {len(doc['claims'])} claims, {verdicts}"),
            formatting.wrote(out / "claims.json", "every claim's numbers and verdict"),
            formatting.wrote_many(reports, "analysis folder", "with report.html, figures and tables", out)]


def claims_text(doc: dict) -> str:
    """The claims report as the terminal prints it: the size, then per claim its verdict, the numbers it compares
    and its figures, then the verdict counts and the time."""
    lines = [f"{doc['model']}, {size_text(doc['size'], doc['plan'])}", f"data: {counts_text(doc['counts'])}"]
    if doc.get("bos"):
        lines.append(f"bos: {doc['bos']['text']}")
    for c in doc["claims"]:
        lines.append(f"  {c['verdict']:>16}  {c['claim']}")
        for cond in c.get("conditions", []):
            lines.append(f"{'':20}{cond['quantity']}: {cond['shown']}; {cond['check']}")
            if cond.get("detectable") is not None:
                lines.append(f"{'':22}power: {cond['power']}")
        if not c.get("conditions"):
            lines.append(f"{'':20}{c['why']}")
        for path in c.get("figures", []):
            lines.append(f"{'':20}figure: {path}")
        if "calibration" in c:
            lines.append(f"{'':20}{c['calibration']['text']}")
    lines.append("verdicts: " + ", ".join(f"{v} {n}" for v, n in doc["verdicts"].items()))
    lines.append(f"time: {timings_text(doc['timings_s'])}")
    return "\n".join(lines)
