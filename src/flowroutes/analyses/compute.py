"""Per-trace numbers behind the analyses: importance vectors, head influence shares, words of tokens.

Pure numpy on `Trace` arrays (no model, no I/O, no figures); every function works on one trace, so that shards
can be computed anywhere and concatenated. L layers, H heads, T tokens; flat head index = layer * H + head.
"""

from __future__ import annotations

import re

import numpy as np

#: words for subword grouping when no spaCy pipeline is used: letters/digits runs, or single other characters
_WORD_RE = re.compile(r"\w+|[^\w\s]")


def importance_vectors(trace) -> np.ndarray:
    """[T, L*H + L] per prediction p: (sum_j attention[l, h, p, j] for every (l, h), ffn[l, p] for every l)."""
    heads = trace.attention.sum(axis=-1)  # [L, H, T]
    n_layers, n_heads, n_tok = heads.shape
    flat = heads.transpose(2, 0, 1).reshape(n_tok, n_layers * n_heads)  # [T, L*H]
    return np.concatenate([flat, trace.ffn.T], axis=1).astype(np.float32)  # [T, L*H + L]


def vector_names(n_layers: int, n_heads: int) -> list[str]:
    """Names of the importance-vector components: 'L{l}H{h}' then 'FFN{l}' (0-based)."""
    heads = [f"L{layer}H{head}" for layer in range(n_layers) for head in range(n_heads)]
    return heads + [f"FFN{layer}" for layer in range(n_layers)]


def active_heads_matrix(routes, n_layers: int, n_heads: int) -> np.ndarray:
    """[L, H] bool: the head has at least one sub-edge in the routes (the paper's 'activated')."""
    out = np.zeros((n_layers, n_heads), dtype=bool)
    for layer, head in routes.active_heads:
        out[layer, head] = True
    return out


def head_shares(trace, word_ids: list[int]) -> dict[str, np.ndarray]:
    """Per head and position, from contributions (not attention weights):

    total [L, H, T]: the head's overall influence on x^{lA}_p, sum_j attention[l, h, p, j];
    previous [L, H, T]: share of that influence on j = p - 1 (NaN at p = 0 or when total = 0);
    same_word [L, H, T]: share on the previous subwords of p's own word (NaN where p is a first subword
    or total = 0). `word_ids[p]` is the word token p belongs to (tokens of one word are adjacent; -1: none).
    """
    att = trace.attention.astype(np.float64)  # [L, H, T, T]
    total = att.sum(axis=-1)  # [L, H, T]
    n_tok = total.shape[-1]
    prev = np.full(total.shape, np.nan)
    same = np.full(total.shape, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        for p in range(1, n_tok):
            ok = total[:, :, p] > 0
            prev[:, :, p] = np.where(ok, att[:, :, p, p - 1] / total[:, :, p], np.nan)
            if word_ids[p] == word_ids[p - 1] >= 0:  # a later subword (a token of no word is none)
                start = p
                while start > 0 and word_ids[start - 1] == word_ids[p]:
                    start -= 1
                part = att[:, :, p, start:p].sum(axis=-1)
                same[:, :, p] = np.where(ok, part / total[:, :, p], np.nan)
    return {"total": total.astype(np.float32), "previous": prev.astype(np.float32),
            "same_word": same.astype(np.float32)}


def head_roles(previous: np.ndarray, same_word: np.ndarray, first_total: np.ndarray,
               share: float = 0.5, frequency: float = 0.7, first_influence: float = 5e-5) -> dict[str, np.ndarray]:
    """Head roles (sec. 4.3) from per-case shares stacked over a corpus.

    previous: [N, L, H] share of each head's influence on the previous token, one row per prediction with p >= 1
    (NaN counts as "not more than half"). A previous-token head has share > 0.5 in >= 70% of cases.
    same_word: [M, L, H] the share on previous subwords of the same word, one row per later subword.
    first_total: [F, L, H] the head's overall influence at first subwords.
    A subword-merging head: share > 0.5 in >= 70% of later subwords, overall influence <= 0.005% (5e-5) in >= 70%
    of first subwords, and not a previous-token head (the paper's footnote).
    Returns the frequencies [L, H] and the boolean role masks [L, H].
    """
    prev_freq = _frequency(previous, share)
    merge_freq = _frequency(same_word, share)
    quiet_freq = (first_total <= first_influence).mean(axis=0) if len(first_total) else np.zeros(prev_freq.shape)
    previous_token = prev_freq >= frequency
    merging = (merge_freq >= frequency) & (quiet_freq >= frequency) & ~previous_token
    return {"previous_frequency": prev_freq, "merging_frequency": merge_freq, "first_quiet_frequency": quiet_freq,
            "previous_token": previous_token, "subword_merging": merging}


def _frequency(values: np.ndarray, share: float) -> np.ndarray:
    if len(values) == 0:
        return np.zeros(values.shape[1:])
    with np.errstate(invalid="ignore"):
        return (np.nan_to_num(values, nan=-1.0) > share).mean(axis=0)


def word_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of words when no spaCy pipeline is used: runs of \\w, or single punctuation marks."""
    return [m.span() for m in _WORD_RE.finditer(text)]


def token_words(offsets: list[tuple[int, int]], text: str, spans: list[tuple[int, int]]) -> list[int]:
    """The word index of every token: the span holding the token's first non-space character.

    A token that covers no character of the text (an empty offset span: the BOS, or any special token the
    tokenizer added) belongs to no word: -1. Tokens with no visible character (e.g. a lone space) join the next
    word when there is one (a leading space belongs to the word it precedes), else the previous one; -1 when
    there are no words.
    """
    starts = []
    for start, end in offsets:
        s = start
        while s < end and text[s].isspace():
            s += 1
        starts.append(-1 if start >= end else (s if s < end else None))
    out = []
    span_starts = [a for a, _ in spans]
    for s in starts:
        if s is None or s == -1:
            out.append(s)
            continue
        i = int(np.searchsorted(span_starts, s, side="right")) - 1
        out.append(i if i >= 0 and s < spans[i][1] else (i if i >= 0 else 0))
    # fill tokens without a visible character
    for k in range(len(out)):
        if out[k] is None:
            nxt = next((w for w in out[k + 1:] if w is not None and w >= 0), None)
            prv = next((w for w in reversed(out[:k]) if w is not None and w >= 0), None)
            out[k] = nxt if nxt is not None else (prv if prv is not None else -1)
    return [int(w) for w in out]
