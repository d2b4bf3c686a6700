"""The checks of user input that several entry points share (API, CLI, web, analyses, patching), one message per
check, each raising `FlowroutesError` with a line that says what to do."""

from __future__ import annotations

from numbers import Integral, Real

from .errors import FlowroutesError


def threshold(name: str, value: float | None) -> float | None:
    """A route threshold tau: a number in (0, 1); None passes (it means "the default")."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 < value < 1.0:
        raise FlowroutesError(f"{name} must be in (0, 1), got {value!r}: try 0.04 (the paper's default)")
    return float(value)


def positive_int(name: str, value: int) -> int:
    """A count or a size: an integer of 1 or more."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise FlowroutesError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def prompt(text: str) -> str:
    """A prompt: a string with some text in it, all of it encodable as UTF-8 (no lone surrogate)."""
    if not isinstance(text, str):
        raise FlowroutesError(f"the prompt must be a string, got {type(text).__name__}")
    if not text.strip():
        raise FlowroutesError("the prompt is empty: give some text whose next-token prediction should be explained")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise FlowroutesError(f"the prompt holds a lone surrogate U+{ord(text[exc.start]):04X} at character "
                              f"{exc.start}, which is half of a character and not text: remove it") from None
    return text
