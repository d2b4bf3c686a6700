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

from .stats import Estimate

VERDICTS = ("holds", "does not hold", "cannot be tested")


@dataclass
class Claim:
    """One claim of the paper, measured on this model.

    statement: the paper's words; measure: what was computed; estimate: the number with its 95% interval;
    verdict: one of VERDICTS; why: the rule that gave the verdict (or why it cannot be tested).
    """

    key: str
    section: str
    statement: str
    measure: str
    estimate: Estimate | None
    verdict: str
    why: str

    def __post_init__(self):
        assert self.verdict in VERDICTS, self.verdict

    def to_dict(self) -> dict:
        return {"claim": self.key, "section": self.section, "paper": self.statement, "measure": self.measure,
                "estimate": self.estimate.to_dict() if self.estimate is not None else None,
                "verdict": self.verdict, "why": self.why}


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
    default_data: tuple[str, ...] = ("sample:general",)
    default_threshold: float | None = None
    needs_general: bool = False  # corpus runs add the general domain (sample:general) when no source is "general"
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
