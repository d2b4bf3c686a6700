"""Routes: the top-down walk of fig. 3 (with appendix B.2's renormalisation) and the routes graph.

Reads a `Trace`'s arrays; writes plain data with a documented, versioned JSON schema (docs/schema.md)
and a networkx view. No model, no torch.

One layer convention (schema version 2 and 3): `layer` l always means block l (0-based), which reads the residual x^l,
whose attention writes x^{lA} and whose FFN writes x^{l+1}; head (l, h) is printed LlHh. Nodes: residual x^l_p
(id "x{l}@{p}", layer l = 0..L, 0 = the embeddings, L = the top) and the residual after block l's attention
x^{lA}_p (id "x{l}A@{p}", layer l = 0..L-1; the paper numbers blocks from 1: docs/architecture.md). Edges carry
the `layer` of the block they pass through, which is also the layer of their source node. Version 1 files
(attention nodes numbered 1..L, the paper's way) are read and converted; version 3 adds the optional `edits` a
person made in the explorer (pins, a subgraph, supernodes, notes: `flowroutes.edits`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import checks, deadline
from .edits import Edits, ids_of
from .errors import FlowroutesError

SCHEMA = "flowroutes.routes"
SCHEMA_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)


@dataclass(frozen=True)
class Node:
    id: str
    kind: str  # "residual" (x^l, the input of block l) or "attention" (x^{lA}, after the attention of block l)
    layer: int  # the block: residual 0..L (0 = embeddings, L = top); attention 0..L-1
    position: int


@dataclass
class Edge:
    source: str
    target: str
    kind: str  # "attention" | "residual" | "ffn"
    layer: int  # the block the edge passes through (0-based; the layer of its source node)
    weight: float
    heads: dict[int, float] = field(default_factory=dict)  # attention only: head -> its part of weight


def level(node: Node) -> int:
    """Height of a node in the graph: x^0 = 0, x^{0A} = 1, x^1 = 2, ..., x^{(L-1)A} = 2L - 1, x^L = 2L."""
    return 2 * node.layer + (node.kind == "attention")


def residual_id(layer: int, position: int) -> str:
    return f"x{layer}@{position}"


def attention_id(layer: int, position: int) -> str:
    """Id of x^{lA}_p, the residual after block `layer`'s attention (0-based)."""
    return f"x{layer}A@{position}"


def _v1_to_v2(data: dict) -> dict:
    """A version-1 routes dict in version 2's convention: attention nodes were numbered 1..L (the paper's
    numbering: layer l was the residual after block l-1's attention); now they carry their block, like edges.
    Residual nodes and edges are unchanged."""
    renamed: dict[str, str] = {}
    nodes = []
    for n in data["nodes"]:
        if n["kind"] == "attention":
            new = attention_id(n["layer"] - 1, n["position"])
            renamed[n["id"]] = new
            n = {**n, "id": new, "layer": n["layer"] - 1}
        nodes.append(n)
    edges = [{**e, "source": renamed.get(e["source"], e["source"]), "target": renamed.get(e["target"], e["target"])}
             for e in data["edges"]]
    return {**data, "version": 2, "nodes": nodes, "edges": edges}


@dataclass
class Routes:
    """The important subgraph for one prediction. `weight`s are importances (renormalised for attention)."""

    nodes: list[Node]
    edges: list[Edge]
    position: int
    attention_threshold: float
    ffn_threshold: float
    renormalize: bool
    n_layers: int
    n_heads: int
    tokens: list[str]
    token_texts: list[str]
    parallel: list[bool] = field(default_factory=list)  # per block: True = parallel attention and FFN
    model_name: str = ""
    prompt: str = ""
    top_tokens: list[str] = field(default_factory=list)  # model's top next tokens at `position`
    top_probs: list[float] = field(default_factory=list)
    edits: Edits | None = None  # what a person pinned, selected, grouped and noted in the explorer (schema v3)

    @property
    def active_heads(self) -> list[tuple[int, int]]:
        """(layer, head) pairs with at least one sub-edge in the routes, sorted."""
        return sorted({(e.layer, h) for e in self.edges if e.kind == "attention" for h in e.heads})

    def __repr__(self) -> str:
        from .display import routes_text

        return routes_text(self)

    def _repr_html_(self) -> str:
        """The notebook display: the routes graph (inline SVG) and a one-sentence caption (display.py)."""
        from .display import routes_html

        return routes_html(self)

    def widget(self):
        """These routes as the interactive notebook widget (flowroutes.widget), threshold and position fixed."""
        from .notebook import widget

        return widget(self)

    def strongest(self, max_edges: int) -> Routes:
        """These routes cut to at most `max_edges` edges, the strongest paths to the explained node whole (see the
        module's `strongest`); the same routes when they have no more."""
        return strongest(self, max_edges)[0]

    def head_weights(self) -> dict[tuple[int, int], float]:
        """Sum over the routes of each active head's (renormalised) sub-edge importances."""
        out: dict[tuple[int, int], float] = {}
        for e in self.edges:
            if e.kind == "attention":
                for h, w in e.heads.items():
                    out[(e.layer, h)] = out.get((e.layer, h), 0.0) + w
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    # --- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "version": SCHEMA_VERSION,
            "model": self.model_name,
            "prompt": self.prompt,
            "tokens": self.tokens,
            "token_texts": self.token_texts,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "blocks": [
                "parallel" if self.parallel and self.parallel[b] else "sequential" for b in range(self.n_layers)
            ],
            "position": self.position,
            "attention_threshold": self.attention_threshold,
            "ffn_threshold": self.ffn_threshold,
            "renormalize": self.renormalize,
            "prediction": [{"token": t, "prob": p} for t, p in zip(self.top_tokens, self.top_probs)],
            "nodes": [{"id": n.id, "kind": n.kind, "layer": n.layer, "position": n.position} for n in self.nodes],
            "edges": [
                {"source": e.source, "target": e.target, "kind": e.kind, "layer": e.layer, "weight": e.weight,
                 **({"heads": {str(h): w for h, w in e.heads.items()}} if e.kind == "attention" else {})}
                for e in self.edges
            ],
            "active_heads": [list(h) for h in self.active_heads],
            **({"edits": self.edits.to_dict()} if self.edits is not None and not self.edits.is_empty() else {}),
        }

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | dict) -> Routes:
        data = json.loads(text) if isinstance(text, str) else text
        if data.get("schema") != SCHEMA:
            raise FlowroutesError("not a flowroutes routes file (its 'schema' field is missing or different)")
        if data.get("version") not in READABLE_VERSIONS:
            raise FlowroutesError(
                f"routes schema version {data.get('version')} is not readable by this flowroutes "
                f"(reads versions {', '.join(map(str, READABLE_VERSIONS))}); upgrade flowroutes"
            )
        if data["version"] == 1:
            data = _v1_to_v2(data)
        routes = cls(
            nodes=[Node(**n) for n in data["nodes"]],
            edges=[
                Edge(
                    source=e["source"], target=e["target"], kind=e["kind"], layer=e["layer"], weight=e["weight"],
                    heads={int(h): w for h, w in e.get("heads", {}).items()},
                )
                for e in data["edges"]
            ],
            position=data["position"],
            attention_threshold=data["attention_threshold"],
            ffn_threshold=data["ffn_threshold"],
            renormalize=data["renormalize"],
            n_layers=data["n_layers"],
            n_heads=data["n_heads"],
            tokens=data["tokens"],
            token_texts=data["token_texts"],
            parallel=[kind == "parallel" for kind in data.get("blocks", ["sequential"] * data["n_layers"])],
            model_name=data.get("model", ""),
            prompt=data.get("prompt", ""),
            top_tokens=[p["token"] for p in data.get("prediction", [])],
            top_probs=[p["prob"] for p in data.get("prediction", [])],
        )
        if data["version"] >= 3 and data.get("edits") is not None:
            routes.edits = Edits.from_dict(data["edits"], *ids_of(routes))
        return routes

    def to_networkx(self):
        """A networkx.DiGraph: node attributes kind/layer/position/token, edge attributes kind/layer/weight/heads.

        Between two nodes there can be two edges (FFN and residual into x^l); use a MultiDiGraph.
        """
        import networkx as nx

        graph = nx.MultiDiGraph(position=self.position, model=self.model_name)
        for n in self.nodes:
            graph.add_node(n.id, kind=n.kind, layer=n.layer, position=n.position, token=self.token_texts[n.position])
        for e in self.edges:
            graph.add_edge(e.source, e.target, key=e.kind, kind=e.kind, layer=e.layer, weight=e.weight,
                           heads=dict(e.heads))
        return graph


def extract_routes(
    trace, position: int, attention_threshold: float, ffn_threshold: float, renormalize: bool = True
) -> Routes:
    """Walk down from x^L_position, keeping edges whose importance is >= the threshold.

    x^{l+1}_p -> x^{lA}_p: the FFN edge and the residual edge, each kept if its importance >= ffn_threshold.
    x^{lA}_p -> x^l_j: sub-edges (and the residual edge) with importance < attention_threshold are
    dropped, the kept ones renormalised to sum to 1 (unless `renormalize` is False), then summed over
    heads into one attention edge per source j. Nodes reached by a kept edge are walked in turn.
    """
    return extract_routes_many([trace], [position], attention_threshold, ffn_threshold, renormalize)[0]


def extract_routes_many(
    traces: list, positions: list[int], attention_threshold: float, ffn_threshold: float, renormalize: bool = True,
    fetch=None,
) -> list[Routes]:
    """`extract_routes` of several traces, walked in lock-step from the top layer down: before the walks read the
    attention rows of a block, `fetch(block, [(trace, targets), ...])` gets every walk's request for that block at
    once (lazy traces compute them together and memoise them)."""
    tau_a = checks.threshold("the attention threshold", attention_threshold)
    tau_f = checks.threshold("the FFN threshold", ffn_threshold)
    walks = [_walk(trace, trace.resolve_position(p), tau_a, tau_f, renormalize) for trace, p in zip(traces, positions)]
    results: list[Routes | None] = [None] * len(walks)
    pending: dict[int, tuple[int, list[int]]] = {}  # walk -> the (block, targets) whose rows it waits for

    def advance(k: int, answer=None) -> None:
        try:
            pending[k] = walks[k].send(answer) if answer is not None else next(walks[k])
        except StopIteration as done:
            pending.pop(k, None)
            results[k] = done.value

    for k in range(len(walks)):
        advance(k)
    while pending:
        block = max(b for b, _ in pending.values())  # every walk goes down block by block
        ready = [k for k, (b, _) in pending.items() if b == block]
        if fetch is not None:
            fetch(block, [(traces[k], pending[k][1]) for k in ready])
        for k in ready:
            advance(k, traces[k].attention_rows(block, pending[k][1]))
    return results


def _walk(trace, pos: int, tau_a: float, tau_f: float, renormalize: bool):
    """The walk of one trace as a generator: yields (block, targets) when it needs that block's attention rows,
    is sent `trace.attention_rows(block, targets)` back, and returns the Routes."""
    graph = _Graph()
    # walk level by level, top-down, so that each layer's attention rows are asked for in one batch
    graph.node("residual", trace.n_layers, pos)
    frontier = {pos}  # positions of the residual nodes x^layer_p reached so far
    for layer in range(trace.n_layers, 0, -1):
        deadline.check()
        block = layer - 1
        if not frontier:
            break
        if trace.is_parallel(block):  # x^l_p = x^{l-1}_p + attention + FFN(x^{l-1}_p): one node
            targets = sorted(frontier)
            rows = yield block, targets
            frontier = graph.attention_edges(block, targets, rows, lambda p, layer=layer: residual_id(layer, p),
                                             tau_a, tau_f, renormalize, extra=trace.ffn)
            continue
        targets = sorted(graph.ffn_edges(trace, layer, frontier, tau_f))
        if not targets:
            break
        rows = yield block, targets
        frontier = graph.attention_edges(block, targets, rows, lambda p, block=block: attention_id(block, p),
                                         tau_a, tau_f, renormalize)
    return graph.routes(trace, pos, tau_a, tau_f, renormalize)


@dataclass
class _Graph:
    """The nodes and edges one walk has reached so far."""

    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)

    def node(self, kind: str, layer: int, p: int) -> str:
        """The id of node (kind, layer, p), added if new."""
        nid = residual_id(layer, p) if kind == "residual" else attention_id(layer, p)
        if nid not in self.nodes:
            self.nodes[nid] = Node(nid, kind, layer, p)
        return nid

    def ffn_edges(self, trace, layer: int, frontier: set[int], tau_f: float) -> set[int]:
        """Edges into x^layer_p (p in `frontier`) through a sequential block: the FFN and residual edges from
        x^{(layer-1)A}_p, each kept if >= tau_ffn. Returns the positions of the attention nodes reached."""
        block = layer - 1
        reached = set()
        for p in sorted(frontier):
            kept = [(k, float(w)) for k, w in (("ffn", trace.ffn[block, p]), ("residual", trace.ffn_residual[block, p]))
                    if w >= tau_f]
            if kept:
                src = self.node("attention", block, p)
                for k, w in kept:
                    self.edges.append(Edge(src, residual_id(layer, p), k, block, w))
                reached.add(p)
        return reached

    def attention_edges(self, block: int, targets: list[int], rows, target_of, tau_a: float, tau_f: float,
                        renormalize: bool, extra=None) -> set[int]:
        """Edges into the nodes `target_of(p)` from x^block_j: sub-edges and residual thresholded by tau_attn
        (and, for a parallel block, the FFN by tau_ffn), the kept parts renormalised together. Returns the
        positions j reached."""
        reached: set[int] = set()
        sub_rows, res_rows = rows  # trace.attention_rows(block, targets): [H, R, T], [R]
        for i, p in enumerate(targets):
            target = target_of(p)
            sub = sub_rows[:, i, : p + 1].astype(np.float64)  # [H, p+1]
            res = float(res_rows[i])
            ffn = None if extra is None else float(extra[block, p])
            keep = sub >= tau_a
            keep_res = res >= tau_a
            keep_ffn = ffn is not None and ffn >= tau_f
            total = float(sub[keep].sum()) + (res if keep_res else 0.0) + (ffn if keep_ffn else 0.0)
            if total <= 0.0:
                continue
            scale = 1.0 / total if renormalize else 1.0
            for j in np.nonzero(keep.any(axis=0))[0].tolist():
                heads = {int(h): float(sub[h, j] * scale) for h in np.nonzero(keep[:, j])[0].tolist()}
                src = self.node("residual", block, j)
                self.edges.append(Edge(src, target, "attention", block, float(sum(heads.values())), heads))
                reached.add(j)
            for kind, kept, w in (("residual", keep_res, res), ("ffn", keep_ffn, ffn)):
                if kept:
                    src = self.node("residual", block, p)
                    self.edges.append(Edge(src, target, kind, block, w * scale))
                    reached.add(p)
        return reached

    def routes(self, trace, pos: int, tau_a: float, tau_f: float, renormalize: bool) -> Routes:
        """The walk's Routes: edges by block, then target, kind and source; nodes by level and position."""
        nodes, kind_order = self.nodes, {"attention": 0, "residual": 1, "ffn": 2}
        edges = sorted(self.edges, key=lambda e: (e.layer, nodes[e.target].kind != "attention",
                                                  nodes[e.target].position, kind_order[e.kind],
                                                  nodes[e.source].position))
        return Routes(
            nodes=sorted(nodes.values(), key=lambda n: (level(n), n.position)),
            edges=edges,
            position=pos,
            attention_threshold=tau_a,
            ffn_threshold=tau_f,
            renormalize=bool(renormalize),
            n_layers=trace.n_layers,
            n_heads=trace.n_heads,
            parallel=[trace.is_parallel(b) for b in range(trace.n_layers)],
            tokens=list(trace.tokens),
            token_texts=list(trace.token_texts),
            model_name=trace.model_name,
            prompt=trace.prompt,
            top_tokens=list(trace.top_tokens[pos][:5]),
            top_probs=[float(x) for x in trace.top_probs[pos][:5]],
        )


def strongest(routes, max_edges: int):
    """(routes with at most `max_edges` edges, None or what was cut: {edges, kept, max_edges}); the cut the
    explorer and `flowroutes trace --max-edges` draw, and `Routes.strongest` returns. Over the budget, edges are
    kept in order of their importance for the prediction: an edge's score is its weight times the best product of
    weights on a path from it up to the explained node x^L_position (weights are <= 1). Taken best first from the
    top, the kept edges stay connected to the explained node, and the strongest routes come whole."""
    import dataclasses
    import heapq

    checks.positive_int("max_edges", max_edges)
    n = len(routes.edges)
    if n <= max_edges:
        return routes, None
    into: dict[str, list[int]] = {}
    for i, e in enumerate(routes.edges):
        into.setdefault(e.target, []).append(i)
    top = residual_id(routes.n_layers, routes.position)
    heap = [(-routes.edges[i].weight, i) for i in into.get(top, ())]
    heapq.heapify(heap)
    reached, used = {top}, set()
    while heap and len(used) < max_edges:
        score, i = heapq.heappop(heap)
        used.add(i)
        source = routes.edges[i].source
        if source not in reached:  # first reached by its best path: expand it
            reached.add(source)
            for j in into.get(source, ()):
                heapq.heappush(heap, (score * routes.edges[j].weight, j))
    cut = dataclasses.replace(routes, edges=[e for i, e in enumerate(routes.edges) if i in used],
                              nodes=[nd for nd in routes.nodes if nd.id in reached])
    return cut, {"edges": n, "kept": len(cut.edges), "max_edges": max_edges}
