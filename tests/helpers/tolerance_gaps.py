"""Measures the gaps behind the tolerances of tests/helpers/tolerances.py: a pytest plugin that records, at every
comparison with a tolerance, the largest absolute and relative gap it saw and the test line that asked.

Never loaded by default. Run the tests with it under each CI setting, then summarise:

    TOLERANCE_GAPS=gaps.jsonl TOLERANCE_SETTING=default-1 ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1 \\
        python -m pytest -p tests.helpers.tolerance_gaps tests/integration/test_fast_paths.py
    python -m tests.helpers.tolerance_gaps gaps.jsonl

It wraps np.testing.assert_allclose, np.testing.assert_array_less, np.allclose, torch.allclose, pytest.approx's
comparisons and the tests' own difference helpers (`rel_err`, `max_diff`); a bare `abs(a - b) < bound` is not
seen, which is one more reason the tests spell their bounds with these.
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
HELPERS = ("rel_err", "max_diff")


def _caller() -> str:
    """The innermost test line (tests/, outside this file) on the stack: "path:line"."""
    frame = sys._getframe(1)
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if path != Path(__file__).resolve() and ROOT / "tests" in path.parents:
            return f"{path.relative_to(ROOT).as_posix()}:{frame.f_lineno}"
        frame = frame.f_back
    return "?"


def _write(record: dict) -> None:
    record |= {"site": _caller(), "setting": os.environ.get("TOLERANCE_SETTING", "")}
    with open(os.environ.get("TOLERANCE_GAPS", "tolerance-gaps.jsonl"), "a") as out:
        out.write(json.dumps(record) + "\n")


def record_gap(actual, desired) -> None:
    """The largest |actual - desired| and |actual - desired| / |desired| over finite elements."""
    try:
        a, d = np.asarray(actual, dtype=np.float64), np.asarray(desired, dtype=np.float64)
        gap = np.abs(a - d)
    except (TypeError, ValueError):
        return
    finite = np.isfinite(gap)
    if not finite.any():
        return
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(np.abs(d) > 0, gap / np.abs(d), np.where(gap > 0, np.inf, 0.0))
    _write({"abs": float(gap[finite].max()), "rel": float(rel[finite].max())})


def _wrap_comparisons() -> None:
    import torch
    from _pytest import approx

    def recording(original, convert=lambda x: x):
        def compare(a, b, *args, **kwargs):
            record_gap(convert(a), convert(b))
            return original(a, b, *args, **kwargs)
        return compare

    np.testing.assert_allclose = recording(np.testing.assert_allclose)
    np.allclose = recording(np.allclose)
    torch.allclose = recording(torch.allclose, lambda t: t.detach().double().cpu().numpy())
    less = np.testing.assert_array_less

    def assert_array_less(x, y, *args, **kwargs):
        _write({"abs": float(np.max(np.asarray(x, dtype=np.float64))), "rel": 0.0})
        return less(x, y, *args, **kwargs)

    np.testing.assert_array_less = assert_array_less
    for cls in (approx.ApproxScalar, approx.ApproxSequenceLike, approx.ApproxMapping, approx.ApproxNumpy):
        def equal(self, actual, _original=cls.__eq__):
            try:
                pairs = ([(actual, self.expected)] if isinstance(self, approx.ApproxScalar)
                         else list(self._yield_comparisons(actual)))
                record_gap([float(a) for a, _ in pairs],
                           [float(getattr(e, "expected", e)) for _, e in pairs])
            except (TypeError, ValueError, AttributeError, KeyError, IndexError):
                pass
            return _original(self, actual)
        cls.__eq__ = equal


def pytest_configure(config) -> None:
    _wrap_comparisons()


def pytest_collection_modifyitems(session, config, items) -> None:
    """Wrap each test module's own difference helpers, so that what they return is recorded too."""
    for module in {id(i.module): i.module for i in items if getattr(i, "module", None)}.values():
        for name in HELPERS:
            helper = getattr(module, name, None)
            if callable(helper) and not hasattr(helper, "recorded"):
                def recorded(*args, _helper=helper, **kwargs):
                    value = _helper(*args, **kwargs)
                    _write({"abs": float(value), "rel": 0.0})
                    return value
                recorded.recorded = True
                setattr(module, name, recorded)


def summarise(path: str) -> list[str]:
    """One line per test line: its worst absolute and relative gap and the settings it was measured under."""
    worst = defaultdict(lambda: {"abs": 0.0, "rel": 0.0, "settings": set()})
    for line in Path(path).read_text().splitlines():
        r = json.loads(line)
        w = worst[r["site"]]
        w["abs"], w["rel"] = max(w["abs"], r["abs"]), max(w["rel"], r["rel"])
        w["settings"].add(r["setting"])
    return [f"{site}: abs {w['abs']:.3g}, rel {w['rel']:.3g} ({len(w['settings'])} settings)"
            for site, w in sorted(worst.items())]


if __name__ == "__main__":
    print("\n".join(summarise(sys.argv[1])))
