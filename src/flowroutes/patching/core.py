"""The machinery under every patching method: task batches, the task metric, and per-head interventions.

A head's output is the input of its block's output projection ([B, T, H*dh], head h = slice h*dh:(h+1)*dh);
interventions replace head slices there with a forward pre-hook. No routes, no figures, no files here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import FlowroutesError
from ..models.loading import LoadedModel


def output_projection(loaded: LoadedModel, layer: int) -> nn.Module:
    """The module of block `layer` whose input is the concatenated per-head outputs [B, T, H*dh]."""
    return loaded.adapter.output_projection(layer)


@dataclass
class TaskBatch:
    """Tokenised task examples and their contrastive prompts, ready for batched forward passes.

    ids / contrastive_ids: [N, T_max] right-padded token ids; lengths: [N] real lengths (equal for a pair).
    plus / minus: per example, the token ids whose score counts positively / negatively in the metric.
    kind: "logit_diff" (sum of logits of plus - minus, IOI) or "prob_diff" (sum of probabilities of plus -
    minus, greater-than); both from `tasks.metric_kind` / `tasks.metric_tokens`.
    """

    ids: torch.Tensor
    contrastive_ids: torch.Tensor
    lengths: torch.Tensor
    plus: list[list[int]]
    minus: list[list[int]]
    kind: str
    examples: list
    dropped: int = 0  # pairs left out because prompt and contrastive prompt differ in length

    @property
    def n(self) -> int:
        return int(self.ids.shape[0])

    def rows(self, start: int, stop: int) -> TaskBatch:
        return TaskBatch(self.ids[start:stop], self.contrastive_ids[start:stop], self.lengths[start:stop],
                         self.plus[start:stop], self.minus[start:stop], self.kind, self.examples[start:stop])


def _single_token(loaded: LoadedModel, text: str) -> int:
    ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise FlowroutesError(
            f"the answer {text!r} is {len(ids)} tokens for this tokenizer; the task metric needs single-token "
            "answers: use a model whose tokenizer keeps names/digits as one token"
        )
    return int(ids[0])


def prepare(loaded: LoadedModel, examples: list) -> TaskBatch:
    """Tokenise `examples` (TaskExample objects) into a TaskBatch.

    The metric of each example is `tasks.metric_tokens` / `tasks.metric_kind`: IOI-like examples use the logit
    difference answer - wrong, greater-than examples its probability difference (two-digit or digit form).
    Pairs whose contrastive prompt has a different number of tokens are left out (counted in `dropped`).
    """
    from ..tasks import metric_kind, metric_tokens
    from ..trace import tokenize

    if not examples:
        raise FlowroutesError("no task examples given: pass at least one")
    kinds = {metric_kind(ex) for ex in examples}
    if len(kinds) > 1:
        raise FlowroutesError(f"the examples mix metrics ({', '.join(sorted(kinds))}): pass one task at a time")
    kind = kinds.pop()
    clean, contrast, plus, minus, kept = [], [], [], [], []
    for ex in examples:
        a = tokenize(loaded, ex.prompt)
        b = tokenize(loaded, ex.contrastive)
        if a.numel() != b.numel():
            continue
        up, down = metric_tokens(ex)
        plus.append([_single_token(loaded, t) for t in up])
        minus.append([_single_token(loaded, t) for t in down])
        clean.append(a)
        contrast.append(b)
        kept.append(ex)
    if not kept:
        raise FlowroutesError(
            "every prompt tokenises to a different length than its contrastive prompt, so heads cannot be "
            "patched position by position: use prompts whose contrastive version differs in single tokens"
        )
    pad = loaded.tokenizer.pad_token_id
    pad = int(pad) if pad is not None else 0
    t_max = max(int(a.numel()) for a in clean)
    ids = torch.full((len(clean), t_max), pad, dtype=torch.long)  # [N, T_max]
    cids = torch.full((len(clean), t_max), pad, dtype=torch.long)  # [N, T_max]
    for i, (a, b) in enumerate(zip(clean, contrast)):
        ids[i, : a.numel()] = a
        cids[i, : b.numel()] = b
    lengths = torch.tensor([int(a.numel()) for a in clean], dtype=torch.long)  # [N]
    return TaskBatch(ids, cids, lengths, plus, minus, kind, kept, dropped=len(examples) - len(kept))


def metric_from_logits(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """[N] task metric from the logits at each prompt's last real position ([N, V])."""
    logits = logits.float()
    scores = logits if batch.kind == "logit_diff" else torch.softmax(logits, dim=-1)  # [N, V]
    out = torch.empty(logits.shape[0], dtype=torch.float32)
    for i in range(logits.shape[0]):
        out[i] = scores[i, batch.plus[i]].sum() - scores[i, batch.minus[i]].sum()
    return out


def accuracy(metric: np.ndarray) -> float:
    """Share of examples where the answer beats the distractor (metric > 0); chance is 0.5."""
    return float((np.asarray(metric) > 0).mean())


#: per layer: (mask [R, H] float, 1 = replace the head, values [R, T, H*dh] or [H*dh] broadcastable)
Interventions = dict[int, tuple[torch.Tensor, torch.Tensor]]


@contextlib.contextmanager
def intervene(loaded: LoadedModel, interventions: Interventions) -> Iterator[None]:
    """Replace head outputs while the context is open: x[r, :, h] <- values[r, :, h] where mask[r, h] = 1."""
    dh = loaded.adapter.head_dim
    handles = []

    def hook_for(mask: torch.Tensor, values: torch.Tensor):
        def hook(_module, args):
            x = args[0]  # [R, T, H*dh]
            m = mask.to(x.dtype).repeat_interleave(dh, dim=1)[:, None, :]  # [R, 1, H*dh]
            v = values.to(x.device, x.dtype)
            if v.ndim == 3 and v.shape[1] != x.shape[1]:
                v = v[:, : x.shape[1]]
            return (x * (1 - m) + v * m, *args[1:])

        return hook

    try:
        for layer, (mask, values) in interventions.items():
            module = output_projection(loaded, layer)
            handles.append(module.register_forward_pre_hook(hook_for(mask, values)))
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def record_heads(loaded: LoadedModel, store: dict[int, torch.Tensor]) -> Iterator[None]:
    """Record every layer's head outputs (the output projection's input, [R, T, H*dh]) into `store`."""
    handles = []

    def hook_for(layer: int):
        def hook(_module, args):
            store[layer] = args[0].detach()

        return hook

    try:
        for layer in range(loaded.adapter.n_layers):
            handles.append(output_projection(loaded, layer).register_forward_pre_hook(hook_for(layer)))
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def _last_position_only(loaded: LoadedModel, lengths: torch.Tensor) -> Iterator[None]:
    """Feed the unembedding only each row's last real position ([R, T, d] -> [R, 1, d]): saves its cost."""
    head = loaded.adapter.unembedding_module()

    def hook(_module, args):
        x = args[0]  # [R, T, d]
        rows = torch.arange(x.shape[0], device=x.device)
        return (x[rows, (lengths - 1).to(x.device)][:, None, :], *args[1:])  # [R, 1, d]

    handle = head.register_forward_pre_hook(hook) if head is not None else None
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()


@contextlib.contextmanager
def replay_blocks(loaded: LoadedModel, outputs: dict[int, object], below: int) -> Iterator[None]:
    """Skip decoder blocks 0..below-1: each returns what it returned in a recorded run of the same batch
    (`outputs`, from `record_blocks`). Valid while no intervention touches those blocks."""
    blocks = loaded.adapter.layers
    replaced = []
    try:
        for layer in range(min(below, len(blocks))):
            if layer not in outputs:
                break
            blocks[layer].forward = (lambda out: (lambda *a, **k: out))(outputs[layer])
            replaced.append(blocks[layer])
        yield
    finally:
        for block in replaced:
            del block.forward  # back to the class's forward


@contextlib.contextmanager
def record_blocks(loaded: LoadedModel, store: dict[int, object]) -> Iterator[None]:
    """Record what every decoder block returns (for `replay_blocks`)."""
    handles = []

    def hook_for(layer: int):
        def hook(_module, _args, output):
            store[layer] = output

        return hook

    try:
        for layer, block in enumerate(loaded.adapter.layers):
            handles.append(block.register_forward_hook(hook_for(layer)))
        yield
    finally:
        for h in handles:
            h.remove()


def last_logits(loaded: LoadedModel, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """[R, V] logits at each row's last real position (right padding is invisible to causal attention)."""
    device = next(loaded.model.parameters()).device
    with torch.no_grad(), _last_position_only(loaded, lengths):
        out = loaded.model(input_ids=ids.to(device), use_cache=False).logits  # [R, 1, V] (or [R, T, V])
    if out.shape[1] == 1:
        return out[:, 0].float().cpu()
    rows = torch.arange(ids.shape[0], device=out.device)
    return out[rows, (lengths - 1).to(out.device)].float().cpu()


def run_metric(loaded: LoadedModel, batch: TaskBatch, interventions: Interventions | None = None,
               contrastive: bool = False, clean_blocks: dict[int, object] | None = None) -> torch.Tensor:
    """[N] task metric of one forward pass over the batch (clean or contrastive prompts), with interventions.

    clean_blocks: the block outputs of this batch's clean run (`record_blocks`); blocks below the lowest
    intervened layer then replay them instead of running again (same numbers, less work).
    """
    ids = batch.contrastive_ids if contrastive else batch.ids
    interventions = interventions or {}
    below = min(interventions) if (interventions and clean_blocks and not contrastive) else 0
    with intervene(loaded, interventions), replay_blocks(loaded, clean_blocks or {}, below):
        logits = last_logits(loaded, ids, batch.lengths)
    return metric_from_logits(logits, batch)


def clean_run(loaded: LoadedModel, batch: TaskBatch) -> tuple[torch.Tensor, dict[int, object]]:
    """([N] clean metric, the block outputs of the clean run, for `run_metric(clean_blocks=...)`)."""
    store: dict[int, object] = {}
    with record_blocks(loaded, store):
        metric = run_metric(loaded, batch)
    return metric, store


def head_outputs(loaded: LoadedModel, ids: torch.Tensor) -> dict[int, torch.Tensor]:
    """Every layer's head outputs on `ids` [R, T]: layer -> [R, T, H*dh] (on the model's device)."""
    store: dict[int, torch.Tensor] = {}
    device = next(loaded.model.parameters()).device
    with torch.no_grad(), record_heads(loaded, store):
        loaded.model(input_ids=ids.to(device), use_cache=False)
    return store


def position_sums(outputs: dict[int, torch.Tensor], lengths: torch.Tensor) -> tuple[dict[int, torch.Tensor],
                                                                                      torch.Tensor]:
    """Sums of head outputs over the prompts that reach each position: (layer -> [T, H*dh], counts [T])."""
    t_max = next(iter(outputs.values())).shape[1]
    real = (torch.arange(t_max)[None, :] < lengths[:, None]).float()  # [R, T]
    sums = {layer: (x * real.to(x.device, x.dtype)[:, :, None]).sum(dim=0) for layer, x in outputs.items()}
    return sums, real.sum(dim=0)  # [T, H*dh] per layer, [T]


#: per layer: what the FFN block's output becomes, [R, T, d] or [d] (broadcast)
FfnInterventions = dict[int, torch.Tensor]


@contextlib.contextmanager
def intervene_ffn(loaded: LoadedModel, interventions: FfnInterventions) -> Iterator[None]:
    """Replace FFN block outputs while the context is open: the update block `layer`'s FFN adds to the residual
    becomes values (zeros: zero-ablation). Families whose FFN output is not a module's output are refused."""
    handles = []

    def hook_for(values: torch.Tensor):
        def hook(_module, _args, output):
            x = output[0] if isinstance(output, tuple) else output  # [R, T, d]
            v = values.to(x.device, x.dtype)
            if v.ndim == 3 and v.shape[1] != x.shape[1]:
                v = v[:, : x.shape[1]]
            new = torch.zeros_like(x) + v
            return (new, *output[1:]) if isinstance(output, tuple) else new

        return hook

    try:
        for layer, values in interventions.items():
            module = loaded.adapter.block_modules(layer).ffn
            if module is None:
                raise FlowroutesError(f"the FFN output of block {layer} is not a module's output in this family: "
                                      "it cannot be replaced")
            handles.append(module.register_forward_hook(hook_for(values)))
        yield
    finally:
        for h in handles:
            h.remove()
