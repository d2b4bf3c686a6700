"""The causal baselines: head-level activation patching, an ACDC-style pruning run, and head ablations.

Every function runs batched forward passes with `core.intervene` and returns plain numpy arrays; no routes,
no figures, no files. L layers, H heads, N examples; a head is (layer, head), 0-based.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import checks
from ..errors import FlowroutesError
from ..models.loading import LoadedModel
from .core import TaskBatch, clean_run, head_outputs, position_sums, run_metric

ABLATIONS = ("mean", "zero", "patch")


def _chunks(batch: TaskBatch, batch_size: int) -> list[TaskBatch]:
    checks.positive_int("batch_size", batch_size)
    return [batch.rows(s, s + batch_size) for s in range(0, batch.n, batch_size)]


def _bar(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="pass")


@dataclass
class Patching:
    """Head-level activation patching. clean / contrastive: [N] metric; patched: [N, L, H] metric with that
    one head's output replaced by its value on the contrastive prompt; effect = clean - patched [N, L, H]."""

    clean: np.ndarray
    contrastive: np.ndarray
    patched: np.ndarray
    forward_passes: int

    @property
    def effect(self) -> np.ndarray:
        return self.clean[:, None, None] - self.patched  # [N, L, H]

    @property
    def importance(self) -> np.ndarray:
        """[L, H] mean drop of the metric when the head is patched (positive: the head carries the task)."""
        return self.effect.mean(axis=0)

    @property
    def normalized(self) -> np.ndarray:
        """[L, H] importance as a share of the clean - contrastive metric gap (1 = the head alone is the gap)."""
        gap = float(self.clean.mean() - self.contrastive.mean())
        return self.importance / gap if gap != 0 else np.full(self.importance.shape, np.nan)


def head_patching(loaded: LoadedModel, batch: TaskBatch, batch_size: int = 16, progress: bool = True,
                  heads: list[tuple[int, int]] | None = None) -> Patching:
    """Patch every head (or only `heads`; the others stay NaN), one at a time, with its output on the
    contrastive prompt: L*H + 3 batched passes per chunk of `batch_size` prompts."""
    n_layers, n_heads = loaded.adapter.n_layers, loaded.adapter.n_heads
    todo = [(a, b) for a in range(n_layers) for b in range(n_heads)] if heads is None else list(heads)
    chunks = _chunks(batch, batch_size)
    clean, contrast, patched = [], [], []
    bar = _bar(len(chunks) * (len(todo) + 3), progress, "head patching")
    for chunk in chunks:
        metric, blocks = clean_run(loaded, chunk)  # blocks below a patched layer are replayed, not rerun
        clean.append(metric.numpy())
        corrupt = head_outputs(loaded, chunk.contrastive_ids)  # layer -> [R, T, H*dh]
        contrast.append(run_metric(loaded, chunk, contrastive=True).numpy())
        bar.update(3)
        out = np.full((chunk.n, n_layers, n_heads), np.nan, dtype=np.float32)  # [R, L, H]
        for layer, head in todo:
            mask = torch.zeros(chunk.n, n_heads)  # [R, H]
            mask[:, head] = 1.0
            inter = {layer: (mask, corrupt[layer])}
            out[:, layer, head] = run_metric(loaded, chunk, inter, clean_blocks=blocks).numpy()
            bar.update(1)
        patched.append(out)
    bar.close()
    return Patching(np.concatenate(clean), np.concatenate(contrast), np.concatenate(patched),
                    forward_passes=len(chunks) * (len(todo) + 3))


@dataclass
class Pruning:
    """An ACDC-style run over heads as nodes. kept: [L, H] bool; delta: [L, H] the change of the mean metric
    when the head was tried; metric_start / metric_end: mean metric of the full and of the pruned model."""

    kept: np.ndarray
    delta: np.ndarray
    threshold: float
    metric_start: float
    metric_end: float
    forward_passes: int


def acdc_prune(loaded: LoadedModel, batch: TaskBatch, threshold: float = 0.05, batch_size: int = 16,
               progress: bool = True, heads: list[tuple[int, int]] | None = None) -> Pruning:
    """Simplified ACDC (Conmy et al. 2023) over heads as nodes, not edges.

    Heads are visited from the last layer to the first; each is tentatively replaced by its output on the
    contrastive prompt (with every head removed so far still replaced); when the mean metric moves by less
    than `threshold` times the clean - contrastive gap, the head stays removed. One batched pass per head.
    `heads`: visit only these heads, in this order (the rest stay in); default every head, top layer first.
    """
    if not threshold >= 0:
        raise FlowroutesError(f"the ACDC threshold must be >= 0, got {threshold}")
    n_layers, n_heads = loaded.adapter.n_layers, loaded.adapter.n_heads
    chunks = _chunks(batch, batch_size)
    corrupt = [head_outputs(loaded, c.contrastive_ids) for c in chunks]  # per chunk: layer -> [R, T, H*dh]
    runs = [clean_run(loaded, c) for c in chunks]  # (metric, block outputs): lower blocks are replayed
    clean = np.concatenate([metric.numpy() for metric, _ in runs])
    contrast = np.concatenate([run_metric(loaded, c, contrastive=True).numpy() for c in chunks])
    gap = abs(float(clean.mean() - contrast.mean())) or 1.0
    removed = np.zeros((n_layers, n_heads), dtype=bool)
    delta = np.zeros((n_layers, n_heads), dtype=np.float32)

    def mean_metric(mask: np.ndarray) -> float:
        vals = []
        for chunk, cor, (_, blocks) in zip(chunks, corrupt, runs):
            inter = {}
            for layer in np.flatnonzero(mask.any(axis=1)):
                m = torch.as_tensor(mask[layer], dtype=torch.float32)[None, :].expand(chunk.n, -1)  # [R, H]
                inter[int(layer)] = (m, cor[int(layer)])
            vals.append(run_metric(loaded, chunk, inter, clean_blocks=blocks).numpy())
        return float(np.concatenate(vals).mean())

    current = float(clean.mean())
    if heads is None:
        heads = [(a, b) for a in reversed(range(n_layers)) for b in reversed(range(n_heads))]
    bar = _bar(len(heads) * len(chunks), progress, "ACDC-style pruning")
    for layer, head in heads:
        trial = removed.copy()
        trial[layer, head] = True
        value = mean_metric(trial)
        delta[layer, head] = value - current
        if abs(value - current) < threshold * gap:
            removed, current = trial, value
        bar.update(len(chunks))
    bar.close()
    return Pruning(~removed, delta, threshold, float(clean.mean()), current,
                   forward_passes=len(chunks) * (len(heads) + 3))


def ablation_values(loaded: LoadedModel, batch: TaskBatch, mode: str, batch_size: int = 16) -> list[dict]:
    """Per chunk, layer -> what an ablated head's output becomes: "mean": its mean at the same position over
    every clean prompt of the data set that reaches that position ([T, H*dh]); "zero": zeros ([H*dh]);
    "patch": its output on the example's own contrastive prompt ([R, T, H*dh])."""
    if mode not in ABLATIONS:
        raise FlowroutesError(f"unknown ablation '{mode}': choose one of {', '.join(ABLATIONS)}")
    chunks = _chunks(batch, batch_size)
    if mode == "patch":
        return [head_outputs(loaded, c.contrastive_ids) for c in chunks]
    if mode == "zero":
        width = loaded.adapter.n_heads * loaded.adapter.head_dim
        return [{layer: torch.zeros(width) for layer in range(loaded.adapter.n_layers)} for _ in chunks]
    sums: dict[int, torch.Tensor] = {}
    counts = torch.zeros(batch.ids.shape[1])  # [T]
    for c in chunks:  # every chunk is padded to the batch's full width T
        part, n = position_sums(head_outputs(loaded, c.ids), c.lengths)
        for layer, x in part.items():
            sums[layer] = sums.get(layer, 0) + x
        counts += n
    means = {layer: x / counts.clamp(min=1).to(x.device, x.dtype)[:, None] for layer, x in sums.items()}
    return [means for _ in chunks]


def ablated_metric(loaded: LoadedModel, batch: TaskBatch, ablate: np.ndarray, values: list[dict],
                   batch_size: int = 16) -> np.ndarray:
    """[N] metric with heads ablated: `ablate` is [L, H] (same heads for every example) or [N, L, H] bool."""
    n_layers = loaded.adapter.n_layers
    ablate = np.asarray(ablate, dtype=bool)
    per_row = ablate.ndim == 3
    out = []
    for k, chunk in enumerate(_chunks(batch, batch_size)):
        rows = ablate[k * batch_size: k * batch_size + chunk.n] if per_row else None
        inter = {}
        for layer in range(n_layers):
            if per_row:
                m = torch.as_tensor(rows[:, layer], dtype=torch.float32)  # [R, H]
            else:
                m = torch.as_tensor(ablate[layer], dtype=torch.float32)[None, :].expand(chunk.n, -1)  # [R, H]
            if bool(m.any()):
                inter[layer] = (m, values[k][layer])
        out.append(run_metric(loaded, chunk, inter).numpy())
    return np.concatenate(out)
