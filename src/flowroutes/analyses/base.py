"""The one small interface every analysis implements, and the registry that finds them.

An analysis is a module of this package with a module-level `ANALYSIS = Analysis(...)`: adding an analysis means
adding one file. This module computes nothing and imports no analysis itself until `registry()` is called.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..formatting import number as fmt
from .stats import Estimate

VERDICTS = ("holds", "does not hold", "not enough data to tell", "cannot be tested")
Z95, Z80 = 1.959964, 0.841621  # two-sided 95% intervals; 80% power


#: how a rule reads each bound of an estimate, and each comparison
BOUNDS = {"value": "{label}", "low": "the lower bound of the 95% interval of {label}",
          "high": "the upper bound of the 95% interval of {label}"}
OPS = {">": ("above", float.__gt__), ">=": ("at least", float.__ge__), "<": ("below", float.__lt__),
       "<=": ("at most", float.__le__)}


@dataclass(frozen=True)
class Condition:
    """One condition of a claim's verdict: the `bound` ("value", "low" or "high") of `quantity` compared with
    `threshold` by `op`. `quantity` is an Estimate, or an int for a count (e.g. of heads that meet a definition).
    A claim whose conditions are all met holds; the report shows exactly these numbers."""

    label: str  # what the quantity is, starting with "the" ("the mean head frequency, bottom 10 minus top 10")
    quantity: Estimate | int
    bound: str = "low"
    op: str = ">"
    threshold: float = 0.0
    # the smallest effect the paper's words describe, in the quantity's units, as this rule reads them (None: the
    # paper states no size). A condition not met whose interval still reaches it is undecided: the run could not
    # tell the paper's effect from what it saw (docs/claims.md has each reading)
    effect: float | None = None

    def __post_init__(self):
        assert self.bound in BOUNDS and self.op in OPS, (self.bound, self.op)
        assert isinstance(self.quantity, Estimate) or self.bound == "value", "a count has no interval"

    @property
    def compared(self) -> float:
        """The number the rule compares with the threshold."""
        q = self.quantity
        return float(q) if not isinstance(q, Estimate) else float(getattr(q, self.bound))

    @property
    def met(self) -> bool:
        x = self.compared
        return bool(np.isfinite(x) and OPS[self.op][1](x, float(self.threshold)))

    @property
    def undecided(self) -> bool:
        """Not met, yet the interval reaches the paper's effect: this run cannot tell that effect from none."""
        q = self.quantity
        if self.met or self.effect is None or not isinstance(q, Estimate) or not q.has_interval:
            return False
        if self.bound == "low":
            return bool(q.high >= self.effect)
        if self.bound == "high":
            return bool(q.low <= self.effect)
        return False

    @property
    def detectable(self) -> float | None:
        """The smallest true effect this rule meets with 80% power at this run's interval width (the standard error
        read off the 95% interval); None for counts, single values and missing intervals."""
        q = self.quantity
        if not isinstance(q, Estimate) or not q.has_interval or self.bound == "value":
            return None
        margin = (Z95 + Z80) * (q.high - q.low) / (2 * Z95)
        return float(self.threshold + margin if self.bound == "low" else self.threshold - margin)

    def power(self) -> str:
        """What the run could see: 'an effect of 0.031 or more would meet this rule with 80% power; the paper's
        effect (0.05) is within reach' (or the reading when the paper states no size)."""
        mde = self.detectable
        if mde is None:
            return "a count or a single value: no power calculation"
        word = "or more" if self.bound == "low" else "or less"
        text = f"an effect of {fmt(mde)} {word} would meet this rule with 80% power at this n"
        if self.effect is None:
            return text + "; the paper states no size for this effect"
        reach = mde <= self.effect if self.bound == "low" else mde >= self.effect
        return text + f"; the paper's effect, read as {fmt(self.effect)}, is {'within' if reach else 'beyond'} reach"

    def rule(self) -> str:
        """'the lower bound of the 95% interval of X is above 0'."""
        return f"{BOUNDS[self.bound].format(label=self.label)} is {OPS[self.op][0]} {threshold_text(self.threshold)}"

    def shown(self) -> str:
        """The quantity as the report shows it: '0.086 [0.066, 0.109] (n=48 examples)', or a count."""
        return str(self.quantity) if isinstance(self.quantity, Estimate) else f"{self.quantity:,}"

    def check(self) -> str:
        """'lower bound 0.010 > 0: met'."""
        what = {"value": "", "low": "lower bound ", "high": "upper bound "}[self.bound]
        x = self.compared
        number = f"{int(x):,}" if not isinstance(self.quantity, Estimate) else fmt(x)
        return f"{what}{number} {self.op} {threshold_text(self.threshold)}: {'met' if self.met else 'not met'}"

    def to_dict(self) -> dict:
        q = self.quantity
        return {"quantity": self.label, "estimate": q.to_dict() if isinstance(q, Estimate) else {"value": int(q)},
                "compares": self.bound, "op": self.op, "threshold": self.threshold,
                "compared_value": _finite(self.compared), "met": self.met, "rule": self.rule(),
                "shown": self.shown(), "check": self.check(), "paper_effect": self.effect,
                "detectable": _finite(self.detectable) if self.detectable is not None else None,
                "undecided": self.undecided, "power": self.power()}


def threshold_text(x: float) -> str:
    """A threshold as written in a rule: 0, 100, 0.75, 0.333, -0.01."""
    x = float(x)
    return str(int(x)) if x.is_integer() else f"{x:.3g}"


def verdict_of(conditions) -> str:
    """'holds' when every condition is met; 'not enough data to tell' when every condition not met is undecided
    (its interval still reaches the paper's effect); else 'does not hold'."""
    unmet = [c for c in conditions if not c.met]
    if not unmet:
        return "holds"
    return "not enough data to tell" if all(c.undecided for c in unmet) else "does not hold"


@dataclass
class Claim:
    """One claim of the paper, measured on this model.

    statement: the paper's words; measure: what was computed; estimate: the headline number with its 95%
    interval, one of the conditions' quantities (None when none of them is an estimate); verdict: one of
    VERDICTS; why: details (the reading of the paper's words, numbers for reference) or why it cannot be tested;
    conditions: what the verdict compares, each number with its threshold: "holds" exactly when all are met.
    """

    key: str
    section: str
    statement: str
    measure: str
    estimate: Estimate | None
    verdict: str
    why: str
    conditions: tuple[Condition, ...] = ()

    def __post_init__(self):
        assert self.verdict in VERDICTS, self.verdict
        self.conditions = tuple(self.conditions)
        if self.verdict != "cannot be tested":
            assert self.conditions, f"{self.key}: a tested claim states the conditions its verdict compares"
            assert self.verdict == verdict_of(self.conditions), f"{self.key}: verdict and conditions disagree"
            assert self.estimate is None or any(c.quantity is self.estimate or c.quantity == self.estimate
                                             for c in self.conditions), \
                f"{self.key}: the estimate shown is not one the verdict compares"

    def rule(self) -> str:
        """The pass condition: 'holds if A and B'."""
        return "holds if " + " and ".join(c.rule() for c in self.conditions) if self.conditions else ""

    def to_dict(self) -> dict:
        from .calibration import calibration

        return {"claim": self.key, "section": self.section, "paper": self.statement, "measure": self.measure,
                "estimate": self.estimate.to_dict() if self.estimate is not None else None,
                "verdict": self.verdict, "rule": self.rule(), "conditions": [c.to_dict() for c in self.conditions],
                "why": self.why, "calibration": calibration(self.key)}


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def untestable(key: str, section: str, statement: str, why: str, measure: str = "") -> Claim:
    return Claim(key, section, statement, measure, None, "cannot be tested", why)


@dataclass
class Context:
    """What `summarize` gets: the rows, the model's shape, the options, and results of other analyses.

    table: pyarrow Table of rows (corpus: one per prediction; task: two per example; weights: one per token shown).
    loaded: the LoadedModel when it is in this process (None when shards came from Ray workers only).
    inputs: results of analyses run before this one in the same `reproduce` (name -> Result), e.g. the
    domain-specific heads the SVD analysis shows, or the previous-token heads task-heads outlines.
    """

    table: Any
    n_layers: int
    n_heads: int
    opts: Any
    counts: dict = field(default_factory=dict)
    loaded: Any = None
    inputs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Analysis:
    """name: the CLI name; kind: "corpus" (rows per prediction of a text corpus), "task" (rows per generated task
    example) or "weights" (rows from the weights alone); paper: the sentence of the paper the analysis implements;
    paper_size: the sample the paper used; summarize(Context) -> Result; claims(results) -> [Claim], where results
    maps run names (e.g. "task-heads:ioi") to Results of one reproduce run."""

    name: str
    title: str
    help: str
    paper: str
    paper_size: str
    kind: str
    summarize: Callable[[Context], Any]
    claims: Callable[[dict], list[Claim]] | None = None
    default_data: tuple[str, ...] = ("corpus:general",)
    default_threshold: float | None = None
    needs_general: bool = False  # corpus runs add the general domain (corpus:general) when no source is "general"
    reads_attention: bool = False  # its rows need attention weights (one more forward pass per batch of texts)

    def __post_init__(self):
        assert self.kind in ("corpus", "task", "weights"), self.kind


_REGISTRY: dict[str, Analysis] = {}


def registry() -> dict[str, Analysis]:
    """name -> Analysis for every module of this package that defines ANALYSIS, in file-name order."""
    if not _REGISTRY:
        from .. import analyses

        found = {}
        for info in sorted(pkgutil.iter_modules(analyses.__path__), key=lambda m: m.name):
            module = importlib.import_module(f"{analyses.__name__}.{info.name}")
            spec = getattr(module, "ANALYSIS", None)
            if isinstance(spec, Analysis):
                found[spec.name] = spec
        _REGISTRY.update(sorted(found.items(), key=lambda kv: ORDER.index(kv[0]) if kv[0] in ORDER else 99))
    return _REGISTRY


#: the order of the paper (reports list analyses in it); analyses not named here come last
ORDER = ("task-heads", "vectors", "bottom-to-top", "head-roles", "periods", "domains", "svd")
