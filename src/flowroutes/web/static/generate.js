// flowroutes explorer, generate mode: the model answers a prompt (greedily, or sampled with a seed, optionally in
// the chat template and with stop strings; or a given answer is teacher-forced); the answer is shown token by token
// with its probabilities; a click on a token draws its routes and colours the prompt by its attribution, a
// shift-click colours it by the span's. Every number comes from the server's /api/generate (flowroutes.Generation).
// Uses app.js's helpers (el, api, computing, drawRoutes, state, conf, writeUrl); loaded after it. app.js's writeUrl
// adds this view's settings to the address through generateParams.
"use strict";

const gen = {
  prompt: "", n: 8, method: "alti", // what was generated, and how it is attributed
  opts: {},      // the generation's options as sent: {sample, temperature, seed} or {target}, stop, chat
  limits: {},    // model -> /api/generate/options (its chat template, this server's bounds)
  linked: null,  // this view's settings read from the address, until the page is ready to generate them
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
                 threshold: state.threshold, ...gen.opts };
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
    writeUrl(); // the address now makes this generation again (its seed included)
    refreshCode();
  } catch (err) {
    if (mine !== gen.seq) return;
    showError(err.message);
    gen.data = null; gen.anchor = null; // nothing stale stays on screen (or in the address) for a request that failed
    for (const id of ["#generate-status", "#generate-answer", "#generate-caption", "#generate-prompt-view",
                      "#generate-summary", "#generate-graph"]) $(id).textContent = "";
    delete $("#generate-status").dataset.seed; delete $("#generate-status").dataset.stopReason;
    writeUrl();
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

// how the answer was made, in words: "sampled at temperature 0.7 with seed 12, in the chat template, ..."
function generationWords(d) {
  const o = d.options;
  const how = [o.target !== null ? "the given answer, teacher-forced"
    : o.sample ? `sampled at temperature ${o.temperature} with seed ${o.seed}` : "greedy"];
  if (o.chat) how.push("in the chat template");
  if (o.stop.length) how.push(`stop strings ${o.stop.map(show).join(", ")}`);
  return how.join(", ");
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
  const ended = { stop: "ended by a stop token", length: "the length asked for", target: "the given answer" };
  const status = $("#generate-status");
  status.textContent = `${d.model}: ${d.answer.length} tokens (${ended[d.stop_reason] || d.stop_reason}), ${generationWords(d)}, ${d.cached ? "kept generation" : "new generation"}, server ${d.server_ms.toFixed(1)} ms`;
  status.dataset.stopReason = d.stop_reason;
  if (d.options.sample) status.dataset.seed = String(d.options.seed); else delete status.dataset.seed;
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
  const o = d.options;
  const args = [py(gen.prompt)];
  let why = "greedy";
  if (o.target !== null) { args.push(`target=${py(o.target)}`); why = "the given answer, teacher-forced"; } else {
    args.push(`max_new_tokens=${gen.n}`);
    if (o.sample) { args.push("sample=True", `temperature=${o.temperature}`, `seed=${o.seed}`); why = "sampled: the seed makes the same answer"; }
    if (o.stop.length) args.push(`stop=${py(o.stop)}`);
  }
  if (o.chat) args.push("chat=True");
  const lines = ["import flowroutes", "", loadLine(),
                 `g = flowroutes.generate(model, ${args.join(", ")})  # ${why}`,
                 "print(g.answer_tokens, g.answer_probs)",
                 `scores = g.attribution(span=(${d.span[0]}, ${d.span[1]}), method=${py(d.method)}, tau=${d.threshold})  # the prompt's colours`];
  if (d.token !== null) {
    lines.push(`routes = g.routes(${d.token}, tau=${d.threshold})  # the graph: answer token ${d.token}, position ${d.routes.position}`);
  }
  return lines.join("\n");
}

// the stop strings typed in one box: separated by |, with \n for a newline and \t for a tab
function parseStops(text) {
  return text.split("|").map((s) => s.replace(/\\n/g, "\n").replace(/\\t/g, "\t")).filter((s) => s.length > 0);
}
function unparseStops(stops) {
  return stops.map((s) => s.replace(/\n/g, "\\n").replace(/\t/g, "\\t")).join("|");
}

// the options of the form, as /api/generate takes them; a seed left empty is drawn here (and shown in its box).
// Throws one line for a box that holds no number; the server checks the ranges.
function readOptions() {
  const opts = {};
  if ($("#generate-chat").checked && !$("#generate-chat").disabled) opts.chat = true;
  const target = $("#generate-target").value;
  if (target.trim()) return { ...opts, target };
  const stop = parseStops($("#generate-stop").value);
  if (stop.length) opts.stop = stop;
  if ($("#generate-decoding").value !== "sample") return opts;
  const t = $("#generate-temperature"), s = $("#generate-seed");
  const most = (gen.limits[$("#model").value] || {}).max_seed || 4294967295;
  if (t.validity.badInput || t.value === "") throw new Error("temperature is not a number: give one in 0.01..10 (1: the model's own distribution)");
  if (s.validity.badInput) throw new Error(`seed is not a number: give a whole number in 0..${most}, or leave it empty for a random one`);
  if (s.value === "") s.value = String(crypto.getRandomValues(new Uint32Array(1))[0] % (most + 1));
  return { ...opts, sample: true, temperature: Number(t.value), seed: Number(s.value) };
}

// greedy or sampled: the temperature and seed show when sampling; a given answer leaves the decoding unused
function syncGenerateControls() {
  const forced = $("#generate-target").value.trim() !== "";
  $("#generate-sampling").hidden = $("#generate-decoding").value !== "sample";
  for (const id of ["#generate-n", "#generate-decoding", "#generate-temperature", "#generate-seed", "#generate-stop"]) {
    $(id).disabled = forced;
    $(id).title = forced ? "not used with a given answer: it is read as it is (teacher forcing)" : "";
  }
}

// the model's chat template (or why there is none) and this server's bounds, once per model. The model is read
// from its box: this view's listener on it runs before app.js's, which sets state.model.
async function loadGenerateOptions() {
  const model = $("#model").value, box = $("#generate-chat"), why = $("#generate-chat-reason");
  if (!gen.limits[model]) {
    box.disabled = true; why.textContent = "(checking the model's tokenizer...)";
    try {
      const res = await fetch(`/api/generate/options?model=${encodeURIComponent(model)}`);
      const d = await res.json();
      if (!res.ok) throw new Error(`${d.detail} (HTTP ${res.status})`);
      gen.limits[model] = d;
    } catch (err) {
      why.textContent = `(not known: ${err.message})`; return;
    }
  }
  if (model !== $("#model").value) return; // another model was chosen meanwhile: its own call sets the box
  const d = gen.limits[model];
  box.disabled = !d.chat;
  if (!d.chat) box.checked = false;
  why.textContent = d.chat ? "" : `(not available: ${d.chat_reason})`;
  $("#generate-chat-label").title = d.chat ? "the prompt as a user message in the tokenizer's chat template" : d.chat_reason;
  $("#generate-temperature").min = d.temperature[0]; $("#generate-temperature").max = d.temperature[1];
  $("#generate-seed").max = d.max_seed;
}

// this view's settings in the address (app.js's writeUrl calls it): what is on screen, seed included
function generateParams(p) {
  if (!gen.data) return;
  const o = gen.data.options;
  p.set("gen_prompt", gen.prompt);
  if (o.target !== null) p.set("gen_answer", o.target); else p.set("gen_n", gen.n);
  if (gen.method !== "alti") p.set("gen_method", gen.method);
  if (o.sample) { p.set("gen_temperature", o.temperature); p.set("gen_seed", o.seed); }
  if (o.chat) p.set("gen_chat", "1");
  if (o.stop.length) p.set("gen_stop", JSON.stringify(o.stop));
}
function readGenerateUrl() {
  const p = new URLSearchParams(location.search);
  if (!p.has("gen_prompt")) return null;
  let stop = [];
  try { stop = p.has("gen_stop") ? JSON.parse(p.get("gen_stop")) : []; } catch (e) { stop = null; }
  if (!Array.isArray(stop) || !stop.every((s) => typeof s === "string")) {
    showNote(`gen_stop=${p.get("gen_stop")} from the link is not a list of strings: generating without stop strings`, true);
    stop = [];
  }
  $("#generate-prompt").value = p.get("gen_prompt");
  if (p.has("gen_n")) $("#generate-n").value = p.get("gen_n");
  if (p.get("gen_method") === "routes") $("#generate-method").value = "routes";
  const sample = p.has("gen_seed");
  $("#generate-decoding").value = sample ? "sample" : "greedy";
  if (sample) { $("#generate-seed").value = p.get("gen_seed"); $("#generate-temperature").value = p.get("gen_temperature") || "1"; }
  $("#generate-stop").value = unparseStops(stop);
  $("#generate-target").value = p.get("gen_answer") || "";
  syncGenerateControls();
  return { chat: p.get("gen_chat") === "1" };
}

// opening the view: the traced prompt to start from, this server's limit on the answer's length, the model's options
function openGenerate() {
  if (conf.max_new_tokens) $("#generate-n").max = conf.max_new_tokens;
  if (!$("#generate-prompt").value) $("#generate-prompt").value = state.prompt || $("#prompt").value;
  return loadGenerateOptions();
}

(function setUpGenerate() {
  $("#generate-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const n = Number($("#generate-n").value);
    const most = conf.max_new_tokens || 32;
    let opts;
    try { opts = readOptions(); } catch (err) { showError(err.message); return; }
    if (!opts.target && (!Number.isInteger(n) || n < 1 || n > most)) { showError(`tokens must be a whole number in 1..${most} on this server, got ${$("#generate-n").value}`); return; }
    gen.prompt = $("#generate-prompt").value; gen.n = n; gen.method = $("#generate-method").value; gen.opts = opts;
    gen.anchor = null;
    if (!gen.prompt.trim()) { showError("the prompt is empty: type some text for the model to answer"); return; }
    runGenerate();
  });
  $("#generate-decoding").addEventListener("change", syncGenerateControls);
  $("#generate-target").addEventListener("input", syncGenerateControls);
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
    if (state.view === "generate") loadGenerateOptions();
  });
  // the open code panel follows the view (app.js's own tab listener has set state.view by now)
  for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", refreshCode);
  $('#tabs button[data-view="generate"]').addEventListener("click", openGenerate);
  syncGenerateControls();
  // a link to this view with its settings: generated again once the page is set up (app.js sets data-ready)
  gen.linked = readGenerateUrl();
  const afterReady = async () => {
    if (state.view !== "generate") return;
    await openGenerate();
    if (!gen.linked) return;
    if (gen.linked.chat && !$("#generate-chat").disabled) $("#generate-chat").checked = true;
    else if (gen.linked.chat) showNote("the link asks for the chat template, which this model's tokenizer does not have: generating without it", true);
    gen.linked = null;
    $("#run-generate").click();
  };
  const ready = new MutationObserver(() => {
    if (document.body.dataset.ready === "1") { ready.disconnect(); afterReady(); }
  });
  if (document.body.dataset.ready === "1") afterReady();
  else ready.observe(document.body, { attributes: true, attributeFilter: ["data-ready"] });
  document.body.dataset.generateRenders = "0";
})();
