"""Bootstrap intervals for the analyses: every frequency, mean and difference is reported with its n and a 95%
interval, resampling whole units (texts or task examples), since predictions of one text are not independent.

Pure numpy; no model, no I/O. Shapes: N rows, K statistics per row, D units (clusters), B bootstrap replicates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import formatting

N_BOOT = 2000  # the one bootstrap setting of every interval (issue 19: 2000 unless a row says why not)
LEVEL = 0.95


def n_boot_of(data: dict) -> int:
    """The bootstrap count a summary ran with (its data's "boot" entry), for the claims built on it."""
    return int(data.get("boot", {}).get("n_boot", N_BOOT))


@dataclass(frozen=True)
class Estimate:
    """A statistic with its bootstrap interval: `value` [low, high] over `n` rows from `units` resampled units."""

    value: float
    low: float
    high: float
    n: int
    units: int
    unit: str = "texts"

    def excludes(self, x: float = 0.0) -> bool:
        """The interval lies strictly on one side of `x`."""
        return bool(self.low > x or self.high < x)

    def above(self, x: float = 0.0) -> bool:
        return bool(self.low > x)

    def below(self, x: float = 0.0) -> bool:
        return bool(self.high < x)

    def to_dict(self) -> dict:
        return {"value": _r(self.value), "ci95": [_r(self.low), _r(self.high)], "n": self.n, "units": self.units,
                "unit": self.unit}

    @property
    def has_interval(self) -> bool:
        return bool(np.isfinite(self.low) and np.isfinite(self.high))

    def counted(self) -> str:
        """'n=1306 in 48 texts' (or 'n=48 examples' when every row is its own unit)."""
        return formatting.counted(self.n, self.units, self.unit)

    def interval_text(self) -> str:
        """'[0.066, 0.109]', or why there is none ('no interval: n=1 text')."""
        return formatting.interval(self.low, self.high, self.n, self.units, self.unit)

    def __str__(self) -> str:
        """'0.759 [0.717, 0.803] (n=348 in 20 texts)' (formatting.estimate)."""
        return formatting.estimate(self.value, self.low, self.high, self.n, self.units, self.unit)


def _r(x: float) -> float | None:
    return None if not np.isfinite(x) else round(float(x), 6)


def unit_sums(values: np.ndarray, groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-unit sums [D, K] and counts [D, K] of the finite entries of `values` [N, K] (or [N]); N rows.

    NaN entries are "not applicable" (e.g. a share at a position that has no previous token): they count in
    neither the sum nor the count. `groups` [N] names each row's unit; None: every row is its own unit.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v.reshape(len(v), -1)  # [N, K]
    ok = np.isfinite(v)
    v = np.where(ok, v, 0.0)
    if groups is None:
        return v, ok.astype(np.float64), len(v)
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    n_units = int(inverse.max()) + 1 if len(inverse) else 0
    order = np.argsort(inverse, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(inverse[order]) != 0]) if len(order) else np.zeros(0, int)
    sums = np.add.reduceat(v[order], starts, axis=0) if len(order) else np.zeros((0, v.shape[1]))
    counts = np.add.reduceat(ok[order].astype(np.float64), starts, axis=0) if len(order) else sums
    return sums, counts, n_units


def replicates(values: np.ndarray, groups: np.ndarray | None = None, n_boot: int = N_BOOT,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The mean of every column of `values` [N, K] and its bootstrap replicates [B, K], resampling units.

    Each replicate draws D units with replacement (multinomial weights W [B, D]) and takes the pooled mean
    (W @ sums) / (W @ counts), so that units with more rows weigh more, as in the plain mean.
    """
    sums, counts, n_units = unit_sums(values, groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums.sum(axis=0) / counts.sum(axis=0)  # [K]
        if n_units == 0:
            return mean, np.full((n_boot, len(mean)), np.nan)
        rng = np.random.default_rng(seed)
        weights = rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=n_boot).astype(np.float64)
        reps = (weights @ sums) / (weights @ counts)  # [B, K]
    return mean, reps


def interval(value: np.ndarray, reps: np.ndarray, n: int, units: int, unit: str = "texts",
             level: float = LEVEL) -> list[Estimate]:
    """Percentile intervals of replicates [B, K] around the point estimates [K]."""
    alpha = (1.0 - level) / 2.0
    with np.errstate(invalid="ignore"):
        lo = np.nanquantile(reps, alpha, axis=0) if np.isfinite(reps).any() else np.full(reps.shape[1], np.nan)
        hi = np.nanquantile(reps, 1.0 - alpha, axis=0) if np.isfinite(reps).any() else lo
    value = np.atleast_1d(np.asarray(value, dtype=np.float64))
    lo, hi = np.atleast_1d(lo), np.atleast_1d(hi)
    return [Estimate(float(v), float(a), float(b), n, units, unit) for v, a, b in zip(value, lo, hi)]


def mean_ci(values: np.ndarray, groups: np.ndarray | None = None, unit: str = "texts", n_boot: int = N_BOOT,
            seed: int = 0) -> list[Estimate]:
    """One Estimate per column of `values` [N, K] (or [N] -> one estimate): mean with its 95% interval."""
    v = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    value, reps = replicates(v, groups, n_boot, seed)
    n = int(np.isfinite(v).any(axis=1).sum())
    return interval(value, reps, n, _units(groups, n), unit)


def difference_ci(a: np.ndarray, groups_a: np.ndarray | None, b: np.ndarray, groups_b: np.ndarray | None,
                  unit: str = "texts", n_boot: int = N_BOOT, seed: int = 0) -> list[Estimate]:
    """mean(a) - mean(b) per column, the two samples resampled independently ([N_a, K] and [N_b, K])."""
    va, ra = replicates(a, groups_a, n_boot, seed)
    vb, rb = replicates(b, groups_b, n_boot, seed + 1)
    na, nb = len(a), len(b)
    if groups_a is not None and groups_b is not None:  # the two samples may share units (e.g. texts)
        units = len(np.unique(np.concatenate([np.asarray(groups_a), np.asarray(groups_b)])))
    else:
        units = _units(groups_a, na) + _units(groups_b, nb)
    return interval(va - vb, ra - rb, na + nb, units, unit)


def paired_ci(fn: Callable[[np.ndarray], np.ndarray], values: np.ndarray, groups: np.ndarray | None,
              unit: str = "texts", n_boot: int = N_BOOT, seed: int = 0) -> list[Estimate]:
    """Any statistic of the column means: fn(means [K]) -> [M], with replicates through the same resampling.

    E.g. the difference of two columns of the same rows (paired), or the top head's lead over the next one.
    """
    v = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    value, reps = replicates(v, groups, n_boot, seed)
    out = np.atleast_1d(fn(value))
    out_reps = np.stack([np.atleast_1d(fn(r)) for r in reps]) if len(reps) else np.zeros((0, len(out)))
    n = int(np.isfinite(v).any(axis=1).sum())
    return interval(out, out_reps, n, _units(groups, n), unit)


def statistic_ci(fn: Callable[[np.ndarray], float], n_units: int, unit: str = "texts", n: int | None = None,
                 n_boot: int = N_BOOT, seed: int = 0) -> Estimate:
    """A statistic fn(unit_indices) -> float recomputed on resampled unit indices (for statistics that are no
    mean of rows, e.g. a cross-validated accuracy or the overlap of two top-k sets), with as many replicates as
    every other interval."""
    rng = np.random.default_rng(seed)
    value = float(fn(np.arange(n_units)))
    reps = np.array([fn(rng.integers(0, n_units, n_units)) for _ in range(n_boot)], dtype=np.float64)
    return interval(np.array([value]), reps[:, None], n if n is not None else n_units, n_units, unit)[0]


def _units(groups: np.ndarray | None, n: int) -> int:
    return n if groups is None else len(np.unique(np.asarray(groups)))
