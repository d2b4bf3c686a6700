"""The explorer's shared state: the configured models (loaded once, each behind its own lock) and a small LRU
of traces per (model, prompt), so that threshold and position changes never rerun the model.

Only names configured on the command line or in the config file map to models; nothing else reaches the disk.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import FlowroutesError


class PromptTooLong(FlowroutesError):
    """The prompt is over the configured limit (the server answers HTTP 413)."""


class NotFound(FlowroutesError):
    """The browser asked for something this server does not serve (HTTP 404)."""


class UnknownModel(NotFound):
    """The browser asked for a model that is not configured (HTTP 404)."""


@dataclass
class Settings:
    """What `flowroutes serve` was told. `models` maps a display name to what `load_model` accepts
    (None = the embedded default) or to an already loaded `LoadedModel` (tests, the API)."""

    models: dict[str, Any]
    max_prompt_tokens: int = 256
    max_prompt_chars: int = 4000
    cache_size: int = 4
    top_k: int = 10
    analyses: list[str] = field(default_factory=list)  # folders written by `flowroutes analyze --out DIR`


@dataclass
class Entry:
    """One cached prompt: its Trace (all importances) and, once an inspect view asked, its Internals."""

    trace: Any
    internals: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class ModelSlot:
    """One configured model: loaded on first use, traced one prompt at a time (the capture hooks the model)."""

    def __init__(self, name: str, spec: Any, settings: Settings):
        self.name, self.spec, self.settings = name, spec, settings
        self.lock = threading.Lock()  # serialises loading and every forward pass on this model
        self._loaded = None
        self._cache: OrderedDict[str, Entry] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.forward_passes = 0  # how many traces were computed (the cache saves the rest)

    @property
    def loaded(self):
        if self._loaded is None:
            with self.lock:
                if self._loaded is None:
                    from ..models import LoadedModel, load_model

                    self._loaded = self.spec if isinstance(self.spec, LoadedModel) else load_model(self.spec)
        return self._loaded

    def _check_length(self, prompt: str) -> None:
        if not isinstance(prompt, str) or not prompt.strip():
            raise FlowroutesError("the prompt is empty: type some text whose next token the model should predict")
        limit = self.settings.max_prompt_chars
        if len(prompt) > limit:
            raise PromptTooLong(f"the prompt has {len(prompt)} characters; this server accepts at most {limit}: "
                                "shorten it (or restart with a larger --max-prompt-chars)")

    def entry(self, prompt: str) -> Entry:
        """The cached entry of `prompt`, tracing it (one forward pass) if it is not cached."""
        self._check_length(prompt)
        with self._cache_lock:
            hit = self._cache.get(prompt)
            if hit is not None:
                self._cache.move_to_end(prompt)
                return hit
        loaded = self.loaded
        with self.lock:
            with self._cache_lock:  # another request may have traced it while we waited
                hit = self._cache.get(prompt)
            if hit is not None:
                return hit
            from ..trace import tokenize, trace

            ids = tokenize(loaded, prompt)
            limit = self.settings.max_prompt_tokens
            if ids.numel() > limit:
                raise PromptTooLong(f"the prompt has {ids.numel()} tokens; this server accepts at most {limit}: "
                                    "shorten it (or restart with a larger --max-prompt-tokens)")
            tr = trace(loaded, prompt, top_k=self.settings.top_k)
            self.forward_passes += 1
            made = Entry(trace=tr)
        with self._cache_lock:
            self._cache[prompt] = made
            self._cache.move_to_end(prompt)
            while len(self._cache) > max(1, self.settings.cache_size):
                self._cache.popitem(last=False)
        return made

    def internals(self, prompt: str):
        """The `Internals` of `prompt` (a second, hooked forward pass, done once per cached prompt)."""
        from .internals import capture_internals

        got = self.entry(prompt)
        if got.internals is None:
            with self.lock:
                if got.internals is None:
                    got.internals = capture_internals(self.loaded, np.asarray(got.trace.input_ids))
        return got.internals


class Store:
    """All configured models by name."""

    def __init__(self, settings: Settings):
        if not settings.models:
            raise FlowroutesError("no model configured: pass --model M (or a config file listing models)")
        self.settings = settings
        self.slots = {name: ModelSlot(name, spec, settings) for name, spec in settings.models.items()}
        self.default = next(iter(self.slots))

    def slot(self, name: str | None) -> ModelSlot:
        key = self.default if name in (None, "") else name
        if key not in self.slots:
            raise UnknownModel(f"model {name!r} is not configured on this server; choose one of: "
                               + ", ".join(self.slots))
        return self.slots[key]
