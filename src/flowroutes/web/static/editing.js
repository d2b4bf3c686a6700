// flowroutes routes graph, edited: pins, a selected subgraph (click, shift-click, shift-drag a box), the rest faded
// or hidden, labelled supernodes drawn as one node with the summed edges, free-text notes; as JSON, the `edits` of
// routes JSON v3 (docs/schema.md, flowroutes.edits checks them). One ES module for the explorer page (its edit bar,
// static/editbar.js, saves and shares them) and the notebook widget (static/widget.js syncs them with Python).
// Reads no page globals, looks up no elements and makes no requests: the host hears of each edit through `on`.
"use strict";

import { svgEl, show, width } from "./graph.js";

export const EDITS_NOTE_MAX = 1000, EDITS_LABEL_MAX = 120; // as flowroutes.edits accepts them
export const edgeKey = (e) => `${e.kind}:${e.source}->${e.target}`;
export const editsEmpty = (j) => !j.selection.nodes.length && !j.selection.edges.length && !j.pins.nodes.length
  && !j.pins.edges.length && !j.supernodes.length && !Object.keys(j.notes).length && j.focus === "all";
function routesIds(routes) {
  return { nodes: new Set(routes.nodes.map((n) => n.id)), edges: new Set(routes.edges.map(edgeKey)) };
}

// the edits of one graph at a time (drawRoutes hands each new one to `attach`: opts.editing = editor); `on` holds
// what the host is told: attached(routes) (a new graph, before its edits are painted), changed() (after a person's
// edit, painted) and painted(json) (after each painting, with the edits as JSON)
export function createEditor(on = {}) {
  const edits = { selNodes: new Set(), selEdges: new Set(), pinNodes: new Set(), pinEdges: new Set(),
                  supernodes: [], notes: new Map(), focus: "all" };
  let graph = null; // the graph being edited: {svg, routes, view, nodesG, edgesG, X, Y, levelOf, nodes, toGraph, byKey}
  const changed = () => { paint(); if (on.changed) on.changed(); };

  function clear() {
    for (const k of ["selNodes", "selEdges", "pinNodes", "pinEdges"]) edits[k].clear();
    edits.supernodes = []; edits.notes.clear(); edits.focus = "all";
  }
  // the edits of `routes`, as flowroutes.edits reads them (ids of other thresholds left out)
  function json(routes) {
    const { nodes, edges } = routesIds(routes);
    const keep = (set, known) => [...set].filter((x) => known.has(x));
    return {
      selection: { nodes: keep(edits.selNodes, nodes), edges: keep(edits.selEdges, edges) },
      pins: { nodes: keep(edits.pinNodes, nodes), edges: keep(edits.pinEdges, edges) },
      supernodes: edits.supernodes.filter((s) => s.nodes.every((n) => nodes.has(n))).map((s) => ({ label: s.label, nodes: [...s.nodes] })),
      notes: Object.fromEntries([...edits.notes].filter(([k]) => nodes.has(k) || edges.has(k))),
      focus: edits.focus,
    };
  }
  // edits from JSON (a link, a file, Python), checked against `routes`: wrong shapes throw one line; ids these
  // routes lack are left out and counted (returned)
  function restore(data, routes) {
    const bad = (what) => { throw new Error(`the edits are malformed (${what})`); };
    if (!data || typeof data !== "object" || Array.isArray(data)) bad("not an object");
    const { nodes, edges } = routesIds(routes);
    let dropped = 0;
    const list = (v, where, known) => {
      if (v === undefined) return [];
      if (!Array.isArray(v) || v.length > 5000 || !v.every((x) => typeof x === "string")) bad(`${where} is not a list of ids`);
      const kept = v.filter((x) => known.has(x));
      dropped += v.length - kept.length;
      return kept;
    };
    const pair = (v, where) => {
      if (v === undefined) return { nodes: [], edges: [] };
      if (!v || typeof v !== "object" || Array.isArray(v)) bad(`${where} is not {nodes, edges}`);
      return { nodes: list(v.nodes, `${where}.nodes`, nodes), edges: list(v.edges, `${where}.edges`, edges) };
    };
    const sel = pair(data.selection, "selection"), pins = pair(data.pins, "pins");
    const supers = data.supernodes === undefined ? [] : data.supernodes;
    if (!Array.isArray(supers) || supers.length > 200) bad("supernodes is not a list");
    const grouped = new Set(), groups = [];
    supers.forEach((s, k) => {
      if (!s || typeof s.label !== "string" || !s.label.trim() || s.label.length > EDITS_LABEL_MAX) bad(`supernodes[${k}] has no label of 1 to ${EDITS_LABEL_MAX} characters`);
      const members = list(s.nodes, `supernodes[${k}].nodes`, nodes).filter((n) => !grouped.has(n));
      if (members.length < 2 || groups.some((g) => g.label === s.label) || nodes.has(s.label)) { dropped++; return; }
      members.forEach((n) => grouped.add(n));
      groups.push({ label: s.label, nodes: members });
    });
    const notes = data.notes === undefined ? {} : data.notes;
    if (!notes || typeof notes !== "object" || Array.isArray(notes) || Object.keys(notes).length > 2000) bad("notes is not an object of id -> text");
    const noteMap = new Map();
    for (const [k, v] of Object.entries(notes)) {
      if (typeof v !== "string" || v.length > EDITS_NOTE_MAX) bad(`the note on ${String(k).slice(0, 40)} is not text of at most ${EDITS_NOTE_MAX} characters`);
      if (nodes.has(k) || edges.has(k)) noteMap.set(k, v); else dropped++;
    }
    const focus = data.focus === undefined ? "all" : data.focus;
    if (!["all", "fade", "hide"].includes(focus)) bad("focus is not all, fade or hide");
    clear();
    sel.nodes.forEach((x) => edits.selNodes.add(x)); sel.edges.forEach((x) => edits.selEdges.add(x));
    pins.nodes.forEach((x) => edits.pinNodes.add(x)); pins.edges.forEach((x) => edits.pinEdges.add(x));
    edits.supernodes = groups; edits.notes = noteMap; edits.focus = focus;
    return dropped;
  }

  // ---- drawing ----
  function attach(svg, routes, parts) {
    graph = { svg, routes, ...parts, byKey: new Map(routes.edges.map((e) => [edgeKey(e), e])) };
    for (const g of parts.edgesG.querySelectorAll(".edge")) g.dataset.key = edgeKey(routes.edges[Number(g.dataset.index)]);
    if (on.attached) on.attached(routes);
    paint();
    // the keyboard: on a focused node or edge (Tab, then the arrows), s adds or removes it, p pins or unpins it
    svg.addEventListener("keydown", (ev) => {
      const item = ev.target.closest && ev.target.closest(".edge, .node");
      if (!item || ev.ctrlKey || ev.metaKey || ev.altKey || !["s", "p"].includes(ev.key)) return;
      ev.preventDefault();
      if (ev.key === "s") { select(item, true); return; }
      const [kind, key] = itemKey(item);
      const pins = kind === "node" ? edits.pinNodes : edits.pinEdges;
      if (pins.has(key)) pins.delete(key); else pins.add(key);
      changed();
    });
  }
  function itemKey(item) { return item.classList.contains("node") ? ["node", item.dataset.id] : ["edge", item.dataset.key]; }
  function select(item, add) { // a click (add: shift-click toggles) on a node, an edge or a supernode of the graph
    if (!graph || !item.isConnected) return;
    if (item.classList.contains("supernode")) {
      const s = edits.supernodes.find((x) => x.label === item.dataset.label);
      if (!add) { edits.selNodes.clear(); edits.selEdges.clear(); }
      const all = !s.nodes.every((n) => edits.selNodes.has(n));
      s.nodes.forEach((n) => (all ? edits.selNodes.add(n) : edits.selNodes.delete(n)));
    } else {
      const [kind, key] = itemKey(item);
      const set = kind === "node" ? edits.selNodes : edits.selEdges;
      if (!add) { edits.selNodes.clear(); edits.selEdges.clear(); set.add(key); } else if (set.has(key)) set.delete(key); else set.add(key);
    }
    changed();
  }
  // shift and drag on the background: the nodes inside the box, and the edges between them, join the selection
  function box(ev) {
    const g = graph, start = g.toGraph(ev);
    const rect = svgEl("rect", { class: "select-box", x: start.x, y: start.y, width: 0, height: 0 }, g.view);
    let end = start;
    const move = (e) => {
      end = g.toGraph(e);
      rect.setAttribute("x", Math.min(start.x, end.x)); rect.setAttribute("y", Math.min(start.y, end.y));
      rect.setAttribute("width", Math.abs(end.x - start.x)); rect.setAttribute("height", Math.abs(end.y - start.y));
    };
    const up = () => {
      g.svg.removeEventListener("pointermove", move); window.removeEventListener("pointerup", up);
      rect.remove();
      const [x0, x1] = [Math.min(start.x, end.x), Math.max(start.x, end.x)], [y0, y1] = [Math.min(start.y, end.y), Math.max(start.y, end.y)];
      const inside = new Set();
      for (const n of g.routes.nodes) {
        const x = g.X(n.position), y = g.Y(g.levelOf(n));
        if (x >= x0 && x <= x1 && y >= y0 && y <= y1) inside.add(n.id);
      }
      inside.forEach((id) => edits.selNodes.add(id));
      for (const e of g.routes.edges) if (inside.has(e.source) && inside.has(e.target)) edits.selEdges.add(edgeKey(e));
      g.svg.dataset.boxed = inside.size;
      changed();
    };
    g.svg.addEventListener("pointermove", move);
    window.addEventListener("pointerup", up);
  }
  function labelled(item, note) { // the hover text: what the item is, and its note
    if (item.dataset.base === undefined) item.dataset.base = item.getAttribute("aria-label") || "";
    const text = note ? `${item.dataset.base} | note: ${note}` : item.dataset.base;
    if (item.getAttribute("aria-label") !== text) {
      item.setAttribute("aria-label", text);
      const old = item.querySelector(":scope > title");
      if (old) old.remove(); // made again from the label on the next hover
    }
    item.classList.toggle("noted", Boolean(note));
  }
  function paint() {
    const g = graph;
    if (!g || !g.svg.isConnected) return;
    const { svg, routes } = g;
    const group = new Map(), live = [];
    for (const s of edits.supernodes) {
      if (!s.nodes.every((n) => g.nodes.has(n))) continue;
      live.push(s); s.nodes.forEach((n) => group.set(n, s.label));
    }
    // the subgraph: the selected and pinned nodes and edges, the edges between its nodes, the nodes of its edges
    const keepN = new Set([...edits.selNodes, ...edits.pinNodes].filter((n) => g.nodes.has(n)));
    const keepE = new Set([...edits.selEdges, ...edits.pinEdges].filter((k) => g.byKey.has(k)));
    for (const e of routes.edges) if (keepN.has(e.source) && keepN.has(e.target)) keepE.add(edgeKey(e));
    for (const k of keepE) { const e = g.byKey.get(k); keepN.add(e.source); keepN.add(e.target); }
    const focusing = edits.focus !== "all" && keepN.size > 0;
    const out = (kept) => [focusing && !kept && edits.focus === "fade", focusing && !kept && edits.focus === "hide"];
    let faded = 0, hidden = 0;
    const mark = (item, key, pinned, selected, kept, inGroup) => {
      const [f, h] = out(kept);
      item.classList.toggle("pinned", pinned); item.classList.toggle("in-selection", selected);
      item.classList.toggle("faded", f); item.classList.toggle("focus-hidden", h); item.classList.toggle("grouped", inGroup);
      faded += f; hidden += h;
      labelled(item, edits.notes.get(key));
    };
    for (const item of g.edgesG.querySelectorAll(".edge[data-key]")) {
      const k = item.dataset.key, e = g.byKey.get(k);
      mark(item, k, edits.pinEdges.has(k), edits.selEdges.has(k), keepE.has(k), group.has(e.source) || group.has(e.target));
    }
    for (const item of g.nodesG.querySelectorAll(".node")) {
      const id = item.dataset.id;
      mark(item, id, edits.pinNodes.has(id), edits.selNodes.has(id), keepN.has(id), group.has(id));
    }
    for (const p of g.edgesG.querySelectorAll("path.bulk")) { const [f, h] = out(false); p.classList.toggle("faded", f); p.classList.toggle("focus-hidden", h); }
    // supernodes: one node at the middle of their members, and one edge per neighbour with the summed weights
    svg.querySelectorAll(".supernodes").forEach((x) => x.remove());
    const layer = svgEl("g", { class: "supernodes" }, g.view);
    const centre = new Map();
    for (const s of live) {
      const ns = s.nodes.map((id) => g.nodes.get(id));
      centre.set(s.label, { x: ns.reduce((a, n) => a + g.X(n.position), 0) / ns.length, y: ns.reduce((a, n) => a + g.Y(g.levelOf(n)), 0) / ns.length });
    }
    const at = (id) => centre.get(id) || (() => { const n = g.nodes.get(id); return { x: g.X(n.position), y: g.Y(g.levelOf(n)) }; })();
    const summed = new Map();
    for (const e of routes.edges) {
      if (!group.has(e.source) && !group.has(e.target)) continue;
      const s = group.get(e.source) ?? e.source, t = group.get(e.target) ?? e.target;
      if (s === t) continue;
      const k = `${s}\u0000${t}`;
      if (!summed.has(k)) summed.set(k, { source: s, target: t, weight: 0, n: 0, kept: false });
      const entry = summed.get(k);
      entry.weight += e.weight; entry.n++; entry.kept = entry.kept || keepE.has(edgeKey(e));
    }
    for (const se of summed.values()) {
      const a = at(se.source), b = at(se.target);
      const line = svgEl("line", { class: "super-edge", x1: a.x, y1: a.y, x2: b.x, y2: b.y, stroke: "#7b3fa0", "stroke-width": width(Math.min(1, se.weight)),
                                   opacity: 0.85, "data-source": se.source, "data-target": se.target, "data-weight": String(se.weight),
                                   "aria-label": `summed edge ${se.source} -> ${se.target}: weight ${se.weight.toFixed(4)} (${se.n} edge${se.n > 1 ? "s" : ""})` }, layer);
      const [f, h] = out(se.kept);
      line.classList.toggle("faded", f); line.classList.toggle("focus-hidden", h);
    }
    for (const s of live) {
      const c = centre.get(s.label);
      const node = svgEl("g", { class: "supernode", "data-label": s.label, "data-members": s.nodes.length, tabindex: "-1", role: "button",
                                "aria-label": `supernode ${show(s.label)}: ${s.nodes.join(", ")}` }, layer);
      const w = 12 + 6.5 * s.label.length;
      svgEl("rect", { x: c.x - w / 2, y: c.y - 9, width: w, height: 18, rx: 9, class: "supernode-box" }, node);
      svgEl("text", { x: c.x, y: c.y + 4, "text-anchor": "middle", class: "supernode-label", text: s.label }, node);
      node.classList.toggle("in-selection", s.nodes.every((n) => edits.selNodes.has(n)));
      node.classList.toggle("pinned", s.nodes.some((n) => edits.pinNodes.has(n)));
    }
    svg.dataset.faded = faded; svg.dataset.hidden = hidden;
    if (on.painted) on.painted(json(routes));
  }

  // ---- what the host's edit bar does; a refusal throws one line, as the page and the widget show errors ----
  function pin() { // pins the selection, or unpins it when all of it is pinned
    const all = [...edits.selNodes].every((n) => edits.pinNodes.has(n)) && [...edits.selEdges].every((k) => edits.pinEdges.has(k));
    if (!edits.selNodes.size && !edits.selEdges.size) throw new Error("select nodes or edges to pin first (click, shift-click or shift-drag)");
    for (const n of edits.selNodes) { if (all) edits.pinNodes.delete(n); else edits.pinNodes.add(n); }
    for (const k of edits.selEdges) { if (all) edits.pinEdges.delete(k); else edits.pinEdges.add(k); }
    changed();
  }
  function group(text) { // the selected nodes become one supernode labelled `text`
    const label = text.trim();
    const members = [...edits.selNodes].filter((n) => graph.nodes.has(n));
    if (members.length < 2) throw new Error("a supernode groups at least two nodes: select them first (shift-click or shift-drag)");
    if (!label || label.length > EDITS_LABEL_MAX) throw new Error(`give the supernode a label of 1 to ${EDITS_LABEL_MAX} characters, e.g. name movers`);
    if (edits.supernodes.some((s) => s.label === label)) throw new Error(`there is already a supernode ${show(label)}: choose another label`);
    if (graph.nodes.has(label)) throw new Error(`${label} is a node's id: give the supernode a name`);
    const taken = members.filter((n) => edits.supernodes.some((s) => s.nodes.includes(n)));
    if (taken.length) throw new Error(`${taken[0]} is already in a supernode: ungroup it first`);
    edits.supernodes.push({ label, nodes: members });
    changed();
  }
  function ungroup() { // the supernodes of the selected nodes
    edits.supernodes = edits.supernodes.filter((s) => !s.nodes.some((n) => edits.selNodes.has(n)));
    changed();
  }
  function note(text) { // `text` on the one selected node or edge; an empty text removes its note
    const items = [...edits.selNodes, ...edits.selEdges];
    if (items.length !== 1) throw new Error(`a note goes on one node or edge: ${items.length} are selected (click one)`);
    if (text.length > EDITS_NOTE_MAX) throw new Error(`a note holds at most ${EDITS_NOTE_MAX} characters`);
    if (text.trim()) edits.notes.set(items[0], text); else edits.notes.delete(items[0]);
    changed();
  }
  function clearSelection() { edits.selNodes.clear(); edits.selEdges.clear(); changed(); }
  function setFocus(focus) { edits.focus = focus; changed(); }

  return { edits, get graph() { return graph; }, clear, json, restore, attach, select, box, paint,
           pin, group, ungroup, note, clearSelection, setFocus };
}
