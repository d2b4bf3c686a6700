"""The rows every analysis summarises: one per prediction of a corpus, or two per task example (task, contrastive).

Rows hold threshold-free numbers (importance vectors, each head's strongest sub-edge, head shares, where later
tokens' attention goes), so that one corpus pass serves every corpus analysis at any tau. The per-trace functions
are pure numpy on `Trace` arrays and are tested on hand-built traces; `corpus_rows` / `task_rows` run the model.
L layers, H heads, T tokens; a flat head index is layer * H + head.
"""

from __future__ import annotations

import collections

import numpy as np
import pyarrow as pa

from . import compute

SOURCES = ("first", "period", "other", "later_period")  # where later tokens' shares go (source_shares)

def first_period(token_texts: list[str]) -> int:
    """Position of the first period of a text (a token that is '.' up to spaces), -1 when there is none.

    Appendix D: "this cluster corresponds to the first period in a text". Position 0 is skipped: the first token
    is the BOS stand-in itself when the tokenizer adds none.
    """
    for p, text in enumerate(token_texts):
        if p > 0 and text.strip() == ".":
            return p
    return -1


def later_periods(token_texts: list[str]) -> list[int]:
    """Positions of a text's periods after its first one (the 2nd, 3rd, ...; tokens that are '.' up to spaces)."""
    q = first_period(token_texts)
    return [] if q < 0 else [p for p in range(q + 1, len(token_texts)) if token_texts[p].strip() == "."]


def source_shares(weights: np.ndarray, q: int, later: list[int] | tuple[int, ...] = ()) -> dict[str, np.ndarray]:
    """Where each target's attention or contribution goes, per layer: weights [L, T, T] (target p, source j), summed
    or averaged over heads, rows p normalised or not (shares are taken row by row here).

    Returns [L, T] arrays: `first` (share on j = 0), `period` (share on j = q, NaN where p <= q or q < 1),
    `other` (mean share per other source j in 1..p, j != q; NaN where there is none) and `later_period` (mean share
    per later period j in `later` with j < p, the text's 2nd, 3rd, ... periods: appendix D's second reference;
    NaN where p follows none).
    """
    w = np.asarray(weights, dtype=np.float64)  # [L, T, T]
    n_layers, n_tok, _ = w.shape
    total = np.tril(w).sum(axis=-1)  # [L, T]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = w / total[..., None]  # [L, T, T]
        first = share[:, :, 0]
        period = np.full((n_layers, n_tok), np.nan)
        if q >= 1:
            period[:, q + 1:] = share[:, np.arange(q + 1, n_tok), q]
        others = np.tril(share, k=0).copy()
        others[:, :, 0] = 0.0
        if q >= 1:
            others[:, :, q] = 0.0
        n_other = np.arange(n_tok) - (np.arange(n_tok) >= q if q >= 1 else 0)  # sources 1..p without q
        other = others.sum(axis=-1) / np.where(n_other > 0, n_other, np.nan)[None, :]
        marks = np.zeros(n_tok)
        marks[list(later)] = 1.0  # [T] 1 at the later periods
        before = np.tril(np.ones((n_tok, n_tok)), k=-1) * marks[None, :]  # [T, T] later periods j < p
        n_later = before.sum(axis=-1)  # [T]
        later_period = (share * before[None]).sum(axis=-1) / np.where(n_later > 0, n_later, np.nan)[None, :]
    return {"first": first, "period": period, "other": other, "later_period": later_period}


def prediction_rows(tr, item: dict, spans, tags, alpha_mean: np.ndarray | None = None) -> dict[str, list]:
    """Columns for every position p of one traced text (`item`: doc, domain, text, offsets).

    vector [L*H + L]: sum_j attention[l, h, p, j] per head, then ffn[l, p] (sec. 4.1 footnote); head_max [L*H]:
    each head's strongest sub-edge into x^{lA}_p (a head "affects" that stream at tau when head_max >= tau);
    previous / same_word [L*H]: head shares on the previous token / earlier subwords of the word (sec. 4.3);
    contrib_* [L]: shares of the attention block's contribution into x^{lA}_p from the first token, the first
    period, an average other token and an average later period (`source_shares`); attn_* [L]: the same for
    attention weights averaged over heads, when `alpha_mean` [L, T, T] is given (appendix D; NaN otherwise).
    """
    text = item["text"]
    word_ids = compute.token_words(item["offsets"], text, spans)
    vectors = compute.importance_vectors(tr)  # [T, L*H + L]
    head_max = tr.attention.max(axis=-1)  # [L, H, T]
    n_layers, n_heads, n_tok = head_max.shape
    head_max = head_max.transpose(2, 0, 1).reshape(n_tok, n_layers * n_heads)  # [T, L*H]
    part = compute.head_shares(tr, word_ids)
    q, later = first_period(tr.token_texts), later_periods(tr.token_texts)
    contrib = source_shares(tr.attention.sum(axis=1), q, later)  # heads summed: [L, T, T]
    if alpha_mean is not None:
        attn = source_shares(alpha_mean, q, later)
    else:  # not measured for this text: NaN, so that every shard has the same columns
        attn = dict.fromkeys(SOURCES, np.full((n_layers, n_tok), np.nan))
    cols = collections.defaultdict(list)
    for p in range(n_tok):
        w = word_ids[p]
        nxt = word_ids[p + 1] if p + 1 < n_tok else None
        cols["doc"].append(item["doc"])
        cols["domain"].append(item["domain"])
        cols["position"].append(p)
        cols["token"].append(tr.token_texts[p])
        cols["token_id"].append(int(tr.input_ids[p]))
        cols["next_token"].append(tr.token_texts[p + 1] if nxt is not None else "")
        # a token of no word (the BOS) has no word, subword or POS label: "" (the label analyses leave it out)
        cols["word"].append(text[spans[w][0]:spans[w][1]] if w >= 0 else "")
        cols["subword"].append("" if w < 0 else "first" if p == 0 or w != word_ids[p - 1] else "later")
        cols["pos_in"].append(tags[w] if w >= 0 else "")
        cols["pos_next"].append((tags[nxt] if nxt >= 0 else "") if nxt is not None else "")
        cols["first_period"].append(q)
        cols["vector"].append(vectors[p])
        cols["head_max"].append(head_max[p].astype(np.float32))
        cols["previous"].append(part["previous"][:, :, p].ravel())
        cols["same_word"].append(part["same_word"][:, :, p].ravel())
        for name, shares in (("contrib", contrib), ("attn", attn)):
            for where in SOURCES:
                cols[f"{name}_{where}"].append(shares[where][:, p].astype(np.float32))
    return cols


def corpus_rows(loaded, items: list[dict], batch_size: int = 8, use_spacy: bool = True) -> pa.Table:
    """One row per prediction (every position of every text in `items`); see `prediction_rows`. Attention weights
    (one more forward pass) are measured for the items whose "attention" is true (default: all)."""
    import flowroutes

    from .data import words_and_pos

    if not items:
        return pa.table({})
    traces = flowroutes.trace(loaded, input_ids=[it["ids"] for it in items], batch_size=batch_size, top_k=1,
                              predictions="none")  # the rows use the next token of the text, not the model's
    wanted = [k for k, it in enumerate(items) if it.get("attention", True)]
    alphas = dict(zip(wanted, mean_attention(loaded, [items[k]["ids"] for k in wanted], batch_size)))
    cols = collections.defaultdict(list)
    for k, (it, tr) in enumerate(zip(items, traces)):
        spans, tags = words_and_pos(it["text"], use_spacy)
        for key, values in prediction_rows(tr, it, spans, tags, alphas.get(k)).items():
            cols[key].extend(values)
    return table_from_columns(cols)


def mean_attention(loaded, id_lists: list[list[int]], batch_size: int) -> list[np.ndarray]:
    """Attention weights averaged over heads, [L, T, T] per text (one extra forward pass per batch)."""
    import torch

    from ..capture import run_with_capture

    out = []
    if not id_lists:
        return out
    pad = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
    for start in range(0, len(id_lists), batch_size):
        chunk = id_lists[start:start + batch_size]
        t_max = max(len(i) for i in chunk)
        ids = torch.full((len(chunk), t_max), pad, dtype=torch.long)  # [B, T_max], right padding (causal: harmless)
        for b, i in enumerate(chunk):
            ids[b, :len(i)] = torch.tensor(i)
        per_layer = []

        def on_block(cap, per_layer=per_layer):
            per_layer.append(cap.alpha.mean(dim=1).cpu().numpy())  # [B, T, T]

        with torch.no_grad():
            run_with_capture(loaded, ids, on_block)
        stacked = np.stack(per_layer, axis=1)  # [B, L, T, T]
        out += [stacked[b, :, :len(i), :len(i)] for b, i in enumerate(chunk)]
    return out


def task_rows(loaded, items: list[dict], tau: float = 0.03, batch_size: int = 8) -> pa.Table:
    """Two rows per task example (variant 'task' and 'contrastive'): prediction, metric, the heads active in the
    last position's routes at `tau` ("a head [is] activated if it has at least a sub-edge in the information flow
    routes"), and per head how often it put more than half of its influence on the previous token."""
    import flowroutes

    from ..tasks import TaskExample, task_metric, top_valid

    examples = [TaskExample(**it["example"]) for it in items]
    prompts = [e.prompt for e in examples] + [e.contrastive for e in examples]
    traces = flowroutes.trace(loaded, prompts, batch_size=batch_size, top_k=200, predictions="last") if items else []
    cols = collections.defaultdict(list)
    n_layers, n_heads = loaded.n_layers, loaded.n_heads
    for k, tr in enumerate(traces):
        it, ex = items[k % len(items)], examples[k % len(items)]
        probs = dict(zip(tr.top_tokens[-1], (float(x) for x in tr.top_probs[-1])))
        act = compute.active_heads_matrix(tr.routes(tau, position=-1), n_layers, n_heads)
        prev = compute.head_shares(tr, list(range(tr.n_tokens)))["previous"][:, :, 1:]  # [L, H, T-1]
        cols["example"].append(int(it["index"]))
        cols["variant"].append("task" if k < len(items) else "contrastive")
        cols["prompt"].append(tr.prompt)
        cols["answer"].append(ex.answer)
        cols["wrong"].append(ex.wrong)
        cols["top_token"].append(tr.top_tokens[-1][0])
        cols["top_valid"].append(bool(top_valid(ex, tr.top_tokens[-1][0])))
        cols["p_answer"].append(probs.get(ex.answer, 0.0))
        cols["p_wrong"].append(probs.get(ex.wrong, 0.0))
        cols["metric"].append(float(task_metric(ex, probs)))
        cols["active"].append(np.flatnonzero(act.ravel()).astype(np.int32))
        cols["previous_hits"].append((np.nan_to_num(prev, nan=-1.0) > 0.5).sum(axis=-1).ravel().astype(np.int32))
        cols["previous_cases"].append(int(prev.shape[-1]))
    return table_from_columns(cols)


def table_from_columns(cols: dict[str, list]) -> pa.Table:
    """A pyarrow Table; numpy rows become list columns (int32 or float32)."""
    arrays = {}
    for key, values in cols.items():
        if values and isinstance(values[0], np.ndarray):
            flat = np.concatenate([np.asarray(v).ravel() for v in values])
            kind = pa.int32() if values[0].dtype.kind == "i" else pa.float32()
            offsets = np.concatenate([[0], np.cumsum([np.asarray(v).size for v in values])]).astype(np.int32)
            arrays[key] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat.astype(
                np.int32 if kind == pa.int32() else np.float32), type=kind))
        else:
            arrays[key] = pa.array(values)
    return pa.table(arrays)


def list_column(table: pa.Table, name: str, dtype=np.float64) -> np.ndarray:
    """A fixed-length list column as a matrix [rows, K]."""
    col = table.column(name).combine_chunks()
    if table.num_rows == 0:
        return np.zeros((0, 0), dtype=dtype)
    return np.asarray(col.values.to_numpy(zero_copy_only=False), dtype=dtype).reshape(table.num_rows, -1)


def column(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_pylist())
