// flowroutes explorer: draws the routes the server sends (SVG), opens inspect views, keeps the state in the URL.
// Plain JavaScript, no build step. Talks only to this server's /api; never reaches other hosts.
"use strict";

const $ = (sel) => document.querySelector(sel);
const SVGNS = "http://www.w3.org/2000/svg";
const VIEWS = ["graph", "contrast", "heatmaps", "analyses"];
const state = {
  model: "", prompt: "", position: -1, threshold: 0.04, attention_threshold: 0.04, ffn_threshold: 0.04,
  separate: false, renormalize: true, view: "graph", prompt_b: "",
};
let current = null; // last /api/routes answer
let renders = 0;    // bumped after each drawn answer (tests wait on it)
let busy = 0;
let seq = 0;        // newest routes request; older answers are dropped

// ---------- plumbing ----------
function setBusy(delta) {
  busy += delta;
  document.body.dataset.busy = busy > 0 ? "1" : "0";
}
function showError(message) {
  const box = $("#error");
  if (message) { box.textContent = message; box.hidden = false; } else { box.textContent = ""; box.hidden = true; }
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
  history.replaceState(null, "", `${location.pathname}?${p.toString()}`);
}
function readUrl() {
  const p = new URLSearchParams(location.search);
  const num = (k, d) => (p.has(k) && !Number.isNaN(Number(p.get(k))) ? Number(p.get(k)) : d);
  if (p.has("model")) state.model = p.get("model");
  state.prompt = p.get("prompt") || "";
  state.prompt_b = p.get("prompt_b") || "";
  state.position = Math.trunc(num("position", -1));
  state.threshold = num("threshold", 0.04);
  state.separate = p.has("attention_threshold") || p.has("ffn_threshold");
  state.attention_threshold = num("attention_threshold", state.threshold);
  state.ffn_threshold = num("ffn_threshold", state.threshold);
  state.renormalize = p.get("renormalize") !== "0";
  state.view = VIEWS.includes(p.get("view")) ? p.get("view") : "graph";
}
function syncControls() {
  $("#model").value = state.model; $("#prompt").value = state.prompt; $("#prompt-b").value = state.prompt_b;
  for (const [id, key] of [["threshold", "threshold"], ["attention-threshold", "attention_threshold"],
                           ["ffn-threshold", "ffn_threshold"]]) {
    $(`#${id}`).value = state[key]; $(`#${id}-value`).textContent = Number(state[key]).toFixed(3);
  }
  $("#separate").checked = state.separate; $("#separate-controls").hidden = !state.separate;
  $("#renormalize").checked = state.renormalize;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.view === state.view);
  for (const v of VIEWS) $(`#view-${v}`).hidden = v !== state.view;
  $("#inspector").hidden = state.view !== "graph";
}
function el(tag, attrs = {}, parent = null, ns = null) {
  const node = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  if (parent) parent.appendChild(node);
  return node;
}
const svgEl = (tag, attrs, parent) => el(tag, attrs, parent, SVGNS);
const show = (t) => JSON.stringify(t);

// ---------- the routes graph ----------
function blue(w) { // light to dark blue with importance
  const t = Math.max(0, Math.min(1, w));
  const c0 = [158, 202, 225], c1 = [8, 48, 107];
  return `rgb(${c0.map((c, i) => Math.round(c + (c1[i] - c) * t)).join(",")})`;
}
const width = (w) => 0.6 + 4 * Math.max(0, Math.min(1, w));

function drawRoutes(container, routes, interactive) {
  container.textContent = "";
  const L = routes.n_layers, T = routes.tokens.length;
  const dx = Math.max(46, Math.min(110, 1000 / T)), dy = Math.max(7, Math.min(22, 720 / (2 * L)));
  const left = 48, top = 16, bottom = 80;
  const W = left + dx * T + 10, H = top + dy * 2 * L + bottom;
  const svg = svgEl("svg", { class: "routes", width: W, height: H, viewBox: `0 0 ${W} ${H}`,
                             "data-edges": routes.edges.length, "data-nodes": routes.nodes.length }, container);
  const X = (p) => left + dx * p + dx / 2;
  const Y = (lv) => top + (2 * L - lv) * dy;
  const levelOf = (n) => 2 * n.layer - (n.kind === "attention" ? 1 : 0);
  const nodes = new Map(routes.nodes.map((n) => [n.id, n]));
  const grid = svgEl("g", { class: "grid" }, svg);
  for (let l = 0; l <= L; l++) {
    if (l % Math.max(1, Math.round(L / 15)) === 0 || l === L) {
      svgEl("text", { x: 4, y: Y(2 * l) + 4, text: `x${l}` }, grid);
    }
    svgEl("line", { x1: left, x2: W - 10, y1: Y(2 * l), y2: Y(2 * l), stroke: "#f1f1f1" }, grid);
  }
  routes.token_texts.forEach((t, p) => {
    const label = svgEl("text", { x: X(p), y: Y(0) + 14, "text-anchor": "end",
                                  transform: `rotate(-40 ${X(p)} ${Y(0) + 14})`, text: show(t) }, grid);
    if (p === routes.position) label.setAttribute("style", "fill:#d62728;font-weight:bold");
  });
  const edgesG = svgEl("g", { class: "edges" }, svg);
  routes.edges.forEach((e, i) => {
    const s = nodes.get(e.source), t = nodes.get(e.target);
    const x0 = X(s.position), y0 = Y(levelOf(s)), x1 = X(t.position), y1 = Y(levelOf(t));
    const heads = e.heads ? Object.entries(e.heads).map(([h, w]) => `L${e.layer}H${h} ${w.toFixed(3)}`).join(", ") : "";
    const tip = `${e.kind} edge ${e.source} -> ${e.target}, block ${e.layer}, weight ${e.weight.toFixed(3)}${heads ? ": " + heads : ""}`;
    let g;
    if (e.kind === "attention") {
      g = svgEl("line", { x1: x0, y1: y0, x2: x1, y2: y1, stroke: blue(0.3 + 0.7 * e.weight), "stroke-width": width(e.weight),
                          "stroke-linecap": "round", opacity: 0.9 }, edgesG);
    } else if (e.kind === "residual") {
      g = svgEl("line", { x1: x0, y1: y0, x2: x1, y2: y1, stroke: "#8a8a8a", "stroke-width": width(e.weight), opacity: 0.7 },
                edgesG);
    } else {
      g = svgEl("g", {}, edgesG);
      const xm = x0 + dx * 0.22, ym = (y0 + y1) / 2, size = 5 + 6 * Math.min(1, e.weight);
      svgEl("path", { d: `M${x0},${y0} L${xm},${ym} L${x1},${y1}`, fill: "none", stroke: "#e377c2",
                      "stroke-width": width(e.weight), opacity: 0.85 }, g);
      svgEl("rect", { class: "ffn-block", x: xm - size / 2, y: ym - size, width: size, height: 2 * size, fill: "#e377c2",
                      stroke: "#a0327a" }, g);
    }
    g.setAttribute("class", `edge edge-${e.kind}`);
    g.dataset.index = i;
    svgEl("title", { text: tip }, g);
    if (interactive) g.addEventListener("click", () => { select(g); onEdge(e, s, t); });
  });
  const nodesG = svgEl("g", { class: "nodes" }, svg);
  for (const n of routes.nodes) {
    const c = svgEl("circle", { cx: X(n.position), cy: Y(levelOf(n)), r: n.kind === "residual" ? 3.2 : 2.4,
                                fill: n.kind === "residual" ? "#333" : "#1f4e9c",
                                class: `node node-${n.kind}`, "data-id": n.id }, nodesG);
    svgEl("title", { text: `${n.id}  (${n.kind}, layer ${n.layer}, token ${show(routes.token_texts[n.position])})` }, c);
    if (interactive) c.addEventListener("click", () => { select(c); onNode(n); });
  }
  svgEl("circle", { cx: X(routes.position), cy: Y(2 * L), r: 7, fill: "none", stroke: "#d62728", "stroke-width": 1.5 }, svg);
  return svg;
}

function select(element) {
  for (const old of document.querySelectorAll("#graph .selected")) old.classList.remove("selected");
  element.classList.add("selected");
}

// ---------- heatmaps (canvas) ----------
function heatmap(parent, matrix, opts = {}) {
  const rows = matrix.length, cols = rows ? matrix[0].length : 0;
  const cell = opts.cell || Math.max(3, Math.min(22, Math.floor(260 / Math.max(rows, cols, 1))));
  const labelled = Boolean(opts.rowLabels || opts.colLabels) && Math.max(rows, cols) <= 80;
  const left = labelled ? 64 : 0, top = labelled ? 52 : 0;
  const wrap = el("div", { class: "heatwrap" }, parent);
  if (opts.title) el("div", { class: "heat-title", text: opts.title }, wrap);
  const right = labelled && opts.colLabels ? 40 : 0;
  const canvas = el("canvas", { class: "heat", width: left + cols * cell + right, height: top + rows * cell }, wrap);
  if (opts.id) canvas.id = opts.id;
  canvas.dataset.left = left; canvas.dataset.top = top; canvas.dataset.cell = cell;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  let max = 0;
  for (const r of matrix) for (const v of r) max = Math.max(max, Math.abs(v));
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      const v = max > 0 ? matrix[i][j] / max : 0;
      let rgb;
      if (opts.diverging) rgb = v >= 0 ? [255, Math.round(255 * (1 - v)), Math.round(255 * (1 - v))]
                                       : [Math.round(255 * (1 + v)), Math.round(255 * (1 + v)), 255];
      else rgb = [Math.round(255 - 247 * v), Math.round(255 - 207 * v), Math.round(255 - 148 * v)];
      ctx.fillStyle = `rgb(${rgb.join(",")})`;
      ctx.fillRect(left + j * cell, top + i * cell, cell, cell);
    }
  }
  if (labelled) {
    ctx.fillStyle = "#444";
    ctx.font = `${Math.min(11, Math.max(7, cell - 2))}px sans-serif`;
    const cut = (t) => String(t).slice(0, 10);
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    if (opts.rowLabels) opts.rowLabels.forEach((t, i) => ctx.fillText(cut(t), left - 3, top + i * cell + cell / 2));
    if (opts.colLabels) {
      opts.colLabels.forEach((t, j) => {
        ctx.save(); ctx.translate(left + j * cell + cell / 2, top - 3); ctx.rotate(-Math.PI / 3);
        ctx.textAlign = "left"; ctx.fillText(cut(t), 0, 0); ctx.restore();
      });
    }
  }
  const info = el("div", { class: "hint", text: opts.legend || `max ${max.toPrecision(3)} (hover a cell for its value)` }, wrap);
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
function inspector(title) {
  const box = $("#inspector");
  box.textContent = "";
  el("h3", { text: title }, box);
  return box;
}
function tokenList(parent, label, rows, cls) {
  const div = el("div", { class: `tokens ${cls}-list` }, parent);
  el("b", { text: `${label}: ` }, div);
  for (const r of rows) el("span", { class: cls, title: `${r.score.toFixed(3)}`, text: show(r.token) }, div);
}
const base = () => ({ model: state.model, prompt: state.prompt });

async function guarded(fn) {
  try { showError(""); await fn(); } catch (err) { showError(err.message); }
}
function onEdge(e, s, t) {
  if (e.kind === "attention") guarded(() => inspectHeads(e.layer, t.position, s.position, e.heads));
  else if (e.kind === "ffn") guarded(() => inspectFfn(e.layer, t.position));
  else {
    const box = inspector(`Residual edge ${e.source} -> ${e.target}`);
    el("p", { text: `importance ${e.weight.toFixed(4)} (block ${e.layer})` }, box);
  }
}
function onNode(n) {
  if (n.kind === "attention") guarded(() => inspectHeads(n.layer - 1, n.position, null, null, n));
  else guarded(() => inspectLens(n));
}
async function inspectHeads(layer, target, source, edgeHeads, node = null) {
  const data = await api("/api/heads", { ...base(), layer, position: target, source });
  const toks = current.routes.token_texts;
  const what = source === null ? `into x${layer + 1}A@${target}` : `${show(toks[source])} (${source}) -> ${show(toks[target])} (${target})`;
  const box = inspector(`Heads of block ${layer}, ${what}`);
  el("p", { class: "hint", text: "Heads ranked by importance (eq. 1, before thresholds). Click a head for its maps." }, box);
  const table = el("table", { class: "rank heads" }, box);
  el("tr", {}, table).innerHTML = "<th>head</th><th>importance</th><th>in routes</th>";
  for (const h of data.heads) {
    const tr = el("tr", { class: "pick head-row", "data-head": h.head }, table);
    el("td", { text: `L${layer}H${h.head}` }, tr);
    el("td", { text: h.importance.toFixed(4) }, tr);
    const kept = edgeHeads && edgeHeads[h.head] !== undefined ? edgeHeads[h.head].toFixed(3) : "";
    el("td", { text: kept }, tr);
    tr.addEventListener("click", () => {
      for (const r of table.querySelectorAll("tr.chosen")) r.classList.remove("chosen");
      tr.classList.add("chosen");
      guarded(() => inspectHead(layer, h.head, target, headView));
    });
  }
  const headView = el("div", { id: "head-view" }, box);
  if (node) {
    const lensBox = el("div", { id: "lens-of-node" }, box);
    await inspectLens(node, lensBox);
  }
}
async function inspectHead(layer, head, target, box) {
  const data = await api("/api/head", { ...base(), layer, head, position: target });
  box.textContent = "";
  el("h3", { id: "head-title", text: `L${layer}H${head}` }, box);
  const toks = data.tokens.map(show);
  heatmap(box, data.attention, { id: "heat-attention", title: "attention weights alpha[p, j] (rows p: target, columns j: source)",
                                 rowLabels: toks, colLabels: toks, rowName: "target", colName: "source" });
  heatmap(box, data.contribution, { id: "heat-contribution", title: "contribution (importance of x_j -> x^A_p through this head)",
                                    rowLabels: toks, colLabels: toks, rowName: "target", colName: "source" });
  el("p", { class: "hint", text: `what the head writes at position ${target} ${show(data.tokens[target])}, projected on the unembedding:` }, box);
  tokenList(box, "promotes", data.promote, "promote");
  tokenList(box, "suppresses", data.suppress, "suppress");
}
async function inspectFfn(layer, position) {
  const data = await api("/api/ffn", { ...base(), layer, position });
  const box = inspector(`FFN of block ${layer} at position ${position} ${show(current.routes.token_texts[position])}`);
  el("p", { text: `importance ${data.importance.toFixed(4)}, output norm ${data.ffn_norm.toFixed(3)}` }, box);
  tokenList(box, "promotes", data.promote, "promote");
  tokenList(box, "suppresses", data.suppress, "suppress");
  el("p", { class: "hint", text: "Top neurons by contribution: activation x (output row . FFN output / |FFN output|). Click one." }, box);
  const table = el("table", { class: "rank neurons" }, box);
  el("tr", {}, table).innerHTML = "<th>neuron</th><th>activation</th><th>contribution</th>";
  const neuronView = el("div", { id: "neuron-view" }, box);
  for (const n of data.neurons) {
    const tr = el("tr", { class: "pick neuron-row", "data-neuron": n.neuron }, table);
    el("td", { text: `N${n.neuron}` }, tr);
    el("td", { text: n.activation.toFixed(3) }, tr);
    el("td", { text: n.score.toFixed(3) }, tr);
    tr.addEventListener("click", () => guarded(async () => {
      const d = await api("/api/neuron", { ...base(), layer, position, neuron: n.neuron });
      neuronView.textContent = "";
      el("h3", { text: `L${layer}N${n.neuron} (activation ${d.activation.toFixed(3)})` }, neuronView);
      tokenList(neuronView, "promotes", d.promote, "promote");
      tokenList(neuronView, "suppresses", d.suppress, "suppress");
    }));
  }
}
async function inspectLens(n, into = null) {
  const data = await api("/api/lens", { ...base(), layer: n.layer, kind: n.kind, position: n.position });
  const box = into || inspector(`Logit lens of ${n.id}`);
  if (into) el("h3", { text: `Logit lens of ${n.id}` }, box);
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

// ---------- main flows ----------
function downloadLinks() {
  const q = routesQuery();
  for (const fmt of ["json", "svg", "png"]) {
    const a = $(`#download-${fmt}`);
    if (!current) { a.classList.add("disabled"); a.removeAttribute("href"); continue; }
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(q)) p.set(k, v);
    p.set("format", fmt);
    a.href = `/api/download?${p.toString()}`;
    a.classList.remove("disabled");
  }
}
async function loadRoutes() {
  if (!state.prompt.trim()) { showError("the prompt is empty: type some text"); return; }
  const mine = ++seq;
  writeUrl();
  $("#status").textContent = "tracing...";
  try {
    const data = await api("/api/routes", routesQuery());
    if (mine !== seq) return;
    showError("");
    current = data;
    const r = data.routes;
    const sel = $("#position");
    sel.textContent = "";
    for (const p of data.positions) el("option", { value: p.position, text: `${p.position}: ${show(p.token)} -> ${show(p.top)}` }, sel);
    sel.value = r.position;
    $("#predictions").textContent = "";
    el("b", { text: `next token after ${show(r.token_texts[r.position])}: ` }, $("#predictions"));
    for (const p of r.prediction) el("span", { class: "prediction", text: `${show(p.token)} ${(100 * p.prob).toFixed(1)}%` }, $("#predictions"));
    const nAtt = r.edges.filter((e) => e.kind === "attention").length;
    $("#summary").textContent = `${r.nodes.length} nodes, ${r.edges.length} edges (${nAtt} attention), ${r.active_heads.length} active heads`
      + (data.truncated ? ` (the strongest of ${data.truncated.edges} edges: this server sends at most ${data.truncated.max_edges}; raise the threshold to see whole routes)` : "");
    drawRoutes($("#graph"), r, true);
    $("#status").textContent = `${data.model}: ${data.cached ? "cached trace" : "new forward pass"}, server ${data.server_ms.toFixed(1)} ms`;
    downloadLinks();
    renders++;
    document.body.dataset.renders = renders;
    if (state.view === "heatmaps") await loadHeatmaps();
    if (state.view === "contrast" && state.prompt_b.trim()) await loadContrast();
  } catch (err) {
    if (mine !== seq) return;
    showError(err.message);
    current = null; // no stale graph or downloads for a query that failed
    for (const id of ["#status", "#graph", "#summary", "#predictions"]) $(id).textContent = "";
    downloadLinks();
    renders++;
    document.body.dataset.renders = renders;
  }
}
async function loadContrast() {
  if (!state.prompt_b.trim()) { showError("the second prompt is empty: type text to compare with"); return; }
  writeUrl();
  await guarded(async () => {
    const d = await api("/api/contrast", { ...routesQuery(), prompt_b: state.prompt_b });
    for (const [id, r] of [["#contrast-a", d.a], ["#contrast-b", d.b]]) {
      drawRoutes($(id), r, false).setAttribute("style", "width:100%;height:auto");
    }
    $("#contrast-diff").textContent = "";
    if (d.truncated) el("p", { class: "hint", text: "Routes over this server's edge budget show only their strongest edges: raise the threshold to see them whole." }, $("#contrast-diff"));
    heatmap($("#contrast-diff"), d.head_difference, { id: "heat-contrast", diverging: true, rowName: "layer", colName: "head", cell: 14, rowLabels: layers(d.head_difference), colLabels: heads(d.head_difference) });
  });
}
const layers = (m) => m.map((_, l) => `L${l}`);
const heads = (m) => (m.length ? m[0].map((_, h) => `H${h}`) : []);
async function loadHeatmaps() {
  await guarded(async () => {
    const d = await api("/api/heatmaps", routesQuery());
    for (const id of ["#heat-heads", "#heat-head-importance", "#heat-ffn"]) $(id).textContent = "";
    heatmap($("#heat-heads"), d.head_weights, { id: "heat-routes-heads", rowName: "layer", colName: "head", cell: 14, rowLabels: layers(d.head_weights), colLabels: heads(d.head_weights) });
    heatmap($("#heat-head-importance"), d.head_importance, { id: "heat-raw-heads", rowName: "layer", colName: "head", cell: 14, rowLabels: layers(d.head_importance), colLabels: heads(d.head_importance) });
    heatmap($("#heat-ffn"), d.ffn, { id: "heat-ffn-map", rowName: "layer", colName: "token", rowLabels: layers(d.ffn), colLabels: d.tokens.map(show), cell: 14 });
  });
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
      for (const [k, v] of Object.entries(a.summary)) {
        const tr = el("tr", {}, table);
        el("th", { text: k }, tr);
        el("td", { text: typeof v === "string" ? v : JSON.stringify(v) }, tr);
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
  readUrl();
  let conf;
  try {
    const res = await fetch("/api/config");
    conf = await res.json();
  } catch (err) {
    showError("cannot reach the flowroutes server: is `flowroutes serve` running?"); return;
  }
  for (const m of conf.models) el("option", { value: m, text: m }, $("#model"));
  for (const id of ["threshold", "attention-threshold", "ffn-threshold"]) {  // the server refuses lower thresholds
    $(`#${id}`).min = Math.max(Number($(`#${id}`).min), conf.min_threshold || 0);
  }
  if (!conf.models.includes(state.model)) state.model = conf.default;
  syncControls();
  if (!state.prompt) $("#prompt").value = "When Mary and John went to the store, John gave a drink to";
  $("#query").addEventListener("submit", (ev) => { ev.preventDefault(); state.prompt = $("#prompt").value; state.position = -1; loadRoutes(); });
  $("#prompt").addEventListener("keydown", (ev) => { if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); $("#run").click(); } });
  $("#model").addEventListener("change", () => { state.model = $("#model").value; state.position = -1; if (state.prompt) loadRoutes(); });
  $("#position").addEventListener("change", () => { state.position = Number($("#position").value); loadRoutes(); });
  for (const id of ["threshold", "attention-threshold", "ffn-threshold"]) $(`#${id}`).addEventListener("input", onThreshold);
  $("#separate").addEventListener("change", () => {
    state.separate = $("#separate").checked; $("#separate-controls").hidden = !state.separate; if (current) loadRoutes();
  });
  $("#renormalize").addEventListener("change", () => { state.renormalize = $("#renormalize").checked; if (current) loadRoutes(); });
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
  if (state.view === "analyses") loadAnalyses();
  if (state.prompt) await loadRoutes();
}
init();
