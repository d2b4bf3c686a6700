"""Causal checks of the routes: head-level activation patching, an ACDC-style pruning run, head ablations,
and their comparison with route activation frequencies (`compare_patching`).

Public API only; the work happens in core (interventions), methods (baselines) and compare (report).
"""

from .compare import compare_patching
from .core import TaskBatch, intervene, metric_from_logits, output_projection, prepare, run_metric
from .methods import Patching, Pruning, ablated_metric, ablation_values, acdc_prune, head_patching
from .scores import active_masks, spearman, top_k, top_k_overlap

__all__ = [
    "Patching",
    "Pruning",
    "TaskBatch",
    "ablated_metric",
    "ablation_values",
    "acdc_prune",
    "active_masks",
    "compare_patching",
    "head_patching",
    "intervene",
    "metric_from_logits",
    "output_projection",
    "prepare",
    "run_metric",
    "spearman",
    "top_k",
    "top_k_overlap",
]
