// flowroutes explorer, the edit bar of the main graph: its edits (kept and drawn by static/editing.js, which the
// notebook widget shares) saved into routes JSON v3 and circuit-tracer graphs by the server (/api/export, which
// checks them), restored from a saved file (/api/open) and from a shared link (?edits=, bounded, checked here).
// Plain JavaScript, no build step; it uses app.js's helpers ($, el, api, guarded, showNote, writeUrl) at call time.
"use strict";

const EDITS_URL_MAX = 8000; // characters of a link's ?edits= (base64url JSON); longer ones are ignored
const { editsEmpty } = window.flowroutesEditing;
// the main graph's edits; app.js hands drawRoutes attachEditing, editedSelect and boxSelect for it
const editor = window.flowroutesEditing.createEditor({
  attached: (routes) => restorePending(routes), changed: () => writeUrl(), painted: (j) => editBarCount(j),
});
let pendingEdits = null; // edits (JSON) to restore once the next main graph is drawn (a link, an opened file)

function clearEdits() {
  editor.clear();
  const focus = document.querySelector("#edit-focus");
  if (focus) focus.value = "all";
}
function editsJson(routes) { return editor.json(routes); } // the edits of the routes on screen
function restoreEdits(data, routes) {
  const dropped = editor.restore(data, routes);
  document.querySelector("#edit-focus").value = editor.edits.focus;
  return dropped;
}
function attachEditing(svg, routes, parts) { editor.attach(svg, routes, parts); }
function editedSelect(item, add) { editor.select(item, add); }
function boxSelect(ev) { editor.box(ev); }
// a link's edits: base64url of their JSON
function editsParam() {
  if (!editor.graph) return "";
  const j = editsJson(editor.graph.routes);
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
  editor.paint(); writeUrl();
}
function editBarCount(j) {
  const box = document.querySelector("#edit-count");
  if (!box || !editor.graph) return;
  const parts = [`${j.selection.nodes.length} nodes and ${j.selection.edges.length} edges selected`,
                 `${j.pins.nodes.length + j.pins.edges.length} pinned`, `${j.supernodes.length} supernodes`, `${Object.keys(j.notes).length} notes`];
  box.textContent = parts.join(", ");
  box.dataset.selectedNodes = j.selection.nodes.length; box.dataset.selectedEdges = j.selection.edges.length;
}

// ---- the edit bar ----
function groupSelection() {
  editor.group($("#edit-group-label").value);
  $("#edit-group-label").value = "";
}
function noteSelection() {
  editor.note($("#edit-note").value);
  $("#edit-note").value = "";
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
  if (editor.graph) restorePending(editor.graph.routes);
}
function setupEditBar() {
  const act = (id, fn) => $(id).addEventListener("click", () => guarded(fn));
  act("#edit-pin", () => editor.pin());
  act("#edit-group", groupSelection);
  act("#edit-ungroup", () => editor.ungroup());
  act("#edit-note-set", noteSelection);
  act("#edit-clear", () => editor.clearSelection());
  act("#edit-save", () => exportEdited("json"));
  act("#edit-circuit-tracer", () => exportEdited("circuit-tracer"));
  act("#edit-share", () => {
    writeUrl();
    const link = $("#edit-link");
    link.hidden = false; link.value = location.href; link.select();
    if (editsParam() === null) throw new Error(`these edits are too large for a link (over ${EDITS_URL_MAX} characters): save the JSON instead`);
  });
  // the download links carry the edits (app.js downloadLinks); edits too large for a link are posted instead
  for (const fmt of ["json", "svg", "png"]) {
    $(`#download-${fmt}`).addEventListener("click", (ev) => {
      if (!current || editsParam() !== null) return; // the link as it is
      ev.preventDefault();
      guarded(() => exportEdited(fmt));
    });
  }
  $("#edit-focus").addEventListener("change", () => editor.setFocus($("#edit-focus").value));
  $("#edit-open").addEventListener("change", () => guarded(async () => {
    const file = $("#edit-open").files[0];
    if (file) await openRoutesFile(file);
    $("#edit-open").value = "";
  }));
}
