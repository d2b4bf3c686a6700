"""Head roles (sec. 4.3): previous-token and subword-merging heads, defined by contributions (not attention
weights); the claims that previous-token heads lead their layers and that subword-merging heads exist.

Summarises corpus rows (rows.corpus_rows); never runs the model itself.
"""

from __future__ import annotations

import numpy as np

from .. import report
from . import compute
from .base import Analysis, Claim, Condition, Context, untestable, verdict_of
from .rows import column, list_column
from .stats import N_BOOT, Estimate, mean_ci, n_boot_of, paired_ci

PAPER = ("We refer to a head as the previous token head if in at least 70% of the cases it puts more than half of "
         "its influence on the previous token. [...] for a subword merging head (i) in at least 70% of the cases, "
         "later subwords put more than half of their influence on previous subwords of the same word, (ii) in at "
         "least 70% of the cases, for the first subword this head's overall influence is no more than 0.005%.")
SHARE, FREQUENCY, FIRST_INFLUENCE = 0.5, 0.7, 5e-5
TAU = 0.01  # fig. 9a's tau, set on Llama 2-7B's 32 heads per layer (scaled to other head counts: stream_tau)
PAPER_HEADS = 32  # heads per layer of Llama 2-7B, the model on which the paper set tau = 0.01 and 0.005%
BY_FAR = 0.5  # "by far the most important": the layer's runner-up at most half as active (relative lead >= 0.5)
TOP_SHARE = 0.25  # "among the most important heads in the corresponding layers": in the top quarter of the layer


def head_scale(n_heads: int) -> float:
    """How much larger a head's uniform share of a node is here than on Llama 2-7B: (32 + 1) / (n_heads + 1).

    A node x^{lA}_p has n_heads + 1 parts (the heads' sub-edges and the residual; flowroutes.importance), whose
    importances add up to 1: if every part weighed the same, a head would get 1 / (n_heads + 1) of it, 1/33 on
    Llama 2-7B and 1/10 on a 9-head model. An importance cut-off the paper set on 32 heads (tau = 0.01 for the
    activation frequency, 0.005% for a quiet head) is the same fraction of that share on any model when multiplied
    by this factor; unscaled, 0.01 is a third of a head's share on 32 heads but a tenth of it on 9.
    """
    return (PAPER_HEADS + 1) / (n_heads + 1)


def stream_tau(n_heads: int) -> float:
    """The activation threshold of fig. 9a for a model with `n_heads` heads per layer: tau = 0.01 on 32 heads
    (the paper's), 0.033 on 9: a third of a head's uniform share of the node on every model (head_scale)."""
    return TAU * head_scale(n_heads)


def top_heads(n_heads: int) -> int:
    """How many heads of a layer are "among the most important": the top quarter, ceil(TOP_SHARE * n_heads),
    at least 1 (8 of Llama 2-7B's 32, 3 of 9, 1 of 4): the same fraction of the layer on any head count."""
    return max(1, int(np.ceil(TOP_SHARE * n_heads - 1e-9)))


def layer_ranks(freq: np.ndarray, heads: np.ndarray, n_heads: int) -> np.ndarray:
    """Each head's rank in its layer by activity (1 = the most active; a tie shares the better rank: 1 + the
    number of heads of the layer strictly more active). freq: [L*H]; heads: flat indices."""
    mat = freq.reshape(-1, n_heads)
    return np.array([1 + int((mat[h // n_heads] > mat[h // n_heads, h % n_heads]).sum()) for h in heads], dtype=float)


def roles(table, n_layers: int, n_heads: int) -> dict:
    """Role masks [L, H] and the per-row indicators behind them (for intervals).

    Cases: previous-token: every prediction with p >= 1; merging (i): every later subword; (ii): every first
    subword with p >= 1. A share that is NaN (the head had no influence at all) counts as "not more than half".
    Part (ii)'s "no more than 0.005%" is the paper's 5e-5 on its 32 heads, scaled to this model's head count
    (5e-5 * head_scale(n_heads)): the same fraction of a head's uniform share of the node on any model.
    """
    n_heads_total = n_layers * n_heads
    quiet = FIRST_INFLUENCE * head_scale(n_heads)
    positions = column(table, "position")
    subword = column(table, "subword")
    docs = column(table, "doc")
    prev = list_column(table, "previous")
    same = list_column(table, "same_word")
    total = list_column(table, "vector")[:, :n_heads_total]
    cases_prev = positions > 0
    later = subword == "later"
    first = (subword == "first") & cases_prev
    ind_prev = (np.nan_to_num(prev[cases_prev], nan=-1.0) > SHARE).astype(float)  # [N1, L*H]
    ind_merge = (np.nan_to_num(same[later], nan=-1.0) > SHARE).astype(float)  # [N2, L*H]
    ind_quiet = (total[first] <= quiet).astype(float)  # [N3, L*H]
    masks = compute.head_roles(prev[cases_prev].reshape(-1, n_layers, n_heads),
                               same[later].reshape(-1, n_layers, n_heads),
                               total[first].reshape(-1, n_layers, n_heads), SHARE, FREQUENCY, quiet)
    return {**masks, "ind_previous": ind_prev, "docs_previous": docs[cases_prev], "ind_merging": ind_merge,
            "docs_merging": docs[later], "ind_quiet": ind_quiet, "docs_quiet": docs[first], "first_influence": quiet}


def summarize(ctx: Context) -> report.Result:
    table, n_layers, n_heads = ctx.table, ctx.n_layers, ctx.n_heads
    r = roles(table, n_layers, n_heads)
    boot = {"n_boot": ctx.opts.n_boot, "seed": ctx.opts.seed}
    r["boot"] = boot
    # fig. 9a's activity at the claims' tau (as bottom-to-top measures it), for "among the most important heads"
    r["active"], r["docs"] = stream_activity(table, stream_tau(n_heads))
    summary = dict(ctx.counts)
    summary["paper_sample"] = ANALYSIS.paper_size
    for key, label in (("previous_token", "previous_token_heads"), ("subword_merging", "subword_merging_heads")):
        heads = list(zip(*np.nonzero(r[key])))
        ind = r["ind_previous"] if key == "previous_token" else r["ind_merging"]
        docs = r["docs_previous"] if key == "previous_token" else r["docs_merging"]
        summary[label] = [{"head": f"L{a}H{b}", "share_of_cases": mean_ci(ind[:, a * n_heads + b], docs, **boot)[0]}
                          for a, b in heads]
    summary["cases"] = {"previous (p >= 1)": len(r["ind_previous"]), "later subwords": len(r["ind_merging"]),
                        "first subwords": len(r["ind_quiet"])}
    marks = {"gold": r["previous_token"], "red": r["subword_merging"]}
    fig = report.heatmaps([r["previous_frequency"], r["merging_frequency"], r["first_quiet_frequency"]],
                          ["cases with > 1/2 influence on previous token", "later subwords: > 1/2 on own word",
                           f"first subwords: influence <= {r['first_influence']:.3g}"], marks=marks,
                          suptitle="gold: previous-token heads, red: subword-merging heads")
    roles_table = report.freq_table({"previous_frequency": r["previous_frequency"],
                                     "merging_frequency": r["merging_frequency"],
                                     "first_quiet_frequency": r["first_quiet_frequency"],
                                     "previous_token": r["previous_token"].astype(float),
                                     "subword_merging": r["subword_merging"].astype(float)})
    explanation = (
        "Head roles from contributions, not attention weights (sec. 4.3). A previous-token head puts more than "
        "half of its influence on the previous token in at least 70% of the predictions. A subword-merging head "
        "(i) puts more than half of its influence on previous subwords of the same word for at least 70% of "
        f"later subwords, (ii) has an overall influence of at most {r['first_influence']:.3g} for at least 70% of "
        "first subwords (the paper's 0.005% on Llama 2-7B's 32 heads, times (32 + 1) / (heads + 1): the same "
        "fraction of a head's uniform share of the node), and is not a previous-token head. Intervals resample "
        "texts."
    )
    return report.Result("head_roles", "Head roles", explanation, table, summary,
                         {"head-roles": (fig, "How often each head meets each part of the role definitions.")},
                         {"head_roles_per_head": roles_table}, data=r, paper=PAPER, paper_size=ANALYSIS.paper_size)


def stream_activity(table, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """[N, L*H] 0/1: head h of layer l affects the residual stream (l, p) of the row's prediction, i.e. one of its
    sub-edges into x^{lA}_p has importance >= tau (sec. 4, "Setting"); and the rows' texts [N]."""
    # compared in float32, as the routes compare the trace's float32 importances with tau
    return (list_column(table, "head_max", np.float32) >= np.float32(tau)).astype(float), column(table, "doc")


def claims(results: dict) -> list[Claim]:
    res = results.get("head-roles")
    btt = results.get("bottom-to-top")
    out = []
    statement = ("almost all of them [previous token heads] are by far the most important attention heads in the "
                 "corresponding layers")
    key, section = "previous-token-heads-lead", "4.3, fig. 9a"
    if res is None or btt is None:
        out.append(untestable(key, section, statement, "needs the head-roles and bottom-to-top analyses"))
    else:
        out.append(leader_claim(res.data["previous_token"], btt.data["claim_active"], btt.data["docs"], statement,
                                n_boot_of(btt.data), btt.data["claim_tau"]))
    statement = ("the model has several such [subword merging] heads in the bottom part of the network, and these "
                 "heads are among the most important heads in the corresponding layers")
    key = "subword-merging-heads"
    if res is None:
        out.append(untestable(key, section, statement, "the head-roles analysis was not run"))
    else:
        out.append(merging_claim(res.data, statement))
    return out


def relative_leads(freq: np.ndarray, heads: np.ndarray, n_heads: int) -> np.ndarray:
    """Each head's lead over the most active other head of its layer, relative to the larger of the two:
    (f - f2) / max(f, f2), in [-1, 1]: 1 when no other head of the layer is active, 0 for a tie, 0.5 when the
    runner-up is half as active, below 0 when the head is not its layer's most active. freq: [L*H] frequencies;
    heads: flat indices of the heads. A layer where neither is ever active reads 0."""
    mat = freq.reshape(-1, n_heads)
    out = np.empty(len(heads))
    for i, h in enumerate(heads):
        layer, head = divmod(int(h), n_heads)
        f = mat[layer, head]
        f2 = np.delete(mat[layer], head).max() if n_heads > 1 else 0.0
        top = max(f, f2)
        out[i] = (f - f2) / top if top > 0 else 0.0
    return out


def leader_claim(prev: np.ndarray, active: np.ndarray, docs: np.ndarray, statement: str,
                 n_boot: int = N_BOOT, tau: float | None = None) -> Claim:
    """"almost all of them are by far the most important attention heads in the corresponding layers" (sec. 4.3):
    the share of previous-token heads that lead their layer by far, n = the number of such heads.

    A head's importance is its activation frequency (fig. 9a: the share of residual streams it affects, at tau =
    0.01 on 32 heads, scaled to this model's head count: stream_tau). "By far" is a size: the head's lead over the
    second most active head of its layer, relative to the larger of the two ((f - f2) / max(f, f2), relative_leads),
    is at least 0.5, i.e. the runner-up affects at most half as many streams. A relative lead needs no cut-off in
    frequency units, so it reads the same at any frequency level. The share's interval resamples texts: every
    replicate recomputes all frequencies, each head's lead and the share, so each head's own interval (reported in
    `why`) is part of it; a head ahead by a hair (a lead of 0.02) never counts, however many texts there are.
    """
    n_layers, n_heads = prev.shape
    heads = np.flatnonzero(prev.ravel())
    measure = (f"share of previous-token heads that lead their layer by far: the layer's second most active head "
               f"at most half as active (relative lead >= {BY_FAR}; fig. 9a frequency)")
    if len(heads) == 0:
        return untestable("previous-token-heads-lead", "4.3, fig. 9a", statement,
                          "no head meets the previous-token definition on this model", measure)

    def stats_of(freq):  # [share, lead of head 1, ..., lead of head k]
        leads = relative_leads(freq, heads, n_heads)
        return np.concatenate([[np.mean(leads >= BY_FAR)], leads])

    est, *leads = paired_ci(stats_of, active, docs, unit="texts", n_boot=n_boot)
    est = type(est)(est.value, est.low, est.high, len(heads), est.units, "texts")  # n = 5 heads: "n=5 in 48 texts"
    label = "the share of previous-token heads that lead their layer by far (relative lead >= 0.5)"
    # "almost all of them": the paper's effect read as 90% of the previous-token heads (docs/claims.md)
    conditions = (Condition(label, est, "value", ">=", 0.75), Condition(label, est, "low", ">=", 0.5, effect=0.9))
    verdict = verdict_of(conditions)
    per_head = "; ".join(f"L{h // n_heads}H{h % n_heads} {lead}" for h, lead in zip(heads, leads))
    at = f"tau = {tau:.3g}, " if tau is not None else ""
    why = (f"'by far' read as: the runner-up of the layer at most half as active (relative lead (f - f2) / max(f, "
           f"f2) >= {BY_FAR}); 'almost all' as: at least 75% of the previous-token heads lead by far, and at least "
           f"50% in 95% of resamples. {at}{len(heads)} previous-token head(s), relative leads: {per_head}")
    return Claim("previous-token-heads-lead", "4.3, fig. 9a", statement, measure, est, verdict, why, conditions)


def merging_claim(r: dict, statement: str) -> Claim:
    """"the model has several such heads in the bottom part of the network, and these heads are among the most
    important heads in the corresponding layers" (sec. 4.3).

    (1) Whether any head meets the full definition in the bottom half of the layers (a count); (2) whether these
    heads are among the most important of their layers: importance is fig. 9a's activation frequency (the share of
    residual streams a head affects, at tau = stream_tau(heads), as for previous-token-heads-lead), and "among the
    most important" is a rank in the top quarter of the layer (top_heads: 8 of 32 heads, 3 of 9, 1 of 4), so that
    it means the same on any head count. The share of the bottom-half merging heads so ranked (n = those heads; the
    interval resamples texts, every replicate ranking every head again) must be at least 0.75, and its lower bound
    at least 0.5 (the plural "these heads" read as previous-token-heads-lead reads "almost all"). For reference,
    the best candidate head's share of later subwords with > 1/2 influence on the own word. The definition's only
    importance cut-off, part (ii)'s 0.005%, is scaled to the head count (roles)."""
    n_layers, n_heads = r["subword_merging"].shape
    half = int(np.ceil(n_layers / 2))
    measure = (f"the heads that meet the subword-merging definition (the paper's footnote: (i), (ii) and not a "
               f"previous-token head), counted in the bottom half of the layers (0-{half - 1})")
    if len(r["ind_merging"]) == 0:
        return untestable("subword-merging-heads", "4.3, fig. 9a", statement, "no word has a later subword", measure)
    cand = np.where(r["previous_token"].ravel(), -1.0, r["merging_frequency"].ravel())
    best = int(np.argmax(cand))
    est = mean_ci(r["ind_merging"][:, best], r["docs_merging"], unit="texts",
                  n_boot=n_boot_of(r))[0]
    found = [(a, b) for a, b in zip(*np.nonzero(r["subword_merging"]))]
    bottom = [h for h in found if h[0] < n_layers / 2]
    top = top_heads(n_heads)
    ranked, ranks = among_the_most_important(r, bottom, n_heads, top)
    label = (f"the share of those heads in the top quarter of their layer by activity (the {top} of {n_heads} most "
             "active)")
    conditions = (Condition(f"the number of heads in layers 0-{half - 1} that meet the subword-merging definition",
                            len(bottom), "value", ">=", 1),)
    if bottom:  # "these heads": with none, the count alone decides
        conditions += (Condition(label, ranked, "value", ">=", 0.75), Condition(label, ranked, "low", ">=", 0.5))
    verdict = verdict_of(conditions)
    why = (f"{len(found)} head(s) meet the definition ({', '.join(f'L{a}H{b}' for a, b in found) or 'none'}), "
           f"{len(bottom)} in the bottom half (part (ii): overall influence at most {r['first_influence']:.3g}, the "
           f"paper's 0.005% on 32 heads times 33 / ({n_heads} + 1)). For reference, the best candidate "
           f"L{best // n_heads}H{best % n_heads} "
           f"puts > 1/2 of its influence on its own word for {est} of later subwords (part (i) of the definition "
           "alone, not what the verdict compares). 'Among the most important heads in the corresponding layers' read "
           f"as: a rank in the top quarter of the layer by activation frequency (the top {top} of {n_heads} heads; "
           f"tau = {stream_tau(n_heads):.3g}), for at least 75% of the bottom-half merging heads and at least 50% in "
           f"95% of resamples: {ranked}" + (f"; ranks: {ranks}" if ranks else "") + ".")
    return Claim("subword-merging-heads", "4.3, fig. 9a", statement, measure, None, verdict, why, conditions)


def among_the_most_important(r: dict, heads: list[tuple[int, int]], n_heads: int, top: int):
    """The share of `heads` whose activity rank in their layer is at most `top`, texts resampled (each replicate
    ranks every head again), n = the heads; and each head's rank with its interval ("L0H1 2.000 [1.000, 3.000]")."""
    if not heads:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, 0, "texts"), ""
    flat = np.array([a * n_heads + b for a, b in heads])

    def stats_of(freq):  # [share ranked in the top, rank of head 1, ..., rank of head k]
        ranks = layer_ranks(freq, flat, n_heads)
        return np.concatenate([[np.mean(ranks <= top)], ranks])

    est, *ranks = paired_ci(stats_of, r["active"], r["docs"], unit="texts", n_boot=n_boot_of(r))
    est = Estimate(est.value, est.low, est.high, len(heads), est.units, "texts")  # n = the heads
    return est, "; ".join(f"L{a}H{b} {rank}" for (a, b), rank in zip(heads, ranks))


ANALYSIS = Analysis(
    name="head-roles", title="Head roles",
    help="previous-token and subword-merging heads, from contributions (sec. 4.3)",
    paper=PAPER, paper_size="1000 sentences from C4, Llama 2-7B", kind="corpus", summarize=summarize, claims=claims,
)
