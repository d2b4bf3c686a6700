"""Routes as a circuit-tracer attribution graph, to browse in circuit-tracer's local viewer.

circuit-tracer (PyPI `circuit-tracer`, 0.5.0) serves a folder with `graph-metadata.json` (one entry per graph) and
`<slug>.json` per graph: `metadata` (slug, scan, prompt, prompt_tokens, ...), `qParams` (the viewer's state),
`nodes` (node_id, feature, layer, ctx_idx, feature_type, clerp, ...) and `links` (source, target, weight). Its
viewer draws one row per `layer` ("E" = embeddings, then numbers, the logits on top) and one column per token.

Mapping (docs/interop.md): every routes node becomes a node, and the components the routes pass through become
nodes of their own, so that no two links join the same pair of nodes (a token reading itself and the residual
edge would otherwise coincide):
- `x^0_p` -> an "embedding" node (row "E");
- head h of block l writing at p -> an "attention head" node `L{l}H{h}@p`: links `x^l_j -> head` carry the
  sub-edge importances, `head -> x^{lA}_p` (or `x^{l+1}_p` in a parallel block) their sum;
- block l's FFN at p -> an "mlp" node: `x^{lA}_p -> FFN` and `FFN -> x^{l+1}_p` both carry the FFN edge's weight;
- residual edges link the two states directly; `x^L_p` links to the predicted token's "logit" node with weight 1.
Rows: block l has four, 4l (its heads), 4l+1 (`x^{lA}`), 4l+2 (its FFN), 4l+3 (`x^{l+1}`); the logits sit above
`x^L` (4L). Every node's `clerp` (the viewer's label) names it the flowroutes way (`x3A@5 ' Mary'`, `L3H1@5`).

Edits made in the explorer (`routes.edits`) travel in `qParams`: pinned nodes in `pinnedIds` (a pinned edge pins
its two states and the head or FFN nodes it runs through), supernodes as the viewer's `[label, id, ...]` lists,
a node's note after its `clerp`; the whole edits record is kept under `flowroutes.edits`.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from .edits import edge_id
from .errors import FlowroutesError
from .fileio import write_atomic

GRAPH_METADATA = "graph-metadata.json"
ROWS_PER_BLOCK = 4


def _cantor(x: int, y: int) -> int:
    """The viewer's schema-1 feature index of (row, index): Cantor's pairing, as circuit-tracer writes it."""
    return (x + y) * (x + y + 1) // 2 + y


def slug_for(prompt: str, position: int | str, model: str = "") -> str:
    """A file-name-safe slug: the prompt's first words and a short hash of model, prompt and position."""
    words = re.sub(r"[^A-Za-z0-9]+", "-", prompt).strip("-").lower()[:40].strip("-") or "prompt"
    digest = hashlib.sha256(f"{model}\0{prompt}\0{position}".encode()).hexdigest()[:8]
    return f"flowroutes-{words}-{digest}"


def _check_slug(slug: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", slug) or ".." in slug:
        raise FlowroutesError(f"slug {slug!r}: use letters, digits, '-', '_' and '.' (it names the graph's file)")
    return slug


def to_circuit_tracer(routes: Any, slug: str | None = None, *, scan: str | None = None) -> dict:
    """The circuit-tracer graph (a dict ready for json.dump) of `routes`. `scan` names the model in the viewer's
    graph list (default `flowroutes:<model name>`)."""
    slug = _check_slug(slug or slug_for(routes.prompt, routes.position, routes.model_name))
    graph = _ViewerGraph(routes)
    for node in routes.nodes:
        graph.state(node.id)
    for edge in routes.edges:
        graph.add_edge(edge)
    target_logit = graph.add_logits()
    n_layers = int(routes.n_layers)
    pinned, supernodes = graph.edits(getattr(routes, "edits", None))
    metadata = {"slug": slug, "scan": scan or f"flowroutes:{routes.model_name or 'model'}", "transcoder_list": [],
                "prompt_tokens": graph.texts, "prompt": routes.prompt, "node_threshold": None, "schema_version": 1}
    return {
        "metadata": metadata,
        "qParams": {"pinnedIds": pinned, "supernodes": supernodes, "linkType": "both", "clickedId": target_logit or "",
                    "sg_pos": ""},
        "nodes": list(graph.nodes.values()),
        "links": [{"source": s, "target": t, "weight": w} for (s, t), w in graph.links.items()],
        "flowroutes": {"schema": "flowroutes.routes", "position": routes.position,
                       "attention_threshold": routes.attention_threshold, "ffn_threshold": routes.ffn_threshold,
                       "renormalize": routes.renormalize, "n_layers": n_layers, "n_heads": routes.n_heads,
                       "rows_per_block": ROWS_PER_BLOCK, "active_heads": [list(h) for h in routes.active_heads],
                       **({"edits": routes.edits.to_dict()} if getattr(routes, "edits", None) else {})},
    }


class _ViewerGraph:
    """The viewer's nodes (by id, in the order added) and links (weights summed per (source, target)) of one
    routes graph, built as the module's docstring maps them."""

    def __init__(self, routes: Any) -> None:
        self.routes = routes
        self.texts = list(routes.token_texts)
        self.n_layers = int(routes.n_layers)
        self.by_id = {n.id: n for n in routes.nodes}
        self.nodes: dict[str, dict] = {}
        self.links: dict[tuple[str, str], float] = {}

    def label(self, p: int) -> str:
        return repr(self.texts[p]) if 0 <= p < len(self.texts) else f"position {p}"

    def add(self, node_id: str, row: int | str, p: int, kind: str, index: int, clerp: str, **extra) -> str:
        if node_id not in self.nodes:
            feature = p if row == "E" else _cantor(int(row), index)
            self.nodes[node_id] = {"node_id": node_id, "jsNodeId": node_id, "feature": feature, "layer": str(row),
                                   "ctx_idx": p, "feature_type": kind, "clerp": clerp, "token_prob": 0.0,
                                   "is_target_logit": False, "run_idx": 0, "reverse_ctx_idx": 0, "influence": None,
                                   "activation": None, **extra}
        return node_id

    def link(self, source: str, target: str, weight: float) -> None:
        self.links[(source, target)] = self.links.get((source, target), 0.0) + float(weight)

    def state(self, node_id: str) -> str:
        """The viewer node of a routes node (its id is kept; x^0 is an embedding node)."""
        node, label = self.by_id[node_id], self.label
        p = node.position
        if node.kind == "residual" and node.layer == 0:
            return self.add(node_id, "E", p, "embedding", 0, f"Emb: {label(p)}")
        if node.kind == "attention":
            row = ROWS_PER_BLOCK * node.layer + 1
            what = f"{node_id} {label(p)}: residual stream after block {node.layer}'s attention"
        else:
            row = ROWS_PER_BLOCK * (node.layer - 1) + 3
            what = f"{node_id} {label(p)}: residual stream entering block {node.layer}"
            if node.layer == self.n_layers:
                what = f"{node_id} {label(p)}: top of the residual stream"
        return self.add(node_id, row, p, "residual stream", 0, what)

    def add_edge(self, edge: Any) -> None:
        """A routes edge: through a node per head (attention), through the FFN's node, or direct (residual)."""
        source, target = self.state(edge.source), self.state(edge.target)
        p, block, label = self.by_id[edge.target].position, edge.layer, self.label
        if edge.kind == "attention" and edge.heads:
            for head, weight in sorted(edge.heads.items()):
                hid = self.add(f"L{block}H{head}@{p}", ROWS_PER_BLOCK * block, p, "attention head", int(head),
                               f"L{block}H{head}@{p}: head {head} of block {block} writing at {label(p)}")
                self.link(source, hid, weight)
                self.link(hid, target, weight)
        elif edge.kind == "ffn":
            fid = self.add(f"FFN{block}@{p}", ROWS_PER_BLOCK * block + 2, p, "mlp", 0,
                           f"FFN{block}@{p}: the FFN of block {block} at {label(p)}")
            self.link(source, fid, edge.weight)
            self.link(fid, target, edge.weight)
        else:  # residual (or an attention edge without its heads)
            self.link(source, target, edge.weight)

    def edits(self, edits: Any) -> tuple[list[str], list[list[str]]]:
        """(pinnedIds, supernodes) of the explorer's edits, and their nodes' notes appended to the `clerp`s."""
        if edits is None:
            return [], []
        pinned = list(edits.pinned_nodes)
        by_id = {edge_id(e.kind, e.source, e.target): e for e in self.routes.edges}
        for eid in edits.pinned_edges:
            e = by_id[eid]
            p = self.by_id[e.target].position
            through = ([f"L{e.layer}H{h}@{p}" for h in sorted(e.heads)] if e.kind == "attention"
                       else [f"FFN{e.layer}@{p}"] if e.kind == "ffn" else [])
            pinned += [e.source, *through, e.target]
        for node_id, note in edits.notes.items():
            if node_id in self.nodes:
                self.nodes[node_id]["clerp"] += f" | note: {note}"
        pinned = [n for n in dict.fromkeys(pinned) if n in self.nodes]
        return pinned, [[s.label, *s.nodes] for s in edits.supernodes]

    def add_logits(self) -> str | None:
        """A "logit" node per top prediction above x^L; x^L links to the first (returned, or None when x^L is
        not in the routes)."""
        routes, row = self.routes, ROWS_PER_BLOCK * self.n_layers
        top = f"x{self.n_layers}@{routes.position}"
        target_logit = None
        for rank, (token, prob) in enumerate(zip(routes.top_tokens, routes.top_probs)):
            shown = str(token).replace('"', "'")
            lid = f"{row}_{rank}_{routes.position}"
            self.add(lid, row, routes.position, "logit", rank, f'Output "{shown}" (p={float(prob):.3f})',
                     token_prob=float(prob), is_target_logit=rank == 0)
            if rank == 0 and top in self.nodes:
                self.link(top, lid, 1.0)
                target_logit = lid
        return target_logit


def write_circuit_tracer(routes: Any, folder: str | Path, slug: str | None = None, *, scan: str | None = None,
                         force: bool = True) -> Path:
    """Write `<folder>/<slug>.json` and add (or replace) its entry in `<folder>/graph-metadata.json`, the files
    circuit-tracer's viewer serves (`circuit_tracer.frontend.local_server.serve(data_dir=folder)`). Returns the
    graph file's path; with force=False an existing graph file is refused."""
    graph = to_circuit_tracer(routes, slug, scan=scan)
    folder = Path(folder)
    path = folder / f"{graph['metadata']['slug']}.json"
    if path.exists() and not force:
        raise FlowroutesError(f"{path} already exists: pass --force to replace it, or another --out")
    folder.mkdir(parents=True, exist_ok=True)
    index_path = folder / GRAPH_METADATA
    index: dict = {"graphs": []}
    if index_path.exists():
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
            if not isinstance(index.get("graphs"), list):
                raise ValueError("no graphs list")
        except (ValueError, AttributeError) as exc:
            raise FlowroutesError(f"{index_path} is not a circuit-tracer graph index ({exc}): move it away") from exc
    slug = graph["metadata"]["slug"]
    index["graphs"] = [g for g in index["graphs"] if g.get("slug") != slug] + [graph["metadata"]]
    write_atomic(path, json.dumps(graph, ensure_ascii=False).encode())
    write_atomic(index_path, json.dumps(index, indent=1, ensure_ascii=False).encode())
    return path
