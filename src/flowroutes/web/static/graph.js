// flowroutes routes graph: draws a routes JSON (docs/schema.md) as SVG with pan, zoom, keyboard walks and clicks.
// One ES module for the explorer page (index.html imports it for app.js) and the notebook widget (flowroutes.widget:
// its _esm is this file, editing.js and widget.js). Reads no page globals and makes no requests: the host passes
// what it needs in opts.
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const DEFAULT_EDGE_LIMIT = 1500; // edges drawn one by one (clickable); the rest go into one path per kind

export function el(tag, attrs = {}, parent = null, ns = null) {
  const node = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  if (parent) parent.appendChild(node);
  return node;
}
export const svgEl = (tag, attrs, parent) => el(tag, attrs, parent, SVGNS);
export const show = (t) => JSON.stringify(t);

// ---------- the routes graph ----------
export function blue(w) { // light to dark blue with importance
  const t = Math.max(0, Math.min(1, w));
  const c0 = [158, 202, 225], c1 = [8, 48, 107];
  return `rgb(${c0.map((c, i) => Math.round(c + (c1[i] - c) * t)).join(",")})`;
}
export function diverging(v, max) { // red for positive, blue for negative
  const t = max > 0 ? Math.max(-1, Math.min(1, v / max)) : 0;
  return t >= 0 ? `rgb(${[215, Math.round(215 - 170 * t), Math.round(215 - 170 * t)].join(",")})`
                : `rgb(${[Math.round(215 + 170 * t), Math.round(215 + 170 * t), 215].join(",")})`;
}
export const width = (w) => 0.6 + 4 * Math.max(0, Math.min(1, w));

// the graphs on the page: their token axes follow the window's scrolling (sticky at its bottom edge)
const liveGraphs = new Set();
function placeAxes() {
  for (const svg of liveGraphs) { if (svg.isConnected) svg.placeLabels(); else liveGraphs.delete(svg); }
}
window.addEventListener("scroll", placeAxes, { passive: true });
window.addEventListener("resize", placeAxes);
// a graph near the top of the page fits the window below it (its token axis above the fold); one further down
// takes most of a window
export function defaultHeight(frame) {
  const top = frame.getBoundingClientRect().top + window.scrollY;
  return top > 0 && top < window.innerHeight * 0.6 ? Math.max(300, window.innerHeight - top - 12)
    : Math.max(320, window.innerHeight * 0.72);
}
// draws `routes` in `container` with pan and zoom; opts: interactive, ctx (whose prompt), xcols (position ->
// column, for aligned contrast graphs), ncols, display (token texts as shown), collapse, dla, fit; and what the host
// gives: edgeLimit (edges drawn one by one), height(frame) (the frame's height), onEdge(e, s, t, ctx) and
// onNode(n, ctx) (a click), select(item) (marks the clicked item; default: within this container), editing ({select,
// box, attach}: pins, selections and groups, an editing.js editor; the page's main graph and the widget's)
export function drawRoutes(container, routes, opts = {}) {
  container.textContent = "";
  const EDGE_LIMIT = opts.edgeLimit || DEFAULT_EDGE_LIMIT;
  const graphHeight = opts.height || defaultHeight;
  const select = opts.select || ((item) => {
    for (const old of container.querySelectorAll("svg.routes .selected")) old.classList.remove("selected");
    if (item) item.classList.add("selected");
  });
  const onEdge = opts.onEdge || (() => {}), onNode = opts.onNode || (() => {});
  const L = routes.n_layers, T = routes.tokens.length;
  const display = opts.display || routes.token_texts;
  const xcols = opts.xcols || routes.tokens.map((_, p) => p);
  const ncols = opts.ncols || T;
  const dx = Math.max(46, Math.min(110, 1000 / ncols)), dy = Math.max(7, Math.min(22, 720 / (2 * L)));
  const left = 48, top = 24, bottom = 80;
  // column widths: columns without any node collapse when asked
  // columns without any node collapse when asked: each run of them becomes one narrow gap
  const used = new Set(routes.nodes.map((n) => xcols[n.position]));
  const GAP = 14;
  const colW = Array.from({ length: ncols }, (_, c) => (!opts.collapse || used.has(c) ? dx : c > 0 && !used.has(c - 1) ? 0 : GAP));
  const colX = [];
  let acc = left;
  for (let c = 0; c < ncols; c++) {
    if (colW[c] === 0) { colX.push(colX[c - 1]); continue; } // inside a collapsed run: at the run's gap
    colX.push(acc + colW[c] / 2); acc += colW[c];
  }
  const W = acc + 10, H = top + dy * 2 * L + bottom;
  const frame = el("div", { class: "graph-frame", tabindex: "0",
                            "aria-label": "routes graph: arrows pan, + and - zoom, f fits, c centres; Tab goes to the explained position, then arrows walk the routes" }, container);
  const tools = el("div", { class: "graph-tools" }, frame);
  const svg = svgEl("svg", { class: "routes", width: "100%", height: Math.min(H, graphHeight(frame)),
                             "data-edges": routes.edges.length, "data-nodes": routes.nodes.length,
                             "data-width": W, "data-height": H, "data-column-width": dx }, frame);
  const view = svgEl("g", { class: "viewport" }, svg);
  const axes = svgEl("g", { class: "axes" }, svg); // layer and token labels: they stay in view while the graph pans
  const X = (p) => colX[xcols[p]];
  const Y = (lv) => top + (2 * L - lv) * dy;
  const levelOf = (n) => 2 * n.layer + (n.kind === "attention" ? 1 : 0);
  const nodes = new Map(routes.nodes.map((n) => [n.id, n]));
  const grid = svgEl("g", { class: "grid" }, view);
  const catcher = svgEl("rect", { class: "catcher", x: 0, y: 0, width: W, height: H, fill: "transparent" }, grid);
  const editing = opts.interactive && opts.editing ? opts.editing : null; // pins, selections, groups
  const editable = Boolean(editing);
  for (let l = 0; l <= L; l++) {
    svgEl("line", { x1: left, x2: W - 10, y1: Y(2 * l), y2: Y(2 * l), class: "gridline" }, grid);
  }
  const tokenBand = svgEl("rect", { class: "axis-band token-band", x: 0, width: "100%", height: 0 }, axes);
  const layerBand = svgEl("rect", { class: "axis-band layer-band", x: 0, y: 0, width: 34, height: "100%" }, axes);
  const layerLabels = [];
  for (let l = 0; l <= L; l++) layerLabels.push(svgEl("text", { x: 4, class: "axis-label", "data-layer": l, text: `x${l}` }, axes));
  const tokenLabels = [];
  routes.tokens.forEach((_, p) => {
    if (colW[xcols[p]] < dx) return;
    const label = svgEl("text", { "text-anchor": "end", class: "token-label", "data-position": p, text: show(display[p]) }, axes);
    if (p === routes.position) label.classList.add("explained");
    tokenLabels.push([p, label]);
  });
  for (let c = 0; c < ncols; c++) { // what a collapsed gap hides
    if (colW[c] !== GAP) continue;
    let n = 0;
    while (c + n < ncols && !used.has(c + n)) n++;
    svgEl("text", { class: "gap-label", x: colX[c], y: Y(0) + 4, "text-anchor": "middle", text: "\u22ef",
                    "aria-label": `${n} token column${n > 1 ? "s" : ""} without routes` }, grid);
  }
  // edges: the strongest EDGE_LIMIT one by one, the rest in one path per kind (drawn, not clickable)
  const order = routes.edges.map((e, i) => i);
  let bulk = new Set();
  if (routes.edges.length > EDGE_LIMIT) {
    order.sort((a, b) => routes.edges[b].weight - routes.edges[a].weight);
    bulk = new Set(order.slice(EDGE_LIMIT));
  }
  const edgesG = svgEl("g", { class: "edges" }, view);
  const bulkPaths = { attention: [], residual: [], ffn: [] };
  const dlaMax = opts.dla ? Math.max(1e-9, ...opts.dla.heads.flat().map(Math.abs), ...opts.dla.ffn.map(Math.abs)) : 0;
  routes.edges.forEach((e, i) => {
    const s = nodes.get(e.source), t = nodes.get(e.target);
    const x0 = X(s.position), y0 = Y(levelOf(s)), x1 = X(t.position), y1 = Y(levelOf(t));
    const self = e.kind === "attention" && s.position === t.position;
    const bow = -dx * 0.32;
    if (bulk.has(i)) {
      if (self) bulkPaths.attention.push(`M${x0},${y0} Q${x0 + bow},${(y0 + y1) / 2} ${x1},${y1}`);
      else if (e.kind === "ffn") bulkPaths.ffn.push(`M${x0},${y0} L${x0 + dx * 0.22},${(y0 + y1) / 2} L${x1},${y1}`);
      else bulkPaths[e.kind].push(`M${x0},${y0} L${x1},${y1}`);
      return;
    }
    const headWeights = e.heads ? Object.entries(e.heads).map(([h, w]) => `L${e.layer}H${h} ${w.toFixed(3)}`).join(", ") : "";
    const tip = `${e.kind} edge ${e.source} -> ${e.target}, block ${e.layer}, weight ${e.weight.toFixed(3)}${headWeights ? ": " + headWeights : ""}`;
    let g;
    let colour = null;
    if (opts.dla && t.position === routes.position) { // direct logit attribution of what this edge carries
      colour = e.kind === "ffn" ? diverging(opts.dla.ffn[e.layer], dlaMax)
        : e.kind === "attention" ? diverging(Object.keys(e.heads).reduce((a, h) => a + opts.dla.heads[e.layer][h], 0), dlaMax) : null;
    }
    if (e.kind === "attention" && self) { // a token reading itself: an arc beside the residual line
      g = svgEl("path", { d: `M${x0},${y0} Q${x0 + bow},${(y0 + y1) / 2} ${x1},${y1}`, fill: "none",
                          stroke: colour || blue(0.3 + 0.7 * e.weight), "stroke-width": Math.max(2.2, width(e.weight)),
                          "stroke-linecap": "round", opacity: 0.95 }, edgesG);
      g.classList.add("self");
    } else if (e.kind === "attention") {
      g = svgEl("line", { x1: x0, y1: y0, x2: x1, y2: y1, stroke: colour || blue(0.3 + 0.7 * e.weight), "stroke-width": width(e.weight),
                          "stroke-linecap": "round", opacity: 0.9 }, edgesG);
    } else if (e.kind === "residual") {
      g = svgEl("line", { x1: x0, y1: y0, x2: x1, y2: y1, stroke: "#8a8a8a", "stroke-width": width(e.weight), opacity: 0.7 },
                edgesG);
    } else {
      g = svgEl("g", {}, edgesG);
      const xm = x0 + dx * 0.22, ym = (y0 + y1) / 2, size = 5 + 6 * Math.min(1, e.weight);
      svgEl("path", { d: `M${x0},${y0} L${xm},${ym} L${x1},${y1}`, fill: "none", stroke: "#e377c2",
                      "stroke-width": width(e.weight), opacity: 0.85 }, g);
      svgEl("rect", { class: "ffn-block", x: xm - size / 2, y: ym - size, width: size, height: 2 * size, fill: colour || "#e377c2",
                      stroke: "#a0327a" }, g);
    }
    g.classList.add("edge", `edge-${e.kind}`);
    if (e.status) g.classList.add(`edge-${e.status}`);
    if (e.status === "gained" || e.status === "lost") {
      for (const part of (g.tagName === "g" ? Array.from(g.children) : [g])) {
        part.setAttribute("stroke", e.status === "gained" ? "#1a7f37" : "#d03a2c");
        if (part.tagName === "rect") part.setAttribute("fill", e.status === "gained" ? "#1a7f37" : "#d03a2c");
        if (e.status === "lost") part.setAttribute("stroke-dasharray", "4 3");
      }
    }
    g.dataset.index = i;
    g.setAttribute("aria-label", tip + (e.status ? `, ${e.status}${e.before !== undefined ? ` (weight before ${e.before.toFixed(3)})` : ""}` : ""));
    g.setAttribute("role", opts.interactive ? "button" : "img"); // an aria-label needs a role (axe-core)
    if (opts.interactive) g.setAttribute("tabindex", "-1");
  });
  for (const [kind, parts] of Object.entries(bulkPaths)) {
    if (!parts.length) continue;
    svgEl("path", { class: `bulk bulk-${kind}`, d: parts.join(" "), fill: "none", "data-count": parts.length,
                    stroke: kind === "attention" ? blue(0.35) : kind === "ffn" ? "#e377c2" : "#8a8a8a",
                    "stroke-width": 0.7, opacity: 0.6 }, edgesG);
  }
  const nodesG = svgEl("g", { class: "nodes" }, view);
  for (const n of routes.nodes) {
    const c = svgEl("circle", { cx: X(n.position), cy: Y(levelOf(n)), r: n.kind === "residual" ? 3.2 : 2.4,
                                class: `node node-${n.kind}`, "data-id": n.id }, nodesG);
    const tip = `${n.id}  (${n.kind === "attention" ? `after block ${n.layer}'s attention` : n.layer === 0 ? "embedding" : `input of block ${n.layer}`}, token ${show(display[n.position])})`;
    c.setAttribute("aria-label", tip);
    c.setAttribute("role", opts.interactive ? "button" : "img");
    if (opts.interactive) c.setAttribute("tabindex", "-1");
  }
  // the keyboard: one tab stop in the graph (the explained position's top state, then wherever the arrows went);
  // from a node, Down goes to its strongest incoming edge and Up to its strongest outgoing one; from an edge, Down
  // to its source, Up to its target, Left and Right to the other edges into the same state; Home goes back
  const topId = `x${L}@${routes.position}`;
  const into = new Map(), outOf = new Map();
  const elOfEdge = new Map(Array.from(edgesG.querySelectorAll(".edge"), (g) => [Number(g.dataset.index), g]));
  routes.edges.forEach((e, i) => {
    if (!elOfEdge.has(i)) return;
    if (!into.has(e.target)) into.set(e.target, []);
    if (!outOf.has(e.source)) outOf.set(e.source, []);
    into.get(e.target).push(i); outOf.get(e.source).push(i);
  });
  for (const list of [...into.values(), ...outOf.values()]) list.sort((a, b) => routes.edges[b].weight - routes.edges[a].weight);
  const nodeEl = (id) => nodesG.querySelector(`circle[data-id="${CSS.escape(id)}"]`);
  let roving = null;
  function rove(item, focus = true) {
    if (!item || !opts.interactive) return;
    if (roving) roving.setAttribute("tabindex", "-1");
    roving = item; item.setAttribute("tabindex", "0");
    if (focus) { item.focus({ preventScroll: true }); reveal(item); }
  }
  function step(item, key) {
    if (item.classList.contains("node")) {
      const id = item.dataset.id;
      if (key === "ArrowDown" && into.get(id)) return elOfEdge.get(into.get(id)[0]);
      if (key === "ArrowUp" && outOf.get(id)) return elOfEdge.get(outOf.get(id)[0]);
      if (key === "ArrowLeft" || key === "ArrowRight") { // the nearest node of the same level on that side
        const n = nodes.get(id), lv = levelOf(n), dir = key === "ArrowLeft" ? -1 : 1;
        let best = null;
        for (const m of routes.nodes) {
          if (levelOf(m) !== lv || Math.sign(m.position - n.position) !== dir) continue;
          if (!best || Math.abs(m.position - n.position) < Math.abs(best.position - n.position)) best = m;
        }
        return best ? nodeEl(best.id) : null;
      }
      return null;
    }
    const e = routes.edges[Number(item.dataset.index)];
    if (key === "ArrowDown") return nodeEl(e.source);
    if (key === "ArrowUp") return nodeEl(e.target);
    const siblings = into.get(e.target) || [];
    const k = siblings.indexOf(Number(item.dataset.index)) + (key === "ArrowRight" ? 1 : -1);
    return k >= 0 && k < siblings.length ? elOfEdge.get(siblings[k]) : null;
  }
  svgEl("circle", { class: "explained-marker", cx: X(routes.position), cy: Y(2 * L), r: 7, fill: "none", stroke: "#d62728", "stroke-width": 1.5 }, view);
  if (bulk.size) {
    el("div", { class: "hint bulk-note", text: `${routes.edges.length} edges: the ${EDGE_LIMIT} strongest are drawn one by one and can be clicked; the other ${bulk.size} are drawn faint and cannot (raise τ to click them)` }, container);
  }
  // one listener for every edge and node (thousands of them): a click or Enter opens what it is; a click on an
  // empty spot opens the nearest state outside the routes, faded; tooltips are made on first hover
  const act = (ev, item) => {
    if (item.classList.contains("edge")) {
      const e = routes.edges[Number(item.dataset.index)];
      select(item); onEdge(e, nodes.get(e.source), nodes.get(e.target), opts.ctx);
    } else { select(item); onNode(nodes.get(item.dataset.id), opts.ctx); }
  };
  svg.addEventListener("mouseover", (ev) => {
    const item = ev.target.closest(".edge, .node");
    if (item && !item.querySelector(":scope > title")) svgEl("title", { text: item.getAttribute("aria-label") }, item);
  });
  if (opts.interactive) {
    svg.addEventListener("keydown", (ev) => {
      const item = ev.target.closest && ev.target.closest(".edge, .node");
      if (!item) return;
      if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); act(ev, item); return; }
      if (ev.key === "Home") { ev.preventDefault(); rove(nodeEl(topId)); return; }
      if (["ArrowDown", "ArrowUp", "ArrowLeft", "ArrowRight"].includes(ev.key)) {
        ev.preventDefault();
        const next = step(item, ev.key);
        if (next) rove(next);
      }
    });
    svg.addEventListener("click", (ev) => {
      const item = ev.target.closest(".edge, .node");
      if (editable && item && ev.shiftKey) { editing.select(item, true); return; } // shift-click: add or remove
      if (item) { rove(item, false); act(ev, item); if (editable) editing.select(item, false); return; }
      const group = editable && ev.target.closest(".supernode");
      if (group) { editing.select(group, ev.shiftKey); return; }
      if (ev.target !== catcher || (editable && ev.shiftKey)) return;
      const pt = toGraph(ev);
      let best = 0;
      routes.tokens.forEach((_, p) => { if (Math.abs(X(p) - pt.x) < Math.abs(X(best) - pt.x)) best = p; });
      const lv = Math.max(0, Math.min(2 * L, Math.round(2 * L - (pt.y - top) / dy)));
      const layer = Math.floor(lv / 2), kind = lv % 2 ? "attention" : "residual";
      if (kind === "attention" && routes.blocks && routes.blocks[layer] === "parallel") return;
      const id = kind === "attention" ? `x${layer}A@${best}` : `x${layer}@${best}`;
      onNode({ id, kind, layer, position: best, outside: !nodes.has(id) }, opts.ctx);
    });
  }
  // ---- pan and zoom ----
  const vp = { k: 1, x: 0, y: 0 };
  const MIN_READABLE = 0.5; // fit never shrinks the graph below this scale: it shows the routes' columns instead
  function clamp() { // the graph never leaves the view: it covers the view, or sits wholly inside it
    const { w, h } = size();
    const gw = W * vp.k, gh = H * vp.k;
    vp.x = gw <= w ? Math.max(0, Math.min(w - gw, vp.x)) : Math.max(w - gw, Math.min(0, vp.x));
    vp.y = gh <= h ? Math.max(0, Math.min(h - gh, vp.y)) : Math.max(h - gh, Math.min(0, vp.y));
  }
  function placeLabels() { // layer labels at the left edge, token labels at the bottom edge, thinned to fit
    const { w, h } = size();
    const every = Math.max(1, Math.ceil(13 / (dy * 2 * vp.k)));
    layerLabels.forEach((t, l) => {
      const y = vp.y + Y(2 * l) * vp.k + 4;
      t.setAttribute("y", y);
      t.style.display = (l % every === 0 || l === L) && y > 8 && y < h - 2 ? "" : "none";
    });
    // below the lowest row at a fixed screen distance, and never below what the window shows of the frame (sticky)
    const natural = vp.y + Y(0) * vp.k + 16, band = 64;
    const r = svg.getBoundingClientRect();
    const seen = r.height ? Math.min(h, Math.max(band + 40, window.innerHeight - r.top)) : h;
    const ty = Math.min(natural, seen - band);
    tokenBand.setAttribute("y", ty - 10); tokenBand.setAttribute("height", Math.max(0, h - ty + 10));
    tokenBand.style.display = ty < natural ? "" : "none";
    svg.dataset.axisY = ty.toFixed(1);
    const colPx = dx * vp.k, thin = Math.max(1, Math.ceil(14 / colPx));
    for (const [p, t] of tokenLabels) {
      const x = vp.x + X(p) * vp.k;
      t.setAttribute("x", x); t.setAttribute("y", ty);
      t.setAttribute("transform", `rotate(-40 ${x} ${ty})`);
      t.style.display = (xcols[p] % thin === 0 || p === routes.position) && x > 30 && x < w + 40 ? "" : "none";
    }
  }
  const apply = () => { clamp(); view.setAttribute("transform", `translate(${vp.x},${vp.y}) scale(${vp.k})`); placeLabels(); };
  function toGraph(ev) {
    const r = svg.getBoundingClientRect();
    return { x: (ev.clientX - r.left - vp.x) / vp.k, y: (ev.clientY - r.top - vp.y) / vp.k };
  }
  const size = () => ({ w: svg.clientWidth || svg.getBoundingClientRect().width, h: svg.clientHeight || svg.getBoundingClientRect().height });
  function fit() { // the whole graph; when that would be unreadably small, the routes' columns at a readable scale
    let { w, h } = size();
    const xs = routes.nodes.map((n) => X(n.position));
    const lo = Math.max(0, Math.min(...xs) - dx), hi = Math.min(W, Math.max(...xs) + dx);
    const tall = Math.max(0.05, (h - bottom) / (H - bottom)); // the rows scale; the token axis keeps its band
    const whole = Math.min(1.5, w / W, tall);
    vp.k = whole >= MIN_READABLE ? whole : Math.min(1.5, tall, Math.max(MIN_READABLE, w / (hi - lo)));
    const need = (H - bottom) * vp.k + bottom; // the rows at this scale and the token axis below them
    if (opts.fit && need < h - 4) { h = Math.ceil(need) + 4; svg.setAttribute("height", h); } // no empty band
    const cx = (W * vp.k <= w) ? W / 2 : (hi - lo) * vp.k <= w ? (lo + hi) / 2 : X(routes.position);
    vp.x = w / 2 - cx * vp.k; vp.y = Math.max(0, (h - need) / 2); apply();
  }
  function reveal(item) { // pan so that a focused item is in view
    const { w, h } = size();
    const r = item.getBoundingClientRect(), s = svg.getBoundingClientRect();
    const cx = r.left + r.width / 2 - s.left, cy = r.top + r.height / 2 - s.top;
    if (cx < 40 || cx > w - 20) vp.x += w / 2 - cx;
    if (cy < 20 || cy > h - 70) vp.y += h / 2 - cy;
    apply();
  }
  function centre() { // the explained position in the middle, at full size (or the whole graph when it fits)
    const { w, h } = size();
    if (W <= w && H <= h) { fit(); return; }
    vp.k = 1; vp.x = Math.min(0, Math.max(w - W, w / 2 - X(routes.position))); vp.y = 0; apply();
  }
  function zoom(f, cx, cy) {
    const k = Math.max(0.05, Math.min(8, vp.k * f));
    vp.x = cx - (cx - vp.x) * (k / vp.k); vp.y = cy - (cy - vp.y) * (k / vp.k); vp.k = k; apply();
  }
  const button = (text, title, fn) => { const b = el("button", { type: "button", title, text }, tools); b.addEventListener("click", fn); return b; };
  button("fit", "show the whole graph", fit).classList.add("fit");
  button("centre", "the explained position at full size", centre).classList.add("centre");
  button("+", "zoom in", () => { const { w, h } = size(); zoom(1.25, w / 2, h / 2); });
  button("\u2212", "zoom out", () => { const { w, h } = size(); zoom(0.8, w / 2, h / 2); });
  svg.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const r = svg.getBoundingClientRect();
    zoom(ev.deltaY < 0 ? 1.15 : 1 / 1.15, ev.clientX - r.left, ev.clientY - r.top);
  }, { passive: false });
  let drag = null;
  svg.addEventListener("pointerdown", (ev) => {
    if (editable && ev.shiftKey && ev.target === catcher) { drag = null; ev.preventDefault(); editing.box(ev); return; } // a box selects
    drag = { x: ev.clientX, y: ev.clientY, vx: vp.x, vy: vp.y, moved: false };
  });
  svg.addEventListener("pointermove", (ev) => {
    if (!drag || !(ev.buttons & 1)) return;
    const mx = ev.clientX - drag.x, my = ev.clientY - drag.y;
    if (Math.abs(mx) + Math.abs(my) > 4) drag.moved = true;
    if (drag.moved) { vp.x = drag.vx + mx; vp.y = drag.vy + my; apply(); }
  });
  svg.addEventListener("click", (ev) => { if (drag && drag.moved) { ev.stopPropagation(); ev.preventDefault(); } drag = null; }, true);
  frame.addEventListener("keydown", (ev) => {
    if (ev.target !== frame) return;
    const step = 60, { w, h } = size();
    const keys = { ArrowLeft: () => { vp.x += step; apply(); }, ArrowRight: () => { vp.x -= step; apply(); },
                   ArrowUp: () => { vp.y += step; apply(); }, ArrowDown: () => { vp.y -= step; apply(); },
                   "+": () => zoom(1.25, w / 2, h / 2), "=": () => zoom(1.25, w / 2, h / 2), "-": () => zoom(0.8, w / 2, h / 2),
                   f: fit, c: centre };
    if (keys[ev.key]) { ev.preventDefault(); keys[ev.key](); }
  });
  const start = opts.fit ? fit : centre;
  requestAnimationFrame(start);
  start();
  if (opts.interactive) rove(nodeEl(topId) || nodesG.querySelector(".node"), false);
  svg.fit = fit; svg.centre = centre; svg.viewport = vp; svg.placeLabels = placeLabels;
  liveGraphs.add(svg);
  if (editable) { // the edit bar above may have grown a line: the frame still ends above the window's bottom
    editing.attach(svg, routes, { view, nodesG, edgesG, X, Y, levelOf, nodes, toGraph });
    if (!opts.fit) svg.setAttribute("height", Math.min(H, graphHeight(frame)));
  }
  return svg;
}
