"""The paper's data-set-scale analyses (sections 3-5, appendices D-E): task heads, importance vectors, head roles,
domains, W_OV SVD, periods acting as BOS. Importing this package is light: heavy modules load on use.
"""

from __future__ import annotations

from ..tasks import TaskExample, greater_than, ioi, task_examples

__all__ = ["TaskExample", "greater_than", "ioi", "task_examples"]
