"""Text for people: the one place that says how a number, an estimate, a list or a table of a summary reads in the
terminal and in the reports, and how a command says what it wrote where.

Formats only: computes no statistic, reads and writes no file. Imports numpy alone (any module may use it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

#: a list (or a table) in the terminal shows at most this many items (rows), then '… and N more'
ITEMS, ROWS = 12, 8
#: a value longer than this goes on lines of its own instead of after its key
WIDTH = 110


def number(x: float | None) -> str:
    """A number for people: three decimals below 10 (0.086, -0.013, 1.000), three or four significant digits
    above (90.7, 110, 2173, 12300), three significant digits below 0.001 (0.000123); never 'nan'."""
    if x is None or not np.isfinite(x):
        return "not computed"
    x = float(x) + 0.0  # -0.0 -> 0.0
    if x != 0 and abs(x) < 1e-3:
        return f"{x:.3g}"
    for limit, spec in ((10, ".3f"), (100, ".1f"), (10_000, ".0f")):
        text = format(x, spec)
        if abs(float(text)) < limit:
            return text
    digits = int(np.floor(np.log10(abs(x))))
    return f"{round(x, 2 - digits):.0f}"


def counted(n: int, units: int, unit: str) -> str:
    """'n=1,306 in 48 texts', or 'n=48 examples' when every row is its own unit."""
    unit = unit[:-1] if units == 1 and unit.endswith("s") else unit  # 1 text, 1 example
    return f"n={n:,} {unit}" if n == units else f"n={n:,} in {units:,} {unit}"


def interval(low: float, high: float, n: int, units: int, unit: str) -> str:
    """'[0.066, 0.109]', or why there is none ('no interval: n=1 text')."""
    if np.isfinite(low) and np.isfinite(high):
        return f"[{number(low)}, {number(high)}]"
    if units <= 1:
        return f"no interval: {counted(n, units, unit)}"
    return "no interval: no resample gave a value"


def estimate(value: float, low: float, high: float, n: int, units: int, unit: str) -> str:
    """'0.759 [0.717, 0.803] (n=348 in 20 texts)': the value, its 95% interval, its n and the unit resampled."""
    if not np.isfinite(value):
        return f"not computed ({counted(n, units, unit)})"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{number(value)} ({interval(low, high, n, units, unit)})"
    return f"{number(value)} {interval(low, high, n, units, unit)} ({counted(n, units, unit)})"


def is_estimate(value) -> bool:
    """An Estimate, or one read back from JSON ({"value", "ci95", "n", ...})."""
    return hasattr(value, "interval_text") or (isinstance(value, Mapping) and set(value) >= {"value", "ci95", "n"})


def _estimate_text(value) -> str:
    if not isinstance(value, Mapping):
        return str(value)  # Estimate.__str__, which is `estimate` above
    nan = float("nan")
    low, high = (list(value.get("ci95") or []) + [None, None])[:2]
    n = int(value["n"])
    return estimate(nan if value["value"] is None else float(value["value"]), nan if low is None else float(low),
                    nan if high is None else float(high), n, int(value.get("units", n)), str(value.get("unit", "")))


def scalar(value) -> str:
    """A single value: counts with thousands separators, other numbers by `number`, yes/no, '-' for None."""
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return number(float(value))
    return str(value)


def count(n: int, thing: str) -> str:
    """'1 figure', '3 figures' (thing in the singular; an 's' is added)."""
    return f"{n:,} {thing}" if n == 1 else f"{n:,} {thing}s"


def more(left_out: int) -> str:
    """'… and 12 more' (what a cut list or table left out)."""
    return f"… and {left_out:,} more"


def _is_list(value) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


def plain(value) -> str:
    """Any summary value as one line: an estimate, a scalar, 'key: value; ...' for a dict, comma-separated items
    (the first ITEMS, then '… and N more') for a list; a list inside a list in parentheses; 'none' when empty."""
    if is_estimate(value):
        return _estimate_text(value)
    if isinstance(value, Mapping):
        return "; ".join(f"{label(k)}: {plain(v)}" for k, v in value.items()) or "none"
    if _is_list(value):
        items = list(value)
        if not items:
            return "none"
        shown = [f"({plain(v)})" if _is_list(v) else plain(v) for v in items[:ITEMS]]
        return ", ".join(shown + ([more(len(items) - ITEMS)] if len(items) > ITEMS else []))
    return scalar(value)


def label(key) -> str:
    """A summary key for people: 'mean_active_heads_task' -> 'mean active heads task'."""
    return str(key).replace("_", " ")


def table(rows: list[Mapping], indent: str = "") -> list[str]:
    """Rows of dicts as aligned text columns under a header of their keys: the first ROWS rows, then
    '… and N more'."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    shown = [[plain(r.get(k, "-")) for k in keys] for r in rows[:ROWS]]
    widths = [max(len(label(k)), *(len(row[i]) for row in shown)) for i, k in enumerate(keys)]
    out = [indent + "  ".join(label(k).ljust(w) for k, w in zip(keys, widths)).rstrip()]
    out += [indent + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in shown]
    if len(rows) > ROWS:
        out.append(indent + more(len(rows) - ROWS))
    return out


def entry(key, value, indent: str = "  ") -> list[str]:
    """One summary entry as lines: 'key: value' when it fits on a line; otherwise 'key:' and below it a table (a
    list of dicts), one line per item (a dict), or the items a line can hold and '… and N more' (a list)."""
    text = plain(value)
    if len(indent) + len(label(key)) + 2 + len(text) <= WIDTH or not (isinstance(value, Mapping) or _is_list(value)) \
            or is_estimate(value):
        return [f"{indent}{label(key)}: {text}"]
    inner = indent + "  "
    if isinstance(value, Mapping):
        items = list(value.items())
        lines = [line for k, v in items[:ROWS * 2] for line in entry(k, v, inner)]
        return [f"{indent}{label(key)}:", *lines, *([inner + more(len(items) - ROWS * 2)] if len(items) > ROWS * 2
                                                    else [])]
    items = list(value)
    if all(isinstance(v, Mapping) and not is_estimate(v) for v in items):
        return [f"{indent}{label(key)} ({len(items):,}):", *table(items, inner)]
    kept: list[str] = []
    for v in items:
        piece = f"({plain(v)})" if _is_list(v) else plain(v)
        if kept and len(inner) + len(", ".join([*kept, piece])) + 20 > WIDTH:
            break
        kept.append(piece)
    left = len(items) - len(kept)
    return [f"{indent}{label(key)} ({len(items):,}):", inner + ", ".join(kept + ([more(left)] if left else []))]


def summary_lines(summary: Mapping, indent: str = "  ") -> list[str]:
    """Every entry of a summary, by `entry`."""
    return [line for k, v in summary.items() for line in entry(k, v, indent)]


def token(text: str) -> str:
    """A token (or any model text) for people: in double quotes, newlines and tabs written as \\n and \\t."""
    return '"' + text.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r") + '"'


def wrote(path: Path | str, what: str) -> str:
    """'wrote routes.json (routes of position 14, 37 edges) → out/routes.json': one line per file written."""
    path = Path(path)
    return f"wrote {path.name} ({what}) → {path}"


def wrote_many(paths: Iterable[Path], thing: str, how: str, folder: Path | str) -> str:
    """One line for several files of a kind: 'wrote 3 figures as PNG and SVG (a, b, c) → out/'."""
    names = sorted({Path(p).stem for p in paths})
    shown = ", ".join(names[:ITEMS]) + (f", {more(len(names) - ITEMS)}" if len(names) > ITEMS else "")
    return f"wrote {count(len(names), thing)} {how} ({shown}) → {Path(folder)}/"
