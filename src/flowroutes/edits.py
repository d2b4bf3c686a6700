"""Edits people make to a routes graph: pins, a selected subgraph, labelled supernodes and free-text notes.

Plain data, checked against the routes they belong to and written into routes JSON (schema v3, docs/schema.md);
the summed edges of a supernode are computed here. No drawing (the explorer draws them:
static/editing.js; the pictures: figures.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import FlowroutesError

FOCUS = ("all", "fade", "hide")  # what the graph shows besides the subgraph: everything, faded, nothing
MAX_ITEMS = 5000  # ids in one list (a selection, the pins)
MAX_SUPERNODES = 200
MAX_LABEL = 120  # characters of a supernode's label
MAX_NOTE = 1000  # characters of a note
MAX_NOTES = 2000


def edge_id(kind: str, source: str, target: str) -> str:
    """The stable name of an edge in edits (two edges can join the same nodes: FFN and residual)."""
    return f"{kind}:{source}->{target}"


@dataclass
class Supernode:
    label: str
    nodes: list[str]  # routes node ids, at least two


@dataclass
class Edits:
    """What a person did to one routes graph; ids are node ids (`x3A@5`) and edge ids (`edge_id`)."""

    selected_nodes: list[str] = field(default_factory=list)
    selected_edges: list[str] = field(default_factory=list)
    pinned_nodes: list[str] = field(default_factory=list)
    pinned_edges: list[str] = field(default_factory=list)
    supernodes: list[Supernode] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)  # node or edge id -> text
    focus: str = "all"

    def is_empty(self) -> bool:
        return not (self.selected_nodes or self.selected_edges or self.pinned_nodes or self.pinned_edges
                    or self.supernodes or self.notes) and self.focus == "all"

    def to_dict(self) -> dict[str, Any]:
        return {
            "selection": {"nodes": list(self.selected_nodes), "edges": list(self.selected_edges)},
            "pins": {"nodes": list(self.pinned_nodes), "edges": list(self.pinned_edges)},
            "supernodes": [{"label": s.label, "nodes": list(s.nodes)} for s in self.supernodes],
            "notes": dict(self.notes),
            "focus": self.focus,
        }

    @classmethod
    def from_dict(cls, data: Any, node_ids: set[str], edge_ids: set[str]) -> Edits:
        """Edits read from JSON, every id checked against the routes' own; anything malformed is one
        FlowroutesError naming the field."""
        if not isinstance(data, dict):
            raise FlowroutesError("edits: expected an object with selection, pins, supernodes, notes and focus")
        unknown = set(data) - {"selection", "pins", "supernodes", "notes", "focus"}
        if unknown:
            raise FlowroutesError(f"edits: unknown field {sorted(unknown)[0]!r}")

        def ids(where: str, value: Any, known: set[str]) -> list[str]:
            if not isinstance(value, list) or len(value) > MAX_ITEMS:
                raise FlowroutesError(f"edits.{where}: expected a list of at most {MAX_ITEMS} ids")
            for v in value:
                if not isinstance(v, str) or v not in known:
                    raise FlowroutesError(f"edits.{where}: {str(v)[:80]!r} is not in these routes")
            return list(dict.fromkeys(value))

        def pair(name: str) -> tuple[list[str], list[str]]:
            part = data.get(name, {})
            if not isinstance(part, dict) or set(part) - {"nodes", "edges"}:
                raise FlowroutesError(f"edits.{name}: expected {{\"nodes\": [...], \"edges\": [...]}}")
            return (ids(f"{name}.nodes", part.get("nodes", []), node_ids),
                    ids(f"{name}.edges", part.get("edges", []), edge_ids))

        selected_nodes, selected_edges = pair("selection")
        pinned_nodes, pinned_edges = pair("pins")
        raw = data.get("supernodes", [])
        if not isinstance(raw, list) or len(raw) > MAX_SUPERNODES:
            raise FlowroutesError(f"edits.supernodes: expected a list of at most {MAX_SUPERNODES} supernodes")
        supernodes, grouped = [], set()
        for k, s in enumerate(raw):
            if not isinstance(s, dict) or set(s) != {"label", "nodes"}:
                raise FlowroutesError(f"edits.supernodes[{k}]: expected {{\"label\": text, \"nodes\": [ids]}}")
            label = s["label"]
            if not isinstance(label, str) or not label.strip() or len(label) > MAX_LABEL:
                raise FlowroutesError(f"edits.supernodes[{k}].label: expected 1 to {MAX_LABEL} characters")
            if label in node_ids:
                raise FlowroutesError(f"edits.supernodes[{k}].label: {label[:80]!r} is a node's id: choose a name")
            if any(label == other.label for other in supernodes):
                raise FlowroutesError(f"edits.supernodes[{k}].label: {label[:80]!r} names two supernodes")
            members = ids(f"supernodes[{k}].nodes", s["nodes"], node_ids)
            if len(members) < 2:
                raise FlowroutesError(f"edits.supernodes[{k}]: a supernode groups at least two nodes")
            if grouped & set(members):
                raise FlowroutesError(f"edits.supernodes[{k}]: {sorted(grouped & set(members))[0]} is already "
                                      "in another supernode")
            grouped |= set(members)
            supernodes.append(Supernode(label, members))
        notes = data.get("notes", {})
        if not isinstance(notes, dict) or len(notes) > MAX_NOTES:
            raise FlowroutesError(f"edits.notes: expected an object of at most {MAX_NOTES} id -> text")
        for key, text in notes.items():
            if key not in node_ids and key not in edge_ids:
                raise FlowroutesError(f"edits.notes: {key[:80]!r} is not in these routes")
            if not isinstance(text, str) or len(text) > MAX_NOTE:
                raise FlowroutesError(f"edits.notes[{key[:80]!r}]: expected text of at most {MAX_NOTE} characters")
        focus = data.get("focus", "all")
        if focus not in FOCUS:
            raise FlowroutesError(f"edits.focus: expected one of {', '.join(FOCUS)}")
        return cls(selected_nodes, selected_edges, pinned_nodes, pinned_edges, supernodes,
                   {k: v for k, v in notes.items() if v.strip()}, focus)


def ids_of(routes: Any) -> tuple[set[str], set[str]]:
    """(node ids, edge ids) of `routes`: what edits may name."""
    return {n.id for n in routes.nodes}, {edge_id(e.kind, e.source, e.target) for e in routes.edges}


def supernode_edges(routes: Any, edits: Edits) -> list[dict[str, Any]]:
    """The edges of the graph with each supernode drawn as one node: every edge with an end in a supernode is
    replaced by one edge per (source, target) after grouping, whose weight is the sum of the member edges'
    weights (edges inside one supernode are dropped). Returns those summed edges only, as
    {"source", "target", "weight", "edges": [edge ids]}, sources and targets being node ids or supernode labels."""
    group = {n: s.label for s in edits.supernodes for n in s.nodes}
    summed: dict[tuple[str, str], dict[str, Any]] = {}
    for e in routes.edges:
        if e.source not in group and e.target not in group:
            continue
        s, t = group.get(e.source, e.source), group.get(e.target, e.target)
        if s == t:
            continue
        entry = summed.setdefault((s, t), {"source": s, "target": t, "weight": 0.0, "edges": []})
        entry["weight"] += e.weight
        entry["edges"].append(edge_id(e.kind, e.source, e.target))
    return list(summed.values())


def subgraph(routes: Any, edits: Edits) -> tuple[set[str], set[str]]:
    """(node ids, edge ids) of the subgraph `focus` keeps in view, as the explorer takes it: the selected and
    pinned nodes and edges, every edge between two of those nodes, and both ends of every kept edge. Empty when
    nothing is selected or pinned (then focus changes nothing)."""
    nodes = set(edits.selected_nodes) | set(edits.pinned_nodes)
    edges = set(edits.selected_edges) | set(edits.pinned_edges)
    ends = {edge_id(e.kind, e.source, e.target): (e.source, e.target) for e in routes.edges}
    edges |= {k for k, (s, t) in ends.items() if s in nodes and t in nodes}
    for k in edges:
        nodes |= set(ends[k])
    return nodes, edges
