"""`flowroutes explain`: generate (or take) an answer, print its top prompt tokens, write generation.json (schema
`flowroutes.generation`, version 1, docs/generation.md) and a self-contained generation.html.

Checks its input before the model loads; computes nothing the `Generation` API does not (generation.py,
attribution.py).
"""

from __future__ import annotations

import argparse
import html
import json
import re

import numpy as np

from . import checks, formatting
from .attribution import METHODS
from .commands import load_for_command, out_folder
from .errors import FlowroutesError
from .fileio import write_atomic

SCHEMA = "flowroutes.generation"
SCHEMA_VERSION = 1
OUTPUTS = ("generation.json", "generation.html")
#: routes pictures (inline SVG) for at most this many answer tokens
MAX_PICTURES = 32
#: per answer token, how many active heads and strongest attention edges (between positions) generation.json keeps
TOP_HEADS, TOP_EDGES = 10, 12


def add_parser(sub) -> None:
    e = sub.add_parser(
        "explain", help="generate an answer (or take one) and attribute it to the prompt's tokens",
        description="Generate --generate N tokens (greedy unless --sample), or take --target TEXT as the answer, "
        "trace prompt + answer once, and attribute answer tokens --span A:B to the prompt's tokens by --method "
        "(alti: ALTI's propagation of the importances; routes: the flow through the routes at --threshold). "
        "Prints the answer and its top prompt tokens; writes generation.json and generation.html.",
        epilog='example: flowroutes explain "When Mary and John went to the store, John gave a drink to" '
               "--generate 16 --out explained/")
    e.add_argument("prompt", help="the text the answer follows")
    what = e.add_mutually_exclusive_group()
    what.add_argument("--generate", type=int, default=None, metavar="N",
                      help="generate up to N tokens (default 16; stops at the tokenizer's EOS and --stop)")
    what.add_argument("--target", default=None, metavar="TEXT", help="explain this answer instead (teacher forcing)")
    e.add_argument("--span", default=None, metavar="A:B",
                   help="answer tokens a..b-1 (0-based) whose mean attribution is shown (default: all)")
    e.add_argument("--method", choices=METHODS, default="alti",
                   help="alti (default): token-to-token contributions composed through the blocks; routes: the "
                        "share of each token's routes flow that reaches each prompt token")
    e.add_argument("--through-answer", action="store_true",
                   help="multi-hop: pass what an answer token takes from earlier answer tokens on to the prompt, "
                        "by those tokens' own attributions (e.g. an answer through its reasoning)")
    e.add_argument("--threshold", type=float, default=0.04, metavar="T",
                   help="tau of the routes, in (0, 1) (default 0.04, as in the paper)")
    e.add_argument("--model", default=None, metavar="M",
                   help="a Hugging Face model id (the local cache, else downloaded unless HF_HUB_OFFLINE is set), "
                        "a model folder or a .gguf file; default: the embedded SmolLM2-135M-Instruct")
    e.add_argument("--chat", action="store_true", help="put the prompt in the tokenizer's chat template")
    e.add_argument("--sample", action="store_true", help="sample (softmax at temperature 1) instead of greedy")
    e.add_argument("--seed", type=int, default=None, metavar="S", help="the seed of --sample")
    e.add_argument("--stop", action="append", default=None, metavar="TOKEN",
                   help="another stop token (a string of one token); repeat for more")
    e.add_argument("--top", type=int, default=8, metavar="K", help="how many prompt tokens to list (default 8)")
    e.add_argument("--out", default="flowroutes-out", metavar="DIR",
                   help="folder for generation.json and generation.html (default ./flowroutes-out)")
    e.add_argument("--force", action="store_true", help="replace generation.* files already in --out")
    e.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
    e.set_defaults(func=cmd_explain)


def parse_span(text: str | None, n: int | None = None) -> tuple[int, int] | None:
    """'A:B' -> (a, b) (either side may be empty: 0 and the answer's end); checked against an answer of n tokens
    when n is known. None stays None (the whole answer)."""
    if text is None:
        return None
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        a = int(parts[0]) if parts[0].strip() else 0
        b = int(parts[1]) if parts[1].strip() else (n if n is not None else None)
    except ValueError:
        raise FlowroutesError(f"--span must be A:B with integers 0 <= A < B (e.g. 0:4), got {text!r}") from None
    if a < 0 or (b is not None and b <= a):
        raise FlowroutesError(f"--span {text} is empty or negative: use A:B with 0 <= A < B")
    if n is not None and b > n:
        raise FlowroutesError(f"--span {text} is not within the answer's {n} tokens: use A:B with B <= {n}")
    return a, b


def cmd_explain(args: argparse.Namespace) -> int:
    from .generation import check_target, generate

    checks.prompt(args.prompt)
    checks.threshold("--threshold", args.threshold)
    if args.target is not None:
        check_target(args.target)
    n_new = 16 if args.generate is None else checks.positive_int("--generate", args.generate)
    parse_span(args.span, None if args.target is not None else n_new)
    if args.target is not None and args.span is not None:
        from .models.loading import tokenizer_only

        tok = tokenizer_only(args.model)  # when it comes cheaply: the span is checked before the weights load
        if tok is not None:
            parse_span(args.span, len(tok(args.target, add_special_tokens=False)["input_ids"]))
    if args.top < 0:
        raise FlowroutesError(f"--top must be 0 or more, got {args.top}")
    if args.seed is not None and not args.sample:
        raise FlowroutesError("--seed is the seed of --sample: add --sample, or leave --seed out")
    out = out_folder(args.out, OUTPUTS, args.force)

    model = load_for_command(args.model)
    g = generate(model, args.prompt, n_new, target=args.target, sample=args.sample, seed=args.seed, stop=args.stop,
                 chat=args.chat)
    span = g.check_span(parse_span(args.span, g.n_answer))
    record = generation_record(g, span, args.method, args.threshold, args.through_answer)
    _print_summary(g, record, args.top)
    pictures = route_pictures(g, args.threshold)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "generation.json", (json.dumps(record, indent=1, ensure_ascii=False) + "\n").encode())
    write_atomic(out / "generation.html", generation_html(record, pictures).encode())
    what = f"{g.n_answer} answer tokens attributed to {g.n_prompt} prompt tokens"
    print(formatting.wrote(out / "generation.json", what))
    print(formatting.wrote(out / "generation.html", "the page to explore them"))
    return 0


def _print_summary(g, record: dict, top: int) -> None:
    a, b = record["span"]
    stop = {"stop": "a stop token", "length": "the token limit", "target": "the given answer"}[g.stop_reason]
    print(f"model: {g.model_name}   prompt: {g.n_prompt} tokens   answer: {g.n_answer} tokens (ended by {stop})")
    print(f"answer: {formatting.token(g.answer_text)}")
    method = record["method"]
    scores = np.asarray(record["attribution"])
    what = (f"tau={record['threshold']:g}" if method == "routes" else "ALTI") + (
        ", through earlier answer tokens" if record["through_answer"] else "")
    span_text = formatting.token("".join(g.answer_tokens[a:b]))
    print(f"prompt tokens that answer tokens {a}..{b - 1} ({span_text}) used most "
          f"({what}, mean share of each token's prediction):")
    for j in np.argsort(-scores, kind="stable")[:top]:
        print(f"  {scores[j]:6.1%}  #{j:<3d} {formatting.token(g.prompt_tokens[j])}")
    to_answer = np.asarray(record["methods"][method]["to_answer"])[a:b].sum(axis=1).mean()
    if record["through_answer"]:
        print(f"  (passed on through earlier answer tokens: {to_answer:.1%})")
        return
    print(f"  (earlier answer tokens: {to_answer:.1%}"
          + (f"; stopped in the routes: {1 - np.mean(record['methods']['routes']['reached'][a:b]):.1%})"
             if method == "routes" else ")"))


def generation_record(g, span: tuple[int, int], method: str, tau: float, through_answer: bool = False) -> dict:
    """The `flowroutes.generation` v1 dict (docs/generation.md): tokens, probabilities, both methods' matrices,
    the span's attribution by `method`, and each answer token's active heads and strongest attention edges."""
    routes = g.routes(list(range(g.n_answer)), tau)
    p = g.n_prompt
    methods = {}
    for m in METHODS:
        full = g.scores(m, tau)  # [K, P + K - 1]
        to_answer = np.zeros((g.n_answer, g.n_answer))
        to_answer[:, : g.n_answer - 1] = full[:, p:]
        methods[m] = {"matrix": _rounded(full[:, :p]), "to_answer": _rounded(to_answer),
                      "through_answer": _rounded(g.matrix(m, tau, through_answer=True))}
    methods["routes"]["reached"] = _rounded(g.reached(tau))
    a, b = span
    per_token = []
    for k, r in enumerate(routes):
        heads = list(r.head_weights().items())[:TOP_HEADS]
        edges = sorted((e for e in r.edges if e.kind == "attention"), key=lambda e: -e.weight)[:TOP_EDGES]
        per_token.append({
            "position": g.position(k), "n_nodes": len(r.nodes), "n_edges": len(r.edges),
            "active_heads": len(r.active_heads),
            "top_heads": [{"layer": lh[0], "head": lh[1], "weight": round(w, 5)} for lh, w in heads],
            "top_edges": [{"source": e.source, "target": e.target, "kind": e.kind, "layer": e.layer,
                           "weight": round(e.weight, 5)} for e in edges],
        })
    return {
        "schema": SCHEMA, "version": SCHEMA_VERSION, "model": g.model_name, "prompt": g.prompt, "chat": g.chat,
        "mode": "target" if g.stop_reason == "target" else ("sample" if g.sampled else "greedy"), "seed": g.seed,
        "stop_reason": g.stop_reason,
        "prompt_tokens": g.prompt_tokens, "prompt_ids": [int(i) for i in g.prompt_ids],
        "answer": {"text": g.answer_text, "tokens": g.answer_tokens, "ids": [int(i) for i in g.answer_ids],
                   "probs": _rounded(g.answer_probs), "positions": [g.position(k) for k in range(g.n_answer)]},
        "method": method, "threshold": tau, "span": [a, b], "through_answer": bool(through_answer),
        "attribution": _rounded(np.asarray(methods[method]["through_answer" if through_answer else "matrix"])[a:b]
                                .mean(axis=0)),
        "methods": methods, "routes": per_token,
    }


def _rounded(values) -> list:
    return np.round(np.asarray(values, dtype=np.float64), 6).tolist()


def route_pictures(g, tau: float) -> list[str]:
    """Inline SVGs of the routes of the first MAX_PICTURES answer tokens (the XML prolog dropped)."""
    import matplotlib

    from .figures import render_routes

    labels = g.tokens[: g.trace.n_tokens]
    out = []
    for k, r in enumerate(g.routes(list(range(min(g.n_answer, MAX_PICTURES))), tau)):
        with matplotlib.rc_context({"svg.fonttype": "none"}):  # text as text, not glyph paths: a third the size
            svg = render_routes(r, "svg", labels, g.answer_tokens[k]).decode("utf-8")
        out.append(compact_svg(svg[svg.index("<svg"):]))
    return out


_GEOMETRY = re.compile(r'\b(x|y|d|width|height|transform|points)="([^"]*)"')
_DECIMALS = re.compile(r"(\d\.\d)\d+")


def compact_svg(svg: str) -> str:
    """The SVG with its geometry rounded to 0.1 px (coordinates, paths, transforms; no text) and its indentation
    dropped: about half the bytes, the same picture."""
    svg = _GEOMETRY.sub(lambda m: m.group(1) + '="' + _DECIMALS.sub(r"\1", m.group(2)) + '"', svg)
    return "\n".join(line.lstrip() for line in svg.splitlines())


def _script_json(data) -> str:
    """JSON that is safe inside a <script> element."""
    return json.dumps(data, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


PAGE_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;max-width:80em;color:#222}
.tok{display:inline-block;padding:2px 3px;margin:1px;border-radius:3px;white-space:pre;font-family:monospace}
#answer .tok{cursor:pointer;border:1px solid #ccc}
#answer .tok.sel{border-color:#d62728;box-shadow:0 0 0 1px #d62728}
#answer .tok.span{background:#fff3c4}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:left}
.pic{display:none;overflow-x:auto}.pic svg{max-width:none;height:auto}
small{color:#666}
"""

PAGE_JS = """
const D = JSON.parse(document.getElementById('data').textContent);
let method = D.method, current = null, hops = D.through_answer;
const shown = t => t.replace(/\\n/g, '\\\\n').replace(/\\t/g, '\\\\t');
function row(k) {
  const m = D.methods[method][hops ? 'through_answer' : 'matrix'];
  if (k !== null) return m[k];
  const [a, b] = D.span, out = new Array(D.prompt_tokens.length).fill(0);
  for (let i = a; i < b; i++) m[i].forEach((v, j) => out[j] += v / (b - a));
  return out;
}
// white or black text, whichever contrasts more (WCAG 2) with the prompt's blue at `alpha` over white: the better
// of the two always reaches 4.5:1
function whiteReadsBetter(alpha) {
  const lin = [31, 119, 180].map(c => { const v = (alpha * c + (1 - alpha) * 255) / 255;
    return v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
  const y = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2];
  return 1.05 / (y + 0.05) > (y + 0.05) / 0.05;
}
function paint() {
  const r = row(current), max = Math.max(1e-12, ...r);
  document.querySelectorAll('#prompt .tok').forEach((el, j) => {
    el.style.background = `rgba(31,119,180,${(r[j] / max).toFixed(3)})`;
    el.style.color = whiteReadsBetter(r[j] / max) ? '#fff' : '#000';
    el.title = `#${j}: ${(100 * r[j]).toFixed(1)}%`;
  });
  document.querySelectorAll('#answer .tok').forEach((el, k) => el.classList.toggle('sel', k === current));
  const info = document.getElementById('info'); info.replaceChildren();
  const p = document.createElement('p');
  if (current === null) {
    p.textContent = `Mean attribution of answer tokens ${D.span[0]}..${D.span[1] - 1} (${method}` +
      `${hops ? ', through earlier answer tokens' : ''}). ` +
      'Click an answer token.';
    info.append(p);
  } else {
    const R = D.routes[current];
    p.textContent = `Answer token ${current} "${shown(D.answer.tokens[current])}", p = ` +
      `${(100 * D.answer.probs[current]).toFixed(1)}%, predicted at position ${R.position}: ` +
      `${R.n_nodes} nodes, ${R.n_edges} edges, ${R.active_heads} active heads (tau = ${D.threshold}).`;
    info.append(p);
    const t = document.createElement('table');
    t.innerHTML = '<tr><th>head</th><th>weight in the routes</th></tr>';
    R.top_heads.forEach(h => { const tr = t.insertRow(); tr.insertCell().textContent = `L${h.layer}H${h.head}`;
      tr.insertCell().textContent = h.weight.toFixed(3); });
    const e = document.createElement('table');
    e.innerHTML = '<tr><th>strongest attention edge</th><th>kind</th><th>weight</th></tr>';
    R.top_edges.forEach(x => { const tr = e.insertRow(); tr.insertCell().textContent = `${x.source} -> ${x.target}`;
      tr.insertCell().textContent = x.kind; tr.insertCell().textContent = x.weight.toFixed(3); });
    info.append(t, e);
  }
  document.querySelectorAll('.pic').forEach((el, k) => el.style.display = k === current ? 'block' : 'none');
}
function build() {
  const P = document.getElementById('prompt'), A = document.getElementById('answer');
  D.prompt_tokens.forEach(t => { const s = document.createElement('span'); s.className = 'tok';
    s.textContent = shown(t); P.append(s); });
  D.answer.tokens.forEach((t, k) => { const s = document.createElement('span'); s.className = 'tok';
    if (k >= D.span[0] && k < D.span[1]) s.classList.add('span');
    s.textContent = shown(t); s.title = `p = ${(100 * D.answer.probs[k]).toFixed(1)}%`;
    s.onclick = () => { current = current === k ? null : k; paint(); }; A.append(s); });
  const H = document.getElementById('hops');
  H.checked = hops; H.onchange = () => { hops = H.checked; paint(); };
  document.querySelectorAll('input[name=method]').forEach(el => {
    el.checked = el.value === method; el.onchange = () => { method = el.value; paint(); }; });
  paint();
}
build();
"""


def generation_html(record: dict, pictures: list[str]) -> str:
    """A page with no external resource: the prompt as a heatmap of the span's attribution, the answer's tokens
    clickable (that token's attribution, active heads, strongest edges, and its routes picture)."""
    title = f"flowroutes explain - {record['model']}"
    pics = "".join(f"<div class='pic'>{svg}</div>" for svg in pictures)
    more = len(record["answer"]["tokens"]) - len(pictures)
    return "".join([
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'; img-src data:\">",
        f"<title>{html.escape(title)}</title><style>{PAGE_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p>Attribution: <label><input type='radio' name='method' value='alti'> ALTI</label> "
        f"<label><input type='radio' name='method' value='routes'> routes (tau = {record['threshold']:g})</label> "
        "<label><input type='checkbox' id='hops'> through earlier answer tokens</label> "
        "<small>(docs/generation.md)</small></p>",
        "<h2>Prompt</h2><div id='prompt'></div>",
        "<h2>Answer</h2><div id='answer'></div>",
        "<div id='info'></div>",
        pics,
        (f"<p><small>Routes pictures for the first {len(pictures)} answer tokens; {more} more in "
         "generation.json's numbers only.</small></p>" if more > 0 else ""),
        f"<script type='application/json' id='data'>{_script_json(record)}</script>",
        f"<script>{PAGE_JS}</script></body></html>",
    ])
