"""Edits made in the explorer (pins, a subgraph, supernodes, notes): schema v3 round trips, refusals of malformed
edits, the summed edges of a supernode worked out by hand, and what the circuit-tracer export carries."""

import json
import xml.etree.ElementTree as ET

import pytest

from flowroutes import FlowroutesError, Routes
from flowroutes.circuit_tracer import to_circuit_tracer
from flowroutes.edits import Edits, Supernode, edge_id, ids_of, subgraph, supernode_edges
from tests.helpers.tolerances import F64_HAND, printed_to
from tests.unit.test_routes import hand_trace


def edited():
    r = hand_trace().routes(0.125)
    r.edits = Edits(selected_nodes=["x1@1", "x1@2"], selected_edges=[edge_id("ffn", "x1A@2", "x2@2")],
                    pinned_nodes=["x2@2"], pinned_edges=[edge_id("attention", "x1@2", "x1A@2")],
                    supernodes=[Supernode("movers", ["x1@1", "x1@2"])],
                    notes={"x0@0": "the BOS sink", edge_id("residual", "x0@2", "x0A@2"): "carries ' c'"}, focus="fade")
    return r


def test_edits_round_trip_in_schema_version_3():
    r = edited()
    data = json.loads(r.to_json())
    assert data["version"] == 3
    assert data["edits"]["supernodes"] == [{"label": "movers", "nodes": ["x1@1", "x1@2"]}]
    assert data["edits"]["pins"] == {"nodes": ["x2@2"], "edges": ["attention:x1@2->x1A@2"]}
    back = Routes.from_json(r.to_json())
    assert back.edits == r.edits and back == r
    # no edits: no field, and versions 2 and 3 without edits read alike
    plain = hand_trace().routes(0.125)
    assert "edits" not in plain.to_dict()
    assert Routes.from_json({**plain.to_dict(), "version": 2}) == plain


@pytest.mark.parametrize(("change", "message"), [
    ({"pins": {"nodes": ["x9@9"]}}, r"edits.pins.nodes: 'x9@9' is not in these routes"),
    ({"selection": {"edges": ["ffn:x0@0->x1@1"]}}, "edits.selection.edges: 'ffn:x0@0->x1@1' is not in"),
    ({"focus": "blink"}, "edits.focus: expected one of all, fade, hide"),
    ({"supernodes": [{"label": "x" * 500, "nodes": ["x1@1", "x1@2"]}]}, r"label: expected 1 to 120"),
    ({"supernodes": [{"label": "a", "nodes": ["x1@1"]}]}, "at least two nodes"),
    ({"supernodes": [{"label": "a", "nodes": ["x1@1", "x1@2"]}, {"label": "b", "nodes": ["x1@2", "x0@0"]}]},
     "x1@2 is already in another supernode"),
    ({"notes": {"x0@0": 5}}, "expected text of at most 1000"),
    ({"supernodes": [{"label": "x0@0", "nodes": ["x1@1", "x1@2"]}]}, "'x0@0' is a node's id: choose a name"),
    ({"colour": "red"}, "unknown field 'colour'"),
    ({"pins": ["x2@2"]}, "edits.pins: expected"),
])
def test_malformed_edits_are_one_line_refusals(change, message):
    data = {**edited().to_dict()}
    data["edits"] = {**data["edits"], **change}
    with pytest.raises(FlowroutesError, match=message) as err:
        Routes.from_json(data)
    assert "\n" not in str(err.value)


def test_a_supernode_is_one_node_with_the_summed_edges():
    r = edited()
    summed = {(s["source"], s["target"]): s for s in supernode_edges(r, r.edits)}
    # into x1@1: the residual 0.9375; into x1@2: residual 0.5 + FFN 0.5; out: 0.2667 + 0.4667 + 0.2667 (renormalised)
    assert set(summed) == {("x0A@1", "movers"), ("x0A@2", "movers"), ("movers", "x1A@2")}
    assert summed[("x0A@1", "movers")]["weight"] == 0.9375
    assert summed[("x0A@2", "movers")]["weight"] == 1.0
    assert summed[("movers", "x1A@2")]["weight"] == pytest.approx(1.0, abs=F64_HAND)
    assert summed[("x0A@2", "movers")]["edges"] == ["residual:x0A@2->x1@2", "ffn:x0A@2->x1@2"]
    nodes, edges = ids_of(r)
    assert len(nodes) == 9 and len(edges) == 11  # residual and FFN edges between the same nodes stay apart


def test_the_subgraph_is_the_selected_and_pinned_items_the_edges_between_them_and_their_ends():
    r = edited()
    nodes, edges = subgraph(r, r.edits)
    # x1@1, x1@2 selected and x2@2 pinned: no edge joins two of them; the selected FFN edge and the pinned attention
    # edge bring their ends x1A@2 in (the explorer, like this, does not then add x1A@2 -> x2@2's residual edge)
    assert nodes == {"x1@1", "x1@2", "x2@2", "x1A@2"}
    assert edges == {"ffn:x1A@2->x2@2", "attention:x1@2->x1A@2"}
    r.edits = Edits(selected_nodes=["x1A@2", "x2@2"])
    assert subgraph(r, r.edits) == ({"x1A@2", "x2@2"}, {"residual:x1A@2->x2@2", "ffn:x1A@2->x2@2"})
    assert subgraph(r, Edits(focus="hide")) == (set(), set())


def test_the_circuit_tracer_export_carries_pins_supernodes_and_notes():
    graph = to_circuit_tracer(edited())
    q = graph["qParams"]
    # the pinned node, and the pinned attention edge's two states with the two heads it runs through
    assert q["pinnedIds"] == ["x2@2", "x1@2", "L1H0@2", "L1H1@2", "x1A@2"]
    assert q["supernodes"] == [["movers", "x1@1", "x1@2"]]
    ids = {n["node_id"] for n in graph["nodes"]}
    assert set(q["pinnedIds"]) <= ids and {"x1@1", "x1@2"} <= ids
    clerp = next(n["clerp"] for n in graph["nodes"] if n["node_id"] == "x0@0")
    assert clerp.endswith(" | note: the BOS sink")
    assert graph["flowroutes"]["edits"] == edited().edits.to_dict()
    plain = to_circuit_tracer(hand_trace().routes(0.125))
    assert plain["qParams"]["pinnedIds"] == [] and plain["qParams"]["supernodes"] == []


def test_the_picture_draws_pins_supernodes_and_notes():
    from matplotlib.figure import Figure

    from flowroutes.figures import draw_routes, render_routes

    r = edited()
    ax = Figure().add_subplot(1, 1, 1)
    draw_routes(r, ax)
    texts = {t.get_text(): t for t in ax.texts}
    assert texts["the BOS sink"].xy == (0, 0)  # beside x0@0
    assert texts["carries ' c'"].xy == (2.0, 0.5)  # the middle of x0@2 -> x0A@2
    assert texts["movers"].get_position() == (1.5, 2.0)  # one node at the centre of x1@1 (1, 2) and x1@2 (2, 2)
    rings = [c for c in ax.collections if c.get_gid() == "pins"]
    assert len(rings) == 1  # x2@2, and the pinned edge's ends: x1@2 (drawn as the supernode) and x1A@2
    assert sorted(map(tuple, rings[0].get_offsets().tolist())) == [(1.5, 2.0), (2.0, 3.0), (2.0, 4.0)]
    plain = Figure().add_subplot(1, 1, 1)
    draw_routes(hand_trace().routes(0.125), plain)
    assert {t.get_text() for t in plain.texts} == {"'a' 100%"}
    assert render_routes(r, "svg").startswith(b"<?xml")


# --- the picture of edited routes, read back from its SVG ----------------------------------------------------------
SVG = "{http://www.w3.org/2000/svg}"


def svg_groups(svg: bytes) -> dict:
    """The SVG's groups by id (matplotlib writes each artist with a gid as <g id="gid">), comments kept (matplotlib
    writes a drawn text's characters in one beside their glyphs)."""
    root = ET.fromstring(svg, ET.XMLParser(target=ET.TreeBuilder(insert_comments=True)))
    return {g.get("id"): g for g in root.iter(f"{SVG}g") if g.get("id")}


def marks(group) -> list:
    """The shapes a group draws (a scatter's points; the defs they reuse have no style)."""
    return [el for el in group.iter() if el.tag in (f"{SVG}path", f"{SVG}use") and el.get("style")]


def style(el) -> dict[str, str]:
    return dict(part.split(": ", 1) for part in el.get("style").split("; "))


def opacity(group) -> set[float]:
    """The alphas a group's shapes are drawn at (1.0 where none is written)."""
    return {float(next((v for k, v in style(el).items() if k in ("opacity", "stroke-opacity", "fill-opacity")), 1))
            for el in marks(group)}


def drawn_edges(groups: dict) -> set[int]:
    return {int(k[5:]) for k in groups if k.startswith("edge-")}


def focused(focus: str) -> Routes:
    """x1A@2 selected and x2@2 pinned: the subgraph is those two and the residual and FFN edges between them
    (edges 9 and 10); the other 7 nodes and 9 edges are the rest."""
    r = hand_trace().routes(0.125)
    r.edits = Edits(selected_nodes=["x1A@2"], pinned_nodes=["x2@2"], focus=focus)
    return r


def test_the_picture_leaves_hidden_nodes_and_edges_out():
    from flowroutes.figures import render_routes, routes_figure

    plain = svg_groups(render_routes(hand_trace().routes(0.125), "svg"))
    assert drawn_edges(plain) == set(range(11)) and len(marks(plain["nodes"])) == 9
    hidden = svg_groups(render_routes(focused("hide"), "svg"))
    assert drawn_edges(hidden) == {9, 10}
    assert len(marks(hidden["nodes"])) == 2 and "nodes-faded" not in hidden
    assert {k for k in hidden if k.startswith("ffn-block-")} == {"ffn-block-10"}  # edge 5's block went with it
    assert "; edited: 16 of 20 nodes and edges hidden)" in routes_figure(focused("hide")).axes[0].get_title()
    # selected but focus "all": everything drawn
    assert drawn_edges(svg_groups(render_routes(focused("all"), "svg"))) == set(range(11))


def test_the_picture_draws_faded_nodes_and_edges_at_the_faded_alpha():
    from flowroutes.figures import FADED_ALPHA, render_routes

    assert FADED_ALPHA == 0.12  # the explorer's opacity for them (graph.css .faded)
    groups = svg_groups(render_routes(focused("fade"), "svg"))
    assert drawn_edges(groups) == set(range(11))
    for i in range(11):
        assert opacity(groups[f"edge-{i}"]) == ({0.7} if i == 9 else {0.8} if i == 10 else {0.12}), i
    assert opacity(groups["ffn-block-5"]) == {0.12} and opacity(groups["ffn-block-10"]) == {1.0}
    assert len(marks(groups["nodes"])) == 2 and opacity(groups["nodes"]) == {1.0}
    assert len(marks(groups["nodes-faded"])) == 7 and opacity(groups["nodes-faded"]) == {0.12}


def test_the_picture_draws_a_supernode_as_one_labelled_node_with_the_summed_edges():
    from flowroutes.figures import render_routes

    r = hand_trace().routes(0.125)
    r.edits = Edits(supernodes=[Supernode("movers", ["x1@1", "x1@2"])])
    groups = svg_groups(render_routes(r, "svg"))
    # the members' edges (3 to 8) are drawn as the summed ones; the members as the supernode
    assert drawn_edges(groups) == {0, 1, 2, 9, 10} and len(marks(groups["nodes"])) == 7
    node = groups["supernode-0"]
    assert node.find(f"{SVG}title").text == "supernode movers: x1@1, x1@2"
    assert any(c.text.strip() == "movers" for c in node.iter() if c.tag is ET.Comment)  # the label drawn
    summed = supernode_edges(r, r.edits)
    assert [s["weight"] for s in summed] == [0.9375, 1.0, pytest.approx(1.0, abs=F64_HAND)]  # worked out above
    supers = sorted(k for k in groups if k.startswith("super-edge-"))
    assert supers == [f"super-edge-{k}" for k in range(len(summed))]
    for k, s in enumerate(summed):
        title = groups[f"super-edge-{k}"].find(f"{SVG}title").text
        head, weight = title.split(": weight ")
        assert head == f"summed edge {s['source']} -> {s['target']}"
        assert float(weight.split(" ")[0]) == pytest.approx(s["weight"], abs=printed_to(4))
        # and drawn as wide as an edge of that weight: 0.4 + 3.6 * min(1, weight) points
        width = float(style(marks(groups[f"super-edge-{k}"])[0])["stroke-width"])
        assert width == pytest.approx(0.4 + 3.6 * min(1.0, s["weight"]), abs=printed_to(6))
    assert groups["super-edge-0"].find(f"{SVG}title").text.endswith("(1 edge)")  # x0A@1 -> x1@1 alone


def test_notes_are_cut_in_the_picture_whole_in_the_svg_tooltip_and_follow_their_node():
    from matplotlib.figure import Figure

    from flowroutes.figures import NOTE_CHARS, draw_routes, render_routes

    long = "reads the name from two tokens back & copies it <here>\x07 " * 3  # a control character: not XML
    r = hand_trace().routes(0.125)
    r.edits = Edits(selected_nodes=["x1A@2"], pinned_nodes=["x2@2"], focus="hide",
                    supernodes=[Supernode("movers", ["x2@2", "x1A@2"])],
                    notes={"x2@2": long, "x0@0": "hidden with the rest", edge_id("ffn", "x1A@2", "x2@2"): "inside"})
    ax = Figure().add_subplot(1, 1, 1)
    draw_routes(r, ax)
    notes = {t.get_gid(): t for t in ax.texts if (t.get_gid() or "").startswith("note-")}
    assert set(notes) == {"note-0", "note-2"}  # x0@0 is hidden, so is its note
    cut = notes["note-0"].get_text()
    assert len(cut) == NOTE_CHARS == 40 and cut.endswith("\u2026") and long.startswith(cut[:-1])
    assert notes["note-0"].xy == (2.0, 3.5)  # x2@2 is drawn as the supernode, between x1A@2 (2, 3) and x2@2 (2, 4)
    assert notes["note-2"].xy == (2.0, 3.5)  # an edge inside it: at the supernode too
    groups = svg_groups(render_routes(r, "svg"))
    # whole, escaped and read back (the control character left out of the XML)
    assert groups["note-0"].find(f"{SVG}title").text == f"note on x2@2: {long}".replace("\x07", "")
    assert "note-1" not in groups
