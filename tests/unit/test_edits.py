"""Edits made in the explorer (pins, a subgraph, supernodes, notes): schema v3 round trips, refusals of malformed
edits, the summed edges of a supernode worked out by hand, and what the circuit-tracer export carries."""

import json

import pytest

from flowroutes import FlowroutesError, Routes
from flowroutes.circuit_tracer import to_circuit_tracer
from flowroutes.edits import Edits, Supernode, edge_id, ids_of, supernode_edges
from tests.helpers.tolerances import F64_HAND
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
    texts = {t.get_text(): t.xy for t in ax.texts}
    assert texts["the BOS sink"] == (0, 0)  # beside x0@0
    assert texts["carries ' c'"] == (2.0, 0.5)  # the middle of x0@2 -> x0A@2
    assert texts["movers"] == (0.75, 2.6)  # above the outline of x1@1 and x1@2 (both at level 2)
    rings = [c for c in ax.collections if c.get_sizes().tolist() == [60.0]]
    assert len(rings) == 1  # x2@2, and the pinned edge's ends x1@2 and x1A@2
    assert sorted(map(tuple, rings[0].get_offsets().tolist())) == [(2.0, 2.0), (2.0, 3.0), (2.0, 4.0)]
    plain = Figure().add_subplot(1, 1, 1)
    draw_routes(hand_trace().routes(0.125), plain)
    assert {t.get_text() for t in plain.texts} == {"'a' 100%"}
    assert render_routes(r, "svg").startswith(b"<?xml")
