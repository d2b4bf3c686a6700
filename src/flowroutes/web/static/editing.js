// flowroutes explorer, editing the graph: pins, a selected subgraph (click, shift-click, shift-drag a box), the
// rest faded or hidden, labelled supernodes drawn as one node with the summed edges, free-text notes. Saved into
// routes JSON v3 and circuit-tracer graphs by the server (/api/export, which checks them), restored from a saved
// file (/api/open) and from a shared link (?edits=, bounded, checked here). Plain JavaScript, no build step; it
// uses app.js's helpers ($, el, svgEl, show, api, guarded, showError, showNote, writeUrl) at call time.
"use strict";

const EDITS_URL_MAX = 8000; // characters of a link's ?edits= (base64url JSON); longer ones are ignored
const EDITS_NOTE_MAX = 1000, EDITS_LABEL_MAX = 120; // as flowroutes.edits accepts them
const graphEdits = { selNodes: new Set(), selEdges: new Set(), pinNodes: new Set(), pinEdges: new Set(),
                     supernodes: [], notes: new Map(), focus: "all" };
let editGraph = null; // the main graph being edited: {svg, routes, view, X, Y, levelOf, nodes, toGraph}
let pendingEdits = null; // edits (JSON) to restore once the next main graph is drawn (a link, an opened file)
const edgeKey = (e) => `${e.kind}:${e.source}->${e.target}`;

function clearEdits() {
  for (const k of ["selNodes", "selEdges", "pinNodes", "pinEdges"]) graphEdits[k].clear();
  graphEdits.supernodes = []; graphEdits.notes.clear(); graphEdits.focus = "all";
  const focus = document.querySelector("#edit-focus");
  if (focus) focus.value = "all";
}
function routesIds(routes) {
  return { nodes: new Set(routes.nodes.map((n) => n.id)), edges: new Set(routes.edges.map(edgeKey)) };
}
// the edits of the routes on screen, as flowroutes.edits reads them (ids of other thresholds left out)
function editsJson(routes) {
  const { nodes, edges } = routesIds(routes);
  const keep = (set, known) => [...set].filter((x) => known.has(x));
  return {
    selection: { nodes: keep(graphEdits.selNodes, nodes), edges: keep(graphEdits.selEdges, edges) },
    pins: { nodes: keep(graphEdits.pinNodes, nodes), edges: keep(graphEdits.pinEdges, edges) },
    supernodes: graphEdits.supernodes.filter((s) => s.nodes.every((n) => nodes.has(n))).map((s) => ({ label: s.label, nodes: [...s.nodes] })),
    notes: Object.fromEntries([...graphEdits.notes].filter(([k]) => nodes.has(k) || edges.has(k))),
    focus: graphEdits.focus,
  };
}
const editsEmpty = (j) => !j.selection.nodes.length && !j.selection.edges.length && !j.pins.nodes.length
  && !j.pins.edges.length && !j.supernodes.length && !Object.keys(j.notes).length && j.focus === "all";
// edits from a link or a file, checked against `routes`: wrong shapes throw one line; ids these routes lack are
// left out and counted
function restoreEdits(data, routes) {
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
  clearEdits();
  sel.nodes.forEach((x) => graphEdits.selNodes.add(x)); sel.edges.forEach((x) => graphEdits.selEdges.add(x));
  pins.nodes.forEach((x) => graphEdits.pinNodes.add(x)); pins.edges.forEach((x) => graphEdits.pinEdges.add(x));
  graphEdits.supernodes = groups; graphEdits.notes = noteMap; graphEdits.focus = focus;
  document.querySelector("#edit-focus").value = focus;
  return dropped;
}
// a link's edits: base64url of their JSON
function editsParam() {
  if (!editGraph) return "";
  const j = editsJson(editGraph.routes);
  if (editsEmpty(j)) return "";
  const bytes = new TextEncoder().encode(JSON.stringify(j));
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  const text = btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  return text.length <= EDITS_URL_MAX ? text : null; // null: too large for a link (save the JSON instead)
}
function decodeEditsParam(text) {
  if (text.length > EDITS_URL_MAX) throw new Error(`the link's edits are over ${EDITS_URL_MAX} characters`);
  if (!/^[A-Za-z0-9_-]*$/.test(text)) throw new Error("the link's edits are not base64url text");
  let json;
  try {
    const bin = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
    json = new TextDecoder("utf-8", { fatal: true }).decode(Uint8Array.from(bin, (c) => c.charCodeAt(0)));
    return JSON.parse(json);
  } catch (err) { throw new Error("the link's edits are not valid JSON"); }
}
// restores what a link or a file asked for, once its graph is drawn; a bad one is ignored with a note
function restorePending(routes) {
  if (pendingEdits === null) return;
  const { data, from } = pendingEdits;
  pendingEdits = null;
  try {
    const parsed = typeof data === "string" ? decodeEditsParam(data) : data;
    const dropped = restoreEdits(parsed, routes);
    if (dropped) showNote(`${dropped} of the ${from}'s edits name nodes or edges these routes lack: left out`, true);
  } catch (err) {
    clearEdits();
    showNote(`${err.message.replace(/^the edits/, `the ${from}'s edits`)}: ignored`, true);
  }
  paintEdits(); writeUrl();
}

// ---- drawing ----
function attachEditing(svg, routes, parts) {
  editGraph = { svg, routes, ...parts, byKey: new Map(routes.edges.map((e) => [edgeKey(e), e])) };
  for (const g of parts.edgesG.querySelectorAll(".edge")) g.dataset.key = edgeKey(routes.edges[Number(g.dataset.index)]);
  restorePending(routes);
  paintEdits();
  // the keyboard: on a focused node or edge (Tab, then the arrows), s adds or removes it, p pins or unpins it
  svg.addEventListener("keydown", (ev) => {
    const item = ev.target.closest && ev.target.closest(".edge, .node");
    if (!item || ev.ctrlKey || ev.metaKey || ev.altKey || !["s", "p"].includes(ev.key)) return;
    ev.preventDefault();
    if (ev.key === "s") { editedSelect(item, true); return; }
    const [kind, key] = itemKey(item);
    const pins = kind === "node" ? graphEdits.pinNodes : graphEdits.pinEdges;
    if (pins.has(key)) pins.delete(key); else pins.add(key);
    editChanged();
  });
}
function itemKey(item) { return item.classList.contains("node") ? ["node", item.dataset.id] : ["edge", item.dataset.key]; }
function editedSelect(item, add) { // a click (add: shift-click toggles) on a node or an edge of the main graph
  if (!editGraph || !item.isConnected) return;
  if (item.classList.contains("supernode")) {
    const s = graphEdits.supernodes.find((x) => x.label === item.dataset.label);
    if (!add) { graphEdits.selNodes.clear(); graphEdits.selEdges.clear(); }
    const on = !s.nodes.every((n) => graphEdits.selNodes.has(n));
    s.nodes.forEach((n) => (on ? graphEdits.selNodes.add(n) : graphEdits.selNodes.delete(n)));
  } else {
    const [kind, key] = itemKey(item);
    const set = kind === "node" ? graphEdits.selNodes : graphEdits.selEdges;
    if (!add) { graphEdits.selNodes.clear(); graphEdits.selEdges.clear(); set.add(key); } else if (set.has(key)) set.delete(key); else set.add(key);
  }
  paintEdits(); writeUrl();
}
// shift and drag on the background: the nodes inside the box, and the edges between them, join the selection
function boxSelect(ev) {
  const g = editGraph, start = g.toGraph(ev);
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
    inside.forEach((id) => graphEdits.selNodes.add(id));
    for (const e of g.routes.edges) if (inside.has(e.source) && inside.has(e.target)) graphEdits.selEdges.add(edgeKey(e));
    g.svg.dataset.boxed = inside.size;
    paintEdits(); writeUrl();
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
function paintEdits() {
  const g = editGraph;
  if (!g || !g.svg.isConnected) return;
  const { svg, routes } = g;
  const group = new Map(), live = [];
  for (const s of graphEdits.supernodes) {
    if (!s.nodes.every((n) => g.nodes.has(n))) continue;
    live.push(s); s.nodes.forEach((n) => group.set(n, s.label));
  }
  // the subgraph: the selected and pinned nodes and edges, the edges between its nodes, the nodes of its edges
  const keepN = new Set([...graphEdits.selNodes, ...graphEdits.pinNodes].filter((n) => g.nodes.has(n)));
  const keepE = new Set([...graphEdits.selEdges, ...graphEdits.pinEdges].filter((k) => g.byKey.has(k)));
  for (const e of routes.edges) if (keepN.has(e.source) && keepN.has(e.target)) keepE.add(edgeKey(e));
  for (const k of keepE) { const e = g.byKey.get(k); keepN.add(e.source); keepN.add(e.target); }
  const focusing = graphEdits.focus !== "all" && keepN.size > 0;
  const out = (kept) => [focusing && !kept && graphEdits.focus === "fade", focusing && !kept && graphEdits.focus === "hide"];
  let faded = 0, hidden = 0;
  const mark = (item, key, pinned, selected, kept, inGroup) => {
    const [f, h] = out(kept);
    item.classList.toggle("pinned", pinned); item.classList.toggle("in-selection", selected);
    item.classList.toggle("faded", f); item.classList.toggle("focus-hidden", h); item.classList.toggle("grouped", inGroup);
    faded += f; hidden += h;
    labelled(item, graphEdits.notes.get(key));
  };
  for (const item of g.edgesG.querySelectorAll(".edge[data-key]")) {
    const k = item.dataset.key, e = g.byKey.get(k);
    mark(item, k, graphEdits.pinEdges.has(k), graphEdits.selEdges.has(k), keepE.has(k), group.has(e.source) || group.has(e.target));
  }
  for (const item of g.nodesG.querySelectorAll(".node")) {
    const id = item.dataset.id;
    mark(item, id, graphEdits.pinNodes.has(id), graphEdits.selNodes.has(id), keepN.has(id), group.has(id));
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
    node.classList.toggle("in-selection", s.nodes.every((n) => graphEdits.selNodes.has(n)));
    node.classList.toggle("pinned", s.nodes.some((n) => graphEdits.pinNodes.has(n)));
  }
  svg.dataset.faded = faded; svg.dataset.hidden = hidden;
  editBarCount();
}
function editBarCount() {
  const box = document.querySelector("#edit-count");
  if (!box || !editGraph) return;
  const j = editsJson(editGraph.routes);
  const parts = [`${j.selection.nodes.length} nodes and ${j.selection.edges.length} edges selected`,
                 `${j.pins.nodes.length + j.pins.edges.length} pinned`, `${j.supernodes.length} supernodes`, `${Object.keys(j.notes).length} notes`];
  box.textContent = parts.join(", ");
  box.dataset.selectedNodes = j.selection.nodes.length; box.dataset.selectedEdges = j.selection.edges.length;
}

// ---- the edit bar ----
function editChanged() { paintEdits(); writeUrl(); }
function pinSelection() {
  const all = [...graphEdits.selNodes].every((n) => graphEdits.pinNodes.has(n)) && [...graphEdits.selEdges].every((k) => graphEdits.pinEdges.has(k));
  if (!graphEdits.selNodes.size && !graphEdits.selEdges.size) throw new Error("select nodes or edges to pin first (click, shift-click or shift-drag)");
  for (const n of graphEdits.selNodes) { if (all) graphEdits.pinNodes.delete(n); else graphEdits.pinNodes.add(n); }
  for (const k of graphEdits.selEdges) { if (all) graphEdits.pinEdges.delete(k); else graphEdits.pinEdges.add(k); }
  editChanged();
}
function groupSelection() {
  const label = $("#edit-group-label").value.trim();
  const members = [...graphEdits.selNodes].filter((n) => editGraph.nodes.has(n));
  if (members.length < 2) throw new Error("a supernode groups at least two nodes: select them first (shift-click or shift-drag)");
  if (!label || label.length > EDITS_LABEL_MAX) throw new Error(`give the supernode a label of 1 to ${EDITS_LABEL_MAX} characters, e.g. name movers`);
  if (graphEdits.supernodes.some((s) => s.label === label)) throw new Error(`there is already a supernode ${show(label)}: choose another label`);
  if (editGraph.nodes.has(label)) throw new Error(`${label} is a node's id: give the supernode a name`);
  const taken = members.filter((n) => graphEdits.supernodes.some((s) => s.nodes.includes(n)));
  if (taken.length) throw new Error(`${taken[0]} is already in a supernode: ungroup it first`);
  graphEdits.supernodes.push({ label, nodes: members });
  $("#edit-group-label").value = "";
  editChanged();
}
function ungroupSelection() {
  graphEdits.supernodes = graphEdits.supernodes.filter((s) => !s.nodes.some((n) => graphEdits.selNodes.has(n)));
  editChanged();
}
function noteSelection() {
  const items = [...graphEdits.selNodes, ...graphEdits.selEdges];
  if (items.length !== 1) throw new Error(`a note goes on one node or edge: ${items.length} are selected (click one)`);
  const text = $("#edit-note").value;
  if (text.length > EDITS_NOTE_MAX) throw new Error(`a note holds at most ${EDITS_NOTE_MAX} characters`);
  if (text.trim()) graphEdits.notes.set(items[0], text); else graphEdits.notes.delete(items[0]);
  $("#edit-note").value = "";
  editChanged();
}
async function exportEdited(format) {
  if (!current) throw new Error("trace a prompt first");
  const res = await fetch("/api/export", { method: "POST", headers: { "Content-Type": "application/json" },
                                           body: JSON.stringify({ ...routesQuery(), edits: editsJson(current.routes), format }) });
  if (!res.ok) {
    let detail = `the server answered HTTP ${res.status}`;
    try { detail = (await res.json()).detail; } catch (e) { /* keep the status */ }
    throw new Error(detail);
  }
  const name = (res.headers.get("Content-Disposition") || "").match(/filename="([^"]+)"/);
  const url = URL.createObjectURL(await res.blob());
  const a = el("a", { href: url, download: name ? name[1] : "routes.json" }, document.body);
  a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
// a saved routes file (versions 1 to 3): traced again with its model, prompt, position and thresholds, its edits
// restored on the new graph
async function openRoutesFile(file) {
  let data;
  try { data = JSON.parse(await file.text()); } catch (err) { throw new Error(`${file.name} is not JSON: choose a routes.json saved by flowroutes`); }
  if (!data || typeof data !== "object") throw new Error(`${file.name} is not a flowroutes routes file`);
  const head = {};
  for (const k of ["schema", "version", "model", "prompt", "position", "attention_threshold", "ffn_threshold", "renormalize", "edits"]) if (k in data) head[k] = data[k];
  const d = await api("/api/open", head);
  state.model = d.model; state.prompt = d.prompt; state.position = d.position; state.renormalize = d.renormalize;
  state.separate = d.attention_threshold !== d.ffn_threshold;
  state.threshold = d.attention_threshold; state.attention_threshold = d.attention_threshold; state.ffn_threshold = d.ffn_threshold;
  syncControls();
  await loadRoutes({ reset: true });
  pendingEdits = { data: d.edits, from: "file" };
  if (editGraph) restorePending(editGraph.routes);
}
function setupEditBar() {
  const act = (id, fn) => $(id).addEventListener("click", () => guarded(fn));
  act("#edit-pin", pinSelection);
  act("#edit-group", groupSelection);
  act("#edit-ungroup", ungroupSelection);
  act("#edit-note-set", noteSelection);
  act("#edit-clear", () => { graphEdits.selNodes.clear(); graphEdits.selEdges.clear(); editChanged(); });
  act("#edit-save", () => exportEdited("json"));
  act("#edit-circuit-tracer", () => exportEdited("circuit-tracer"));
  act("#edit-share", () => {
    writeUrl();
    const link = $("#edit-link");
    link.hidden = false; link.value = location.href; link.select();
    if (editsParam() === null) throw new Error(`these edits are too large for a link (over ${EDITS_URL_MAX} characters): save the JSON instead`);
  });
  // with edits on the graph, the download links carry them: the picture draws the pins, supernodes and notes
  for (const fmt of ["json", "svg", "png"]) {
    $(`#download-${fmt}`).addEventListener("click", (ev) => {
      if (!current || editsEmpty(editsJson(current.routes))) return; // the plain download
      ev.preventDefault();
      guarded(() => exportEdited(fmt));
    });
  }
  $("#edit-focus").addEventListener("change", () => { graphEdits.focus = $("#edit-focus").value; editChanged(); });
  $("#edit-open").addEventListener("change", () => guarded(async () => {
    const file = $("#edit-open").files[0];
    if (file) await openRoutesFile(file);
    $("#edit-open").value = "";
  }));
}
