"""Routes as circuit-tracer graph files: every routes edge is in the graph with its weight, the file validates
against circuit-tracer 0.5.0's own graph model (pydantic) and is served by its own local server, and the
invariants its viewer's `formatData` relies on hold. `flowroutes trace --format circuit-tracer` writes it."""

import json
import socket
import urllib.request
from collections import defaultdict

import pytest
import torch

import flowroutes
from flowroutes.circuit_tracer import ROWS_PER_BLOCK, slug_for, to_circuit_tracer, write_circuit_tracer
from flowroutes.cli import main
from tests.helpers.families import tiny_family
from tests.helpers.models import tiny_llama, word_tokenizer
from tests.helpers.tolerances import F64_HAND, F64_REORDER, printed_to

IDS = torch.tensor([5, 17, 3, 17, 40, 8, 22, 5, 61, 2])


def routes_of(model, threshold=0.02):
    return flowroutes.trace(flowroutes.load_model(model, tokenizer=word_tokenizer()), input_ids=IDS).routes(threshold)


@pytest.fixture(scope="module")
def sequential():
    return routes_of(tiny_llama())


@pytest.fixture(scope="module")
def parallel():
    return routes_of(tiny_family("gptj"))


def incoming(graph):
    into = defaultdict(float)
    for link in graph["links"]:
        into[link["target"]] += link["weight"]
    return into


@pytest.mark.parametrize("which", ["sequential", "parallel"])
def test_every_edge_is_in_the_graph_with_its_weight(which, request):
    routes = request.getfixturevalue(which)
    graph = to_circuit_tracer(routes, "g")
    nodes = {n["node_id"]: n for n in graph["nodes"]}
    links = {(link["source"], link["target"]): link["weight"] for link in graph["links"]}
    assert len(links) == len(graph["links"])  # no pair of nodes is linked twice
    assert {n.id for n in routes.nodes} <= set(nodes)
    head_out = defaultdict(float)  # (head node, target) -> its summed sub-edges
    n_heads = n_ffn = 0
    for e in routes.edges:
        p = next(n.position for n in routes.nodes if n.id == e.target)
        if e.kind == "attention":
            for h, w in e.heads.items():
                hid = f"L{e.layer}H{h}@{p}"
                assert nodes[hid]["feature_type"] == "attention head"
                assert nodes[hid]["layer"] == str(ROWS_PER_BLOCK * e.layer)
                assert links[(e.source, hid)] == pytest.approx(w, abs=F64_HAND)
                head_out[(hid, e.target)] += w
        elif e.kind == "ffn":
            fid = f"FFN{e.layer}@{p}"
            assert links[(e.source, fid)] == pytest.approx(e.weight, abs=F64_HAND)
            assert links[(fid, e.target)] == pytest.approx(e.weight, abs=F64_HAND)
            n_ffn += 1
        else:
            assert links[(e.source, e.target)] == pytest.approx(e.weight, abs=F64_HAND)
    for key, w in head_out.items():
        assert links[key] == pytest.approx(w, abs=F64_HAND)
        n_heads += 1
    # what flows into every state equals the routes' edges into it (nothing lost, nothing added)
    into_routes = defaultdict(float)
    for e in routes.edges:
        into_routes[e.target] += e.weight
    into_graph = incoming(graph)
    for node in routes.nodes:
        assert into_graph.get(node.id, 0.0) == pytest.approx(into_routes.get(node.id, 0.0), abs=F64_REORDER)
    # nodes: the routes' states, one per (head, target position), one per FFN edge, the top-5 predictions
    assert len(nodes) == len(routes.nodes) + len({h for h, _ in head_out}) + n_ffn + len(routes.top_tokens)
    logits = [n for n in graph["nodes"] if n["feature_type"] == "logit"]
    assert [n["token_prob"] for n in logits] == pytest.approx(routes.top_probs)
    assert [n["is_target_logit"] for n in logits] == [True] + [False] * (len(logits) - 1)
    top = f"x{routes.n_layers}@{routes.position}"
    assert links[(top, logits[0]["node_id"])] == 1.0
    assert graph["qParams"]["clickedId"] == logits[0]["node_id"]
    if which == "parallel":  # no x^{lA} rows: a parallel block's edges run from x^l to x^{l+1}
        assert not any(n["layer"] != "E" and n["layer"].isdigit() and int(n["layer"]) % ROWS_PER_BLOCK == 1
                       for n in graph["nodes"])


def test_viewer_invariants(sequential):
    """What circuit-tracer's viewer (attribution_graph/util-cg.js formatData, init-cg-link-graph.js) assumes."""
    graph = to_circuit_tracer(sequential, "g")
    ids = [n["node_id"] for n in graph["nodes"]]
    assert len(ids) == len(set(ids))
    feature_ids = [f"{n['layer']}_{n['feature']}_{n['ctx_idx']}" for n in graph["nodes"]]
    assert len(feature_ids) == len(set(feature_ids))  # the viewer merges nodes with one featureId
    assert all(link["source"] in ids and link["target"] in ids for link in graph["links"])
    tokens = graph["metadata"]["prompt_tokens"]
    assert len(tokens) == len(IDS) and all(0 <= n["ctx_idx"] < len(tokens) for n in graph["nodes"])
    rows = [int(n["layer"]) for n in graph["nodes"] if n["layer"] != "E"]
    logit_rows = {int(n["layer"]) for n in graph["nodes"] if n["feature_type"] == "logit"}
    assert logit_rows == {ROWS_PER_BLOCK * sequential.n_layers} and max(rows) == min(logit_rows)
    top_state = max(int(n["layer"]) for n in graph["nodes"] if n["feature_type"] == "residual stream")
    assert top_state == ROWS_PER_BLOCK * sequential.n_layers - 1  # the viewer puts logits at its max layer + 1
    for n in graph["nodes"]:
        assert n["feature_type"] not in ("cross layer transcoder", "mlp reconstruction error")  # no feature fetch
        if n["feature_type"] == "logit":  # the viewer reads the token and probability from the clerp
            prob = float(n["clerp"].split("(p=")[1].split(")")[0])
            assert prob == pytest.approx(n["token_prob"], abs=printed_to(3))  # the clerp prints p to 3 decimals
    assert all(link["weight"] > 0 for link in graph["links"])


def test_validates_with_circuit_tracers_own_model(sequential, parallel):
    models = pytest.importorskip("circuit_tracer.frontend.graph_models")
    for routes in (sequential, parallel):
        graph = to_circuit_tracer(routes, "g")
        parsed = models.Model.model_validate(graph)
        assert len(parsed.nodes) == len(graph["nodes"]) and len(parsed.links) == len(graph["links"])
        assert parsed.metadata.prompt_tokens == routes.token_texts
        assert {n.feature_type for n in parsed.nodes} >= {"embedding", "residual stream", "attention head", "logit"}
        for node in parsed.nodes:  # circuit-tracer's own constructor gives the same node back
            again = models.Node(**{k: v for k, v in node.model_dump().items() if k != "jsNodeId"})
            assert again == node


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_served_by_circuit_tracers_local_server(sequential, tmp_path):
    local_server = pytest.importorskip("circuit_tracer.frontend.local_server")
    path = write_circuit_tracer(sequential, tmp_path, "tiny-llama")
    write_circuit_tracer(routes_of(tiny_llama(seed=1)), tmp_path, "other")
    write_circuit_tracer(sequential, tmp_path, "tiny-llama")  # replaces its own entry, keeps the other's
    index = json.loads((tmp_path / "graph-metadata.json").read_text())
    assert [g["slug"] for g in index["graphs"]] == ["other", "tiny-llama"]
    port = _free_port()
    server = local_server.serve(data_dir=str(tmp_path), port=port)
    try:
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/data/graph-metadata.json", timeout=10) as r:
            assert json.loads(r.read()) == index
        with urllib.request.urlopen(f"{base}/graph_data/tiny-llama.json", timeout=10) as r:
            assert json.loads(r.read()) == json.loads(path.read_text())
        with urllib.request.urlopen(f"{base}/index.html", timeout=10) as r:  # the viewer page itself
            assert b"graph-metadata.json" in r.read()
    finally:
        server.stop()


def test_bad_slug_and_bad_index(sequential, tmp_path):
    with pytest.raises(flowroutes.FlowroutesError, match="slug"):
        to_circuit_tracer(sequential, "../escape")
    (tmp_path / "graph-metadata.json").write_text("[1, 2]")
    with pytest.raises(flowroutes.FlowroutesError, match="not a circuit-tracer graph index"):
        write_circuit_tracer(sequential, tmp_path, "g")
    assert slug_for("When Mary and John", -1) == slug_for("When Mary and John", -1)
    assert slug_for("When Mary and John", -1) != slug_for("When Mary and John", 3)


def test_cli_format_circuit_tracer(tiny_folder, tmp_path, capsys):
    out = tmp_path / "ct"
    argv = ["trace", "w1 w2 w3 w1 w5 w6", "--model", str(tiny_folder), "--threshold", "0.05", "--out", str(out),
            "--format", "circuit-tracer"]
    assert main(argv) == 0
    slug = slug_for("w1 w2 w3 w1 w5 w6", -1, str(tiny_folder))
    graph = json.loads((out / f"{slug}.json").read_text())
    assert graph["metadata"]["slug"] == slug and graph["metadata"]["prompt"] == "w1 w2 w3 w1 w5 w6"
    assert [g["slug"] for g in json.loads((out / "graph-metadata.json").read_text())["graphs"]] == [slug]
    assert not (out / "routes.json").exists()
    routes = flowroutes.trace(flowroutes.load_model(str(tiny_folder)), "w1 w2 w3 w1 w5 w6").routes(0.05)
    assert graph["links"] == to_circuit_tracer(routes, slug)["links"]
    capsys.readouterr()
    assert main(argv) == 2  # an existing graph is replaced only with --force
    assert "--force" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0
