"""Domain-specific components (sec. 5.1, figs. 10 and 16, appendix E): the mean importance of every head and FFN
block per domain, each head's specificity to a domain (its mean there minus its mean in the general domain), the
addition vs subtraction view, FFN importance per layer, and the three claims of sec. 5.1.

Summarises corpus rows (rows.corpus_rows); never runs the model itself. Every mean and difference comes with a
95% bootstrap interval resampling texts, since the predictions of one text are not independent.
L layers, H heads; a flat head index is layer * H + head; vector columns are [L*H heads, then L FFN blocks].
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .. import report
from ..errors import FlowroutesError
from .base import Analysis, Claim, Condition, Context, untestable, verdict_of
from .domain_figures import SHOWN, arithmetic_figure, ffn_figure, head_figures
from .rows import column, list_column
from .stats import Estimate, difference_ci, mean_ci, n_boot_of, paired_ci, statistic_ci, unit_sums

PAPER = ("Figure 10 shows the importance of attention heads and FFN blocks in general and for specific datasets. "
         "We see that generally unimportant attention heads become highly relevant for specific tasks. [...] For "
         "non-general domains, we show only heads with importance higher than 0.015.")
GENERAL = "general"  # the paper's C4
NON_ENGLISH = ("russian", "italian", "spanish")
POOLED = "non-english"  # the rows of russian, italian and spanish together: the paper's "non-English"
ARITHMETIC = ("addition", "subtraction")
TOP = 10  # most specific heads kept per domain (result.data["specific_heads"]) and compared by the overlap claim
LISTED = 5  # most specific heads per domain in the summary
NEAR_ZERO = 0.01  # an FFN block "falls to zero" when its mean importance is surely below this (upper 95% bound)
MARGIN = 0.01  # "much less relevant": the last FFN's importance is surely lower by at least this much
OVERLAP_MAX = 1 / 3  # top sets "not the same": mean pairwise Jaccard surely below 1/3 (< half the heads shared)
DEFAULT_DATA = ("general=corpus:general", "english=corpus:english", "code=corpus:code", "russian=corpus:russian",
                "italian=corpus:italian", "spanish=corpus:spanish", "addition=sample:addition",
                "subtraction=sample:subtraction")


def domain_masks(domains: np.ndarray) -> dict[str, np.ndarray]:
    """name -> row mask [N]: every domain (general first, then in order of appearance), then the pooled
    non-English rows when any of russian, italian, spanish is present (and no domain is already so named)."""
    names = list(dict.fromkeys(domains.tolist()))
    if GENERAL in names:
        names.remove(GENERAL)
        names.insert(0, GENERAL)
    out = {d: domains == d for d in names}
    present = [d for d in NON_ENGLISH if d in out]
    if present and POOLED not in out:
        out[POOLED] = np.isin(domains, present)
    return out


def most_specific(specificity: np.ndarray, k: int, means: np.ndarray | None = None) -> list[int]:
    """Flat indices of the (at most) k heads with the largest positive specificity, largest first; with `means`
    (the heads' mean importance in the domain), only heads the paper would show there (mean above SHOWN, fig. 10:
    "we show only heads with importance higher than 0.015"): a head of no importance is specific to nothing."""
    order = np.argsort(-specificity, kind="stable")
    return [int(i) for i in order[:k] if specificity[i] > 0 and (means is None or means[i] > SHOWN)]


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def mean_pairwise_jaccard(sets: list[set]) -> float:
    """Mean Jaccard index |A & B| / |A | B| over every pair of the sets."""
    return float(np.mean([jaccard(a, b) for a, b in itertools.combinations(sets, 2)]))


def overlap_k(n_head_total: int) -> int:
    """How many of the most specific heads the overlap claim compares: 10, or L*H // 3 when the model has
    fewer than 30 heads (so that the three sets could be disjoint)."""
    return max(1, min(TOP, n_head_total // 3))


def summarize(ctx: Context) -> report.Result:
    table, n_layers, n_heads = ctx.table, ctx.n_layers, ctx.n_heads
    nh, shape = n_layers * n_heads, (n_layers, n_heads)
    if table.num_rows == 0:
        raise FlowroutesError("the domains analysis got no predictions: give texts of at least two tokens")
    x = list_column(table, "vector", dtype=np.float32)  # [N, L*H + L]
    dom = column(table, "domain").astype(str)
    docs = column(table, "doc")
    masks = domain_masks(dom)
    if GENERAL not in masks:
        raise FlowroutesError("the domains analysis compares every domain with the general one: name a source "
                              "general=FILE, or leave it out to get corpus:general")
    boot = {"n_boot": ctx.opts.n_boot, "seed": ctx.opts.seed}
    real = set(dom.tolist())
    e = domain_estimates(x, docs, masks, real, nh, boot)
    shown = shown_maps(e.means, shape)
    ffn = {g: e.est[g][nh:] for g in masks}
    summary = _summary(ctx, masks, docs, e, shown, ffn)
    drawn = [g for g in masks if g in real]  # the pooled non-English appears in the tables, not the figures
    figures = head_figures(e, shown, drawn, real, shape)
    extra = {"domains_heads": heads_table(e.est, e.spec, shown, n_layers, n_heads), "domains_ffn": ffn_table(ffn)}
    arithmetic = None
    if all(a in masks for a in ARITHMETIC):
        arithmetic = arithmetic_view(x[:, :nh], docs, masks, e.means, shape, boot)
        summary["addition vs subtraction: heads active for only one"] = arithmetic["listed"]
        figures["domains-arithmetic"] = arithmetic_figure(shown, arithmetic)
    figures["domains-ffn"] = (ffn_figure({g: ffn[g] for g in drawn}),
                              "Mean FFN importance per layer and domain with 95% intervals (fig. 10 right, fig. 16).")
    explanation = (
        "Every prediction of every text gets a component importance vector: per head the sum of its sub-edge "
        "importances into the position's residual stream, per layer the FFN importance (sec. 4.1). These are "
        "averaged per domain (sec. 5.1, fig. 10; x: head, y: layer, 0-based). A head's specificity to a domain is "
        "its mean importance there minus its mean importance on general text (the paper's C4), not on the other "
        "specialised domains; 'non-english' pools the russian, italian and spanish rows. All intervals are 95% "
        "bootstrap intervals resampling texts."
    )
    specific = {g: [divmod(i, n_heads) for i in most_specific(v, TOP, e.means[g][:nh])]
                for g, v in e.spec_values.items()}
    data = {"specific_heads": specific, "means": e.means, "specificity": e.spec, "estimates": e.est, "shown": shown,
            "ffn": x[:, nh:].astype(np.float64), "domain": dom, "doc": docs,
            "doc_sums": np.concatenate(e.doc_sums), "doc_counts": np.concatenate(e.doc_counts),
            "doc_domain": np.array(e.doc_domain), "n_layers": n_layers, "n_heads": n_heads, "boot": boot,
            "arithmetic": arithmetic}
    return report.Result("domains", "Domain-specific components", explanation, table, summary, figures, extra,
                         data=data, paper=PAPER, paper_size=ANALYSIS.paper_size)


@dataclass
class DomainEstimates:
    """Per domain g (in `domain_masks` order): est[g], K estimates of the mean vector; spec[g] (every g but
    general), L*H estimates of the head means minus general's; means / spec_values: their values [K] / [L*H].
    doc_sums / doc_counts / doc_domain: per text of a real (not pooled) domain, its head sums [D_g, L*H], its number
    of predictions [D_g] and its domain, for the overlap claim."""

    est: dict[str, list[Estimate]]
    spec: dict[str, list[Estimate]]
    means: dict[str, np.ndarray]
    spec_values: dict[str, np.ndarray]
    doc_sums: list[np.ndarray]
    doc_counts: list[np.ndarray]
    doc_domain: list[str]


def domain_estimates(x: np.ndarray, docs: np.ndarray, masks: dict[str, np.ndarray], real: set[str], nh: int,
                     boot: dict) -> DomainEstimates:
    """Means of the component vectors x [N, L*H + L] per domain, and each head's specificity, resampling texts."""
    gen = masks[GENERAL]
    est, spec, sums, counts, owner = {}, {}, [], [], []
    for g, m in masks.items():
        est[g] = mean_ci(x[m], docs[m], **boot)  # K estimates
        if g != GENERAL:
            spec[g] = difference_ci(x[m][:, :nh], docs[m], x[gen][:, :nh], docs[gen], **boot)
        if g in real:  # per-text sums of real domains, for the overlap claim
            s, c, n_units = unit_sums(x[m][:, :nh], docs[m])
            sums.append(s)
            counts.append(c[:, 0])
            owner += [g] * n_units
    means = {g: np.array([e.value for e in est[g]]) for g in masks}
    spec_values = {g: np.array([e.value for e in spec[g]]) for g in spec}
    return DomainEstimates(est, spec, means, spec_values, sums, counts, owner)


def shown_maps(means: dict[str, np.ndarray], shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Per domain the [L, H] map of mean head importance as figs. 10 and 16 draw it: NaN where a non-general
    domain's mean is not above SHOWN."""
    nh = shape[0] * shape[1]
    shown = {}
    for g, mean in means.items():
        mat = mean[:nh].reshape(shape).copy()
        if g != GENERAL:
            mat[~(mat > SHOWN)] = np.nan
        shown[g] = mat
    return shown


def _summary(ctx: Context, masks: dict[str, np.ndarray], docs: np.ndarray, e: DomainEstimates,
             shown: dict[str, np.ndarray], ffn: dict[str, list[Estimate]]) -> dict:
    n_heads, nh = ctx.n_heads, ctx.n_layers * ctx.n_heads
    summary = dict(ctx.counts)
    summary["paper_sample"] = ANALYSIS.paper_size
    summary["predictions_per_domain"] = {g: int(m.sum()) for g, m in masks.items()}
    summary["texts_per_domain"] = {g: int(len(np.unique(docs[m]))) for g, m in masks.items()}
    summary["shown_threshold"] = SHOWN
    order = np.argsort(-e.means[GENERAL][:nh], kind="stable")[:LISTED]
    summary["general: most important heads"] = [{"head": _name(i, n_heads), "mean": e.est[GENERAL][i]} for i in order]
    for g, v in e.spec_values.items():
        summary[f"{g}: most specific heads (mean - general)"] = [
            {"head": _name(i, n_heads), "mean": e.est[g][i], "specificity": e.spec[g][i]}
            for i in most_specific(v, LISTED, e.means[g][:nh])]
        summary[f"{g}: heads shown (mean > {SHOWN})"] = int(np.isfinite(shown[g]).sum())
    summary["last-layer FFN importance"] = {g: ffn[g][-1] for g in masks}
    return summary


def arithmetic_view(heads: np.ndarray, docs: np.ndarray, masks: dict, means: dict, shape: tuple, boot: dict) -> dict:
    """Addition minus subtraction per head (with intervals) and the heads above SHOWN for only one of the two."""
    nh = heads.shape[1]
    add, sub = masks["addition"], masks["subtraction"]
    diff = difference_ci(heads[add], docs[add], heads[sub], docs[sub], **boot)
    m_add, m_sub = means["addition"][:nh], means["subtraction"][:nh]
    only_add = (m_add > SHOWN) & ~(m_sub > SHOWN)
    only_sub = (m_sub > SHOWN) & ~(m_add > SHOWN)
    n_heads = shape[1]
    listed = [{"head": _name(i, n_heads), "active_for": "addition" if only_add[i] else "subtraction",
               "addition": float(m_add[i]), "subtraction": float(m_sub[i]), "difference": diff[i]}
              for i in np.flatnonzero(only_add | only_sub)]
    return {"difference": np.array([e.value for e in diff]).reshape(shape), "difference_ci": diff,
            "only_addition": only_add.reshape(shape), "only_subtraction": only_sub.reshape(shape), "listed": listed}


def heads_table(est: dict, spec: dict, shown: dict, n_layers: int, n_heads: int) -> pa.Table:
    """One row per domain and head: mean with interval, whether the figure shows it, specificity with interval."""
    nh = n_layers * n_heads
    cols = {k: [] for k in ("domain", "layer", "head", "mean", "low", "high", "shown", "specificity",
                            "specificity_low", "specificity_high")}
    for g, es in est.items():
        for i in range(nh):
            s = spec[g][i] if g in spec else Estimate(np.nan, np.nan, np.nan, 0, 0)
            for key, value in (("domain", g), ("layer", i // n_heads), ("head", i % n_heads), ("mean", es[i].value),
                               ("low", es[i].low), ("high", es[i].high),
                               ("shown", bool(np.isfinite(shown[g].ravel()[i]))), ("specificity", s.value),
                               ("specificity_low", s.low), ("specificity_high", s.high)):
                cols[key].append(value)
    return pa.table(cols)


def ffn_table(ffn: dict) -> pa.Table:
    cols = {k: [] for k in ("domain", "layer", "mean", "low", "high")}
    for g, es in ffn.items():
        for layer, e in enumerate(es):
            for key, value in (("domain", g), ("layer", layer), ("mean", e.value), ("low", e.low), ("high", e.high)):
                cols[key].append(value)
    return pa.table(cols)


def _name(flat: int, n_heads: int) -> str:
    return f"L{flat // n_heads}H{flat % n_heads}"


# --- claims -------------------------------------------------------------------------------------------------------


def claims(results: dict) -> list[Claim]:
    res = results.get("domains")
    if res is None:
        return []
    return [overlap_claim(res), last_ffn_claim(res), ffn_zero_claim(res)]


def overlap_claim(res: report.Result) -> Claim:
    """The top-k most specific heads (specificity = mean in the domain - mean in general) of addition, code and
    non-English (russian, italian, spanish pooled); statistic: their mean pairwise Jaccard index, recomputed on
    resampled texts. Holds when its upper 95% bound is below 1/3 (on average fewer than half the heads shared) and
    the heads are really specific: top-k heads chosen on one half of each domain's texts (alternate texts) keep a
    specificity above 0 on the other half, for each of the three domains (the smallest of the three held-out
    specificities, each averaged over both directions, has its lower 95% bound above 0). Without that guard,
    top sets of pure noise would count as "different"."""
    key, section = "domain-specific-heads", "5.1, fig. 10"
    statement = ("domain-specific heads are different across domains: important heads for addition, code, and "
                 "non-English are not the same")
    d = res.data
    owner, sums, counts = d["doc_domain"], d["doc_sums"], d["doc_counts"]
    present = set(owner.tolist())
    k = overlap_k(sums.shape[1])
    measure = (f"mean pairwise Jaccard index of the top-{k} heads by specificity (mean importance in the domain minus "
               "in general) of addition, code and non-English (russian, italian, spanish pooled); interval "
               "resamples texts")
    sets = {"addition": ["addition"], "code": ["code"], "non-English": [g for g in NON_ENGLISH if g in present]}
    missing = [name for name, members in sets.items() if not members or not set(members) <= present]
    if missing or GENERAL not in present:
        return untestable(key, section, statement, f"the run has no {', '.join(missing or [GENERAL])} domain "
                          "(needs general, addition, code and at least one of russian, italian, spanish)", measure)
    texts = _TopHeads(owner, sums, counts, list(sets.values()), k)
    seed, n = d["boot"]["seed"], int(counts.sum())
    reps = n_boot_of(d)
    est = statistic_ci(texts.overlap, len(owner), unit="texts", n=n, n_boot=reps, seed=seed)
    guard = statistic_ci(texts.weakest, len(owner), unit="texts", n=n, n_boot=reps, seed=seed)
    tops = texts.top_sets(np.ones(len(owner)))
    held = texts.held_out(np.ones(len(owner))) or [np.nan] * len(sets)
    n_heads = d["n_heads"]
    names = {name: sorted(_name(i, n_heads) for i in t) for name, t in zip(sets, tops)}
    pairs = "; ".join(f"{a}-{b} {jaccard(tops[i], tops[j]):.2f}"
                      for (i, a), (j, b) in itertools.combinations(list(enumerate(sets)), 2))
    different, specific = est.below(OVERLAP_MAX), guard.above(0.0)
    conditions = (Condition(f"the mean pairwise Jaccard index of the top-{k} specific heads", est, "high", "<",
                            OVERLAP_MAX),
                  Condition("the smallest held-out specificity of the three domains' top heads", guard))
    why = (f"holds when the upper bound is below {OVERLAP_MAX:.3g} (on average fewer than half of the top-{k} heads "
           f"shared) and the heads are specific on held-out texts (smallest held-out specificity {guard}, lower bound "
           f"above 0: {'yes' if specific else 'no'}; per domain "
           + ", ".join(f"{name} {_short(v)}" for name, v in zip(sets, held)) + "). "
           f"Upper bound {'below' if different else 'not below'} {OVERLAP_MAX:.3g}. Pairwise: {pairs}. Top heads: "
           + "; ".join(f"{name} {', '.join(h)}" for name, h in names.items()))
    return Claim(key, section, statement, measure, est, verdict_of(conditions), why, conditions)


class _TopHeads:
    """The overlap claim's statistics on texts weighted by w [D] (1 each, or a bootstrap's counts): the top-k heads
    by specificity of each group of domains, and how specific the top-k heads chosen on one half of the texts stay
    on the other half. sums [D, L*H] / counts [D]: each text's head sums and predictions; owner [D]: its domain."""

    def __init__(self, owner: np.ndarray, sums: np.ndarray, counts: np.ndarray, groups: list[list[str]], k: int):
        self.sums, self.counts, self.k, self.n_texts = sums, counts, k, len(owner)
        self.member = [np.isin(owner, members) for members in groups]
        self.general = owner == GENERAL
        self.half = np.zeros(len(owner), dtype=bool)  # every other text of each domain
        for g in set(owner.tolist()):
            self.half[np.flatnonzero(owner == g)[::2]] = True

    def specificity(self, w: np.ndarray, mask: np.ndarray, within: np.ndarray) -> np.ndarray | None:
        """Mean of the texts in mask & within minus general's, texts weighted by w [D]; None without texts."""
        got = self.means(w, mask, within)
        return None if got is None else got[0] - got[1]

    def means(self, w: np.ndarray, mask: np.ndarray, within: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(mean head importance of the texts in mask & within, of general's), texts weighted by w [D]."""
        a, b = w * (mask & within), w * (self.general & within)
        na, nb = a @ self.counts, b @ self.counts
        return ((a @ self.sums) / na, (b @ self.sums) / nb) if na > 0 and nb > 0 else None

    def top_sets(self, w: np.ndarray) -> list[set] | None:
        everything = np.ones(self.n_texts, dtype=bool)
        got = [self.means(w, mask, everything) for mask in self.member]
        if any(g is None for g in got):  # a resample without any text of some domain
            return None
        # only heads that are specific (above 0) and shown (above SHOWN) count, as in `most_specific`: a top-k padded
        # with heads that no domain uses would make every domain's set look alike
        return [set(most_specific(mine - general, self.k, mine)) for mine, general in got]

    def held_out(self, w: np.ndarray) -> list[float] | None:
        out = []
        for mask in self.member:
            one, other = self.specificity(w, mask, self.half), self.specificity(w, mask, ~self.half)
            if one is None or other is None:
                return None
            top_one, top_other = np.argsort(-one, kind="stable")[: self.k], np.argsort(-other, kind="stable")[: self.k]
            out.append(0.5 * (other[top_one].mean() + one[top_other].mean()))
        return out

    def _weights(self, idx: np.ndarray) -> np.ndarray:
        return np.bincount(idx, minlength=self.n_texts).astype(np.float64)

    def overlap(self, idx: np.ndarray) -> float:
        """Mean pairwise Jaccard index of the top sets, texts resampled as `idx`."""
        tops = self.top_sets(self._weights(idx))
        return np.nan if tops is None else mean_pairwise_jaccard(tops)

    def weakest(self, idx: np.ndarray) -> float:
        """The smallest held-out specificity of the groups, texts resampled as `idx`."""
        values = self.held_out(self._weights(idx))
        return np.nan if values is None else min(values)


def last_ffn_claim(res: report.Result) -> Claim:
    """Last-layer FFN importance of non-English (russian, italian, spanish pooled) minus English (FLORES: the same
    sentences) and minus general; "much less" holds when both intervals lie below -0.01 (a difference of at least
    0.01 importance, not a rounding artefact; general alone when there is no English)."""
    key, section = "last-ffn-non-english", "5.1, fig. 10"
    statement = "the last layer is much less relevant for non-English than other domains"
    d = res.data
    dom, docs, ffn = d["domain"], d["doc"], d["ffn"]
    present = [g for g in NON_ENGLISH if g in set(dom.tolist())]
    refs = [g for g in ("english", GENERAL) if g in set(dom.tolist())]
    measure = (f"mean importance of the last FFN block (layer {ffn.shape[1] - 1}), non-English (russian, italian, "
               f"spanish pooled) minus {refs[0] if refs else 'english'}; interval resamples texts")
    if not present or not refs:
        return untestable(key, section, statement, "the run has no " + ("russian, italian or spanish" if not present
                                                                         else "english or general") + " domain",
                          measure)
    ne = np.isin(dom, present)
    boot = d["boot"]
    diffs = {r: difference_ci(ffn[ne, -1], docs[ne], ffn[dom == r, -1], docs[dom == r], **boot)[0] for r in refs}
    conditions = tuple(Condition(f"the last FFN's importance, non-English minus {r}", e, "high", "<", -MARGIN)
                       for r, e in diffs.items())
    why = (f"holds when the difference to every reference (english, general) lies below -{MARGIN}: "
           + "; ".join(f"vs {r} {e}" for r, e in diffs.items()) + f" (non-English: {', '.join(present)})")
    return Claim(key, section, statement, measure, diffs[refs[0]], verdict_of(conditions), why, conditions)


def ffn_zero_claim(res: report.Result) -> Claim:
    """A layer's FFN 'falls to zero' for an arithmetic domain when its mean importance there has an upper 95% bound
    below 0.01 while the general domain's lower bound is above 0.01. Holds when every arithmetic domain of the run
    (addition, subtraction) has at least one such layer. Estimate: min over layers of the mean FFN importance
    (recomputed per resample) for the arithmetic domain where that minimum is largest, for reference. What the
    verdict compares, per arithmetic domain: the upper bound of the layer with the lowest upper bound among the
    layers where the general domain's lower bound is above 0.01 (such a layer exists exactly when it is below
    0.01)."""
    key, section = "ffn-zero-arithmetic", "5.1, fig. 16"
    statement = "the importance of FFN blocks for addition and subtraction falls to zero in some layers"
    d = res.data
    dom, docs, ffn, est = d["domain"], d["doc"], d["ffn"], d["estimates"]
    nh = d["n_layers"] * d["n_heads"]
    present = [a for a in ARITHMETIC if a in est]
    measure = (f"per arithmetic domain, the layers whose mean FFN importance has an upper 95% bound below "
               f"{NEAR_ZERO} while the general domain's lower bound is above it: of the layers where general's lower "
               "bound is above it, the one with the lowest upper bound")
    if not present:
        return untestable(key, section, statement, "the run has neither an addition nor a subtraction domain", measure)
    gen = est[GENERAL][nh:]
    layers, minima = {}, {}
    for a in present:
        es = est[a][nh:]
        layers[a] = [lay for lay in range(len(es)) if es[lay].high < NEAR_ZERO and gen[lay].low > NEAR_ZERO]
        sel = dom == a
        minima[a] = paired_ci(lambda m: m.min(), ffn[sel], docs[sel], **d["boot"])[0]
    conditions = tuple(_zero_condition(a, est[a][nh:], gen) for a in present)
    assert [c.met for c in conditions] == [bool(layers[a]) for a in present]
    shown = [c for c in conditions if isinstance(c.quantity, Estimate)]
    binding = max(shown, key=lambda c: c.compared, default=None)  # the domain furthest from meeting it
    why = (f"holds when every arithmetic domain of the run ({', '.join(present)}) has such a layer: "
           + "; ".join(f"{a}: layers {layers[a] or 'none'}, lowest layer mean {minima[a]}" for a in present))
    return Claim(key, section, statement, measure, binding.quantity if binding else None, verdict_of(conditions), why,
                 conditions)


def _zero_condition(domain: str, es: list[Estimate], gen: list[Estimate]) -> Condition:
    """The layer of `domain` whose FFN mean has the lowest upper bound among those where general's lower bound is
    above NEAR_ZERO; its upper bound below NEAR_ZERO: the FFN 'falls to zero' there."""
    candidates = [lay for lay in range(len(es)) if gen[lay].low > NEAR_ZERO]
    if not candidates:
        return Condition(f"the number of layers where the general domain's FFN lower bound is above {NEAR_ZERO}", 0,
                         "value", ">=", 1)
    lay = min(candidates, key=lambda i: es[i].high if np.isfinite(es[i].high) else np.inf)
    return Condition(f"{domain}'s mean FFN importance in layer {lay} (the lowest upper bound among the layers where "
                     f"general's lower bound is above {NEAR_ZERO})", es[lay], "high", "<", NEAR_ZERO)


def _short(x: float) -> str:
    return f"{x:.3g}" if np.isfinite(x) else "not computed"


ANALYSIS = Analysis(
    name="domains", title="Domain-specific components",
    help="mean head and FFN importance per domain, heads specific to a domain vs general text (figs. 10, 16)",
    paper=PAPER,
    paper_size="1000 sentences per domain (C4, FLORES-200 devtest, CodeParrot, Stolfo et al. arithmetic), Llama 2-7B",
    kind="corpus", summarize=summarize, claims=claims, default_data=DEFAULT_DATA, needs_general=True,
)

