"""A time limit on a piece of work, checked where the work can stop cleanly: at every block of a forward pass,
every layer of a routes walk, every token of a display. The server sets one per request; the library runs
unlimited unless a caller sets one. Starts no thread and sends no signal: a check raises, the `with` blocks
and locks around it unwind.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator

from .errors import FlowroutesError

_LIMIT: contextvars.ContextVar[tuple[float, float] | None] = contextvars.ContextVar("flowroutes_deadline", default=None)


class TimeLimitExceeded(FlowroutesError):
    """The work ran past its time limit and was stopped (the server answers HTTP 503)."""

    def __init__(self, seconds: float):
        super().__init__(f"this request ran past the server's limit of {seconds:g} s and was stopped: shorten the "
                         "prompt, raise the threshold, or restart the server with a larger --time-limit")
        self.seconds = seconds


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Work inside the block raises `TimeLimitExceeded` at its next `check()` after `seconds` (None: no limit).
    A limit already set outside is kept when it ends sooner."""
    if seconds is None:
        yield
        return
    end = time.monotonic() + seconds
    outer = _LIMIT.get()
    token = _LIMIT.set(outer if outer is not None and outer[0] <= end else (end, seconds))
    try:
        yield
    finally:
        _LIMIT.reset(token)


def check() -> None:
    """Raise `TimeLimitExceeded` if the current time limit has passed."""
    limit = _LIMIT.get()
    if limit is not None and time.monotonic() > limit[0]:
        raise TimeLimitExceeded(limit[1])


def remaining() -> float | None:
    """Seconds left under the current limit (None: no limit; 0 once it has passed)."""
    limit = _LIMIT.get()
    return None if limit is None else max(0.0, limit[0] - time.monotonic())
