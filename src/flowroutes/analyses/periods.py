"""Periods acting as BOS (appendix D, figs. 9b, 14, 15): the first period of each text, the blocks of its own
residual stream, and how much later tokens' attention and contribution it receives next to the first token.

The first-period positions are selected by what they are (rows.first_period: the first token that is '.' up to
spaces, after position 0), never by their importance: the paper's outlier cluster "corresponds to the first period
in a text". Only texts of at least MIN_PERIODS periods count (issue 19): the first period is compared with the other
tokens (every position >= 1 that is no period: the average over other tokens leaves the periods themselves out) and
with the text's later periods (the 2nd, 3rd, ...), since the paper's point is that the *first* period "takes the
role of the BOS token", not that any period does: both for its own blocks and for the share of later tokens'
attention it gets (against the mean share per later period before them, rows' `later_period` source); and its own
blocks must be "near zero" (under NEAR_ZERO times the reference's), not merely lower. Summarises corpus rows
(rows.corpus_rows); the model runs only for the fig. 14 example routes.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np

from .. import report
from .base import Analysis, Claim, Condition, Context, untestable, verdict_of
from .rows import SOURCES, column, list_column
from .stats import Estimate, difference_ci, mean_ci, paired_ci

PAPER = ("Figure 9b shows the average importance of model components for examples in this cluster. We see that for "
         "these examples, the residual stream ignores all attention and FFN blocks in all the layers except for the "
         "first and last few: for most of the layers, contributions of all model components are near zero. [...] up "
         "to the last three layers, this residual stream takes the role of the BOS token and future tokens treat "
         "this residual stream as such.")
STATEMENT = ("up to the last three layers, this residual stream takes the role of the BOS token and future tokens "
             "treat this residual stream as such")
KEY, SECTION = "first-period-bos", "App. D, figs. 9b, 14, 15"
TAU = 0.01  # fig. 14: "even for a rather small threshold tau = 0.01"
EXAMPLES = 2  # fig. 14 shows two texts
SHORT = 30  # example texts whose first period comes within this many tokens are preferred (readable pictures)
TRIES = 8  # at most this many texts are tried for the examples
WHERE = SOURCES  # first token, first period, an average other token, an average later period
MIN_PERIODS = 3  # a text counts when it has this many periods (sentences): a first period and two later ones
MIN_TEXTS = 5  # the claim is tested on at least this many such texts (intervals resample texts)
NEAR_ZERO = 0.5  # "contributions of all model components are near zero": under half of the reference positions'


def middle_layers(n_layers: int) -> np.ndarray:
    """The layers except the first two and the last three ("except for the first and last few", "up to the last
    three layers"); every layer when the model has fewer than six."""
    mid = np.arange(2, n_layers - 3)
    return mid if len(mid) else np.arange(n_layers)


def selections(table) -> dict[str, np.ndarray]:
    """Boolean row masks over the texts with at least MIN_PERIODS periods (`texts`: the rows of such texts):
    `period` (a text's first period, position >= 1), `later_period` (its later periods), `other` (every position
    >= 1 that is no period; position 0 is the BOS stand-in) and `later` (positions after the text's first period).
    A period is a token that is '.' up to spaces, as rows.first_period reads it."""
    pos = column(table, "position").astype(np.int64)
    first = column(table, "first_period").astype(np.int64)
    docs = column(table, "doc")
    tokens = table.column("token").to_pylist() if table.num_rows else []
    is_period = (pos >= 1) & np.array([str(t).strip() == "." for t in tokens], dtype=bool)
    counts = collections.Counter(docs[is_period].tolist())
    texts = np.array([counts[d] >= MIN_PERIODS for d in docs.tolist()], dtype=bool)
    period = texts & (first >= 1) & (pos == first)
    return {"texts": texts, "period": period, "later_period": texts & is_period & (pos > first),
            "other": texts & (pos >= 1) & ~is_period, "later": texts & (first >= 1) & (pos > first)}


def blocks(table, n_layers: int, n_heads: int) -> dict[str, np.ndarray]:
    """Per row: `heads` [N, L*H] (sum_j of each head's sub-edge importances), `attention` [N, L] (their sum over
    the heads of a layer: the attention block's total) and `ffn` [N, L]."""
    n_heads_total = n_layers * n_heads
    vec = list_column(table, "vector") if table.num_rows else np.zeros((0, n_heads_total + n_layers))
    assert vec.shape[1] == n_heads_total + n_layers, f"vector has {vec.shape[1]} entries, not L*H + L"
    heads = vec[:, :n_heads_total]
    return {"heads": heads, "attention": heads.reshape(len(vec), n_layers, n_heads).sum(axis=-1),
            "ffn": vec[:, n_heads_total:]}


def _nan(k: int, unit: str = "texts") -> list[Estimate]:
    return [Estimate(float("nan"), float("nan"), float("nan"), 0, 0, unit) for _ in range(k)]


def means(values: np.ndarray, docs: np.ndarray, boot: dict) -> list[Estimate]:
    """mean_ci per column of values [N, K], resampling texts; NaN estimates when there is no row."""
    return mean_ci(values, docs, **boot) if len(values) else _nan(values.shape[1])


def differences(a: np.ndarray, docs_a: np.ndarray, b: np.ndarray, docs_b: np.ndarray, boot: dict) -> list[Estimate]:
    """mean(a) - mean(b) per column, the two groups resampled independently; NaN estimates when one is empty."""
    return difference_ci(a, docs_a, b, docs_b, **boot) if len(a) and len(b) else _nan(a.shape[1])


def paired(x: np.ndarray, y: np.ndarray, docs: np.ndarray, boot: dict) -> Estimate:
    """Mean over columns of mean(x) - mean(y), x and y [N, M] on the same rows, resampled together."""
    m = x.shape[1]
    if not len(x) or not m:
        return _nan(1)[0]
    return paired_ci(lambda v: v[:m].mean() - v[m:].mean(), np.concatenate([x, y], axis=1), docs, **boot)[0]


def summarize(ctx: Context) -> report.Result:
    table, n_layers, n_heads = ctx.table, ctx.n_layers, ctx.n_heads
    boot = {"n_boot": ctx.opts.n_boot, "seed": ctx.opts.seed}
    tau = ctx.opts.threshold or TAU
    sel = selections(table)
    docs = column(table, "doc")
    mid = middle_layers(n_layers)
    per, oth, lat, lp = sel["period"], sel["other"], sel["later"], sel["later_period"]
    own = own_blocks(blocks(table, n_layers, n_heads), sel, docs, mid, boot)
    shares = later_shares(table, lat, docs, n_layers, boot)
    bos = bos_shares(shares, docs[lat], mid, boot)
    gets_more = bos["contrib"]["period - other"] if "contrib" in bos else _nan(1)[0]  # (b)
    over_later = bos["contrib"]["period - later period"] if "contrib" in bos else _nan(1)[0]  # (d)
    summary = _summary(ctx, sel, docs, mid, own, shares, bos, gets_more)
    summary["(d) middle layers: contribution share on the first period minus per later period"] = over_later

    figures = block_figures(own.layers, n_layers, n_heads) if per.any() else {}
    figures.update(share_figures(shares) if lat.any() else {})
    examples, routes = [], []
    if ctx.loaded is None:
        summary["routes (fig. 14)"] = "no model in this process (the rows came from shards or Ray workers)"
    elif per.any():
        found, examples, routes = example_routes(ctx.loaded, table, sel, tau)
        figures.update(found)
        summary["routes (fig. 14)"] = examples
    extra = {"periods_layers": layer_table(own.layers, shares, n_layers),
             "periods_heads": head_table(own.layers["heads"], n_layers, n_heads)}
    data = {"boot": boot, "middle": mid, "layers": own.layers, "shares": {k: {w: s[w] for w in WHERE}
                                                                        for k, s in shares.items()},
            "bos": bos, "quiet": own.difference, "quiet_vs_later": own.vs_later, "gets_more": gets_more,
            "over_later": over_later,
            "quiet_ratio": own.ratio, "later_ratio": own.ratio_later,
            "n_period": int(per.sum()), "n_later": int(lat.sum()), "n_other": int(oth.sum()),
            "n_later_period": int(lp.sum()), "n_texts": len(set(docs.tolist())),
            "n_qualified": len(set(docs[sel["texts"]].tolist())), "examples": examples, "routes": routes}
    return report.Result("periods", "Periods acting as BOS", _explanation(tau, mid), table, summary, figures, extra,
                         data=data, paper=PAPER, paper_size=ANALYSIS.paper_size)


@dataclass
class OwnBlocks:
    """Fig. 9b and the "untouched" observation: the blocks of the first periods' own streams against every other
    position. layers: part ("heads" [L*H], "attention" [L], "ffn" [L]) -> "period" / "other" estimates (and
    "difference" for the attention and FFN blocks); period / other / difference (claim part a): the attention +
    FFN importance averaged over the middle layers; later_period / vs_later: the same at the texts' later periods,
    and first periods minus later periods (the second reference)."""

    layers: dict[str, dict[str, list[Estimate]]]
    period: Estimate
    other: Estimate
    difference: Estimate
    later_period: Estimate
    vs_later: Estimate
    ratio: Estimate  # first periods' own-block importance over the other positions' (claim part a)
    ratio_later: Estimate  # over the later periods' (claim part c)


def own_blocks(b: dict[str, np.ndarray], sel: dict[str, np.ndarray], docs: np.ndarray, mid: np.ndarray,
               boot: dict) -> OwnBlocks:
    """Mean importance of each head, attention block and FFN block (`blocks(...)`) at first periods and at the
    other positions, resampling texts."""
    per, oth, lp = sel["period"], sel["other"], sel["later_period"]
    layers = {}
    for part in ("heads", "attention", "ffn"):
        layers[part] = {"period": means(b[part][per], docs[per], boot), "other": means(b[part][oth], docs[oth], boot)}
        if part != "heads":
            layers[part]["difference"] = differences(b[part][per], docs[per], b[part][oth], docs[oth], boot)
    own = (b["attention"] + b["ffn"])[:, mid].mean(axis=1, keepdims=True)  # [N, 1] blocks of the middle layers
    return OwnBlocks(layers, means(own[per], docs[per], boot)[0], means(own[oth], docs[oth], boot)[0],
                     differences(own[per], docs[per], own[oth], docs[oth], boot)[0],
                     means(own[lp], docs[lp], boot)[0], differences(own[per], docs[per], own[lp], docs[lp], boot)[0],
                     ratio(own[:, 0], per, oth, docs, boot), ratio(own[:, 0], per, lp, docs, boot))


def ratio(values: np.ndarray, num: np.ndarray, den: np.ndarray, docs: np.ndarray, boot: dict) -> Estimate:
    """mean(values[num]) / mean(values[den]), texts resampled together (both groups from the same texts)."""
    rows = num | den
    if not num.any() or not den.any():
        return _nan(1)[0]
    cols = np.stack([np.where(num, values, np.nan), np.where(den, values, np.nan)], axis=1)[rows]
    with np.errstate(invalid="ignore", divide="ignore"):
        return paired_ci(lambda v: v[:1] / v[1:], cols, docs[rows], **boot)[0]


def later_shares(table, later: np.ndarray, docs: np.ndarray, n_layers: int, boot: dict) -> dict[str, dict]:
    """Appendix D: where later tokens' contribution ("contrib") and attention weights ("attn", when the rows have
    them) go, per layer: kind -> "columns" (w -> [N_later, L] shares) and w -> L estimates, w in WHERE."""
    shares = {}
    for kind in ("contrib", "attn"):
        if f"{kind}_period" not in table.column_names:
            continue
        cols = {w: list_column(table, f"{kind}_{w}")[later] if table.num_rows else np.zeros((0, n_layers))
                for w in WHERE}
        shares[kind] = {"columns": cols, **{w: means(cols[w], docs[later], boot) for w in WHERE}}
    return shares


def bos_shares(shares: dict[str, dict], docs_later: np.ndarray, mid: np.ndarray, boot: dict) -> dict[str, dict]:
    """Per kind, over the middle layers: the share on the first period minus per other token, minus on the first
    token, and minus per later period (the second reference: only the rows that follow a later period), each
    paired over the same rows."""
    bos = {}
    for kind, s in shares.items():
        c = s["columns"]
        after = np.isfinite(c["later_period"][:, mid]).all(axis=1)  # rows after a 2nd, 3rd, ... period
        bos[kind] = {"period - other": paired(c["period"][:, mid], c["other"][:, mid], docs_later, boot),
                     "period - first": paired(c["period"][:, mid], c["first"][:, mid], docs_later, boot),
                     "period - later period": paired(c["period"][after][:, mid], c["later_period"][after][:, mid],
                                                     docs_later[after], boot)}
    return bos


def _summary(ctx: Context, sel: dict[str, np.ndarray], docs: np.ndarray, mid: np.ndarray, own: OwnBlocks,
             shares: dict, bos: dict, gets_more: Estimate) -> dict:
    table, per = ctx.table, sel["period"]
    tokens = table.column("token").to_pylist() if table.num_rows else []
    summary = dict(ctx.counts)
    summary.update({
        "paper_sample": ANALYSIS.paper_size,
        "texts": len(set(docs.tolist())),
        f"texts with at least {MIN_PERIODS} periods (the only texts read)": len(set(docs[sel['texts']].tolist())),
        "texts_with_a_first_period": len(set(docs[per].tolist())),
        "first_periods (the paper: 823 of the 826 points of its cluster)": int(per.sum()),
        "first_period_tokens": dict(collections.Counter(repr(tokens[i]) for i in np.flatnonzero(per))),
        "other_positions (position >= 1, no period)": int(sel["other"].sum()),
        "later periods (2nd, 3rd, ... of a text)": int(sel["later_period"].sum()),
        "positions_after_a_first_period": int(sel["later"].sum()),
        "middle_layers": [int(x) for x in mid],
        "middle layers: attention + FFN importance per layer at first periods": own.period,
        "middle layers: attention + FFN importance per layer at other positions": own.other,
        "middle layers: attention + FFN importance per layer at later periods": own.later_period,
        "(a) middle layers: first periods minus other positions": own.difference,
        "(c) middle layers: first periods minus later periods": own.vs_later,
        "(a) middle layers: first periods over other positions (ratio)": own.ratio,
        "(c) middle layers: first periods over later periods (ratio)": own.ratio_later,
        "(b) middle layers: contribution share on the first period minus per other token": gets_more,
    })
    for kind, est in bos.items():
        name = "contribution" if kind == "contrib" else "attention-weight"
        summary[f"middle layers: {name} share on the first period minus on the first token"] = est["period - first"]
        if kind != "contrib":
            summary[f"middle layers: {name} share on the first period minus per other token"] = est["period - other"]
            summary[f"middle layers: {name} share on the first period minus per later period"] = \
                est["period - later period"]
    summary["layers where first periods' blocks are quieter (attention and FFN, both intervals below 0)"] = [
        layer for layer in range(ctx.n_layers)
        if own.layers["attention"]["difference"][layer].below(0) and own.layers["ffn"]["difference"][layer].below(0)]
    for kind, s in shares.items():
        for w in WHERE:
            summary[f"per layer: {kind}_{w}"] = s[w]
    return summary


def _explanation(tau: float, mid: np.ndarray) -> str:
    return (
        "Appendix D looks at the outlier cluster of fig. 8, which 'corresponds to the first period in a text'. Here "
        "that cluster is selected by definition: the first token of each text that is '.' (up to spaces), after "
        f"position 0, whatever its importances. Only texts with at least {MIN_PERIODS} periods are read: their "
        "later periods (2nd, 3rd, ...) are a second reference, since the paper's point is the first period. The "
        "other positions are every other prediction that is no period, except position 0 (the BOS token, or the "
        "first token where the tokenizer adds none). Fig. 9b: mean importance of each head (the sum "
        "of its sub-edge importances into the position's stream), of each attention block (the sum over its heads) "
        "and of each FFN block, at first periods and at the other positions. Appendix D's BOS claim: for positions "
        "after the first period, the share of the attention block's contribution (and of the head-averaged "
        "attention weights) that comes from the first token, from the first period, from an average other "
        "earlier token and from an average later period (the 2nd, 3rd, ... before the position), per layer. "
        f"Fig. 14: the routes (tau = {tau}) of the first period of up to {EXAMPLES} texts. "
        f"The claim is judged on the middle layers {mid[0]}-{mid[-1]} (all but the first two and the last three). "
        "Every interval is a 95% bootstrap interval resampling texts."
    )


def _values(ests: list[Estimate]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(np.array([getattr(e, k) for e in ests]) for k in ("value", "low", "high"))


def block_figures(layers: dict, n_layers: int, n_heads: int) -> dict:
    heads = [np.reshape(_values(layers["heads"][g])[0], (n_layers, n_heads)) for g in ("period", "other")]
    heat = report.heatmaps(heads, ["first periods", "other positions (p >= 1)"], shared=True,
                           suptitle="mean head importance")
    series, bands = {}, {}
    for part, label in (("attention", "attention block"), ("ffn", "FFN")):
        for group, name in (("period", "first periods"), ("other", "other positions")):
            value, low, high = _values(layers[part][group])
            series[f"{label}, {name}"] = value
            bands[f"{label}, {name}"] = (low, high)
    lines = report.layer_lines(series, "mean importance", "Own blocks of the position's stream (fig. 9b)", bands=bands)
    return {"periods-heads": (heat, "Mean importance of every head at first periods and at the other positions "
                                    "(fig. 9b), one colour scale; x: head, y: layer."),
            "periods-blocks": (lines, "Mean importance of the attention block (sum over heads) and of the FFN block "
                                      "per layer at first periods and at the other positions, 95% intervals.")}


def share_figures(shares: dict) -> dict:
    out = {}
    for kind, title in (("contrib", "attention-block contribution"), ("attn", "attention weights (head mean)")):
        if kind not in shares:
            continue
        series, bands = {}, {}
        for w, name in zip(WHERE, ("first token (BOS)", "first period", "an average other token",
                                   "an average later period")):
            value, low, high = _values(shares[kind][w])
            series[name], bands[name] = value, (low, high)
        fig = report.layer_lines(series, "share", f"Later tokens' {title}: where it comes from", bands=bands)
        out[f"periods-{kind}-shares"] = (fig, f"Share of the {title} into positions after the first period that comes "
                                              "from the first token, from the first period, from an average other "
                                              "earlier token and from an average later period, per layer, 95% "
                                              "intervals (appendix D, fig. 15).")
    return out


def layer_table(layers: dict, shares: dict, n_layers: int):
    import pyarrow as pa

    cols = {"layer": np.arange(n_layers)}
    named = [(f"{part}_{group}", layers[part][group]) for part in ("attention", "ffn")
             for group in ("period", "other", "difference")]
    named += [(f"{kind}_{w}", shares[kind][w]) for kind in shares for w in WHERE]
    for name, ests in named:
        cols[name], cols[f"{name}_low"], cols[f"{name}_high"] = _values(ests)
    return pa.table(cols)


def head_table(heads: dict, n_layers: int, n_heads: int):
    mats = {}
    for group in ("period", "other"):
        value, low, high = _values(heads[group])
        mats.update({group: value.reshape(n_layers, n_heads), f"{group}_low": low.reshape(n_layers, n_heads),
                     f"{group}_high": high.reshape(n_layers, n_heads)})
    return report.freq_table(mats)


# --- fig. 14: the routes of a few first periods ----------------------------------------------------------------

def token_ids(tokenizer, tokens: list[str]) -> tuple[list[int] | None, str]:
    """Token ids that decode one by one to `tokens` (the rows keep each token's text, not its id): the joined text
    re-tokenised (with or without its first token, the BOS text), else each token text encoded alone."""
    for text in ("".join(tokens), "".join(tokens[1:])):
        if text.strip():
            ids = list(tokenizer(text)["input_ids"])
            if [tokenizer.decode([i]) for i in ids] == tokens:
                return ids, "the text re-tokenised"
    ids = []
    for text in tokens:
        enc = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(enc) != 1 or tokenizer.decode(enc) != text:
            return None, f"token {text!r} is not one token of this tokenizer on its own"
        ids.append(enc[0])
    return ids, "token by token (a token text may stand for more than one id)"


def own_stream_layers(routes, position: int) -> list[int]:
    """Layers whose attention or FFN block has an edge into the stream of `position` in the routes."""
    return sorted({e.layer for e in routes.edges if e.kind in ("attention", "ffn")
                   and int(e.target.rsplit("@", 1)[1]) == position})


def example_routes(loaded, table, sel: dict, tau: float) -> tuple[dict, list, list]:
    """Routes at tau of the first period of up to EXAMPLES texts (short ones first): figures, a summary per text
    (or why it was skipped), and the Routes."""
    import flowroutes
    from flowroutes.figures import routes_figure

    docs = column(table, "doc")
    pos = column(table, "position").astype(np.int64)
    tokens = table.column("token").to_pylist()
    token_id = table.column("token_id").to_pylist() if "token_id" in table.column_names else None
    per = np.flatnonzero(sel["period"])
    order = sorted(per, key=lambda i: (pos[i] > SHORT, docs[i]))
    figures, examples, routes = {}, [], []
    for i in order[:TRIES]:
        if len(routes) == EXAMPLES:
            break
        doc, q = docs[i].item(), int(pos[i])
        rows = np.flatnonzero((docs == docs[i]) & (pos <= q))
        rows = rows[np.argsort(pos[rows])]
        if pos[rows].tolist() != list(range(q + 1)):
            examples.append({"doc": doc, "skipped": "the rows lack some positions before the first period"})
            continue
        prefix = [tokens[r] for r in rows]
        if token_id is not None:
            ids, how = [int(token_id[r]) for r in rows], "the rows' token ids"
        else:
            ids, how = token_ids(loaded.tokenizer, prefix)
        if ids is None:
            examples.append({"doc": doc, "skipped": how})
            continue
        rt = flowroutes.trace(loaded, input_ids=ids, top_k=1).routes(tau, position=q)
        own = own_stream_layers(rt, q)
        routes.append(rt)
        untouched = [layer for layer in range(rt.n_layers) if layer not in own]
        examples.append({"doc": doc, "first_period": q, "prefix": "".join(prefix), "ids": how,
                         "edges": len(rt.edges), "layers with a block on its own stream": len(own),
                         "untouched layers (no block on its own stream)": untouched})
        figures[f"periods-routes-doc{doc}"] = (
            routes_figure(rt), f"Routes (tau = {tau}) of the first period of text {doc} (fig. 14): no attention or "
                               f"FFN block of layers {untouched} reaches its own stream (of {rt.n_layers} layers).")
    return figures, examples, routes


# --- the claim ---------------------------------------------------------------------------------------------------

def claims(results: dict) -> list[Claim]:
    res = results.get("periods")
    if res is None:
        return [untestable(KEY, SECTION, STATEMENT, "the periods analysis was not run")]
    d = res.data
    mid = d["middle"]
    layers = f"{mid[0]}-{mid[-1]}" if len(mid) > 1 else str(mid[0])
    measure = (f"over the middle layers {layers} (all but the first two and the last three): share of later tokens' "
               "attention-block contribution that comes from the first period minus the mean share per other "
               "earlier token (not the first token), paired over the same predictions")
    qualified = (f"{d.get('n_qualified', 0)} of {d.get('n_texts', 0)} texts have at least {MIN_PERIODS} periods "
                 "(the only texts read)")
    if d.get("n_qualified", 0) < MIN_TEXTS:
        return [untestable(KEY, SECTION, STATEMENT, f"{qualified}; the claim compares a text's first period with its "
                           f"later ones and needs at least {MIN_TEXTS} such texts (multi-sentence documents)",
                           measure)]
    if d["n_period"] == 0:
        return [untestable(KEY, SECTION, STATEMENT, "no text has a first period after position 0 (a token that is "
                           "'.' up to spaces): there is no first-period cluster to look at", measure)]
    if d["n_later"] == 0:
        return [untestable(KEY, SECTION, STATEMENT, "every first period is the last token of its text: no later "
                           "token can attend to it", measure)]
    quiet, more, vs_later = d["quiet_ratio"], d["gets_more"], d["later_ratio"]
    if not (np.isfinite(more.value) and d["n_other"] and d.get("n_later_period", 0)):
        return [untestable(KEY, SECTION, STATEMENT, "no other positions or later periods to compare the first "
                           "periods with, or no contribution shares in the rows", measure)]
    over_later = d.get("over_later", _nan(1)[0])
    if not np.isfinite(over_later.value):
        return [untestable(KEY, SECTION, STATEMENT, "no later token follows a later period (the 2nd, 3rd, ... "
                           "period of a text): the first period's share cannot be compared with theirs", measure)]
    first = d["bos"]["contrib"]["period - first"]
    why = (f"{qualified}. Rule: holds when, averaged over the middle layers {layers}, (b) later tokens give the "
           "first period a larger share of their attention-block contribution than an average other earlier token "
           "(the estimate, interval above 0) and (d) than an average later period of the same text (tokens after a "
           f"2nd, 3rd, ... period, {over_later.n} of them; interval above 0), (a) the first period's own blocks are "
           "near zero next to those of other "
           f"positions (no period; mean attention + FFN importance per layer, the ratio's interval below {NEAR_ZERO}) "
           f"and (c) next to those of the same texts' later periods ({d.get('n_later_period', 0)} of them; the "
           f"ratio's interval below {NEAR_ZERO}). (a) = {quiet}: {'met' if quiet.below(NEAR_ZERO) else 'not met'}; "
           f"(b): {'above 0' if more.above(0.0) else 'not above 0'}; (c) = {vs_later}: "
           f"{'met' if vs_later.below(NEAR_ZERO) else 'not met'}; (d) = {over_later}: "
           f"{'above 0' if over_later.above(0.0) else 'not above 0'}. "
           f"For reference, the first period's share minus the first token's share: {first}.")
    conditions = (Condition("(b) later tokens' contribution share from the first period minus from an average other "
                            "earlier token", more),
                  Condition("(a) the first periods' own-block importance over other positions'", quiet, "high", "<",
                            NEAR_ZERO),
                  Condition("(c) the first periods' own-block importance over later periods'", vs_later, "high",
                            "<", NEAR_ZERO),
                  Condition("(d) later tokens' contribution share from the first period minus from an average later "
                            "period", over_later))
    return [Claim(KEY, SECTION, STATEMENT, measure, more, verdict_of(conditions), why, conditions)]


ANALYSIS = Analysis(
    name="periods", title="Periods acting as BOS",
    help="first period of each text: its own blocks vs other positions, later tokens' attention to it (app. D)",
    paper=PAPER,
    paper_size=("Llama 2-7B, every prediction of 1000 C4 sentences; the outlier cluster of the fig. 8 t-SNE: 826 "
                "datapoints, 823 of them the first period of a text (footnote)"),
    kind="corpus", summarize=summarize, claims=claims, default_threshold=TAU, reads_attention=True,
)
