"""Bottom-to-top patterns (sec. 4.2, fig. 9a): how often each head affects a residual stream at tau (0.01 on
Llama 2-7B's 32 heads, scaled to the head count: head_roles.stream_tau), and the FFN importance per layer; the
claims that activity falls from bottom to top and that the last FFN matters.

Summarises corpus rows (rows.corpus_rows); never runs the model itself.
"""

from __future__ import annotations

import numpy as np

from .. import report
from .base import Analysis, Claim, Condition, Context, untestable, verdict_of
from .head_roles import roles, stream_activity, stream_tau
from .rows import list_column
from .stats import mean_ci, n_boot_of, paired_ci

PAPER = ("In the full information flow graph from Figure 2 we look at individual residual streams and consider all "
         "the immediate connections to this stream. [...] Figure 9a shows the average activation frequency of "
         "attention heads for a small tau = 0.01 - this gives us an estimate of the number times an attention head "
         "affects residual stream.")


def summarize(ctx: Context) -> report.Result:
    table, n_layers, n_heads = ctx.table, ctx.n_layers, ctx.n_heads
    claim_tau = stream_tau(n_heads)  # what the claims compare, whatever tau the figure is drawn at
    tau = ctx.opts.threshold or claim_tau
    boot = {"n_boot": ctx.opts.n_boot, "seed": ctx.opts.seed}
    active, docs = stream_activity(table, tau)  # [N, L*H]
    claim_active = active if tau == claim_tau else stream_activity(table, claim_tau)[0]
    freq_ci = mean_ci(active, docs, **boot)
    freq = np.reshape([e.value for e in freq_ci], (n_layers, n_heads))
    ffn_rows = list_column(table, "vector")[:, n_layers * n_heads:]  # [N, L]
    ffn_ci = mean_ci(ffn_rows, docs, **boot)
    r = roles(table, n_layers, n_heads)
    shown = np.where(freq >= np.median(freq), freq, np.nan)  # "We show only top-50% important heads"
    leaders = []
    for layer, head in zip(*np.nonzero(r["previous_token"])):
        flat = layer * n_heads + head
        others = [layer * n_heads + h for h in range(n_heads) if h != head]
        lead = paired_ci(lambda m, flat=flat, others=others: m[flat] - m[others].max(), active, docs,
                         n_boot=ctx.opts.n_boot, seed=ctx.opts.seed)[0]
        leaders.append({"head": f"L{layer}H{head}", "frequency": freq_ci[flat], "lead_over_next_head": lead,
                        "most_active_in_layer": "yes" if lead.above(0) else ("no" if lead.below(0) else "tied")})
    order = np.argsort(-freq.ravel())
    summary = dict(ctx.counts)
    summary.update({
        "threshold": tau, "claims_threshold": claim_tau, "paper_sample": ANALYSIS.paper_size,
        "streams": int(len(active)),
        "most_active_heads": [{"head": f"L{i // n_heads}H{i % n_heads}", "frequency": freq_ci[i]} for i in order[:8]],
        "previous_token_heads: most active in their layer?": leaders,
        "subword_merging_heads": [f"L{a}H{b}" for a, b in zip(*np.nonzero(r["subword_merging"]))],
        "ffn_importance_per_layer": ffn_ci,
    })
    marks = {"gold": r["previous_token"], "red": r["subword_merging"]}
    fig = report.heatmaps([shown], [f"head activation frequency (tau = {tau:.3g}), top 50% of heads"], marks=marks,
                          suptitle="gold: previous-token heads, red: subword-merging heads")
    ffn_fig = report.layer_lines({"FFN": np.array([e.value for e in ffn_ci])}, "mean importance",
                                 "FFN importance per layer",
                                 bands={"FFN": (np.array([e.low for e in ffn_ci]), np.array([e.high for e in ffn_ci]))})
    figures = {"bottom-to-top-heads": (fig, "Share of residual streams each head affects (fig. 9a); heads below the "
                                       "median frequency are blank; outlined: head roles."),
               "ffn-per-layer": (ffn_fig, "Mean FFN importance per layer with 95% intervals (fig. 9a, right).")}
    explanation = (
        f"Each prediction's residual stream at every layer is one case: head h of layer l affects the stream (l, p) "
        f"when one of its sub-edges into x^{{lA}}_p has importance >= tau = {tau:.3g} (sec. 4 'Setting': all the "
        f"immediate connections to this stream; no routes are walked). The claims use tau = {claim_tau:.3g}: the "
        "paper's 0.01 on Llama 2-7B's 32 heads times (32 + 1) / (heads + 1), a third of a head's uniform share of "
        "the node on any model. A head's frequency is the share of streams it "
        "affects; intervals resample texts. As in fig. 9a only the top 50% of heads are drawn; previous-token heads "
        "are outlined in gold (the paper's yellow) and subword-merging heads in red."
    )
    table_out = report.freq_table({"frequency": freq, "previous_token": r["previous_token"].astype(float),
                                   "subword_merging": r["subword_merging"].astype(float)})
    return report.Result("bottom_to_top", "Bottom-to-top patterns", explanation, table, summary, figures,
                         {"bottom_to_top_per_head": table_out},
                         data={"active": active, "docs": docs, "ffn": ffn_rows, "frequency": freq, "boot": boot,
                               "claim_active": claim_active, "claim_tau": claim_tau},
                         paper=PAPER, paper_size=ANALYSIS.paper_size)


def depth_slope(per_layer: np.ndarray) -> float:
    """The least-squares slope of a per-layer profile [L] on depth l / (L - 1), over layers 1 ... L-2 only: the
    change from the bottom to the top of the network, in the profile's units, as a straight line fits it. Layer 0
    and the last layer are left out: the paper singles the last FFN out, and the first layer reads embeddings."""
    n_layers = len(per_layer)
    x = np.arange(1, n_layers - 1) / (n_layers - 1)
    y = per_layer[1:-1]
    return float(np.sum((x - x.mean()) * (y - y.mean())) / np.sum((x - x.mean()) ** 2))


def claims(results: dict) -> list[Claim]:
    """"attention and feed-forward blocks are more active at the bottom part of the network [...] Later [...] the
    activation frequency of individual attention heads and FFN blocks goes down. Interestingly, the last-layer FFN
    is highly important" (sec. 4.2, fig. 9a).

    bottom-to-top: a fall over the layers, not two ends compared: the least-squares slope on depth of the per-layer
    mean head frequency and of the per-layer mean FFN importance over layers 1 ... L-2 (depth_slope), each with a
    95% interval that resamples texts (every replicate recomputes the per-layer means and the slope); holds when
    both upper bounds are below 0. Layer 0 and the last layer are left out, so that a busy first or last layer
    beside a flat middle (a U) reads as no trend. Heads are active at tau = 0.01 * 33 / (heads + 1) (stream_tau),
    which is a third of a head's uniform share of the node on every model; an FFN's importance is its share of a
    node of two parts (FFN and residual), which needs no scaling.
    last-layer-ffn: the last FFN's importance minus the mean of the others', lower bound above 0.
    """
    res = results.get("bottom-to-top")
    if res is None:
        return []
    active, docs, ffn = res.data["claim_active"], res.data["docs"], res.data["ffn"]
    tau = res.data["claim_tau"]
    reps = n_boot_of(res.data)
    n_layers = ffn.shape[1]
    n_heads = active.shape[1] // n_layers
    statement = ("attention and feed-forward blocks are more active at the bottom part of the network [...] Later "
                 "[...] the activation frequency of individual attention heads and FFN blocks goes down")
    measure = (f"the slope of the mean head frequency (tau = {tau:.3g}) per layer on depth l / (L - 1), layers "
               f"1-{n_layers - 2} (the first and the last layer left out), texts resampled")
    out = []
    if n_layers < 4:
        out.append(untestable("bottom-to-top", "4.2, fig. 9a", statement,
                              f"a trend over the layers between the first and the last needs at least 4 layers; this "
                              f"model has {n_layers}", measure))
    else:
        inner = f"layers 1-{n_layers - 2}"
        est = paired_ci(lambda m: depth_slope(m.reshape(n_layers, n_heads).mean(axis=1)), active, docs,
                        unit="texts", n_boot=reps)[0]
        ffn_est = paired_ci(depth_slope, ffn, docs, unit="texts", n_boot=reps)[0]
        conditions = (Condition(f"the slope of the mean head frequency on depth, {inner}", est, "high", "<", 0),
                      Condition(f"the slope of the mean FFN importance on depth, {inner}", ffn_est, "high", "<", 0))
        out.append(Claim("bottom-to-top", "4.2, fig. 9a", statement, measure, est, verdict_of(conditions),
                         f"'more active at the bottom, goes down later' read as a fall over the layers between the "
                         f"first and the last: a least-squares slope on depth (0 at layer 0, 1 at layer "
                         f"{n_layers - 1}) of the per-layer mean, recomputed on every resample of texts, with its "
                         f"upper bound below 0, for the heads (tau = {tau:.3g}: the paper's 0.01 on 32 heads times "
                         f"33 / ({n_heads} + 1)) and for the FFNs. Heads: {est}; FFNs: {ffn_est} (both needed)",
                         conditions))
    last = paired_ci(lambda m: m[-1] - m[:-1].mean(), ffn, docs, unit="texts", n_boot=reps)[0]
    statement = "the last-layer FFN is highly important"
    conditions = (Condition("the last layer's FFN importance minus the mean of the other layers'", last),)
    out.append(Claim("last-layer-ffn", "4.2, fig. 9a", statement,
                     "FFN importance of the last layer minus the mean FFN importance of the other layers (an FFN "
                     "edge's share of a node of two parts, the same on any head count)", last,
                     verdict_of(conditions),
                     "the interval is above 0" if last.above(0) else "the interval does not lie above 0", conditions))
    return out


ANALYSIS = Analysis(
    name="bottom-to-top", title="Bottom-to-top patterns",
    help="share of residual streams each head affects at tau (0.01 on 32 heads per layer, scaled by 33 / (heads + 1)), "
         "FFN importance per layer (fig. 9a)",
    paper=PAPER, paper_size="1000 sentences from C4, Llama 2-7B", kind="corpus", summarize=summarize, claims=claims,
)
