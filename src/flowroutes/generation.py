"""`generate`: an answer of many tokens (generated, or given and teacher-forced) with, for each of its tokens, the
routes of its prediction and its attribution to the prompt's tokens, computed on demand (docs/generation.md).

One lazy trace of prompt + answer[:-1] serves every answer token; thresholds and attributions read it. Holds no
logic of the walk (routes.py) or of the attributions (attribution.py).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import checks
from .attribution import alti, check_method, routes_flow, unroll
from .decoding import OPTIONS, can_decode, decode
from .engine import parallel_flags
from .errors import FlowroutesError
from .lazy import trace_lazy
from .models.loading import LoadedModel, load_model
from .routes import Routes
from .trace import LazyTrace, check_ids, tokenize, trace


@dataclass(kw_only=True)
class Generation:
    """A prompt of P tokens, an answer of K tokens, and the lazy trace of the P + K - 1 tokens prompt + answer[:-1].

    Answer token k (0-based) is predicted at trace position `position(k)` = P + k - 1. Routes and attributions are
    computed when asked and kept: a routes walk computes only the attention rows it reaches (rows are memoised by
    the trace and never computed twice), ALTI computes every row up to the last predicting position once.
    """

    model_name: str
    prompt: str  # the prompt's text (the chat template's text when `chat`)
    prompt_ids: np.ndarray  # [P] int64
    answer_ids: np.ndarray  # [K] int64 (a stop token that ended the generation is its last token)
    answer_probs: np.ndarray  # [K] float64: p(answer token k | prompt, answer[:k]), softmax of the raw logits
    tokens: list[str]  # [P + K] each token of prompt + answer as shown to people (inspection.token_display)
    answer_text: str  # the answer decoded (special tokens kept)
    stop_reason: str  # "stop" (a stop token), "length" (max_new_tokens) or "target" (a given answer)
    sampled: bool = False
    seed: int | None = None
    chat: bool = False
    trace: Any = field(repr=False)  # LazyTrace (or Trace for models with parallel blocks) of prompt + answer[:-1]
    _routes: dict[tuple[float, int], Routes] = field(default_factory=dict, repr=False)
    _alti: dict[int, np.ndarray] = field(default_factory=dict, repr=False)  # k -> [P + K - 1]

    @property
    def n_prompt(self) -> int:
        return len(self.prompt_ids)

    @property
    def n_answer(self) -> int:
        return len(self.answer_ids)

    @property
    def prompt_tokens(self) -> list[str]:
        return self.tokens[: self.n_prompt]

    @property
    def answer_tokens(self) -> list[str]:
        return self.tokens[self.n_prompt:]

    def position(self, k: int) -> int:
        """The trace position that predicts answer token k: P + k - 1."""
        return self.n_prompt + self._answer_index(k) - 1

    def _answer_index(self, k: int) -> int:
        n = self.n_answer
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not -n <= k < n:
            raise FlowroutesError(f"answer token {k!r} is out of range for an answer of {n} tokens: use 0..{n - 1}")
        return int(k) % n

    def routes(self, k: int | list[int], tau: float = 0.04) -> Routes | list[Routes]:
        """The routes (fig. 3, B.2) of the prediction of answer token k at threshold tau, or a list of them for a
        list of k (walked together). Each (k, tau) is walked once and kept."""
        checks.threshold("tau", tau)
        ks = [self._answer_index(i) for i in (k if isinstance(k, (list, tuple)) else [k])]
        todo = sorted({i for i in ks if (tau, i) not in self._routes})
        if len(todo) == 1:
            self._routes[(tau, todo[0])] = self.trace.routes(tau, self.position(todo[0]))
        elif todo:  # a lazy trace walks them together; a full one (parallel blocks) one by one
            walked = (self.trace.routes(tau, [self.position(i) for i in todo]) if isinstance(self.trace, LazyTrace)
                      else [self.trace.routes(tau, self.position(i)) for i in todo])
            for i, r in zip(todo, walked):
                self._routes[(tau, i)] = r
        got = [self._routes[(tau, i)] for i in ks]
        return got if isinstance(k, (list, tuple)) else got[0]

    def scores(self, method: str = "alti", tau: float = 0.04) -> np.ndarray:
        """[K, P + K - 1] float64: row k attributes answer token k to every token of the trace (the prompt's, then
        the answer's earlier ones; zero from position(k) + 1 on). "alti": R^L[q, :], each row sums to 1; "routes":
        the mass of the routes' flow that reached each x^0_j, each row sums to `reached(tau)[k]`."""
        check_method(method)
        n_seq = self.trace.n_tokens
        out = np.zeros((self.n_answer, n_seq))
        if method == "alti":
            todo = [k for k in range(self.n_answer) if k not in self._alti]
            if todo:
                rows = alti(self.trace, [self.position(k) for k in todo])
                for i, k in enumerate(todo):
                    self._alti[k] = np.pad(rows[i], (0, n_seq - rows.shape[1]))
            for k in range(self.n_answer):
                out[k] = self._alti[k]
            return out
        for k, r in enumerate(self.routes(list(range(self.n_answer)), tau)):
            out[k] = routes_flow(r)[0]
        return out

    def reached(self, tau: float = 0.04) -> np.ndarray:
        """[K]: the share of each answer token's routes flow that reached the embeddings (the rest stopped at nodes
        without kept in-edges)."""
        return np.array([routes_flow(r)[1] for r in self.routes(list(range(self.n_answer)), tau)])

    def matrix(self, method: str = "alti", tau: float = 0.04, *, through_answer: bool = False) -> np.ndarray:
        """[K, P]: each answer token's attribution to each prompt token (`scores` restricted to the prompt).
        `through_answer`: multi-hop, the share each token takes from earlier answer tokens passed on to the prompt
        by those tokens' own attributions (`attribution.unroll`)."""
        scores = self.scores(method, tau)
        return unroll(scores, self.n_prompt) if through_answer else scores[:, : self.n_prompt]

    def attribution(self, span: tuple[int, int] | None = None, method: str = "alti", tau: float = 0.04, *,
                    through_answer: bool = False) -> np.ndarray:
        """[P]: the mean over answer tokens a..b-1 (`span` = (a, b), default the whole answer) of their attribution
        to each prompt token (`through_answer`: see `matrix`)."""
        a, b = self.check_span(span)
        return self.matrix(method, tau, through_answer=through_answer)[a:b].mean(axis=0)

    def __repr__(self) -> str:
        from .display import generation_text

        return generation_text(self)

    def _repr_html_(self) -> str:
        """The notebook display: the prompt coloured by the whole answer's attribution (ALTI; the strongest prompt
        token at full colour, `attribution() / max`), then the answer's tokens with their probabilities."""
        import html

        scores = self.attribution(method="alti")  # [P]
        top = float(scores.max()) if scores.size and scores.max() > 0 else 1.0
        prompt = "".join(f'<span title="{s:.3f}" style="background: rgba(214, 39, 40, {s / top:.2f})">'
                         f"{html.escape(t)}</span>" for t, s in zip(self.prompt_tokens, scores))
        answer = "".join(f'<span title="p = {p:.3f}" style="border-bottom: 2px solid rgba(31, 119, 180, {p:.2f})">'
                         f"{html.escape(t)}</span>" for t, p in zip(self.answer_tokens, self.answer_probs))
        return (f'<div style="font-family: monospace; white-space: pre-wrap"><div><b>{html.escape(self.model_name)}'
                f"</b>: the prompt coloured by the answer's attribution (ALTI; hover for the scores)</div>"
                f"<div>{prompt}</div><div>answer ({self.stop_reason}; underline: probability): {answer}</div></div>")

    def check_span(self, span: tuple[int, int] | None) -> tuple[int, int]:
        """(a, b) with 0 <= a < b <= K, or one FlowroutesError line."""
        n = self.n_answer
        if span is None:
            return 0, n
        try:
            a, b = (int(x) for x in span)
        except (TypeError, ValueError):
            raise FlowroutesError(f"span must be two integers (a, b), got {span!r}") from None
        if not 0 <= a < b <= n:
            raise FlowroutesError(f"span {a}:{b} is not within the answer's {n} tokens: use a:b with 0 <= a < b <= {n}")
        return a, b


def generate(
    model: Any,
    prompt: str,
    max_new_tokens: int = 32,
    *,
    target: str | None = None,
    sample: bool = False,
    seed: int | None = None,
    temperature: float = 1.0,
    stop: list[str | int] | None = None,
    chat: bool = False,
    add_special_tokens: bool | None = None,
) -> Generation:
    """Generate an answer to `prompt` (or take `target` as the answer: teacher forcing) and return its `Generation`.

    model: a `LoadedModel` or anything `load_model` accepts. Greedy decoding unless `sample` (then softmax sampling
    at `temperature`, no top-k/top-p cut, reproducible with `seed`). Generation stops after `max_new_tokens` tokens
    or at a stop token: the tokenizer's and the model's EOS, and `stop` (token ids, or strings of one token each);
    the stop token is the answer's last token. `chat`: the prompt goes in the tokenizer's chat template as a user
    message, with the assistant's turn opened. `target`: the answer's text, tokenized without special tokens
    (`max_new_tokens`, `sample`, `stop` are then not used).

    Cost: the generation's own passes and nothing more. With a KV cache, one pass of the prompt and one pass per
    answer token, each captured by the lazy engine's hooks (`decoding.decode`): the lazy trace of prompt +
    answer[:-1] is put together from them. Models it cannot decode that way (attention that cannot be recorded, a
    sliding window shorter than the text, parallel blocks) are generated by the model's own `generate` and traced
    in one more pass. A target costs one lazily traced pass of prompt + answer[:-1], which gives its probabilities
    too. Routes and attributions are computed later, when asked.
    """
    checks.prompt(prompt)
    checks.positive_int("max_new_tokens", max_new_tokens)
    if target is not None:
        check_target(target)
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not temperature > 0:
        raise FlowroutesError(f"temperature must be a number > 0, got {temperature!r}")
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    text, prompt_ids = templated_prompt(loaded, prompt, chat, add_special_tokens)
    tr = None
    if target is not None:
        answer = torch.as_tensor(loaded.tokenizer(target, add_special_tokens=False)["input_ids"], dtype=torch.long)
        if answer.numel() == 0:
            raise FlowroutesError(f"the target {target!r} has no tokens")
        probs, tr = _forced(loaded, prompt_ids, answer)
        reason = "target"
    else:
        stops = stop_ids(loaded, stop)
        decoded = None
        if can_decode(loaded, prompt_ids.numel() + max_new_tokens - 1):
            with _seeded(loaded, seed):
                decoded = decode(loaded, prompt_ids, max_new_tokens, _chooser(sample, float(temperature)), stops)
        if decoded is not None:
            answer, probs, reason, tr = decoded
        else:
            answer, probs, reason = _generate(loaded, prompt_ids, max_new_tokens, sample, seed, float(temperature),
                                              stops)
    full = torch.cat([prompt_ids, answer])
    from .inspection import token_display

    if tr is None:  # one more pass: prompt + answer[:-1] traced lazily
        tr = trace(loaded, input_ids=full[:-1], lazy=True)
    return Generation(model_name=loaded.name, prompt=text, prompt_ids=prompt_ids.numpy(), answer_ids=answer.numpy(),
                      answer_probs=probs, tokens=token_display(loaded, full),
                      answer_text=loaded.tokenizer.decode(answer.tolist()), stop_reason=reason, sampled=sample,
                      seed=seed, chat=chat, trace=tr)


def check_target(target: str) -> str:
    """A target answer: a string with some text in it (one FlowroutesError line otherwise)."""
    if not isinstance(target, str) or not target.strip():
        raise FlowroutesError(f"the target must be the answer's text, got {target!r}: give some text to explain")
    return checks.prompt(target)


def templated_prompt(loaded: LoadedModel, prompt: str, chat: bool, add_special_tokens) -> tuple[str, torch.Tensor]:
    """(the prompt's text, its ids [P]): as given, or (`chat`) in the tokenizer's chat template as a user message
    with the assistant's turn opened."""
    if not chat:
        return prompt, tokenize(loaded, prompt, add_special_tokens)
    tok = loaded.tokenizer
    if not getattr(tok, "chat_template", None):
        raise FlowroutesError(f"{loaded.name}'s tokenizer has no chat template: generate without chat")
    messages = [{"role": "user", "content": prompt}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return text, torch.as_tensor(ids, dtype=torch.long)


def stop_ids(loaded: LoadedModel, stop: list[str | int] | None) -> list[int]:
    """The stop tokens: the tokenizer's EOS, the model's generation config's EOS, and `stop` (ids or one-token
    strings), sorted."""
    ids: set[int] = set()
    tok = loaded.tokenizer
    if tok.eos_token_id is not None:
        ids.add(int(tok.eos_token_id))
    config_eos = getattr(getattr(loaded.model, "generation_config", None), "eos_token_id", None)
    ids.update(int(i) for i in (config_eos if isinstance(config_eos, (list, tuple)) else [config_eos])
               if i is not None)
    vocab = int(loaded.model.config.vocab_size)
    if isinstance(stop, (str, int)):  # one stop token
        stop = [stop]
    for s in stop or []:
        if isinstance(s, (int, np.integer)) and not isinstance(s, bool):
            if not 0 <= int(s) < vocab:
                raise FlowroutesError(f"stop token id {s} is not in the vocabulary (0..{vocab - 1})")
            ids.add(int(s))
            continue
        if not isinstance(s, str) or not s:
            raise FlowroutesError(f"a stop token must be a token id or a non-empty string, got {s!r}")
        got = tok(s, add_special_tokens=False)["input_ids"]
        if len(got) != 1:
            raise FlowroutesError(f"stop token {s!r} is {len(got)} tokens for this tokenizer: give strings of one "
                                  "token (or token ids)")
        ids.add(int(got[0]))
    return sorted(ids)


def _generate(loaded: LoadedModel, prompt_ids: torch.Tensor, max_new_tokens: int, sample: bool, seed: int | None,
              temperature: float, stops: list[int]) -> tuple[torch.Tensor, np.ndarray, str]:
    """(answer ids [K], their probabilities [K] from the raw logits, stop reason) by the model's `generate`."""
    from transformers import GenerationConfig

    model = loaded.model
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=sample, temperature=temperature if sample
                              else None, top_k=None, top_p=None, eos_token_id=stops or None,
                              pad_token_id=stops[0] if stops else 0, output_logits=True, return_dict_in_generate=True)
    device = next(model.parameters()).device
    ids = prompt_ids[None].to(device)
    with _seeded(loaded, seed), torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
    answer = out.sequences[0, prompt_ids.numel():].cpu()
    logits = torch.stack([step[0] for step in out.logits]).double().cpu()  # [K, V]
    probs = torch.softmax(logits, dim=-1)[torch.arange(answer.numel()), answer].numpy()
    reason = "stop" if answer.numel() and int(answer[-1]) in stops else "length"
    return answer, probs, reason


def _forced(loaded: LoadedModel, prompt_ids: torch.Tensor, answer: torch.Tensor):
    """(p(answer[k] | prompt, answer[:k]) [K], the trace of prompt + answer[:-1] or None): one lazily traced pass
    of prompt + answer[:-1] gives both; a model with parallel blocks (traced in full) gets a plain pass for the
    probabilities and its trace later."""
    ids = torch.cat([prompt_ids, answer[:-1]])
    n_prompt = prompt_ids.numel()
    if any(parallel_flags(loaded.adapter)):
        device = next(loaded.model.parameters()).device
        with torch.no_grad():
            logits, tr = loaded.model(input_ids=ids[None].to(device)).logits[0].float(), None  # [T, V]
    else:
        check_ids(loaded, ids)
        keep = torch.arange(n_prompt - 1, ids.numel())[None]  # [1, K]: the LM head runs where the answer is predicted
        traces, logits = trace_lazy(loaded, [loaded.tokenizer.decode(ids.tolist())], [ids], OPTIONS,
                                    with_logits=True, keep=keep)
        tr, logits = traces[0], logits[0]  # [K, V]
        tr.meta["predictions"] = "answer"  # as a decoded generation's trace (decoding.Steps.lazy)
    rows = logits[-answer.numel():].double().cpu()  # [K, V] the raw logits at positions P - 1 ..
    return torch.softmax(rows, dim=-1)[torch.arange(answer.numel()), answer].numpy(), tr


def _chooser(sample: bool, temperature: float):
    """logits [V] float32 -> the next token: the argmax (greedy), or a draw from softmax(logits / temperature)."""
    if not sample:
        return lambda logits: int(torch.argmax(logits))
    return lambda logits: int(torch.multinomial(torch.softmax(logits.double() / temperature, dim=-1), 1))


@contextlib.contextmanager
def _seeded(loaded: LoadedModel, seed: int | None):
    """torch's random state forked (the caller's is left as it was), seeded with `seed` when given."""
    device = next(loaded.model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if seed is not None:
            torch.manual_seed(seed)
        yield
