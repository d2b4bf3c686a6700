"""Component importance vectors (sec. 4.1, fig. 8): t-SNE coloured by input-token POS, next-token POS and first vs
later subword, and how well k nearest neighbours recover each label; the three claims of sec. 4.1:

- "Figure 8a shows that for function words as inputs, component contributions are clustered according to their
  part of speech tag. [...] by knowing component contributions, we can infer input token POS rather accurately.
  Interestingly, this is not the case for content words" (pos-function-words). Function words are few types: a
  representation that knows only the token's identity recovers their POS too, so the rule asks that the vectors'
  lead of function over content words exceed the identity control's lead (issue 19).
- "Figure 8c shows that contribution patterns strongly depend on whether the current token is the first or a later
  subword of a word" (first-vs-later-subwords).
- "contribution patterns depend more on input tokens rather than output tokens" (input-vs-next-pos).

k-NN folds are grouped by text: no token of a test text is in the training fold. Summarises corpus rows
(rows.corpus_rows); never runs the model itself.
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

    groups [N] (the text each prediction comes from): folds never split a group, so no token of a test text is in
    the training fold (a text's tokens share its context, and would be each other's neighbours)."""
    from sklearn.model_selection import GroupKFold, KFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    n_splits = _n_splits(labels, groups, folds)
    if n_splits < 2 or len(set(labels.tolist())) < 2:
        return (labels == collections.Counter(labels.tolist()).most_common(1)[0][0]).astype(float)
    clf = KNeighborsClassifier(n_neighbors=min(k, len(labels) - len(labels) // n_splits))
    cv = KFold(n_splits, shuffle=True, random_state=seed) if groups is None else GroupKFold(n_splits)
    with one_thread():
        pred = cross_val_predict(clf, x, labels, cv=cv, groups=groups)
    return (pred == labels).astype(float)


def _n_splits(labels: np.ndarray, groups: np.ndarray | None, folds: int) -> int:
    n_groups = len(set(groups.tolist())) if groups is not None else len(labels)
    return min(folds, len(labels), n_groups)


def identity_correct(token_ids: np.ndarray, labels: np.ndarray, groups: np.ndarray, folds: int = 5) -> np.ndarray:
    """[N] 1.0 where the identity control predicts the label right: on the same folds as `knn_correct` (grouped by
    text), each test token gets the most common label of its token type in the training folds, and the training
    folds' most common label when its type is not there. This is all a representation that only knows the token's
    identity can recover (the k-NN on a one-hot token id, without its ties): "function words are few types" makes
    function words easy for it too."""
    from sklearn.model_selection import GroupKFold

    labels = np.asarray(labels)
    n_splits = _n_splits(labels, groups, folds)
    if n_splits < 2 or len(set(labels.tolist())) < 2:
        return (labels == collections.Counter(labels.tolist()).most_common(1)[0][0]).astype(float)
    pred = np.empty(len(labels), dtype=labels.dtype)
    for train, test in GroupKFold(n_splits).split(token_ids, labels, groups):
        by_type = collections.defaultdict(collections.Counter)
        for t, lab in zip(token_ids[train].tolist(), labels[train].tolist()):
            by_type[t][lab] += 1
        fallback = collections.Counter(labels[train].tolist()).most_common(1)[0][0]
        pred[test] = [by_type[t].most_common(1)[0][0] if t in by_type else fallback for t in token_ids[test].tolist()]
    return (pred == labels).astype(float)


def separability(x, labels, docs, boot, token_ids=None) -> dict:
    """k-NN accuracy (folds grouped by text), the majority baseline, the identity control (when `token_ids` are
    given) and the gains (accuracy - majority, accuracy - identity control) with intervals over texts."""
    correct = knn_correct(x, labels, seed=boot["seed"], groups=docs)
    majority = collections.Counter(labels.tolist()).most_common(1)[0][0]
    is_major = (labels == majority).astype(float)
    acc, base, gain = (mean_ci(v, docs, **boot)[0] for v in (correct, is_major, correct - is_major))
    out = {"knn_accuracy": acc, "majority_baseline": base, "gain": gain, "majority_label": majority,
           "classes": len(set(labels.tolist())), "correct": correct, "is_majority": is_major}
    if token_ids is not None:
        ident = identity_correct(token_ids, labels, docs)
        out.update({"identity_control": mean_ci(ident, docs, **boot)[0],
                    "beyond_identity": mean_ci(correct - ident, docs, **boot)[0], "identity": ident})
    return out


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
        sep = separability(x[sub][keep], values[keep], docs[sub][keep], boot, token_ids=token_ids[keep])
        data[col] = {"keep": keep, "labels": values[keep], **sep}
        summary[f"{col}: k-NN separability"] = {k: v for k, v in sep.items()
                                                if k not in ("correct", "is_majority", "identity")}
    figures = tsne_figures(x, table, ctx.opts.tsne_max, ctx.opts.seed)
    explanation = (
        "Every prediction gets a component importance vector: for each head the sum of its sub-edge importances "
        "into the position's residual stream, and for each layer the FFN importance (sec. 4.1). The t-SNE plots "
        "colour these vectors by the input token's part of speech, the next token's part of speech (universal "
        "tagset of Petrov et al. 2012, every subword of a word gets the word's tag) and whether the input token "
        "is the first or a later subword of its word (fig. 8). Separability: 5-fold cross-validated "
        "5-nearest-neighbour accuracy against always guessing the most common label, with folds grouped by text (no "
        "token of a test text is in the training fold); 'gain' is the difference. The identity control predicts "
        "each token's label from its token type alone (the most common label of that type in the training folds): "
        "what 'function words are few types' gives. 95% intervals resampling texts."
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
    # 1. function words cluster by POS, content words do not; beyond what the token's identity gives
    pos = d["pos_in"]
    docs = d["docs"][pos["keep"]]
    func = np.isin(pos["labels"], FUNCTION_TAGS)
    cont = np.isin(pos["labels"], CONTENT_TAGS)
    statement = ("for function words as inputs, component contributions are clustered according to their part of "
                 "speech tag [...] this is not the case for content words")
    measure = ("k-NN accuracy of input POS minus the identity control's (folds grouped by text), function-word "
               "tokens minus content-word tokens")
    if not (func.any() and cont.any()):
        out.append(Claim("pos-function-words", "4.1, fig. 8a", statement, measure, None, "cannot be tested",
                         "no function or no content words were tagged (spaCy off?)"))
    elif "identity" not in pos:
        out.append(Claim("pos-function-words", "4.1, fig. 8a", statement, measure, None, "cannot be tested",
                         "the rows have no token ids: no identity control"))
    else:
        beyond = pos["correct"] - pos["identity"]
        est = difference_ci(beyond[func], docs[func], beyond[cont], docs[cont], **boot)[0]
        gap = difference_ci(pos["correct"][func], docs[func], pos["correct"][cont], docs[cont], **boot)[0]
        f_beyond = mean_ci(beyond[func], docs[func], **boot)[0]
        conditions = (Condition("the k-NN accuracy of input POS minus the identity control's, function words minus "
                                "content words", est),
                      Condition("the k-NN accuracy of input POS, function words minus content words", gap))
        out.append(Claim("pos-function-words", "4.1, fig. 8a", statement, measure, est, verdict_of(conditions),
                         "the importance vectors' lead of function words over content words exceeds what the "
                         "token's identity alone gives (the identity control: each token type's most common label) "
                         + ("(interval above 0)" if est.above(0.0) else "only with an interval not above 0")
                         + f"; for reference, on function words the vectors minus the identity control: {f_beyond}",
                         conditions))
    # 2. first vs later subwords
    sub = d["subword"]
    est = sub["gain"]
    statement = "contribution patterns strongly depend on whether the current token is the first or a later subword"
    measure = "k-NN accuracy of first/later subword minus the majority baseline"
    conditions = (Condition("the k-NN accuracy of first/later subword minus the majority baseline", est),)
    out.append(Claim("first-vs-later-subwords", "4.1, fig. 8c", statement, measure, est, verdict_of(conditions),
                     f"majority baseline {sub['majority_baseline']}; gain interval "
                     + ("above 0" if est.above(0.0) else "not above 0")
                     + (f"; for reference, the identity control (each token type's most common label in the "
                        f"training folds; the label is mostly the token's own) {sub['identity_control']}"
                        if "identity_control" in sub else ""), conditions))
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
