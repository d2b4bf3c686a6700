// flowroutes explorer, generate mode: the model answers a prompt greedily; the answer is shown token by token with
// its probabilities; a click on a token draws its routes and colours the prompt by its attribution, a shift-click
// colours it by the span's. Every number comes from the server's /api/generate (flowroutes.Generation).
// Uses app.js's helpers (el, api, computing, drawRoutes, state, conf); loaded after it.
"use strict";

const gen = {
  prompt: "", n: 8, method: "alti", // what was generated, and how it is attributed
  data: null,    // the last /api/generate answer
  anchor: null,  // the answer token clicked last without shift: its routes are drawn, a shift-click spans from it
  seq: 0,        // newest request; older answers are dropped
  renders: 0,    // bumped after each answer drawn or failed (tests wait on it)
};

function generateRendered() {
  gen.renders++;
  document.body.dataset.generateRenders = gen.renders;
}

// sel: {} (the whole answer), {token: k}, or {token: k, span: [a, b]}
async function runGenerate(sel = {}) {
  const mine = ++gen.seq;
  const body = { model: state.model, prompt: gen.prompt, max_new_tokens: gen.n, method: gen.method,
                 threshold: state.threshold };
  if (sel.token !== undefined && sel.token !== null) body.token = sel.token;
  if (sel.span) body.span = sel.span;
  $("#run-generate").disabled = true;
  $("#generate-status").textContent = gen.data ? "computing..." : "generating...";
  try {
    const d = await computing("#view-generate", () => api("/api/generate", body));
    if (mine !== gen.seq) return;
    showError("");
    gen.data = d;
    drawGeneration(d);
    refreshCode();
  } catch (err) {
    if (mine !== gen.seq) return;
    showError(err.message);
    gen.data = null; gen.anchor = null; // nothing stale stays on screen for a request that failed
    for (const id of ["#generate-status", "#generate-answer", "#generate-caption", "#generate-prompt-view",
                      "#generate-summary", "#generate-graph"]) $(id).textContent = "";
    refreshCode();
  } finally {
    if (mine === gen.seq) { $("#run-generate").disabled = false; generateRendered(); }
  }
}

function pickAnswerToken(k, shift) {
  if (!gen.data) return;
  if (shift && gen.anchor !== null) {
    runGenerate({ token: gen.anchor, span: [Math.min(gen.anchor, k), Math.max(gen.anchor, k) + 1] });
    return;
  }
  gen.anchor = k;
  runGenerate({ token: k });
}

// sRGB relative luminance (WCAG 2) of [r, g, b] in 0..255
function luminance(rgb) {
  const lin = rgb.map((v) => { const c = v / 255; return c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; });
  return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2];
}

// whether white text contrasts more than black with the prompt's red at `alpha` over the page's background (the
// better of the two always reaches 4.5:1; a fixed alpha cut leaves light-red tokens with white text unreadable)
function whiteReadsBetter(alpha) {
  const page = getComputedStyle(document.body).backgroundColor.match(/[\d.]+/g).slice(0, 3).map(Number);
  const bg = [214, 39, 40].map((c, i) => alpha * c + (1 - alpha) * page[i]);
  const y = luminance(bg);
  return 1.05 / (y + 0.05) > (y + 0.05) / 0.05;
}

function drawGeneration(d) {
  const [a, b] = d.span;
  $("#generate-status").textContent = `${d.model}: ${d.answer.length} tokens (${d.stop_reason === "stop" ? "ended by a stop token" : "the length asked for"}), ${d.cached ? "kept generation" : "new generation"}, server ${d.server_ms.toFixed(1)} ms`;
  // the answer, token by token, with each token's probability
  const answer = $("#generate-answer");
  answer.textContent = "";
  el("b", { text: "answer: " }, answer);
  for (const t of d.answer) {
    const chip = el("span", { class: "answer-token", "data-index": t.index, "data-prob": String(t.prob),
                              title: `answer token ${t.index} (id ${t.id}), predicted at position ${t.position}: p = ${t.prob.toFixed(4)}` }, answer);
    el("span", { class: "answer-text", text: show(t.token) }, chip);
    el("span", { class: "answer-prob", text: `${(100 * t.prob).toFixed(1)}%` }, chip);
    if (t.index >= a && t.index < b) chip.classList.add("in-span");
    if (t.index === d.token) chip.classList.add("explained");
    activatable(chip, `answer token ${t.index} ${t.token}: its routes and attribution (shift: a span)`,
                (ev) => pickAnswerToken(t.index, ev.shiftKey));
  }
  // the prompt coloured by the span's attribution (the strongest token at full colour)
  const what = b - a === 1 ? `answer token ${a} ${show(d.answer[a].token)}` : `answer tokens ${a}..${b - 1} (their mean)`;
  const method = d.method === "alti" ? "ALTI propagation" : `flow through the routes at \u03c4 = ${d.threshold}`;
  const top = Math.max(0, ...d.attribution);
  const order = d.attribution.map((s, j) => j).sort((i, j) => d.attribution[j] - d.attribution[i]).slice(0, 3);
  $("#generate-caption").textContent = `The prompt coloured by the attribution of ${what} (${method}); most: `
    + order.map((j) => `${show(d.prompt_tokens[j])} ${d.attribution[j].toFixed(3)}`).join(", ");
  const view = $("#generate-prompt-view");
  view.textContent = "";
  view.dataset.span = `${a}:${b}`;
  d.prompt_tokens.forEach((t, j) => {
    const s = d.attribution[j];
    const alpha = top > 0 ? s / top : 0;
    el("span", { class: "prompt-token", "data-position": j, "data-score": String(s), "data-alpha": alpha.toFixed(3),
                 title: `prompt token ${j}: ${s.toFixed(4)}`, style: `background: rgba(214, 39, 40, ${alpha.toFixed(3)})`,
                 text: t }, view).classList.toggle("strong", whiteReadsBetter(alpha));
  });
  // the routes of the clicked token, drawn as the graph view draws them
  const summary = $("#generate-summary");
  if (d.routes) {
    const r = d.routes;
    summary.textContent = `Routes of answer token ${d.token} ${show(d.answer[d.token].token)}, predicted at position ${r.position} after ${show(d.display[r.position])}: ${r.nodes.length} nodes, ${r.edges.length} edges, ${r.active_heads.length} active heads (\u03c4 = ${d.threshold})`
      + (d.truncated ? ` (the strongest of ${d.truncated.edges} edges: this server sends at most ${d.truncated.max_edges})` : "");
    summary.dataset.position = r.position;
    drawRoutes($("#generate-graph"), r, { display: d.display });
  } else {
    summary.textContent = "Click an answer token to draw its routes.";
    delete summary.dataset.position;
    $("#generate-graph").textContent = "";
  }
}

// the Python lines that give the numbers on screen (the code button, while this view is open)
function generateCode() {
  const d = gen.data;
  if (!d) return "# nothing generated on screen to reproduce: press Generate (the last request, if any, failed: see the message above)";
  const py = (v) => JSON.stringify(v);
  const lines = ["import flowroutes", "", loadLine(),
                 `g = flowroutes.generate(model, ${py(gen.prompt)}, max_new_tokens=${gen.n})  # greedy`,
                 "print(g.answer_tokens, g.answer_probs)",
                 `scores = g.attribution(span=(${d.span[0]}, ${d.span[1]}), method=${py(d.method)}, tau=${d.threshold})  # the prompt's colours`];
  if (d.token !== null) {
    lines.push(`routes = g.routes(${d.token}, tau=${d.threshold})  # the graph: answer token ${d.token}, position ${d.routes.position}`);
  }
  return lines.join("\n");
}

(function setUpGenerate() {
  $("#generate-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const n = Number($("#generate-n").value);
    const most = conf.max_new_tokens || 32;
    if (!Number.isInteger(n) || n < 1 || n > most) { showError(`tokens must be a whole number in 1..${most} on this server, got ${$("#generate-n").value}`); return; }
    gen.prompt = $("#generate-prompt").value; gen.n = n; gen.method = $("#generate-method").value;
    gen.anchor = null;
    if (!gen.prompt.trim()) { showError("the prompt is empty: type some text for the model to answer"); return; }
    runGenerate();
  });
  $("#generate-prompt").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); $("#run-generate").click(); }
  });
  // another method or threshold re-asks for what is on screen (the generation itself is kept by the server)
  $("#generate-method").addEventListener("change", () => {
    if (!gen.data) return;
    gen.method = $("#generate-method").value;
    runGenerate({ token: gen.data.token, span: gen.data.span });
  });
  let wait = null;
  $("#threshold").addEventListener("input", () => { // app.js has already read the slider into state.threshold
    clearTimeout(wait);
    wait = setTimeout(() => {
      if (gen.data && state.view === "generate" && (gen.data.token !== null || gen.method === "routes")) runGenerate({ token: gen.data.token, span: gen.data.span });
    }, 120);
  });
  $("#model").addEventListener("change", () => {
    gen.data = null; gen.anchor = null; ++gen.seq;
    for (const id of ["#generate-status", "#generate-answer", "#generate-caption", "#generate-prompt-view",
                      "#generate-summary", "#generate-graph"]) $(id).textContent = "";
  });
  // the open code panel follows the view (app.js's own tab listener has set state.view by now)
  for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", refreshCode);
  // opening the tab: the traced prompt to start from, and this server's limit on the answer's length
  $('#tabs button[data-view="generate"]').addEventListener("click", () => {
    if (conf.max_new_tokens) $("#generate-n").max = conf.max_new_tokens;
    if (!$("#generate-prompt").value) $("#generate-prompt").value = state.prompt || $("#prompt").value;
  });
  document.body.dataset.generateRenders = "0";
})();
