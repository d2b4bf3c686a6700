// flowroutes notebook widget (flowroutes.widget): the routes graph (graph.js) with its controls, an inspector and
// the page's editing (editing.js) in a Jupyter cell. An anywidget module: flowroutes/notebook.py sends graph.js,
// editing.js and this file as one ES module (their imports of each other dropped). Makes no requests; Python
// answers every change.
// The model's traits, kept by Python (flowroutes/notebook.py): routes (the routes JSON), display (token texts as
// shown), threshold and position (set here, answered by Python with trace.routes), adjustable (false for a bare
// Routes: no trace to recompute from), min_threshold, edits (the routes' edits, schema v3: set here after each
// edit, checked by Python), error (one line, or "") and note (one line, or "": edits dropped by a new threshold).
"use strict";

import { el, show, drawRoutes } from "./graph.js";
import { createEditor } from "./editing.js";

function widgetInspector(panel, title) {
  panel.textContent = "";
  el("h3", { class: "fw-title", text: title }, panel);
  return panel;
}
function inspectEdge(panel, e) {
  const box = widgetInspector(panel, `${e.kind} edge ${e.source} -> ${e.target}`);
  const table = el("table", { class: "fw-edge" }, box);
  const row = (k, v, attrs = {}) => { const tr = el("tr", {}, table); el("th", { text: k }, tr); el("td", { text: v, ...attrs }, tr); };
  row("kind", e.kind, { class: "fw-kind" });
  row("block", String(e.layer));
  row("weight", e.weight.toFixed(4), { class: "fw-weight", "data-weight": String(e.weight) });
  if (e.heads) {
    const heads = Object.entries(e.heads).sort((a, b) => b[1] - a[1]);
    row("heads", heads.map(([h, w]) => `L${e.layer}H${h} ${w.toFixed(3)}`).join(", "), { class: "fw-heads" });
  }
}
function inspectNode(panel, n, display) {
  const what = n.kind === "attention" ? `after block ${n.layer}'s attention` : n.layer === 0 ? "embedding" : `input of block ${n.layer}`;
  const box = widgetInspector(panel, `${n.id}${n.outside ? " (outside the routes)" : ""}`);
  el("p", { class: "fw-node", text: `${what}, token ${show(display[n.position])} (position ${n.position})` }, box);
}
// the edit bar, as the page's: its buttons call the editor; a refusal is shown in `error` until the next action
function editBar(root, editor, error) {
  const bar = el("div", { class: "fw-edit-bar", role: "toolbar", "aria-label": "edit the graph" }, root);
  el("span", { class: "hint", text: "click selects, shift-click adds, shift-drag boxes",
               title: "on a focused node or edge: s selects, p pins" }, bar);
  const count = el("span", { class: "fw-edit-count", text: "nothing selected" }, bar);
  const guarded = (fn) => {
    try { error.textContent = ""; error.hidden = true; fn(); } catch (err) { error.textContent = err.message; error.hidden = false; }
  };
  const button = (cls, text, title, fn) => {
    const b = el("button", { type: "button", class: cls, text, title }, bar);
    b.addEventListener("click", () => guarded(fn));
  };
  button("fw-pin", "pin", "pin (or unpin) the selected nodes and edges", () => editor.pin());
  const focusLabel = el("label", { text: "show " }, bar);
  const focus = el("select", { class: "fw-focus", "aria-label": "what the graph shows besides the subgraph" }, focusLabel);
  for (const [value, text] of [["all", "everything"], ["fade", "the subgraph, the rest faded"], ["hide", "only the subgraph"]]) {
    el("option", { value, text }, focus);
  }
  focus.addEventListener("change", () => guarded(() => editor.setFocus(focus.value)));
  const label = el("input", { class: "fw-group-label", maxlength: 120, placeholder: "supernode label, e.g. name movers",
                              "aria-label": "supernode label" }, bar);
  button("fw-group", "group", "group the selected nodes into one labelled node", () => { editor.group(label.value); label.value = ""; });
  button("fw-ungroup", "ungroup", "undo the supernodes of the selected nodes", () => editor.ungroup());
  const note = el("input", { class: "fw-note-text", maxlength: 1000, placeholder: "note on the selected node or edge",
                             "aria-label": "note" }, bar);
  button("fw-note-set", "note", "put the note on the one selected node or edge (empty: remove it)", () => { editor.note(note.value); note.value = ""; });
  button("fw-clear", "clear selection", "", () => editor.clearSelection());
  return (j) => { // after each painting: the counts and the focus shown
    count.textContent = [`${j.selection.nodes.length} nodes and ${j.selection.edges.length} edges selected`,
                         `${j.pins.nodes.length + j.pins.edges.length} pinned`, `${j.supernodes.length} supernodes`,
                         `${Object.keys(j.notes).length} notes`].join(", ");
    focus.value = j.focus;
  };
}
function renderWidget({ model, el: root }) {
  root.textContent = "";
  root.classList.add("flowroutes-widget");
  const controls = el("div", { class: "fw-controls" }, root);
  const posLabel = el("label", { text: "position " }, controls);
  const position = el("select", { class: "fw-position", "aria-label": "explained position" }, posLabel);
  const tauLabel = el("label", { text: "\u03c4 " }, controls);
  const slider = el("input", { class: "fw-threshold", type: "range", min: model.get("min_threshold"), max: 0.5,
                               step: 0.005, "aria-label": "threshold \u03c4" }, tauLabel);
  const tauText = el("output", { class: "fw-threshold-value" }, tauLabel);
  const status = el("span", { class: "hint fw-status" }, controls);
  const error = el("div", { class: "fw-error", role: "alert" }, root);
  const noteLine = el("div", { class: "fw-note", role: "status" }, root);
  // the edits: Python's `edits` restored on each graph drawn; each edit made here sent back to Python
  let painted = () => {};
  const editor = createEditor({
    attached: (routes) => {
      try { editor.restore(model.get("edits") || {}, routes); } catch (err) { editor.clear(); error.textContent = err.message; error.hidden = false; }
    },
    changed: () => { if (editor.graph) { model.set("edits", editor.json(editor.graph.routes)); model.save_changes(); } },
    painted: (j) => painted(j),
  });
  painted = editBar(root, editor, error);
  const body = el("div", { class: "fw-body" }, root);
  const graph = el("div", { class: "fw-graph" }, body);
  const panel = el("aside", { class: "fw-inspector", "aria-live": "polite" }, body);
  let renders = 0;
  const emptyInspector = () => {
    panel.textContent = "";
    el("p", { class: "hint", text: "Click an edge or a node to inspect it." }, panel);
  };
  const showNote = () => { noteLine.textContent = model.get("note") || ""; noteLine.hidden = !model.get("note"); };
  function draw() {
    const routes = model.get("routes"), display = model.get("display");
    const adjustable = model.get("adjustable");
    position.textContent = "";
    display.forEach((t, p) => el("option", { value: p, text: `${p}: ${show(t)}` }, position));
    position.value = routes.position;
    slider.value = model.get("threshold");
    tauText.textContent = Number(model.get("threshold")).toFixed(3);
    slider.disabled = position.disabled = !adjustable;
    if (!adjustable) tauLabel.title = position.title = "a Routes object has one threshold and position: pass the trace to change them";
    status.textContent = `${routes.nodes.length} nodes, ${routes.edges.length} edges`;
    error.textContent = model.get("error"); error.hidden = !model.get("error");
    showNote();
    emptyInspector();
    drawRoutes(graph, routes, {
      interactive: true, fit: true, display, height: () => 460, editing: editor,
      onEdge: (e) => inspectEdge(panel, e), onNode: (n) => inspectNode(panel, n, display),
    });
    root.dataset.renders = String(++renders); // tests wait on it
  }
  // edits set in Python: drawn on the graph on screen (with new routes, the redraw restores them)
  function editsFromPython() {
    const g = editor.graph;
    if (!g || g.routes !== model.get("routes")) return;
    if (JSON.stringify(model.get("edits")) === JSON.stringify(editor.json(g.routes))) return; // what this cell sent
    try { editor.restore(model.get("edits") || {}, g.routes); } catch (err) { editor.clear(); error.textContent = err.message; error.hidden = false; }
    editor.paint();
    root.dataset.edited = String(Number(root.dataset.edited || 0) + 1); // tests wait on it
  }
  slider.addEventListener("input", () => { tauText.textContent = Number(slider.value).toFixed(3); });
  slider.addEventListener("change", () => { model.set("threshold", Number(slider.value)); model.save_changes(); });
  position.addEventListener("change", () => { model.set("position", Number(position.value)); model.save_changes(); });
  const redraw = () => draw();
  model.on("change:routes", redraw);
  model.on("change:error", redraw);
  model.on("change:edits", editsFromPython);
  model.on("change:note", showNote);
  draw();
  return () => {
    model.off("change:routes", redraw); model.off("change:error", redraw);
    model.off("change:edits", editsFromPython); model.off("change:note", showNote);
  };
}
export default { render: renderWidget };
