"""Component importance vectors (sec. 4.1, fig. 8): t-SNE coloured by input-token POS, next-token POS and first vs
later subword, and how well k nearest neighbours recover each label; the three claims of sec. 4.1.

Summarises corpus rows (rows.corpus_rows); never runs the model itself.
"""

from __future__ import annotations

import collections

import numpy as np

from .. import report
from .base import Analysis, Claim, Condition, Context, verdict_of
from .data import CONTENT_TAGS, FUNCTION_TAGS
from .rows import column, list_column
from .stats import difference_ci, mean_ci, n_boot_of

PAPER = ("Vector for to the pos-th position is defined as (sum_j e^{1,1}_{pos,j}, ..., sum_j e^{L,H}_{pos,j}, "
         "e^{ffn_1}_{pos}, ..., e^{ffn_L}_{pos}). [...] We obtain POS tags with NLTK (universal tagset, Petrov et al. "
         "(2012)) and assign a tag to all subwords of each word.")
LABELS = {"pos_in": "input token POS", "pos_next": "next token POS", "subword": "first or later subword"}
KNN_MAX = 6000  # k-NN separability on at most this many predictions (a random subset of texts' rows)


def one_thread():
    """scikit-learn's OpenMP threads spin-wait: on a busy 2-core machine t-SNE of 1,000 points took 42 s with two
    threads and 5 s with one. Numbers do not depend on it."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def knn_correct(x: np.ndarray, labels: np.ndarray, k: int = 5, folds: int = 5, seed: int = 0,
                groups: np.ndarray | None = None) -> np.ndarray:
    """[N] 1.0 where the label of point i is predicted right by 5-nearest-neighbours trained on the other folds.

    groups [N] (the input token's id): folds never split a group, so a point's neighbours are tokens of other
    types and a label that only the token's identity carries is not "recovered" (function words are few types:
    without this, every model's function words "cluster by POS", a random one's included)."""
    from sklearn.model_selection import GroupKFold, KFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    n_groups = len(set(groups.tolist())) if groups is not None else len(labels)
    n_splits = min(folds, len(labels), n_groups)
    if n_splits < 2 or len(set(labels.tolist())) < 2:
        return (labels == collections.Counter(labels.tolist()).most_common(1)[0][0]).astype(float)
    clf = KNeighborsClassifier(n_neighbors=min(k, len(labels) - len(labels) // n_splits))
    cv = KFold(n_splits, shuffle=True, random_state=seed) if groups is None else GroupKFold(n_splits)
    with one_thread():
        pred = cross_val_predict(clf, x, labels, cv=cv, groups=groups)
    return (pred == labels).astype(float)


def separability(x, labels, docs, boot, groups=None) -> dict:
    """k-NN accuracy (neighbours of other token types when `groups` holds token ids), the majority baseline, and
    the gain (accuracy - majority) with intervals over texts."""
    correct = knn_correct(x, labels, seed=boot["seed"], groups=groups)
    majority = collections.Counter(labels.tolist()).most_common(1)[0][0]
    is_major = (labels == majority).astype(float)
    acc, base, gain = (mean_ci(v, docs, **boot)[0] for v in (correct, is_major, correct - is_major))
    return {"knn_accuracy": acc, "majority_baseline": base, "gain": gain, "majority_label": majority,
            "classes": len(set(labels.tolist())), "correct": correct, "is_majority": is_major}


def summarize(ctx: Context) -> report.Result:
    table = ctx.table
    x = list_column(table, "vector")
    docs = column(table, "doc")
    boot = {"n_boot": ctx.opts.n_boot, "seed": ctx.opts.seed}
    rng = np.random.default_rng(ctx.opts.seed)
    sub = np.arange(len(x)) if len(x) <= KNN_MAX else np.sort(rng.choice(len(x), KNN_MAX, replace=False))
    summary = dict(ctx.counts)
    summary["paper_sample"] = ANALYSIS.paper_size
    data = {"docs": docs[sub], "boot": boot}
    token_ids = column(table, "token_id")[sub]
    for col in LABELS:
        values = column(table, col)[sub]
        keep = values != ""
        sep = separability(x[sub][keep], values[keep], docs[sub][keep], boot, groups=token_ids[keep])
        data[col] = {"keep": keep, "labels": values[keep], **sep}
        summary[f"{col}: k-NN separability"] = {k: v for k, v in sep.items() if k not in ("correct", "is_majority")}
    figures = tsne_figures(x, table, ctx.opts.tsne_max, ctx.opts.seed)
    explanation = (
        "Every prediction gets a component importance vector: for each head the sum of its sub-edge importances "
        "into the position's residual stream, and for each layer the FFN importance (sec. 4.1). The t-SNE plots "
        "colour these vectors by the input token's part of speech, the next token's part of speech (universal "
        "tagset of Petrov et al. 2012, every subword of a word gets the word's tag) and whether the input token "
        "is the first or a later subword of its word (fig. 8). Separability: 5-fold cross-validated "
        "5-nearest-neighbour accuracy against always guessing the most common label, with folds grouped by input "
        "token type (a point's neighbours are other token types: what the token's identity alone carries does not "
        "count); 'gain' is the difference, with 95% intervals resampling texts."
    )
    return report.Result("vectors", "Component importance vectors", explanation, table, summary, figures,
                         data=data, paper=PAPER, paper_size=ANALYSIS.paper_size)


def tsne_figures(x: np.ndarray, table, tsne_max: int, seed: int) -> dict:
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(seed)
    idx = np.arange(len(x))
    sub = idx if len(idx) <= tsne_max else np.sort(rng.choice(idx, tsne_max, replace=False))
    if len(sub) < 5:
        return {}
    perplexity = float(min(30, max(2, (len(sub) - 1) // 3)))
    with one_thread():
        points = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x[sub])
    figures = {}
    for col, title in LABELS.items():
        values = column(table, col)[sub]
        sel = values != ""
        fig = report.scatter_by_label(points[sel], values[sel].tolist(), f"t-SNE coloured by {title}")
        figures[f"tsne-{col}"] = (fig, f"t-SNE of component importance vectors, coloured by {title} (fig. 8).")
    return figures


def claims(results: dict) -> list[Claim]:
    res = results.get("vectors")
    if res is None:
        return []
    d = res.data
    boot = {"unit": "texts", "n_boot": n_boot_of(d), "seed": d.get("boot", {}).get("seed", 0)}
    out = []
    # 1. function words cluster by POS, content words do not
    pos = d["pos_in"]
    docs = d["docs"][pos["keep"]]
    func = np.isin(pos["labels"], FUNCTION_TAGS)
    cont = np.isin(pos["labels"], CONTENT_TAGS)
    statement = ("for function words as inputs, component contributions are clustered according to their part of "
                 "speech tag [...] this is not the case for content words")
    measure = "k-NN accuracy of input POS on function-word tokens minus on content-word tokens"

    est = None
    if func.any() and cont.any():
        est = difference_ci(pos["correct"][func], docs[func], pos["correct"][cont], docs[cont], **boot)[0]
    if est is None:
        out.append(Claim("pos-function-words", "4.1, fig. 8a", statement, measure, None, "cannot be tested",
                         "no function or no content words were tagged (spaCy off?)"))
    else:
        conditions = (Condition("the k-NN accuracy of input POS, function words minus content words", est),)
        out.append(Claim("pos-function-words", "4.1, fig. 8a", statement, measure, est, verdict_of(conditions),
                         "function-word POS is recovered more often (interval above 0)" if est.above(0.0)
                         else "the interval does not lie above 0", conditions))
    # 2. first vs later subwords
    sub = d["subword"]
    est = sub["gain"]
    statement = "contribution patterns strongly depend on whether the current token is the first or a later subword"
    measure = "k-NN accuracy of first/later subword minus the majority baseline"
    conditions = (Condition("the k-NN accuracy of first/later subword minus the majority baseline", est),)
    out.append(Claim("first-vs-later-subwords", "4.1, fig. 8c", statement, measure, est, verdict_of(conditions),
                     f"majority baseline {sub['majority_baseline']}; gain interval "
                     + ("above 0" if est.above(0.0) else "not above 0"), conditions))
    # 3. input vs next token POS
    a, b = d["pos_in"], d["pos_next"]
    statement = "contribution patterns depend more on input tokens rather than output tokens"
    measure = "(k-NN gain over majority for input POS) - (the same for next-token POS), same predictions"
    both = _aligned(a, b, d["docs"])
    if both is None:
        out.append(Claim("input-vs-next-pos", "4.1, fig. 8b", statement, measure, None, "cannot be tested",
                         "no prediction has both labels"))
    else:
        ga, gb, docs_ab = both
        est = mean_ci(ga - gb, docs_ab, **boot)[0]
        conditions = (Condition("the k-NN gain over the majority baseline, input POS minus next-token POS", est),)
        out.append(Claim("input-vs-next-pos", "4.1, fig. 8b", statement, measure, est, verdict_of(conditions),
                         "input POS is recovered better (interval above 0)" if est.above(0.0)
                         else "the interval does not lie above 0", conditions))
    return out


def _aligned(a: dict, b: dict, docs: np.ndarray):
    """Per-prediction gains of two labels on the predictions that have both (kept masks index the same rows)."""
    ka, kb = a["keep"], b["keep"]
    both = ka & kb
    if not both.any():
        return None
    ia = np.cumsum(ka) - 1
    ib = np.cumsum(kb) - 1
    ga = (a["correct"] - a["is_majority"])[ia[both]]
    gb = (b["correct"] - b["is_majority"])[ib[both]]
    return ga, gb, docs[both]


ANALYSIS = Analysis(
    name="vectors", title="Component importance vectors",
    help="component importance vectors per prediction, t-SNE by POS / subword, k-NN separability (fig. 8)",
    paper=PAPER, paper_size="1000 sentences from C4, Llama 2-7B", kind="corpus", summarize=summarize, claims=claims,
)
