"""Bottom-to-top patterns (sec. 4.2, fig. 9a): how often each head affects a residual stream at tau = 0.01, and
the FFN importance per layer; the claims that activity falls from bottom to top and that the last FFN matters.

Summarises corpus rows (rows.corpus_rows); never runs the model itself.
"""

from __future__ import annotations

import numpy as np

from .. import report
from .base import Analysis, Claim, Condition, Context, verdict_of
from .head_roles import roles, stream_activity
from .rows import list_column
from .stats import mean_ci, n_boot_of, paired_ci

PAPER = ("In the full information flow graph from Figure 2 we look at individual residual streams and consider all "
         "the immediate connections to this stream. [...] Figure 9a shows the average activation frequency of "
         "attention heads for a small tau = 0.01 - this gives us an estimate of the number times an attention head "
         "affects residual stream.")
TAU = 0.01


def summarize(ctx: Context) -> report.Result:
    table, n_layers, n_heads = ctx.table, ctx.n_layers, ctx.n_heads
    tau = ctx.opts.threshold or TAU
    boot = {"n_boot": ctx.opts.n_boot, "seed": ctx.opts.seed}
    active, docs = stream_activity(table, tau)  # [N, L*H]
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
        "threshold": tau, "paper_sample": ANALYSIS.paper_size, "streams": int(len(active)),
        "most_active_heads": [{"head": f"L{i // n_heads}H{i % n_heads}", "frequency": freq_ci[i]} for i in order[:8]],
        "previous_token_heads: most active in their layer?": leaders,
        "subword_merging_heads": [f"L{a}H{b}" for a, b in zip(*np.nonzero(r["subword_merging"]))],
        "ffn_importance_per_layer": ffn_ci,
    })
    marks = {"gold": r["previous_token"], "red": r["subword_merging"]}
    fig = report.heatmaps([shown], [f"head activation frequency (tau = {tau}), top 50% of heads"], marks=marks,
                          suptitle="gold: previous-token heads, red: subword-merging heads")
    ffn_fig = report.layer_lines({"FFN": np.array([e.value for e in ffn_ci])}, "mean importance",
                                 "FFN importance per layer",
                                 bands={"FFN": (np.array([e.low for e in ffn_ci]), np.array([e.high for e in ffn_ci]))})
    figures = {"bottom-to-top-heads": (fig, "Share of residual streams each head affects (fig. 9a); heads below the "
                                       "median frequency are blank; outlined: head roles."),
               "ffn-per-layer": (ffn_fig, "Mean FFN importance per layer with 95% intervals (fig. 9a, right).")}
    explanation = (
        f"Each prediction's residual stream at every layer is one case: head h of layer l affects the stream (l, p) "
        f"when one of its sub-edges into x^(l+1,A)_p has importance >= tau = {tau} (sec. 4 'Setting': all the "
        "immediate connections to this stream; no routes are walked). A head's frequency is the share of streams it "
        "affects; intervals resample texts. As in fig. 9a only the top 50% of heads are drawn; previous-token heads "
        "are outlined in gold (the paper's yellow) and subword-merging heads in red."
    )
    table_out = report.freq_table({"frequency": freq, "previous_token": r["previous_token"].astype(float),
                                   "subword_merging": r["subword_merging"].astype(float)})
    return report.Result("bottom_to_top", "Bottom-to-top patterns", explanation, table, summary, figures,
                         {"bottom_to_top_per_head": table_out},
                         data={"active": active, "docs": docs, "ffn": ffn_rows, "frequency": freq, "boot": boot},
                         paper=PAPER, paper_size=ANALYSIS.paper_size)


def claims(results: dict) -> list[Claim]:
    res = results.get("bottom-to-top")
    if res is None:
        return []
    active, docs, ffn = res.data["active"], res.data["docs"], res.data["ffn"]
    reps = n_boot_of(res.data)
    n_layers = ffn.shape[1]
    n_heads = active.shape[1] // n_layers
    third = max(1, n_layers // 3)
    bottom = np.arange(third * n_heads)
    top = np.arange((n_layers - third) * n_heads, n_layers * n_heads)
    est = paired_ci(lambda m: m[bottom].mean() - m[top].mean(), active, docs, unit="texts", n_boot=reps)[0]
    # the FFN's fall is read without the last layer, which the paper singles out as highly important
    ffn_top = np.arange(max(third, n_layers - 1 - third), n_layers - 1)
    ffn_est = paired_ci(lambda m: m[:third].mean() - m[ffn_top].mean(), ffn, docs, unit="texts", n_boot=reps)[0]
    statement = ("attention and feed-forward blocks are more active at the bottom part of the network [...] Later "
                 "[...] the activation frequency of individual attention heads and FFN blocks goes down")
    conditions = (Condition(f"the mean head frequency (tau = 0.01), bottom {third} layers minus top {third}", est),
                  Condition(f"the mean FFN importance, bottom {third} layers minus the {len(ffn_top)} layers below "
                            "the last", ffn_est))
    out = [Claim("bottom-to-top", "4.2, fig. 9a", statement,
                 f"mean head frequency (tau = 0.01) in the bottom {third} layers minus the top {third}", est,
                 verdict_of(conditions),
                 f"heads: interval {'above' if est.above(0) else 'not above'} 0; FFN importance bottom {third} "
                 f"minus the {len(ffn_top)} layers below the last {ffn_est}: "
                 f"{'above' if ffn_est.above(0) else 'not above'} 0 (both needed)", conditions)]
    last = paired_ci(lambda m: m[-1] - m[:-1].mean(), ffn, docs, unit="texts", n_boot=reps)[0]
    statement = "the last-layer FFN is highly important"
    conditions = (Condition("the last layer's FFN importance minus the mean of the other layers'", last),)
    out.append(Claim("last-layer-ffn", "4.2, fig. 9a", statement,
                     "FFN importance of the last layer minus the mean FFN importance of the other layers", last,
                     verdict_of(conditions),
                     "the interval is above 0" if last.above(0) else "the interval does not lie above 0", conditions))
    return out


ANALYSIS = Analysis(
    name="bottom-to-top", title="Bottom-to-top patterns",
    help="share of residual streams each head affects at tau = 0.01, FFN importance per layer (fig. 9a)",
    paper=PAPER, paper_size="1000 sentences from C4, Llama 2-7B", kind="corpus", summarize=summarize, claims=claims,
    default_threshold=TAU,
)
