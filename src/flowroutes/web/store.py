"""The explorer's shared state: the configured models (loaded once, each behind its own lock) and a cache of
traces per (model, prompt), bounded in bytes, so that threshold and position changes never rerun the model.

Only names configured on the command line or in the config file map to models; nothing else reaches the disk.
Requests that need a model's forward pass queue for it; beyond `Settings.max_queue` of them per model the
server answers 503 at once, so that waiting requests never hold every worker thread.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

import numpy as np

from .. import checks, deadline
from ..errors import FlowroutesError

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_CACHE_SIZE = 10_000  # --cache-size above this is refused: the byte budget is the real bound


class PromptTooLong(FlowroutesError):
    """The prompt is over the configured limit (the server answers HTTP 413)."""


class NotFound(FlowroutesError):
    """The browser asked for something this server does not serve (HTTP 404)."""


class UnknownModel(NotFound):
    """The browser asked for a model that is not configured (HTTP 404)."""


class Busy(FlowroutesError):
    """Too many requests wait for the same work (HTTP 503 with Retry-After)."""

    def __init__(self, message: str, retry_after: int = 5):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Settings:
    """What `flowroutes serve` was told. `models` maps a display name to what `load_model` accepts
    (None = the embedded default) or to an already loaded `LoadedModel` (tests, the API)."""

    models: dict[str, Any]
    max_prompt_tokens: int = 256
    max_prompt_chars: int = 4000
    cache_size: int = 4  # at most this many traced prompts per model ...
    cache_bytes: int = 1 << 30  # ... and at most this many bytes of traces and internals per model
    top_k: int = 10
    analyses: list[str] = field(default_factory=list)  # folders written by `flowroutes analyze --out DIR`
    min_threshold: float = 0.005  # lower route thresholds are refused (the page's slider stops there)
    max_edges: int = 5000  # a routes answer keeps at most this many edges (the strongest) and says so
    max_new_tokens: int = 32  # generate mode: the longest answer a request may ask for
    max_render_edges: int = 2000  # SVG / PNG downloads of larger routes are refused
    max_drawn_edges: int = 1500  # the page draws this many edges one by one (clickable); the rest as one path
    max_render_pixels: int = 16_000_000  # a PNG wider than this is drawn at a lower resolution
    render_wait_s: float = 30.0  # one picture is drawn at a time; a request waits at most this long to start
    max_queue: int = 8  # requests per model that may wait for (or hold) its forward pass; beyond: HTTP 503
    time_limit_s: float | None = 60.0  # a request still working (or waiting) after this long is stopped: HTTP 503
    max_body_bytes: int | None = None  # request bodies; None: enough for two prompts of max_prompt_chars
    allowed_hosts: list[str] = field(default_factory=lambda: list(LOOPBACK_HOSTS))  # Host headers; "*": any
    token: str | None = None  # when set, every request must carry it (cookie, ?token= or Authorization)

    @property
    def body_limit(self) -> int:
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        return max(65_536, 16 * self.max_prompt_chars + 4096)  # JSON may spend 6 bytes on one character


@contextlib.contextmanager
def acquired(lock: threading.Lock, what: str):
    """Hold `lock`, waiting at most what is left of the request's time limit; past it the request is refused as
    busy (HTTP 503) instead of waiting behind work that may never end."""
    wait = deadline.remaining()
    if not lock.acquire(timeout=-1 if wait is None else wait):
        raise Busy(f"{what} has been busy with other requests for longer than this request may wait: "
                   "try again shortly", retry_after=5)
    try:
        deadline.check()
        yield
    finally:
        lock.release()


def nbytes(obj: Any) -> int:
    """Bytes held by the numpy arrays of a dataclass (a Trace, Internals), lists of arrays included."""
    if obj is None:
        return 0
    total = 0
    values = [getattr(obj, f.name) for f in fields(obj)] if is_dataclass(obj) else list(vars(obj).values())
    for value in values:
        if isinstance(value, np.ndarray):
            total += value.nbytes
        elif isinstance(value, (list, tuple)):
            total += sum(v.nbytes for v in value if isinstance(v, np.ndarray))
    return total


@dataclass
class Entry:
    """One cached prompt: its Trace (all importances) and, once an inspect view asked, its Internals."""

    trace: Any
    internals: Any = None
    display: list[str] | None = None  # each token as the page shows it (`ModelSlot.display`), once asked
    lock: threading.Lock = field(default_factory=threading.Lock)  # computes the internals once

    @property
    def nbytes(self) -> int:
        return nbytes(self.trace) + nbytes(self.internals)


class ModelSlot:
    """One configured model: loaded on first use, traced one prompt at a time (the capture hooks the model).

    Each prompt is traced once: concurrent requests for a prompt being traced wait for that trace. Every request
    that waits for the model counts against `max_queue`; the cache holds at most `cache_bytes` (LRU)."""

    def __init__(self, name: str, spec: Any, settings: Settings):
        self.name, self.spec, self.settings = name, spec, settings
        self.lock = threading.Lock()  # serialises loading and every forward pass on this model
        self._loaded = None
        self._cache: OrderedDict[str, Entry] = OrderedDict()
        self._generations: OrderedDict[tuple[str, int], Any] = OrderedDict()  # (prompt, N) -> Generation, LRU
        self._cache_lock = threading.Lock()  # guards _cache, _pending, waiting
        self._pending: dict[str, Future] = {}  # prompts being traced now
        self.waiting = 0  # requests waiting for (or holding) this model's forward pass
        self._seconds_per_pass = 1.0  # running estimate, for Retry-After
        self.forward_passes = 0  # how many traces were computed (the cache saves the rest)

    @property
    def loaded(self):
        if self._loaded is None:
            with self.holding():
                if self._loaded is None:
                    from ..models import LoadedModel, load_model

                    self._loaded = self.spec if isinstance(self.spec, LoadedModel) else load_model(self.spec)
        return self._loaded

    def is_named(self, name: str) -> bool:
        """Whether a file naming `name` means this model: its page name, what it was loaded from, or (once loaded)
        the name its traces carry. Loads nothing."""
        loaded = self._loaded or (self.spec if not isinstance(self.spec, str) else None)
        return name in (self.name, self.spec) or getattr(loaded, "name", None) == name

    @property
    def cached_bytes(self) -> int:
        with self._cache_lock:
            return sum(e.nbytes for e in self._cache.values())

    def _check_length(self, prompt: str) -> None:
        checks.prompt(prompt)
        limit = self.settings.max_prompt_chars
        if len(prompt) > limit:
            raise PromptTooLong(f"the prompt has {len(prompt)} characters; this server accepts at most {limit}: "
                                "shorten it (or restart with a larger --max-prompt-chars)")

    # --- the queue ----------------------------------------------------------------------------------------
    def _admit(self) -> None:
        """Count one more request waiting for the model, or refuse it (503) when the queue is full.
        The caller holds _cache_lock."""
        limit = max(1, self.settings.max_queue)
        if self.waiting >= limit:
            retry = int(min(60, max(1, math.ceil(self._seconds_per_pass * self.waiting))))
            raise Busy(f"model {self.name} is busy with {self.waiting} requests: try again in {retry} s", retry)
        self.waiting += 1

    def _leave(self) -> None:
        with self._cache_lock:
            self.waiting -= 1

    def _timed(self, work):
        start = time.perf_counter()
        out = work()
        self._seconds_per_pass = 0.7 * self._seconds_per_pass + 0.3 * (time.perf_counter() - start)
        return out

    # --- the cache ----------------------------------------------------------------------------------------
    def _store(self, prompt: str, made: Entry) -> None:
        """Cache `made` unless it alone is over the byte budget; evict the least recently used beyond the limits.
        The caller holds _cache_lock."""
        budget, count = self.settings.cache_bytes, max(1, min(self.settings.cache_size, MAX_CACHE_SIZE))
        if made.nbytes > budget:
            self._cache.pop(prompt, None)
            return
        self._cache[prompt] = made
        self._cache.move_to_end(prompt)
        total = sum(e.nbytes for e in self._cache.values())
        while len(self._cache) > count or total > budget:
            _, old = self._cache.popitem(last=False)
            total -= old.nbytes

    def entry(self, prompt: str) -> Entry:
        """The cached entry of `prompt`, tracing it (one forward pass) if it is not cached."""
        self._check_length(prompt)
        with self._cache_lock:
            hit = self._cache.get(prompt)
            if hit is not None:
                self._cache.move_to_end(prompt)
                return hit
            self._admit()
            job = self._pending.get(prompt)
            owner = job is None
            if owner:
                job = self._pending[prompt] = Future()
        try:
            if not owner:  # someone traces this prompt now: wait for their answer (or their error)
                try:
                    return job.result(timeout=deadline.remaining())
                except FutureTimeout:
                    raise Busy(f"model {self.name} is still tracing this prompt for another request: try again "
                               "shortly") from None
            try:
                made = self._trace(prompt)
            except BaseException as exc:
                with self._cache_lock:
                    del self._pending[prompt]
                job.set_exception(exc)
                raise
            with self._cache_lock:  # cached and no longer pending in one step: no window for a second trace
                self._store(prompt, made)
                del self._pending[prompt]
            job.set_result(made)
            return made
        finally:
            self._leave()

    def _trace(self, prompt: str) -> Entry:
        loaded = self.loaded
        with self.holding():
            from ..trace import tokenize, trace

            ids = tokenize(loaded, prompt)
            limit = self.settings.max_prompt_tokens
            if ids.numel() > limit:
                raise PromptTooLong(f"the prompt has {ids.numel()} tokens; this server accepts at most {limit}: "
                                    "shorten it (or restart with a larger --max-prompt-tokens)")
            tr = self._timed(lambda: trace(loaded, prompt, top_k=self.settings.top_k))
            self.forward_passes += 1
        return Entry(trace=tr)

    def display(self, tr) -> list[str]:
        """Each token of the trace `tr` as the page shows it (`inspection.token_display`): kept in its cache entry
        when `tr` is the cached trace of its prompt, computed afresh otherwise."""
        from ..inspection import token_display

        with self._cache_lock:
            hit = self._cache.get(tr.prompt)
        if hit is None or hit.trace is not tr:
            return token_display(self.loaded, np.asarray(tr.input_ids))
        if hit.display is None:
            hit.display = token_display(self.loaded, np.asarray(tr.input_ids))
        return hit.display

    def internals(self, prompt: str):
        """The `Internals` of `prompt` (a second, hooked forward pass, done once per cached prompt)."""
        from ..inspection import capture_internals

        got = self.entry(prompt)
        if got.internals is not None:
            return got.internals
        with self._cache_lock:
            self._admit()
        try:
            with acquired(got.lock, f"model {self.name}"):  # one capture per entry; the others wait for it
                if got.internals is None:
                    with self.holding():
                        it = self._timed(lambda: capture_internals(self.loaded, np.asarray(got.trace.input_ids)))
                    got.internals = it
                    with self._cache_lock:
                        if self._cache.get(prompt) is got:
                            self._store(prompt, got)  # the entry grew: evict by its new size
            return got.internals
        finally:
            self._leave()


    def generation(self, prompt: str, max_new_tokens: int, **options: Any) -> tuple[Any, bool]:
        """(the `Generation` of `prompt` with at most `max_new_tokens` tokens, whether this call made it); `options`
        are `flowroutes.generate`'s keywords (target, sample, seed, temperature, stop, chat), checked by the caller.
        Each is generated once per (prompt, N, options) and kept (at most `cache_size` per model, least recently
        used dropped); requests for one being made wait for the model, then take it. Limits are checked before any
        work: the prompt's length (413, the chat template's text when `chat`), `max_new_tokens` (422; not used with
        a given answer) and a given answer's tokens (413, at most `Settings.max_new_tokens`)."""
        self._check_length(prompt)
        limit = self.settings.max_new_tokens
        target = options.get("target")
        if target is not None:  # a given answer has its own length (checked below): max_new_tokens is not used
            max_new_tokens = limit
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens <= limit:
            raise FlowroutesError(f"max_new_tokens must be 1..{limit} on this server, got {max_new_tokens!r}: ask for "
                                  "fewer tokens (or restart with a larger --max-new-tokens)")
        key = (prompt, max_new_tokens, tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                                                     for k, v in options.items())))

        def work(loaded):
            from ..generation import generate, templated_prompt

            with self._cache_lock:
                hit = self._generations.get(key)  # made by a request that held the model before this one
            if hit is not None:
                return hit, False
            # the prompt as the model reads it (in the chat template when `chat`); no forward pass yet
            n_tokens = templated_prompt(loaded, prompt, bool(options.get("chat")), None)[1].numel()
            if n_tokens > self.settings.max_prompt_tokens:
                raise PromptTooLong(f"the prompt has {n_tokens} tokens; this server accepts at most "
                                    f"{self.settings.max_prompt_tokens}: shorten it (or restart with a larger "
                                    "--max-prompt-tokens)")
            if target is not None:
                n_target = len(loaded.tokenizer(target, add_special_tokens=False)["input_ids"])
                if n_target > limit:
                    raise PromptTooLong(f"the given answer has {n_target} tokens; this server explains at most "
                                        f"{limit}: shorten it (or restart with a larger --max-new-tokens)")
            made = generate(loaded, prompt, max_new_tokens, **options)
            self.forward_passes += 1
            return made, True

        with self._cache_lock:
            hit = self._generations.get(key)
            if hit is not None:
                self._generations.move_to_end(key)
                return hit, False
        made, new = self.exclusive(work)
        with self._cache_lock:
            self._generations[key] = made
            self._generations.move_to_end(key)
            while len(self._generations) > max(1, min(self.settings.cache_size, MAX_CACHE_SIZE)):
                self._generations.popitem(last=False)
        return made, new

    def holding(self):
        """This model's lock (loading, forward passes, anything that hooks or changes the model), waited for at
        most until the request's time limit."""
        return acquired(self.lock, f"model {self.name}")

    def exclusive(self, work):
        """Run `work(loaded)` holding this model's lock (it may hook the model), counted against the queue."""
        loaded = self.loaded
        with self._cache_lock:
            self._admit()
        try:
            with self.holding():
                return self._timed(lambda: work(loaded))
        finally:
            self._leave()


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
