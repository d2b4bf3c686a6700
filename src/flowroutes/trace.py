"""`trace`: one forward pass -> every edge importance of the information flow graph, as plain arrays.

The `Trace` holds raw importances (before any threshold) and the model's predictions; routes,
figures, the CLI and analyses only read it. Tokenisation follows the tokenizer's own defaults
(e.g. whether it prepends BOS) unless `add_special_tokens` or `input_ids` says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .capture import BlockCapture, run_with_capture
from .errors import FlowroutesError
from .importance import CHUNK_ELEMENTS, attention_importance, ffn_importance, head_values
from .models.loading import LoadedModel, load_model


@dataclass
class Trace:
    """Raw edge importances of one prompt. L layers, H heads, T tokens; layers and heads 0-based.

    attention[l, h, p, j]:  sub-edge x^l_j -> (head h of block l) -> x^{l+1,A}_p   [L, H, T, T]
    attention_residual[l, p]: residual edge x^l_p -> x^{l+1,A}_p                 [L, T]
    ffn[l, p], ffn_residual[l, p]: FFN and residual edges into x^{l+1}_p           [L, T]
    (Block l reads the residual x^l, l = 0 being the embeddings, and writes x^{l+1}.)
    """

    model_name: str
    prompt: str
    input_ids: np.ndarray  # [T] int64
    tokens: list[str]  # as the tokenizer shows them (e.g. 'ĠMary')
    token_texts: list[str]  # each token decoded alone (e.g. ' Mary'), for display
    attention: np.ndarray  # [L, H, T, T] float32
    attention_residual: np.ndarray  # [L, T]
    ffn: np.ndarray  # [L, T]
    ffn_residual: np.ndarray  # [L, T]
    top_ids: np.ndarray  # [T, k] the model's top next tokens at every position
    top_probs: np.ndarray  # [T, k]
    top_tokens: list[list[str]]  # [T][k] decoded
    degenerate_attention: np.ndarray  # [L, T] bool: all proximities of x^{l+1,A}_p were 0
    degenerate_ffn: np.ndarray  # [L, T] bool: both proximities of x^{l+1}_p were 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return self.attention.shape[0]

    @property
    def n_heads(self) -> int:
        return self.attention.shape[1]

    @property
    def n_tokens(self) -> int:
        return self.attention.shape[2]

    @property
    def n_degenerate(self) -> int:
        """Nodes whose parts all had zero proximity (eq. 1 is 0/0); their parts share equally."""
        return int(self.degenerate_attention.sum() + self.degenerate_ffn.sum())

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


def tokenize(loaded: LoadedModel, prompt: str, add_special_tokens: bool | None = None) -> torch.Tensor:
    """The prompt's token ids [T], with the tokenizer's own defaults unless told otherwise."""
    if not isinstance(prompt, str):
        raise FlowroutesError(f"the prompt must be a string, got {type(prompt).__name__}")
    if not prompt.strip():
        raise FlowroutesError("the prompt is empty: give some text to explain the model's next-token prediction")
    kwargs = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
    ids = loaded.tokenizer(prompt, **kwargs)["input_ids"]
    return torch.as_tensor(ids, dtype=torch.long)


def trace(
    model: Any,
    prompt: str | None = None,
    *,
    input_ids: Any = None,
    add_special_tokens: bool | None = None,
    top_k: int = 10,
    kernel: str = "auto",
    chunk_elements: int = CHUNK_ELEMENTS,
) -> Trace:
    """Trace one prompt: a forward pass, then eq. 1 for every node of the information flow graph.

    model: a `LoadedModel` (from `load_model`) or anything `load_model` accepts.
    prompt: the text; or pass `input_ids` (a sequence of ints) to skip tokenisation.
    kernel: "auto" (fused numba kernel on CPU), "numba", or "torch" (the chunked reference path).
    """
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    adapter = loaded.adapter
    if input_ids is not None:
        ids = torch.as_tensor(input_ids, dtype=torch.long).reshape(-1)
        if ids.numel() == 0:
            raise FlowroutesError("input_ids is empty: give at least one token")
        if prompt is None:
            prompt = loaded.tokenizer.decode(ids.tolist())
    else:
        ids = tokenize(loaded, prompt, add_special_tokens)
        if ids.numel() == 0:
            raise FlowroutesError("the prompt has no tokens after tokenisation: give some text")
    n_tok, n_layers, n_heads = int(ids.numel()), adapter.n_layers, adapter.n_heads
    if n_tok > adapter.max_context:
        raise FlowroutesError(
            f"the prompt has {n_tok} tokens but {loaded.name} reads at most {adapter.max_context}: shorten it"
        )

    attention = np.zeros((n_layers, n_heads, n_tok, n_tok), dtype=np.float32)
    attention_residual = np.zeros((n_layers, n_tok), dtype=np.float32)
    ffn = np.zeros((n_layers, n_tok), dtype=np.float32)
    ffn_residual = np.zeros((n_layers, n_tok), dtype=np.float32)
    degenerate_attention = np.zeros((n_layers, n_tok), dtype=bool)
    degenerate_ffn = np.zeros((n_layers, n_tok), dtype=bool)

    def on_block(cap: BlockCapture) -> None:
        layer = cap.layer
        f, _const = head_values(cap.normed, adapter.ov_weights(layer), adapter.input_norm_bias(layer), adapter)
        sub, res, degen = attention_importance(
            cap.alpha, f, cap.x_in, cap.x_mid, kernel=kernel, chunk_elements=chunk_elements,
            out=torch.from_numpy(attention[layer]) if cap.alpha.device.type == "cpu" else None,
        )
        if cap.alpha.device.type != "cpu":
            attention[layer] = sub.cpu().numpy()
        attention_residual[layer] = res.cpu().numpy()
        degenerate_attention[layer] = degen.cpu().numpy()
        f_imp, f_res, f_degen = ffn_importance(cap.x_mid, cap.ffn_out, cap.x_out)
        ffn[layer] = f_imp.cpu().numpy()
        ffn_residual[layer] = f_res.cpu().numpy()
        degenerate_ffn[layer] = f_degen.cpu().numpy()

    logits = run_with_capture(loaded, ids, on_block)  # [T, V]
    probs = torch.softmax(logits, dim=-1)
    k = min(top_k, probs.shape[-1])
    top_probs, top_ids = probs.topk(k, dim=-1)  # [T, k]
    tok = loaded.tokenizer
    id_list = ids.tolist()
    return Trace(
        model_name=loaded.name,
        prompt=prompt,
        input_ids=np.asarray(id_list, dtype=np.int64),
        tokens=list(tok.convert_ids_to_tokens(id_list)),
        token_texts=[tok.decode([i]) for i in id_list],
        attention=attention,
        attention_residual=attention_residual,
        ffn=ffn,
        ffn_residual=ffn_residual,
        top_ids=top_ids.cpu().numpy(),
        top_probs=top_probs.cpu().numpy(),
        top_tokens=[[tok.decode([i]) for i in row] for row in top_ids.tolist()],
        degenerate_attention=degenerate_attention,
        degenerate_ffn=degenerate_ffn,
        meta={"model_type": getattr(loaded.model.config, "model_type", None), "kernel": kernel},
    )
