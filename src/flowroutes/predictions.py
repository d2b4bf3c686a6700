"""The model's top next tokens at each position of a traced prompt (the fields every trace carries), and where the
LM head runs (`predictions="all" | "last" | "none"`).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import numpy as np
import torch

from .models.loading import LoadedModel

PREDICTIONS = ("all", "last", "none")


def logit_positions(predictions: str, lengths: list[int]) -> torch.Tensor | None:
    """Where the LM head runs: None (everywhere) or [B, K] positions."""
    if predictions == "all":
        return None
    if predictions == "last":
        return torch.tensor([[n - 1] for n in lengths], dtype=torch.long)
    return torch.zeros(len(lengths), 0, dtype=torch.long)


_TOKEN_TEXTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _token_texts(tokenizer) -> Callable[[int], str]:
    """id -> the token decoded alone (`tokenizer.decode([id])`), memoised per tokenizer: a batch decodes each of its
    T * (k + 1) tokens once per distinct id, not once per occurrence."""
    try:
        cache = _TOKEN_TEXTS.setdefault(tokenizer, {})
    except TypeError:  # a tokenizer that cannot be weakly referenced: no memo
        cache = {}

    def text_of(i: int) -> str:
        text = cache.get(i)
        if text is None:
            text = cache[i] = tokenizer.decode([i])
        return text

    return text_of


def base_fields(loaded: LoadedModel, prompt: str, ids: torch.Tensor, logits: torch.Tensor, top_k: int,
                 positions: list[int] | None = None) -> dict:
    """logits: [T, V], or [K, V] at `positions` (the other positions get no prediction)."""
    k = min(top_k, logits.shape[-1])
    top_probs, top_ids = [], []
    for chunk in logits.split(256):  # [<=256, V] at a time: no [T, V] temporaries
        values, indices = chunk.topk(k, dim=-1)
        top_probs.append(torch.exp(values - torch.logsumexp(chunk, dim=-1, keepdim=True)))  # softmax of the top k
        top_ids.append(indices)
    top_probs = torch.cat(top_probs) if top_probs else torch.zeros(0, k)  # [T, k] or [K, k]
    top_ids = torch.cat(top_ids) if top_ids else torch.zeros(0, k, dtype=torch.long)
    tok = loaded.tokenizer
    id_list = ids.tolist()
    ids_np, probs_np = top_ids.cpu().numpy(), top_probs.cpu().numpy()
    text_of = _token_texts(tok)
    top_tokens = [[text_of(i) for i in row] for row in top_ids.tolist()]
    if positions is not None:  # spread the predicted rows over a [T, k] table
        n = len(id_list)
        table_ids, table_probs = np.full((n, k), -1, ids_np.dtype), np.full((n, k), np.nan, probs_np.dtype)
        table_ids[positions], table_probs[positions] = ids_np, probs_np
        table_tokens: list[list[str]] = [[] for _ in range(n)]
        for p, row in zip(positions, top_tokens):
            table_tokens[p] = row
        ids_np, probs_np, top_tokens = table_ids, table_probs, table_tokens
    return dict(
        model_name=loaded.name,
        prompt=prompt,
        input_ids=np.asarray(id_list, dtype=np.int64),
        tokens=list(tok.convert_ids_to_tokens(id_list)),
        token_texts=[text_of(i) for i in id_list],
        top_ids=ids_np,
        top_probs=probs_np,
        top_tokens=top_tokens,
    )


def prompt_fields(loaded, prompt, ids, logits, keep, b: int, top_k: int) -> dict:
    """The base fields of prompt b of a batch from the batch's logits."""
    n_tok = int(ids.numel())
    return base_fields(loaded, prompt, ids, logits[b, :n_tok] if keep is None else logits[b], top_k,
                        None if keep is None else keep[b].tolist())

