"""The tutorial notebook in examples/ runs top to bottom (nbclient), so it cannot rot, and what it evaluates
displays itself: routes as their graph, an analysis result as its figure and numbers."""

import html
import os
import re
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "tutorial.ipynb"


@pytest.mark.slow
def test_tutorial_notebook_executes(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(str(o.get("data", {}).get("text/plain", "")) + o.get("text", "") for o in outputs)
    assert "(30, 9)" in text and "' Mary'" in text
    assert (tmp_path / "tutorial-ioi" / "report.html").exists()
    assert os.path.getsize(tmp_path / "tutorial-ioi" / "task-heads.svg") > 1000
    # evaluating `routes` (no display code) shows the graph: one SVG element per edge, as many as its caption says
    shown = _result_of(nb, "routes = tr.routes(threshold=0.1)\nroutes")
    assert "IPython.display" not in "".join(c.source for c in nb.cells) and "render_routes" not in text
    graph = shown["text/html"]
    n_edges = int(re.search(r"(\d+) edges", html.unescape(graph[graph.index("<figcaption>"):])).group(1))
    assert n_edges > 20 and graph.count("<svg") == 1
    assert sorted(int(i) for i in re.findall(r'<g id="edge-(\d+)"', graph)) == list(range(n_edges))
    assert "-> ' Mary'" in html.unescape(graph) and f"{n_edges} edges" in shown["text/plain"]
    # the trace shows its routes too, and the analysis result its figure inline and numbers for people
    assert "<svg" in _result_of(nb, "tr = flowroutes.trace(")["text/html"]
    # the interactive widget: a widget view of the same routes
    widget = _result_of(nb, "w = flowroutes.widget(tr, threshold=0.1)")
    assert widget["application/vnd.jupyter.widget-view+json"]["model_id"]
    analysis = _result_of(nb, "result = analyze(")
    assert "data:image/png;base64," in analysis["text/html"] and "Estimate(" not in str(analysis)
    assert re.search(r"mean_metric_task: -?\d+\.\d{3} \[-?\d+\.\d{3}, -?\d+\.\d{3}\] \(n=6 examples\)",
                     analysis["text/plain"])


def _result_of(nb, source: str) -> dict:
    """The data of the execute_result of the one code cell whose source holds `source`."""
    cells = [c for c in nb.cells if c.cell_type == "code" and source in c.source]
    assert len(cells) == 1, source
    results = [o for o in cells[0].outputs if o.output_type == "execute_result"]
    assert len(results) == 1
    return results[0]["data"]
