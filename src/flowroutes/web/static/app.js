// flowroutes explorer: draws the routes the server sends (SVG), opens inspect views, keeps the state in the URL.
// Plain JavaScript, no build step. Talks only to this server's /api; never reaches other hosts.
// One layer convention everywhere (docs/schema.md): layer l is block l, which reads x^l, whose attention writes
// x^{lA} and whose FFN writes x^{l+1}; its heads are LlHh.
"use strict";

const $ = (sel) => document.querySelector(sel);
// the graph module (static/graph.js, loaded by index.html before this script): its helpers serve the whole page
const { el, svgEl, show, width } = window.flowroutesGraph;
const VIEWS = ["graph", "contrast", "heatmaps", "analyses", "generate"]; // generate: static/generate.js
const MAX_THRESHOLD = 0.5;   // the sliders' top
let SVG_EDGE_LIMIT = 1500; // edges drawn one by one (clickable); the rest go into one path per kind (server's setting)
const state = {
  model: "", prompt: "", position: -1, threshold: 0.04, attention_threshold: 0.04, ffn_threshold: 0.04,
  separate: false, renormalize: true, view: "graph", prompt_b: "", target: "", target_b: "", normalize: true,
  collapse: false,
};
let conf = { min_threshold: 0.005 };
let current = null; // last /api/routes answer
let renders = 0;    // bumped after each drawn answer (tests wait on it)
let busy = 0;
let seq = 0;        // newest routes request; older answers are dropped
let generation = 0; // bumped by every new trace, position or model: inspect answers of older ones are dropped
let lastIntervention = null;
let dla = null;     // direct logit attribution of the explained position (colours the routes)

// ---------- plumbing ----------
function setBusy(delta) {
  busy += delta;
  document.body.dataset.busy = busy > 0 ? "1" : "0";
}
function showError(message) {
  const box = $("#error");
  if (message) { box.textContent = message; box.hidden = false; } else { box.textContent = ""; box.hidden = true; }
}
function showNote(message, add = false) {
  const box = $("#note");
  const text = add && box.textContent ? `${box.textContent}; ${message}` : message;
  if (text) { box.textContent = text; box.hidden = false; } else { box.textContent = ""; box.hidden = true; }
}
async function api(path, body) {
  setBusy(1);
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), 180000);
  try {
    const res = await fetch(path, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal: ctrl.signal,
    });
    let data = null;
    try { data = await res.json(); } catch (e) { data = null; }
    if (!res.ok) {
      const detail = data && data.detail ? data.detail
        : res.status === 413 ? "the request is larger than this server accepts: shorten the prompt"
        : `the server answered HTTP ${res.status}`;
      throw new Error(`${detail} (HTTP ${res.status})`);
    }
    return data;
  } catch (err) {
    if (err.name === "AbortError") throw new Error("the server did not answer within 3 minutes");
    if (err instanceof TypeError) throw new Error("cannot reach the flowroutes server: is `flowroutes serve` running?");
    throw err;
  } finally {
    clearTimeout(timer);
    setBusy(-1);
  }
}
// a spinner on the part being computed while `fn` runs
async function computing(part, fn) {
  const box = typeof part === "string" ? $(part) : part;
  box.classList.add("loading");
  const spin = el("div", { class: "spinner", role: "status", "aria-label": "computing" });
  box.prepend(spin);
  try { return await fn(); } finally { spin.remove(); box.classList.remove("loading"); }
}
function routesQuery() {
  const q = { model: state.model, prompt: state.prompt, position: state.position, threshold: state.threshold,
              renormalize: state.renormalize };
  if (state.separate) { q.attention_threshold = state.attention_threshold; q.ffn_threshold = state.ffn_threshold; }
  return q;
}
function writeUrl() {
  const p = new URLSearchParams();
  p.set("model", state.model); p.set("prompt", state.prompt); p.set("position", state.position);
  p.set("threshold", state.threshold); p.set("renormalize", state.renormalize ? "1" : "0"); p.set("view", state.view);
  if (state.separate) { p.set("attention_threshold", state.attention_threshold); p.set("ffn_threshold", state.ffn_threshold); }
  if (state.prompt_b) p.set("prompt_b", state.prompt_b);
  if (state.target) p.set("target", state.target);
  if (state.target_b) p.set("target_b", state.target_b);
  if (!state.normalize) p.set("normalize", "0");
  const edited = typeof editsParam === "function" ? editsParam() : "";
  if (edited) p.set("edits", edited); // pins, subgraph, supernodes and notes (editing.js)
  if (typeof generateParams === "function") generateParams(p); // the Generate view's generation (generate.js)
  history.replaceState(null, "", `${location.pathname}?${p.toString()}`);
  downloadLinks(); // they carry the same edits
}
// values from the address are checked: a threshold outside the sliders' range is clamped and the page says so
function readUrl() {
  const p = new URLSearchParams(location.search);
  const notes = [];
  const low = conf.min_threshold || 0.005;
  const tau = (k, d) => {
    if (!p.has(k)) return d;
    const v = Number(p.get(k));
    if (!Number.isFinite(v)) { notes.push(`${k}=${p.get(k)} from the link is not a number: using ${d}`); return d; }
    const c = Math.min(MAX_THRESHOLD, Math.max(low, v));
    if (c !== v) notes.push(`${k}=${p.get(k)} from the link is outside [${low}, ${MAX_THRESHOLD}]: using ${c}`);
    return c;
  };
  if (p.has("model")) state.model = p.get("model");
  state.prompt = p.get("prompt") || "";
  state.prompt_b = p.get("prompt_b") || "";
  const pos = Number(p.get("position"));
  state.position = p.has("position") && Number.isInteger(pos) ? pos : -1;
  if (p.has("position") && !Number.isInteger(pos)) notes.push(`position=${p.get("position")} from the link is not a whole number: showing the last position`);
  state.threshold = tau("threshold", 0.04);
  state.separate = p.has("attention_threshold") || p.has("ffn_threshold");
  state.attention_threshold = tau("attention_threshold", state.threshold);
  state.ffn_threshold = tau("ffn_threshold", state.threshold);
  state.renormalize = p.get("renormalize") !== "0";
  state.normalize = p.get("normalize") !== "0";
  state.target = p.get("target") || ""; state.target_b = p.get("target_b") || "";
  state.view = VIEWS.includes(p.get("view")) ? p.get("view") : "graph";
  if (p.has("edits")) pendingEdits = { data: p.get("edits"), from: "link" }; // restored on the first graph
  return notes;
}
function syncControls() {
  $("#model").value = state.model; $("#prompt").value = state.prompt; $("#prompt-b").value = state.prompt_b;
  for (const [id, key] of [["threshold", "threshold"], ["attention-threshold", "attention_threshold"],
                           ["ffn-threshold", "ffn_threshold"]]) {
    $(`#${id}`).value = state[key]; $(`#${id}-value`).textContent = Number(state[key]).toFixed(3);
  }
  $("#separate").checked = state.separate; $("#separate-controls").hidden = !state.separate;
  $("#threshold").disabled = state.separate; // with separate thresholds the main one is not used
  $("#threshold-label").title = state.separate ? "not used while separate thresholds are on" : "";
  $("#threshold-label").classList.toggle("unused", state.separate);
  $("#renormalize").checked = state.renormalize;
  $("#normalize").checked = state.normalize;
  $("#target").value = state.target; $("#target-b").value = state.target_b;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.view === state.view);
  for (const v of VIEWS) $(`#view-${v}`).hidden = v !== state.view;
  $("#inspector").hidden = !["graph", "contrast"].includes(state.view);
}
// Enter or space on a focusable element does what a click does
function activatable(node, label, action) {
  node.setAttribute("tabindex", "0");
  node.setAttribute("role", "button");
  node.setAttribute("aria-label", label);
  node.addEventListener("click", action);
  node.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); action(ev); } });
}

const pos = (id) => Number(id.split("@")[1]);
// ---------- the routes graph: static/graph.js draws it (the notebook widget draws it with the same module) ----------
function drawRoutes(container, routes, opts = {}) { // the page's graph: its inspector, selection and editing
  const editable = opts.interactive && container.id === "graph"; // the main graph takes pins, selections, groups
  return flowroutesGraph.drawRoutes(container, routes, {
    edgeLimit: SVG_EDGE_LIMIT, select, onEdge, onNode,
    editing: editable ? { select: editedSelect, box: boxSelect, attach: attachEditing } : null, ...opts,
  });
}

function select(element) {
  for (const old of document.querySelectorAll("svg.routes .selected")) old.classList.remove("selected");
  if (element) element.classList.add("selected");
}
// a heatmap cell clicked: that head (or FFN) selected in the main graph, and opened in the inspector
function showInGraph(kind, layer, index) {
  if (!current) return;
  if (state.view !== "graph") { state.view = "graph"; syncControls(); writeUrl(); }
  const r = current.routes, ctx = mainCtx();
  select(null);
  let n = 0;
  for (const g of document.querySelectorAll("#graph svg.routes .edge")) {
    const e = r.edges[Number(g.dataset.index)];
    const hit = kind === "head" ? e.kind === "attention" && e.layer === layer && e.heads && e.heads[index] !== undefined
      : e.kind === "ffn" && e.layer === layer && pos(e.target) === index;
    if (hit) { g.classList.add("selected"); n++; }
  }
  document.querySelector("#graph").dataset.selected = n;
  if (kind === "head") inInspector(() => inspectHeads(layer, r.position, null, null, ctx, null, index));
  else inInspector(() => inspectFfn(layer, index, ctx));
}

// ---------- heatmaps (canvas) ----------
// opts.scale: "global" (one maximum), "row" (each row its own maximum: layer 0 no longer flattens the rest) or
// "log" (log10 of the magnitude over 4 decades)
function heatmap(parent, matrix, opts = {}) {
  const rows = matrix.length, cols = rows ? matrix[0].length : 0;
  const cell = opts.cell || Math.max(3, Math.min(22, Math.floor(260 / Math.max(rows, cols, 1))));
  const labelled = Boolean(opts.rowLabels || opts.colLabels);
  const wrap = el("div", { class: "heatwrap" }, parent);
  if (opts.title) el("div", { class: "heat-title", text: opts.title }, wrap);
  const scale = opts.scale || "global";
  const fontPx = Math.min(11, Math.max(7, cell - 2));
  const font = `${fontPx}px sans-serif`;
  const every = Math.max(1, Math.ceil((fontPx + 1) / cell)); // labels thinned to every k-th when cells are smaller than text
  const measure = document.createElement("canvas").getContext("2d");
  measure.font = font;
  const cut = (t) => { const s = String(t); return s.length > 14 ? s.slice(0, 13) + "\u2026" : s; };
  const widest = (labels) => (labels ? Math.max(0, ...labels.map((t) => measure.measureText(cut(t)).width)) : 0);
  const colExtent = labelled && opts.colLabels ? Math.ceil(widest(opts.colLabels) * Math.sin(Math.PI / 3) + 8) : 0;
  const left = labelled && opts.rowLabels ? Math.ceil(widest(opts.rowLabels) + 8) : 0;
  const top = labelled ? Math.max(colExtent, 8) : 0;
  const right = labelled && opts.colLabels ? Math.ceil(widest(opts.colLabels) * 0.5 + 6) : 0;
  const canvas = el("canvas", { class: "heat", width: left + cols * cell + right, height: top + rows * cell }, wrap);
  if (opts.id) canvas.id = opts.id;
  canvas.dataset.left = left; canvas.dataset.top = top; canvas.dataset.cell = cell; canvas.dataset.labelExtent = colExtent;
  canvas.dataset.scale = scale; canvas.dataset.labelEvery = every;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  let max = 0;
  for (const r of matrix) for (const v of r) max = Math.max(max, Math.abs(v));
  const rowMax = matrix.map((r) => Math.max(0, ...r.map(Math.abs)));
  const norm = (v, i) => {
    if (scale === "row") return rowMax[i] > 0 ? v / rowMax[i] : 0;
    if (scale === "log") {
      if (max <= 0 || v === 0) return 0;
      const t = Math.max(0, 1 + Math.log10(Math.abs(v) / max) / 4);
      return Math.sign(v) * t;
    }
    return max > 0 ? v / max : 0;
  };
  const colour = (v) => (opts.diverging ? (v >= 0 ? [255, Math.round(255 * (1 - v)), Math.round(255 * (1 - v))]
                                                  : [Math.round(255 * (1 + v)), Math.round(255 * (1 + v)), 255])
                                        : [Math.round(255 - 247 * v), Math.round(255 - 207 * v), Math.round(255 - 148 * v)]);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      ctx.fillStyle = `rgb(${colour(norm(matrix[i][j], i)).join(",")})`;
      ctx.fillRect(left + j * cell, top + i * cell, cell, cell);
    }
  }
  if (labelled) {
    ctx.fillStyle = getComputedStyle(document.body).getPropertyValue("--muted").trim() || "#444";
    ctx.font = font;
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    let drawnRows = 0, drawnCols = 0;
    if (opts.rowLabels) {
      opts.rowLabels.forEach((t, i) => {
        if (i % every) return;
        ctx.fillText(cut(t), left - 3, top + i * cell + cell / 2); drawnRows++;
      });
    }
    if (opts.colLabels) {
      opts.colLabels.forEach((t, j) => {
        if (j % every) return;
        ctx.save(); ctx.translate(left + j * cell + cell / 2, top - 3); ctx.rotate(-Math.PI / 3);
        ctx.textAlign = "left"; ctx.fillText(cut(t), 0, 0); ctx.restore(); drawnCols++;
      });
    }
    canvas.dataset.rowLabelsDrawn = drawnRows; canvas.dataset.colLabelsDrawn = drawnCols;
  }
  if (opts.mark) { // the inspected cell (or row, when col is null): outlined
    const { row, col } = opts.mark;
    ctx.strokeStyle = "#ff8c00"; ctx.lineWidth = 2;
    if (col === null || col === undefined) ctx.strokeRect(left + 1, top + row * cell + 1, cols * cell - 2, cell - 2);
    else ctx.strokeRect(left + col * cell + 1, top + row * cell + 1, cell - 2, cell - 2);
    canvas.dataset.mark = `${row},${col ?? ""}`;
  }
  // the colour legend: what the lightest and darkest colours mean
  const legend = el("div", { class: "legend" }, wrap);
  const bar = el("canvas", { class: "legend-bar", width: 160, height: 10 }, legend);
  const bctx = bar.getContext("2d");
  for (let x = 0; x < 160; x++) {
    const v = opts.diverging ? (x / 159) * 2 - 1 : x / 159;
    bctx.fillStyle = `rgb(${colour(v).join(",")})`; bctx.fillRect(x, 0, 1, 10);
  }
  const lo = opts.diverging ? -max : 0;
  const words = scale === "row" ? (opts.diverging ? "-row max .. +row max (each row its own scale)" : "0 .. each row's max (each row its own scale)")
    : scale === "log" ? `${opts.diverging ? "-" : ""}${max.toPrecision(3)} .. 1e-4 of it .. ${max.toPrecision(3)} (log scale)`
    : `${lo.toPrecision(3)} .. ${max.toPrecision(3)}`;
  el("span", { class: "legend-text", text: words }, legend);
  const info = el("div", { class: "hint", text: opts.legend || (opts.onClick ? "hover a cell for its value, click it to see it in the graph" : "hover a cell for its value") }, wrap);
  if (opts.onClick) {
    canvas.classList.add("clickable");
    canvas.addEventListener("click", (ev) => {
      const i = Math.floor((ev.offsetY - top) / cell), j = Math.floor((ev.offsetX - left) / cell);
      if (i >= 0 && j >= 0 && i < rows && j < cols) opts.onClick(i, j);
    });
  }
  canvas.addEventListener("mousemove", (ev) => {
    const i = Math.floor((ev.offsetY - top) / cell), j = Math.floor((ev.offsetX - left) / cell);
    if (i >= 0 && j >= 0 && i < rows && j < cols) {
      const r = opts.rowLabels ? opts.rowLabels[i] : i, c = opts.colLabels ? opts.colLabels[j] : j;
      info.textContent = `${opts.rowName || "row"} ${r}, ${opts.colName || "column"} ${c}: ${Number(matrix[i][j]).toPrecision(4)}`;
    }
  });
  return canvas;
}

// ---------- inspector ----------
// ctx: whose prompt a panel shows ({prompt, label, display}); every panel belongs to one trace (generation)
function mainCtx() {
  return { prompt: state.prompt, label: "", display: current ? current.display : [], routes: current ? current.routes : null, gen: generation };
}
function resetInspector() {
  generation++;
  select(null);
  const box = $("#inspector");
  box.textContent = "";
  el("p", { class: "hint", text: "Click an attention edge, an FFN block (pink) or a node to inspect it; a click beside the routes opens what lies there, faded." }, box);
}
function inspector(title, ctx, outside = false) {
  const box = $("#inspector");
  box.textContent = "";
  box.dataset.generation = ctx.gen;
  const h = el("h3", { id: "inspector-title", text: (ctx.label ? `${ctx.label}: ` : "") + title }, box);
  if (outside) { box.classList.add("outside"); el("p", { class: "hint", text: "outside the routes (shown for reference)" }, box); } else box.classList.remove("outside");
  h.dataset.prompt = ctx.prompt;
  return box;
}
const stale = (ctx) => ctx.gen !== generation;
function tokenList(parent, label, rows, cls) {
  const div = el("div", { class: `tokens ${cls}-list` }, parent);
  el("b", { text: `${label}: ` }, div);
  for (const r of rows) el("span", { class: cls, title: `${r.score.toFixed(3)}`, text: show(r.token) }, div);
}
const base = (ctx) => ({ model: state.model, prompt: ctx.prompt, normalize: state.normalize });

async function guarded(fn) {
  try { showError(""); await fn(); } catch (err) { showError(err.message); }
}
const inInspector = (fn) => guarded(() => computing("#inspector", fn));
function onEdge(e, s, t, ctx) {
  if (e.kind === "attention") inInspector(() => inspectHeads(e.layer, t.position, s.position, e.heads, ctx));
  else if (e.kind === "ffn") inInspector(() => inspectFfn(e.layer, t.position, ctx));
  else {
    const box = inspector(`Residual edge ${e.source} -> ${e.target} (block ${e.layer})`, ctx);
    el("p", { text: `importance ${e.weight.toFixed(4)}` }, box);
  }
}
function onNode(n, ctx) {
  if (n.kind === "attention") inInspector(() => inspectHeads(n.layer, n.position, null, null, ctx, n));
  else inInspector(() => inspectLens(n, ctx));
}
function rowAction(tr, label, fn) {
  activatable(tr, label, fn);
  tr.setAttribute("role", "row");
}
async function inspectHeads(layer, target, source, edgeHeads, ctx, node = null, pick = null) {
  const data = await api("/api/heads", { ...base(ctx), layer, position: target, source });
  if (stale(ctx)) return;
  const toks = ctx.display;
  const what = source === null ? `into x${layer}A@${target}` : `${show(toks[source])} (${source}) -> ${show(toks[target])} (${target})`;
  const box = inspector(`Heads of block ${layer}, ${what}`, ctx, Boolean(node && node.outside));
  el("p", { class: "hint", text: `Block ${layer} reads x${layer} and writes x${layer}A. Heads ranked by importance (eq. 1, before thresholds). Click a head (or Enter) for its maps.` }, box);
  const table = el("table", { class: "rank heads" }, box);
  el("tr", {}, table).innerHTML = "<th>head</th><th>importance</th><th>in routes</th>";
  for (const h of data.heads) {
    const tr = el("tr", { class: "pick head-row", "data-head": h.head }, table);
    el("td", { text: `L${layer}H${h.head}` }, tr);
    el("td", { text: h.importance.toFixed(4) }, tr);
    const kept = edgeHeads && edgeHeads[h.head] !== undefined ? edgeHeads[h.head].toFixed(3) : "";
    el("td", { text: kept }, tr);
    rowAction(tr, `head L${layer}H${h.head}`, () => {
      for (const r of table.querySelectorAll("tr.chosen")) r.classList.remove("chosen");
      tr.classList.add("chosen");
      guarded(() => computing(headView, () => inspectHead(layer, h.head, target, headView, ctx, source)));
    });
  }
  if (source !== null && edgeHeads) {
    interventionBar(box, `the edge ${source} -> ${target} of block ${layer}`,
                    { kind: "edge", layer, source, target, heads: Object.keys(edgeHeads).map(Number) }, ctx, ["zero"]);
  }
  const headView = el("div", { id: "head-view" }, box);
  if (pick !== null) { // opened from a heatmap: that head's sub-edges in the routes, and its maps
    const edges = (ctx.routes ? ctx.routes.edges : []).filter((e) => e.kind === "attention" && e.layer === layer && e.heads && e.heads[pick] !== undefined);
    el("p", { class: "picked-head", text: edges.length ? `L${layer}H${pick} is active: ${edges.length} sub-edge${edges.length > 1 ? "s" : ""} in the routes (outlined in the graph)`
                                                        : `L${layer}H${pick} has no sub-edge in the routes at this threshold` }, box);
    const row = table.querySelector(`tr.head-row[data-head="${pick}"]`);
    if (row) row.click();
  }
  if (node) {
    const lensBox = el("div", { id: "lens-of-node" }, box);
    await inspectLens(node, ctx, lensBox);
  }
}
async function inspectHead(layer, head, target, box, ctx, source = null) {
  const data = await api("/api/head", { ...base(ctx), layer, head, position: target });
  if (stale(ctx)) return;
  box.textContent = "";
  el("h3", { id: "head-title", text: `L${layer}H${head}` }, box);
  const toks = data.tokens.map(show);
  const mark = { row: target, col: source }; // the inspected edge's cell, or the inspected state's row
  el("p", { class: "hint", text: source === null ? `outlined: row ${target}, the inspected state` : `outlined: the inspected edge ${source} -> ${target}` }, box);
  heatmap(box, data.attention, { id: "heat-attention", title: "attention weights alpha[p, j] (rows p: target, columns j: source)",
                                 rowLabels: toks, colLabels: toks, rowName: "target", colName: "source", mark });
  heatmap(box, data.contribution, { id: "heat-contribution", title: "contribution (importance of x_j -> x^A_p through this head)",
                                    rowLabels: toks, colLabels: toks, rowName: "target", colName: "source", mark });
  el("p", { class: "hint", text: `what the head writes at position ${target} ${show(data.tokens[target])}, projected on the unembedding${state.normalize ? " (through the final norm's weight)" : " (raw)"}:` }, box);
  tokenList(box, "promotes", data.promote, "promote");
  tokenList(box, "suppresses", data.suppress, "suppress");
  interventionBar(box, `head L${layer}H${head}`, { kind: "head", layer, head }, ctx);
}
async function inspectFfn(layer, position, ctx) {
  const data = await api("/api/ffn", { ...base(ctx), layer, position });
  if (stale(ctx)) return;
  const box = inspector(`FFN of block ${layer} at position ${position} ${show(ctx.display[position])}`, ctx);
  el("p", { text: `importance ${data.importance.toFixed(4)}, output norm ${data.ffn_norm.toFixed(3)}` }, box);
  tokenList(box, "promotes", data.promote, "promote");
  tokenList(box, "suppresses", data.suppress, "suppress");
  interventionBar(box, `the FFN of block ${layer}`, { kind: "ffn", layer }, ctx);
  el("p", { class: "hint", text: "Top neurons by contribution: activation x (output row . FFN output / |FFN output|). Click one." }, box);
  const table = el("table", { class: "rank neurons" }, box);
  el("tr", {}, table).innerHTML = "<th>neuron</th><th>activation</th><th>contribution</th>";
  const neuronView = el("div", { id: "neuron-view" }, box);
  for (const n of data.neurons) {
    const tr = el("tr", { class: "pick neuron-row", "data-neuron": n.neuron }, table);
    el("td", { text: `N${n.neuron}` }, tr);
    el("td", { text: n.activation.toFixed(3) }, tr);
    el("td", { text: n.score.toFixed(3) }, tr);
    rowAction(tr, `neuron ${n.neuron}`, () => guarded(() => computing(neuronView, async () => {
      const d = await api("/api/neuron", { ...base(ctx), layer, position, neuron: n.neuron });
      if (stale(ctx)) return;
      neuronView.textContent = "";
      el("h3", { text: `L${layer}N${n.neuron} (activation ${d.activation.toFixed(3)})` }, neuronView);
      tokenList(neuronView, "promotes", d.promote, "promote");
      tokenList(neuronView, "suppresses", d.suppress, "suppress");
    })));
  }
}
async function inspectLens(n, ctx, into = null) {
  const data = await api("/api/lens", { ...base(ctx), layer: n.layer, kind: n.kind, position: n.position });
  if (stale(ctx)) return;
  const name = `Logit lens of ${n.id}${state.normalize ? "" : " (without the final norm)"}`;
  const box = into || inspector(name, ctx, Boolean(n.outside));
  if (into) el("h3", { text: name }, box);
  const table = el("table", { class: "rank lens" }, box);
  el("tr", {}, table).innerHTML = `<th>rank</th><th>token</th><th>prob</th><th>rank in ${data.before || "-"}</th>`;
  for (const r of data.top) {
    const tr = el("tr", { class: "lens-row" }, table);
    el("td", { text: r.rank + 1 }, tr);
    el("td", { text: show(r.token) }, tr);
    el("td", { text: r.prob.toFixed(4) }, tr);
    const moved = r.rank_before === null ? "" : r.rank_before > r.rank ? "up" : r.rank_before < r.rank ? "down" : "";
    el("td", { class: moved, text: r.rank_before === null ? "" : `${r.rank_before + 1}${moved === "up" ? " \u2191" : moved === "down" ? " \u2193" : ""}` }, tr);
  }
}

// ---------- interventions ----------
function interventionBar(box, what, component, ctx, modes = ["zero", "mean", "patch"]) {
  const bar = el("div", { class: "intervene-bar" }, box);
  el("b", { text: `Intervene on ${what}: ` }, bar);
  const mode = el("select", { class: "intervene-mode", "aria-label": "intervention" }, bar);
  for (const m of modes) el("option", { value: m, text: { zero: "zero it", mean: "mean-ablate it", patch: "patch it from prompt B" }[m] }, mode);
  const go = el("button", { type: "button", class: "intervene-run", text: "Run" }, bar);
  go.addEventListener("click", () => guarded(() => computing("#intervention", () => runIntervention(component, mode.value, ctx))));
}
async function runIntervention(component, mode, ctx) {
  if (ctx.label) throw new Error("interventions run on prompt A: trace it in the graph view");
  const body = { ...routesQuery(), component, mode, prompt_b: state.prompt_b || $("#prompt-b").value || null,
                 target: state.target || null, target_b: state.target_b || null };
  const gen = ctx.gen;
  const d = await api("/api/intervene", body);
  if (gen !== generation) return;
  lastIntervention = { component, mode, prompt_b: body.prompt_b, target: body.target, target_b: body.target_b };
  refreshCode();
  const box = $("#intervention");
  box.hidden = false;
  box.textContent = "";
  const name = component.kind === "head" ? `head L${component.layer}H${component.head}` : component.kind === "ffn" ? `the FFN of block ${component.layer}`
    : `the edge ${component.source} -> ${component.target} of block ${component.layer} (heads ${component.heads.join(", ")})`;
  el("h3", { id: "intervention-title", text: `${mode === "zero" ? "Zeroed" : mode === "mean" ? "Mean-ablated" : "Patched from prompt B"}: ${name}` }, box);
  const t = el("table", { class: "rank intervention-numbers" }, box);
  const diff = d.target_b !== null;
  el("tr", {}, t).innerHTML = `<th></th><th>p(${show(d.target)})</th><th>logit</th>${diff ? `<th>logit ${show(d.target)} - ${show(d.target_b)}</th>` : ""}<th>rank</th><th>top tokens</th>`;
  for (const [label, v] of [["before", d.before], ["after", d.after]]) {
    const tr = el("tr", { class: `row-${label}` }, t);
    el("td", { text: label }, tr);
    el("td", { class: "prob", text: v.prob.toFixed(4) }, tr);
    el("td", { class: "logit", text: v.logit.toFixed(4) }, tr);
    if (diff) el("td", { class: "difference", text: v.difference.toFixed(4) }, tr);
    el("td", { text: v.rank + 1 }, tr);
    el("td", { text: v.top.map((x) => `${show(x.token)} ${(100 * x.prob).toFixed(1)}%`).join(", ") }, tr);
  }
  const change = el("p", { class: "change" }, box);
  change.textContent = `change: probability ${(d.after.prob - d.before.prob >= 0 ? "+" : "")}${(d.after.prob - d.before.prob).toFixed(4)}, logit ${(d.after.logit - d.before.logit >= 0 ? "+" : "")}${(d.after.logit - d.before.logit).toFixed(4)}`;
  el("p", { class: "hint", text: "The new routes are traced on the intervened model; an intervened head's new output counts like the block's constant (no edges)." }, box);
  // one graph at full size: the routes after the intervention, diffed against the routes before it
  const merged = diffRoutes(current.routes, d.routes);
  const count = (st) => merged.edges.filter((e) => e.status === st).length;
  const changed = merged.edges.filter((e) => e.status === "kept" && Math.abs(e.weight - e.before) > 0.05).length;
  const activeHeads = (r) => new Set(r.active_heads.map(([l, h]) => `L${l}H${h}`));
  const ha = activeHeads(current.routes), hb = activeHeads(d.routes);
  const newly = [...hb].filter((h) => !ha.has(h)), gone = [...ha].filter((h) => !hb.has(h));
  el("h3", { text: "routes after the intervention, against the routes before it" }, box);
  el("p", { class: "diff-summary", text: `${count("gained")} edges gained (green), ${count("lost")} lost (red, dashed), ${count("kept")} kept`
            + ` (${changed} of them changed by more than 0.05); heads newly active: ${newly.join(", ") || "none"}; no longer active: ${gone.join(", ") || "none"}` }, box);
  const diffBox = el("div", { id: "routes-diff" }, box);
  diffBox.dataset.gained = count("gained"); diffBox.dataset.lost = count("lost"); diffBox.dataset.kept = count("kept");
  drawRoutes(diffBox, merged, { display: current.display });
}
// the union of two routes' edges, each marked gained (only in b), lost (only in a) or kept (weight of b, before: a's)
function diffRoutes(a, b) {
  const key = (e) => `${e.kind}|${e.layer}|${e.source}|${e.target}`;
  const before = new Map(a.edges.map((e) => [key(e), e]));
  const after = new Set(b.edges.map(key));
  const edges = b.edges.map((e) => (before.has(key(e)) ? { ...e, status: "kept", before: before.get(key(e)).weight } : { ...e, status: "gained" }));
  for (const e of a.edges) if (!after.has(key(e))) edges.push({ ...e, status: "lost" });
  const nodes = new Map([...a.nodes, ...b.nodes].map((n) => [n.id, n]));
  return { ...b, nodes: [...nodes.values()], edges };
}

// ---------- explaining any token ----------
let targetSeq = 0; // newest explain request; older answers are dropped
let targetsFor = null; // the prompt and model the targets were explained for (null: not used yet, e.g. from a link)
// targets belong to one prompt: a new prompt or model forgets them (they would colour a graph they were not chosen for)
function forgetTargets(prompt, model) {
  if (targetsFor === null || (targetsFor.prompt === prompt && targetsFor.model === model)) return;
  targetsFor = null;
  state.target = ""; state.target_b = "";
  $("#target").value = ""; $("#target-b").value = "";
}
async function loadTarget() {
  if (!current) return;
  const gen = generation, mine = ++targetSeq;
  targetsFor = { prompt: state.prompt, model: state.model };
  const box = $("#target-view");
  let d;
  try {
    d = await api("/api/target", { model: state.model, prompt: state.prompt, position: current.routes.position,
                                   target: state.target || null, target_b: state.target_b || null, normalize: state.normalize });
  } catch (err) { // nothing of the previous explanation stays: not its panel, not its colours
    if (gen !== generation || mine !== targetSeq) return;
    const what = [state.target, state.target_b].filter(Boolean).map(show).join(" vs ") || "the top prediction";
    box.textContent = "";
    el("p", { class: "side-error target-error", text: `could not explain ${what}: ${err.message}` }, box);
    if (dla) {
      dla = null;
      drawRoutes($("#graph"), current.routes, { interactive: true, ctx: mainCtx(), display: current.display, collapse: state.collapse, dla });
    }
    throw err;
  }
  if (gen !== generation || mine !== targetSeq) return;
  dla = d;
  box.textContent = "";
  const names = d.targets.map((t) => show(t.token));
  el("h3", { id: "target-title", text: d.difference ? `Explaining the logit difference ${names[0]} - ${names[1]} (${d.logit.toFixed(3)})` : `Explaining ${names[0]}: p = ${d.targets[0].prob.toFixed(4)}, rank ${d.targets[0].rank + 1}` }, box);
  el("p", { class: "hint note-target", text: "The routes do not change with the target: eq. 1 measures each part against the state it builds, not against any token. The chart and the colours below do." }, box);
  const pair = el("div", { class: "pair target-pair" }, box);
  lensChart(el("div", {}, pair), d);
  const right = el("div", {}, pair);
  const L = d.heads.length;
  const matrix = d.heads.map((row, l) => [...row, d.ffn[l]]);
  const cols = [...d.heads[0].map((_, h) => `H${h}`), "FFN"];
  const H = d.heads[0].length;
  heatmap(right, matrix, { id: "heat-dla", diverging: true, cell: 14, onClick: (l, j) => (j < H ? showInGraph("head", l, j) : showInGraph("ffn", l, d.position)), rowLabels: d.heads.map((_, l) => `L${l}`), colLabels: cols,
                         rowName: "block", colName: "component", title: `direct logit attribution at position ${d.position} (red: raises ${d.difference ? "the difference" : names[0]}, blue: lowers it)` });
  el("p", { class: "hint", text: `embeddings ${d.embedding.toFixed(3)}, attention constants ${d.attention_constant.reduce((a, b) => a + b, 0).toFixed(3)}, final norm bias ${d.bias.toFixed(3)}; all parts add up to ${d.logit.toFixed(3)}. ${L} blocks.` }, right);
  drawRoutes($("#graph"), current.routes, { interactive: true, ctx: mainCtx(), display: current.display, collapse: state.collapse, dla: d });
}
function lensChart(parent, d) {
  const rows = d.lens;
  const W = 360, H = 150, left = 34, bottom = 22;
  const canvas = el("canvas", { id: "lens-chart", width: W, height: H, "data-points": rows.length }, parent);
  const ctx = canvas.getContext("2d");
  const key = d.difference ? "difference" : "prob";
  const vals = rows.map((r) => r[key]);
  const lo = d.difference ? Math.min(0, ...vals) : 0, hi = d.difference ? Math.max(0, ...vals) : 1;
  const X = (i) => left + (i / Math.max(1, rows.length - 1)) * (W - left - 8);
  const Y = (v) => 6 + (1 - (v - lo) / Math.max(1e-9, hi - lo)) * (H - bottom - 6);
  ctx.strokeStyle = "#999"; ctx.beginPath(); ctx.moveTo(left, Y(lo)); ctx.lineTo(W - 8, Y(lo)); ctx.stroke();
  ctx.strokeStyle = "#d62728"; ctx.lineWidth = 2; ctx.beginPath();
  vals.forEach((v, i) => (i ? ctx.lineTo(X(i), Y(v)) : ctx.moveTo(X(i), Y(v))));
  ctx.stroke();
  ctx.fillStyle = getComputedStyle(document.body).getPropertyValue("--muted").trim() || "#444";
  ctx.font = "10px sans-serif";
  ctx.fillText(hi.toPrecision(2), 2, 12); ctx.fillText(lo.toPrecision(2), 2, Y(lo));
  ctx.fillText("x0", left, H - 6); ctx.fillText(`x${(rows.length - 1) / 2}`, W - 30, H - 6);
  const table = el("table", { class: "rank lens-chart-table" }, parent);
  el("tr", {}, table).innerHTML = `<th>state</th><th>p</th><th>rank</th>${d.difference ? "<th>logit diff</th>" : "<th>logit</th>"}`;
  for (const r of rows.filter((x) => x.kind === "residual")) {
    const tr = el("tr", { class: "lens-chart-row" }, table);
    el("td", { text: `x${r.layer}` }, tr); el("td", { text: r.prob.toFixed(4) }, tr);
    el("td", { text: r.rank + 1 }, tr); el("td", { text: (d.difference ? r.difference : r.logit).toFixed(3) }, tr);
  }
  el("div", { class: "hint", text: `${d.difference ? "logit difference" : "probability"} of the target through the logit lens, x0 (embeddings) to the top${state.normalize ? "" : " (without the final norm)"}` }, parent);
}

// ---------- prompt sets ----------
const promptSet = { name: "", prompts: [], index: -1, running: false };
function parseSet(text, name) {
  const lines = text.split(/\r?\n/).filter((l) => l.trim());
  if (!/\.(jsonl|ndjson)$/i.test(name)) return lines;
  return lines.map((l, i) => {
    let v;
    try { v = JSON.parse(l); } catch (e) { throw new Error(`${name} line ${i + 1} is not JSON`); }
    const p = typeof v === "string" ? v : v && (v.prompt ?? v.text);
    if (typeof p !== "string") throw new Error(`${name} line ${i + 1} has no "prompt" or "text" string`);
    return p;
  });
}
function useSet(prompts, name) {
  if (!prompts.length) throw new Error(`${name} holds no prompt`);
  promptSet.name = name; promptSet.prompts = prompts.slice(0, conf.max_set || 500); promptSet.index = -1;
  $("#set-view").textContent = "";
  return stepSet(1); // the first prompt, traced: "1 of n"
}
function showSetPosition() {
  const n = promptSet.prompts.length;
  $("#set-position").textContent = n ? `${promptSet.name}: ${promptSet.index + 1} of ${n}` : "no set loaded";
}
async function stepSet(delta) {
  const n = promptSet.prompts.length;
  if (!n) { showError("load a prompt set first (a shipped sample or a .txt / .jsonl file)"); return; }
  promptSet.index = Math.max(0, Math.min(n - 1, promptSet.index + delta));
  showSetPosition();
  forgetTargets(promptSet.prompts[promptSet.index], state.model);
  state.prompt = promptSet.prompts[promptSet.index]; $("#prompt").value = state.prompt; state.position = -1;
  await loadRoutes({ reset: true });
}
// head activation frequency over the set, redrawn after every prompt (each traced once, then cached)
async function setFrequency() {
  const n = promptSet.prompts.length;
  if (!n) { showError("load a prompt set first (a shipped sample or a .txt / .jsonl file)"); return; }
  if (!current) { showError("trace a prompt first: the set uses its model and thresholds"); return; }
  promptSet.running = true;
  const L = current.routes.n_layers, H = current.routes.n_heads;
  const counts = Array.from({ length: L }, () => new Array(H).fill(0));
  let done = 0, skipped = 0;
  const box = $("#set-view");
  const query = routesQuery();
  const tau = state.separate ? `tau_attn = ${state.attention_threshold}, tau_ffn = ${state.ffn_threshold}` : `tau = ${state.threshold}`;
  for (const prompt of promptSet.prompts) {
    if (!promptSet.running) break;
    try {
      const d = await api("/api/routes", { ...query, prompt, position: -1 });
      for (const [l, h] of d.active_heads) counts[l][h] += 1;
      done++;
    } catch (err) { skipped++; }
    const freq = counts.map((r) => r.map((c) => (done ? c / done : 0)));
    box.textContent = "";
    el("p", { id: "set-progress", text: `${done} of ${n} prompts traced${skipped ? `, ${skipped} skipped (errors)` : ""}${done + skipped === n ? " (done)" : ""}; `
              + `share of their last-position routes in which each head is active, ${tau}` }, box);
    heatmap(box, freq, { id: "heat-set-frequency", rowName: "layer", colName: "head", cell: 14, rowLabels: layers(freq), colLabels: heads(freq) })
      .dataset.matrix = JSON.stringify(freq);
  }
  promptSet.running = false;
}

// ---------- the code of the current view ----------
// what load_model gets: the server's configured string (hub id, folder, .gguf), nothing for the embedded default
function loadLine() {
  const sources = conf.sources || {};
  if (!(state.model in sources)) return `model = flowroutes.load_model(${JSON.stringify(state.model)})  # this server was given the model as an object: load it as you did`;
  return sources[state.model] === null ? "model = flowroutes.load_model()  # the embedded SmolLM2-135M-Instruct"
    : `model = flowroutes.load_model(${JSON.stringify(sources[state.model])})`;
}
// the open code panel always shows the lines of the view on screen (or says there is none)
function refreshCode() {
  if ($("#code").hidden) return;
  if (state.view === "generate") { $("#code-text").textContent = generateCode(); return; } // static/generate.js
  $("#code-text").textContent = current ? pythonCode()
    : "# no routes on screen to reproduce: trace a prompt (the last one, if any, failed: see the message above)";
}
function pythonCode() {
  const py = (v) => JSON.stringify(v);
  const lines = ["import flowroutes", "from flowroutes.figures import render_routes", "", loadLine(),
                 `tr = flowroutes.trace(model, ${py(state.prompt)})`];
  const args = [`threshold=${state.threshold}`, `position=${current ? current.routes.position : state.position}`];
  if (state.separate) args.push(`attention_threshold=${state.attention_threshold}`, `ffn_threshold=${state.ffn_threshold}`);
  if (!state.renormalize) args.push("renormalize=False");
  lines.push(`routes = tr.routes(${args.join(", ")})`, 'open("routes.svg", "wb").write(render_routes(routes, "svg"))');
  const li = lastIntervention;
  const reproducible = li && ((li.component.kind === "head") || (li.component.kind === "ffn" && li.mode === "zero"));
  if (reproducible) {
    const c = li.component;
    lines.push("", "# the last intervention, with flowroutes.patching (metric: the target's logit"
               + (li.target_b ? " minus the second target's)" : ")"),
               "import torch", "from flowroutes.patching.core import TaskBatch, head_outputs, intervene_ffn, run_metric",
               "from flowroutes.patching.methods import ablation_values",
               `target = model.tokenizer(${py(li.target || (current ? current.prediction[0].token : ""))}, add_special_tokens=False)["input_ids"][0]`,
               li.target_b ? `other = [model.tokenizer(${py(li.target_b)}, add_special_tokens=False)["input_ids"][0]]` : "other = []",
               "ids = torch.as_tensor(tr.input_ids)[None]",
               li.mode === "patch" ? `ids_b = torch.as_tensor(flowroutes.trace(model, ${py(li.prompt_b)}).input_ids)[None]` : "ids_b = ids",
               'batch = TaskBatch(ids, ids_b, torch.tensor([ids.shape[1]]), [[target]], [other], "logit_diff", [None])');
    if (c.kind === "head") {
      lines.push(li.mode === "mean" ? `values = head_outputs(model, ids)[${c.layer}][0].mean(dim=0)  # its mean over the positions`
                                    : `values = ablation_values(model, batch, ${py(li.mode)})[0][${c.layer}]`,
                 `mask = torch.zeros(1, model.adapter.n_heads); mask[0, ${c.head}] = 1`,
                 `print(run_metric(model, batch).item(), run_metric(model, batch, {${c.layer}: (mask, values)}).item())`);
    } else {
      lines.push(`with intervene_ffn(model, {${c.layer}: torch.zeros(model.adapter.d_model)}):`,
                 "    after = run_metric(model, batch).item()", "print(run_metric(model, batch).item(), after)");
    }
  } else if (li) {
    lines.push("", "# the last intervention (an edge, or an FFN mean or patch) is not written out here: see docs/web.md");
  }
  return lines.join("\n");
}

// ---------- main flows ----------
// the download links of the routes on screen, with the edits made on them (editbar.js; a picture draws them):
// edits too large for a link are sent by the links' click handler instead (editbar.js setupEditBar)
function downloadLinks() {
  const q = routesQuery();
  const edited = typeof editsParam === "function" ? editsParam() : "";
  for (const fmt of ["json", "svg", "png"]) {
    const a = $(`#download-${fmt}`);
    if (!current) { a.classList.add("disabled"); a.removeAttribute("href"); continue; }
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(q)) p.set(k, v);
    p.set("format", fmt);
    if (edited) p.set("edits", edited);
    a.href = `/api/download?${p.toString()}`;
    a.classList.remove("disabled");
  }
}
function newTrace() { // a new prompt, position or model: nothing of the old one stays on the page
  resetInspector();
  clearEdits();
  dla = null;
  lastIntervention = null;
  for (const id of ["#target-view", "#intervention"]) { $(id).textContent = ""; }
  $("#intervention").hidden = true;
  refreshCode();
}
async function loadRoutes(opts = {}) {
  if (!state.prompt.trim()) { showError("the prompt is empty: type some text"); return; }
  const mine = ++seq;
  if (opts.reset) newTrace();
  writeUrl();
  $("#status").textContent = "tracing...";
  $("#run").disabled = true;
  try {
    const data = await computing("#view-graph", () => api("/api/routes", routesQuery()));
    if (mine !== seq) return;
    showError("");
    if (current && (current.routes.prompt !== data.routes.prompt || current.routes.position !== data.routes.position)) newTrace();
    current = data;
    const r = data.routes;
    const sel = $("#position");
    sel.textContent = "";
    for (const p of data.positions) el("option", { value: p.position, text: `${p.position}: ${show(p.token)} -> ${show(p.top)}` }, sel);
    sel.value = r.position;
    $("#predictions").textContent = "";
    el("b", { text: `next token after ${show(data.display[r.position])}: ` }, $("#predictions"));
    for (const p of data.prediction) {
      const chip = el("span", { class: "prediction", text: `${show(p.token)} ${(100 * p.prob).toFixed(1)}%` }, $("#predictions"));
      activatable(chip, `explain ${p.token}`, () => { state.target = p.token; syncControls(); guarded(() => computing("#target-view", loadTarget)); });
    }
    const nAtt = r.edges.filter((e) => e.kind === "attention").length;
    const nSelf = r.edges.filter((e) => e.kind === "attention" && pos(e.source) === pos(e.target)).length;
    $("#summary").textContent = `${r.nodes.length} nodes, ${r.edges.length} edges (${nAtt} attention, ${nSelf} of them a token reading itself), ${r.active_heads.length} active heads`
      + (data.truncated ? ` (the strongest of ${data.truncated.edges} edges: this server sends at most ${data.truncated.max_edges}; raise the threshold to see whole routes)` : "");
    drawRoutes($("#graph"), r, { interactive: true, ctx: mainCtx(), display: data.display, collapse: state.collapse, dla });
    $("#status").textContent = `${data.model}: ${data.cached ? "cached trace" : "new forward pass"}, server ${data.server_ms.toFixed(1)} ms`;
    downloadLinks();
    refreshCode();
    if (state.target || state.target_b) await guarded(() => computing("#target-view", loadTarget));
    renders++;
    document.body.dataset.renders = renders;
    if (state.view === "heatmaps") await loadHeatmaps();
    if (state.view === "contrast" && state.prompt_b.trim()) await loadContrast();
  } catch (err) {
    if (mine !== seq) return;
    if (opts.fromLink && state.position !== -1 && /position .* out of range/.test(err.message)) {
      showNote(`position ${state.position} from the link is out of range for this prompt: showing the last position`, true);
      state.position = -1;
      $("#run").disabled = false;
      await loadRoutes();
      return;
    }
    showError(err.message);
    current = null; // no stale graph or downloads for a query that failed
    newTrace();
    for (const id of ["#status", "#graph", "#summary", "#predictions"]) $(id).textContent = "";
    downloadLinks();
    refreshCode();
    renders++;
    document.body.dataset.renders = renders;
  } finally {
    if (mine === seq) $("#run").disabled = false;
  }
}
// tokens shared by A and B get one column (longest common subsequence of token ids)
function align(a, b) {
  const n = a.length, m = b.length;
  const dp = Array.from({ length: n + 1 }, () => new Int32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) dp[i][j] = a[i] === b[j] ? dp[i + 1][j + 1] + 1 : Math.max(dp[i + 1][j], dp[i][j + 1]);
  const ca = [], cb = [];
  let i = 0, j = 0, col = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) { ca.push(col); cb.push(col); i++; j++; } else if (j >= m || (i < n && dp[i + 1][j] >= dp[i][j + 1])) { ca.push(col); i++; } else { cb.push(col); j++; }
    col++;
  }
  return { a: ca, b: cb, n: col };
}
async function loadContrast() {
  if (!state.prompt_b.trim()) { showError("the second prompt is empty: type text to compare with"); return; }
  writeUrl();
  await guarded(() => computing("#view-contrast", async () => {
    const d = await api("/api/contrast", { ...routesQuery(), prompt_b: state.prompt_b });
    resetInspector();
    const cols = d.a && d.b ? align(d.sides.a.token_ids, d.sides.b.token_ids) : null;
    for (const [side, label, prompt] of [["a", "A", state.prompt], ["b", "B", state.prompt_b]]) {
      const box = $(`#contrast-${side}`);
      box.textContent = "";
      if (d.errors[side]) { el("p", { class: "side-error", role: "alert", text: d.errors[side] }, box); continue; }
      const s = d.sides[side], routes = d[side], cut = d.truncated && d.truncated[side];
      const pred = el("div", { class: "side-predictions" }, box);
      el("b", { text: `next token after ${show(s.display[routes.position])}: ` }, pred);
      for (const p of s.prediction) el("span", { class: "prediction", text: `${show(p.token)} ${(100 * p.prob).toFixed(1)}%` }, pred);
      if (cut) el("p", { class: "hint", text: `the strongest ${cut.kept} of ${cut.edges} edges (over this server's budget)` }, box);
      const ctx = { prompt, label: `prompt ${label}`, display: s.display, gen: generation };
      drawRoutes(el("div", { class: "contrast-graph" }, box), routes,
                 { interactive: true, ctx, display: s.display, xcols: cols ? cols[side] : null, ncols: cols ? cols.n : null, fit: true });
    }
    $("#contrast-diff").textContent = "";
    if (d.head_difference) {
      heatmap($("#contrast-diff"), d.head_difference, { id: "heat-contrast", diverging: true, rowName: "layer", colName: "head", cell: 14,
                                                      rowLabels: layers(d.head_difference), colLabels: heads(d.head_difference), scale: state.heatScale });
    }
  }));
}
const layers = (m) => m.map((_, l) => `L${l}`);
const heads = (m) => (m.length ? m[0].map((_, h) => `H${h}`) : []);
async function loadHeatmaps() {
  await guarded(() => computing("#view-heatmaps", async () => {
    const d = await api("/api/heatmaps", routesQuery());
    const scale = $("#heat-scale").value;
    for (const id of ["#heat-heads", "#heat-head-importance", "#heat-ffn"]) $(id).textContent = "";
    const head = (l, h) => showInGraph("head", l, h), ffn = (l, p) => showInGraph("ffn", l, p);
    heatmap($("#heat-heads"), d.head_weights, { id: "heat-routes-heads", rowName: "layer", colName: "head", cell: 14, rowLabels: layers(d.head_weights), colLabels: heads(d.head_weights), scale, onClick: head });
    heatmap($("#heat-head-importance"), d.head_importance, { id: "heat-raw-heads", rowName: "layer", colName: "head", cell: 14, rowLabels: layers(d.head_importance), colLabels: heads(d.head_importance), scale, onClick: head });
    heatmap($("#heat-ffn"), d.ffn, { id: "heat-ffn-map", rowName: "layer", colName: "token", rowLabels: layers(d.ffn), colLabels: d.tokens.map(show), cell: 14, scale, onClick: ffn });
  }));
}

// ---------- summaries for people: numbers, intervals, verdicts and nested records, never raw JSON ----------
// a number as flowroutes.analyses.stats.fmt writes it: three decimals below 10, then 90.7, 2173, 12300
function fmtNumber(x) {
  if (x === null || x === undefined || !Number.isFinite(x)) return "not computed";
  if (Number.isInteger(x)) return x.toLocaleString("en-US");
  if (Math.abs(x) < 1e-3) return Math.abs(x) < 1e-4 ? x.toExponential(2) : x.toPrecision(3);
  for (const [limit, digits] of [[10, 3], [100, 1], [10000, 0]]) {
    const text = x.toFixed(digits);
    if (Math.abs(Number(text)) < limit) return text === "-0.000" ? "0.000" : text;
  }
  const step = 10 ** (Math.floor(Math.log10(Math.abs(x))) - 2);
  return (Math.round(x / step) * step).toFixed(0);
}
const isRecord = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const isEstimate = (v) => isRecord(v) && "value" in v && Array.isArray(v.ci95) && v.ci95.length === 2;
const VERDICT_WORDS = { holds: ["holds", "hold"], "does not hold": ["does not hold", "do not hold"],
                        "cannot be tested": ["cannot be tested", "cannot be tested"] };
const isVerdictCounts = (v) => isRecord(v) && Object.keys(v).length > 0
  && Object.entries(v).every(([k, n]) => k in VERDICT_WORDS && Number.isInteger(n));
// an Estimate's to_dict() as its __str__: 0.896 [0.800, 0.920] (n=48 texts)
function estimateText(e) {
  const n = Number(e.n), units = Number(e.units ?? e.n), unit = e.unit || "texts";
  const counted = Number.isFinite(n) ? (n === units ? `n=${fmtNumber(n)} ${unit}` : `n=${fmtNumber(n)} in ${fmtNumber(units)} ${unit}`) : "";
  if (e.value === null || e.value === undefined) return `not computed${counted ? ` (${counted})` : ""}`;
  const [lo, hi] = e.ci95;
  if (lo === null || hi === null) {
    return `${fmtNumber(e.value)} (no interval: ${units <= 1 ? counted : "no resample gave a value"})`;
  }
  return `${fmtNumber(e.value)} [${fmtNumber(lo)}, ${fmtNumber(hi)}]${counted ? ` (${counted})` : ""}`;
}
const keyLabel = (k) => String(k); // the summary's own keys (the names its docs and report use)
// one value of a summary as DOM: text for scalars, estimates and verdict counts; rows for objects; a table with
// a header for lists of records
function readable(v, key = "") {
  if (v === null || v === undefined) return document.createTextNode("none");
  if (typeof v === "boolean") return document.createTextNode(v ? "yes" : "no");
  if (typeof v === "number") return document.createTextNode(fmtNumber(v));
  if (typeof v === "string") {
    if (key === "verdict" && v in VERDICT_WORDS) return el("span", { class: `verdict ${v.replace(/ /g, "-")}`, text: v });
    return document.createTextNode(v);
  }
  if (isEstimate(v)) return document.createTextNode(estimateText(v));
  if (isVerdictCounts(v)) {
    return document.createTextNode(Object.entries(v).map(([k, n]) => `${n} ${VERDICT_WORDS[k][n === 1 ? 0 : 1]}`).join(", "));
  }
  if (Array.isArray(v)) {
    if (!v.length) return document.createTextNode("none");
    const shown = v.slice(0, 50), more = v.length - shown.length;
    let node;
    if (v.every((x) => !isRecord(x) && !Array.isArray(x)) || v.every(isEstimate)) {
      node = document.createTextNode(shown.map((x) => readable(x).textContent).join(", ") + (more ? ` and ${more} more` : ""));
      return node;
    }
    if (v.every((x) => isRecord(x) && !isEstimate(x))) { // records: one row each, one column per key
      const cols = [...new Set(shown.flatMap(Object.keys))];
      const table = el("table", { class: "rank nested records" });
      const body = el("tbody", {}, table);
      const head = el("tr", {}, body);
      for (const c of cols) el("th", { text: keyLabel(c) }, head);
      for (const r of shown) {
        const tr = el("tr", {}, body);
        for (const c of cols) el("td", {}, tr).appendChild(c in r ? readable(r[c], c) : document.createTextNode(""));
      }
      if (!more) return table;
      node = el("div"); node.append(table, el("p", { class: "hint", text: `and ${more} more` }));
      return node;
    }
    node = el("ol", { class: "nested" });
    for (const x of shown) el("li", {}, node).appendChild(readable(x));
    if (more) el("li", { class: "hint", text: `and ${more} more` }, node);
    return node;
  }
  const table = el("table", { class: "rank nested" });
  const body = el("tbody", {}, table);
  for (const [k, x] of Object.entries(v)) {
    const tr = el("tr", {}, body);
    el("th", { text: keyLabel(k) }, tr);
    el("td", {}, tr).appendChild(readable(x, k));
  }
  return table;
}

let analysesShown = false;
async function loadAnalyses() {
  if (analysesShown) return;
  await guarded(async () => {
    const res = await fetch("/api/analyses");
    const data = await res.json();
    const box = $("#analyses");
    box.textContent = "";
    if (!data.analyses.length) {
      el("p", { class: "hint", text: "No analysis folders configured: start the server with --analyses DIR "
                + "(a folder written by `flowroutes analyze ... --out DIR`) to see their heatmaps here." }, box);
    }
    for (const a of data.analyses) {
      const sec = el("div", { class: "analysis" }, box);
      el("h3", { text: a.name }, sec);
      const table = el("table", { class: "rank summary" }, sec);
      const body = el("tbody", {}, table);
      for (const [k, v] of Object.entries(a.summary)) {
        const tr = el("tr", {}, body);
        el("th", { text: keyLabel(k) }, tr);
        el("td", {}, tr).appendChild(readable(v, k));
      }
      for (const f of a.figures) {
        const fig = el("figure", {}, sec);
        el("img", { class: "analysis-figure", alt: f, src: `/api/analyses/${a.id}/${encodeURIComponent(f)}` }, fig);
        el("figcaption", { text: f }, fig);
      }
    }
    analysesShown = true;
  });
}

let debounce = null;
function onThreshold() {
  state.threshold = Number($("#threshold").value);
  state.attention_threshold = Number($("#attention-threshold").value);
  state.ffn_threshold = Number($("#ffn-threshold").value);
  for (const id of ["threshold", "attention-threshold", "ffn-threshold"]) $(`#${id}-value`).textContent = Number($(`#${id}`).value).toFixed(3);
  clearTimeout(debounce);
  debounce = setTimeout(() => { if (current) loadRoutes(); else writeUrl(); }, 80);
}
async function init() {
  document.body.dataset.busy = "0";
  document.body.dataset.renders = "0";
  try {
    const res = await fetch("/api/config");
    conf = await res.json();
  } catch (err) {
    showError("cannot reach the flowroutes server: is `flowroutes serve` running?"); return;
  }
  if (conf.max_drawn_edges) SVG_EDGE_LIMIT = conf.max_drawn_edges;
  const notes = readUrl();
  showNote(notes.join("; "));
  for (const m of conf.models) el("option", { value: m, text: m }, $("#model"));
  for (const id of ["threshold", "attention-threshold", "ffn-threshold"]) {  // the server refuses lower thresholds
    $(`#${id}`).min = Math.max(Number($(`#${id}`).min), conf.min_threshold || 0);
  }
  if (!conf.models.includes(state.model)) state.model = conf.default;
  syncControls();
  resetInspector();
  // the bare landing page: the example prompt, traced at once (a link with settings but no prompt waits for one)
  const landing = !location.search;
  if (!state.prompt) $("#prompt").value = "When Mary and John went to the store, John gave a drink to";
  if (landing) state.prompt = $("#prompt").value;
  $("#query").addEventListener("submit", (ev) => {
    ev.preventDefault(); showNote("");
    forgetTargets($("#prompt").value, state.model);
    state.prompt = $("#prompt").value; state.position = -1; loadRoutes({ reset: true });
  });
  $("#prompt").addEventListener("keydown", (ev) => { if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); $("#run").click(); } });
  $("#model").addEventListener("change", () => { state.model = $("#model").value; state.position = -1; current = null; forgetTargets(state.prompt, state.model); newTrace(); if (state.prompt) loadRoutes({ reset: true }); });
  $("#position").addEventListener("change", () => { state.position = Number($("#position").value); newTrace(); loadRoutes({ reset: true }); });
  for (const id of ["threshold", "attention-threshold", "ffn-threshold"]) $(`#${id}`).addEventListener("input", onThreshold);
  $("#separate").addEventListener("change", () => {
    state.separate = $("#separate").checked;
    if (state.separate) { state.attention_threshold = state.threshold; state.ffn_threshold = state.threshold; }
    syncControls(); if (current) loadRoutes(); else writeUrl();
  });
  $("#renormalize").addEventListener("change", () => { state.renormalize = $("#renormalize").checked; if (current) loadRoutes(); });
  $("#normalize").addEventListener("change", () => { state.normalize = $("#normalize").checked; writeUrl(); if (dla) guarded(() => computing("#target-view", loadTarget)); });
  $("#collapse").addEventListener("change", () => {
    state.collapse = $("#collapse").checked;
    if (current) drawRoutes($("#graph"), current.routes, { interactive: true, ctx: mainCtx(), display: current.display, collapse: state.collapse, dla });
  });
  $("#target-form").addEventListener("submit", (ev) => {
    ev.preventDefault(); state.target = $("#target").value; state.target_b = $("#target-b").value; writeUrl();
    guarded(() => computing("#target-view", loadTarget));
  });
  $("#heat-scale").addEventListener("change", () => { state.heatScale = $("#heat-scale").value; if (current) loadHeatmaps(); });
  try {
    const ss = await (await fetch("/api/samples")).json();
    for (const name of ss.samples) el("option", { value: name, text: name }, $("#set-sample"));
  } catch (err) { /* the samples list is optional */ }
  $("#set-load-sample").addEventListener("click", () => guarded(() => computing("#set-bar", async () => {
    const name = $("#set-sample").value;
    const res = await fetch(`/api/samples/${encodeURIComponent(name)}?n=50&model=${encodeURIComponent(state.model)}`);
    const d = await res.json();
    if (!res.ok) throw new Error(`${d.detail} (HTTP ${res.status})`);
    await useSet(d.prompts, name);
  })));
  $("#set-file").addEventListener("change", () => guarded(async () => {
    const file = $("#set-file").files[0];
    if (file) await useSet(parseSet(await file.text(), file.name), file.name);
  }));
  $("#set-prev").addEventListener("click", () => stepSet(-1));
  $("#set-next").addEventListener("click", () => stepSet(1));
  $("#set-frequency").addEventListener("click", () => guarded(setFrequency));
  $("#set-stop").addEventListener("click", () => { promptSet.running = false; });
  $("#show-code").addEventListener("click", () => {
    const box = $("#code");
    box.hidden = !box.hidden;
    refreshCode();
  });
  for (const b of document.querySelectorAll("#tabs button")) {
    b.addEventListener("click", () => {
      state.view = b.dataset.view; syncControls(); writeUrl();
      if (state.view === "heatmaps" && current) loadHeatmaps();
      if (state.view === "contrast" && current && state.prompt_b.trim()) loadContrast();
      if (state.view === "analyses") loadAnalyses();
    });
  }
  $("#contrast-form").addEventListener("submit", (ev) => { ev.preventDefault(); state.prompt_b = $("#prompt-b").value; loadContrast(); });
  downloadLinks();
  setupEditBar();
  if (state.view === "analyses") loadAnalyses();
  if (landing) await loadRoutes();
  else if (state.prompt) await loadRoutes({ fromLink: true });
  document.body.dataset.ready = "1"; // set up, and the first trace (if any) drawn
}
init();
