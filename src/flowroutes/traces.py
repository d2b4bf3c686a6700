"""The result types of `flowroutes.trace`: `Trace` (every importance of one prompt, as plain arrays) and what
every trace holds (`TraceBase`: the prompt, the model's predictions, the FFN nodes). The lazy trace, which computes
attention rows on demand, is in lazy.py. Node names: docs/architecture.md ("Nodes and layers").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import FlowroutesError


@dataclass(kw_only=True)
class TraceBase:
    """What every trace knows: the prompt, the model's predictions, and the FFN-node importances."""

    model_name: str
    prompt: str
    input_ids: np.ndarray  # [T] int64
    tokens: list[str]  # as the tokenizer shows them (e.g. 'ĠMary')
    token_texts: list[str]  # each token decoded alone (e.g. ' Mary'), for display
    ffn: np.ndarray  # [L, T] importance of the FFN edge into x^{l+1}_p
    ffn_residual: np.ndarray  # [L, T] importance of the residual edge into x^{l+1}_p
    top_ids: np.ndarray  # [T, k] the model's top next tokens at every position (-1 where not predicted)
    top_probs: np.ndarray  # [T, k] (NaN where not predicted)
    top_tokens: list[list[str]]  # [T][k] decoded ([] where not predicted)
    degenerate_ffn: np.ndarray  # [L, T] bool: both proximities of x^{l+1}_p were 0
    parallel: list[bool] | None = None  # per layer: attention and FFN both read x^l (no x^{lA} node)
    meta: dict[str, Any] = field(default_factory=dict)

    def is_parallel(self, layer: int) -> bool:
        """A parallel block has one node x^{l+1}_p whose parts are the sub-edges, the residual and the FFN;
        there `attention_residual` and `ffn_residual` hold the same residual importance."""
        return bool(self.parallel[layer]) if self.parallel is not None else False

    @property
    def n_layers(self) -> int:
        return self.ffn.shape[0]

    @property
    def n_tokens(self) -> int:
        return self.ffn.shape[1]

    def resolve_position(self, position: int) -> int:
        """A 0-based position; negative counts from the end. Raises FlowroutesError when out of range."""
        n = self.n_tokens
        if not isinstance(position, (int, np.integer)) or isinstance(position, bool):
            raise FlowroutesError(f"position must be an integer, got {position!r}")
        if not -n <= position < n:
            raise FlowroutesError(
                f"position {position} is out of range for a prompt of {n} tokens: use 0..{n - 1} or -{n}..-1"
            )
        return int(position) % n

    def attention_rows(self, layer: int, positions: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Importances into x^{layer+1,A}_p for p in `positions`: (sub-edges [H, R, T], residual [R])."""
        raise NotImplementedError

    def routes(
        self,
        threshold: float = 0.04,
        position: int = -1,
        *,
        attention_threshold: float | None = None,
        ffn_threshold: float | None = None,
        renormalize: bool = True,
    ):
        """The information flow routes of the prediction at `position` (fig. 3, appendix B.2)."""
        from .routes import extract_routes

        return extract_routes(
            self,
            position=position,
            attention_threshold=threshold if attention_threshold is None else attention_threshold,
            ffn_threshold=threshold if ffn_threshold is None else ffn_threshold,
            renormalize=renormalize,
        )

    def widget(self, threshold: float = 0.04, position: int = -1):
        """The routes as the interactive notebook widget (flowroutes.widget): threshold and position set in the cell
        are answered by `routes`."""
        from .notebook import widget

        return widget(self, threshold, position)


@dataclass(kw_only=True)
class Trace(TraceBase):
    """Raw edge importances of one prompt. L layers, H heads, T tokens; layers and heads 0-based.

    attention[l, h, p, j]:  sub-edge x^l_j -> (head h of block l) -> x^{lA}_p   [L, H, T, T]
    attention_residual[l, p]: residual edge x^l_p -> x^{lA}_p                 [L, T]
    ffn[l, p], ffn_residual[l, p]: FFN and residual edges into x^{l+1}_p           [L, T]
    (Block l reads the residual x^l, l = 0 being the embeddings, its attention writes x^{lA} and its FFN x^{l+1}:
    docs/architecture.md, "Nodes and layers".)
    """

    attention: np.ndarray  # [L, H, T, T] float32
    attention_residual: np.ndarray  # [L, T]
    degenerate_attention: np.ndarray  # [L, T] bool: all proximities of x^{lA}_p were 0

    @property
    def n_heads(self) -> int:
        return self.attention.shape[1]

    @property
    def n_degenerate(self) -> int:
        """Nodes whose parts all had zero proximity (eq. 1 is 0/0); their parts share importance equally."""
        return int(self.degenerate_attention.sum() + self.degenerate_ffn.sum())

    def attention_rows(self, layer: int, positions: list[int]) -> tuple[np.ndarray, np.ndarray]:
        return self.attention[layer][:, positions], self.attention_residual[layer, positions]

    def __repr__(self) -> str:
        from .display import trace_text

        return trace_text(self)

    def _repr_html_(self) -> str:
        """The notebook display: top predictions and strongest heads at the last position, its routes drawn."""
        from .display import trace_html

        return trace_html(self)

