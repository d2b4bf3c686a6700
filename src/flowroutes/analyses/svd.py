"""What heads write (sec. 5.2, fig. 11): the thin SVD W_OV = U S V^T of every head, each right singular vector
v_i put through the final norm and projected on the unembedding, and the tokens it promotes; the heads shown are
the domain-specific heads of the domains analysis when it ran before; the claim of sec. 5.2.

The claim (svd-topic-tokens) reads the paper's "code-specific heads promote tokens related to coding and technology
[...] Heads most active for non-English promote tokens in multiple languages, avoiding English ones": the share of
a topic head's top tokens that belong to its topic, against as many heads drawn at random from the model's other
heads (the same procedure: their top tokens, the same lexicon). Topic tokens come from fixed lexicons that no text
of the run defines (issue 19: a lexicon built from the texts the heads were found on rewards heads that promote
whatever those texts hold): programming vocabulary (Python's keywords and builtins, a few words of other languages,
code punctuation) for code; script and language identity (Cyrillic, the letters and stop words of Italian and
Spanish) for non-English.

`svd_rows` reads the weights (the model, no text); `summarize` and `claims` read rows only.
L layers, H heads, d the residual width, V the vocabulary, r = d_head the rank of W_OV.
"""

from __future__ import annotations

import builtins
import collections
import keyword

import numpy as np
import pyarrow as pa

from .. import report
from ..errors import FlowroutesError
from .base import Analysis, Claim, Condition, Context, untestable, verdict_of
from .domains import NON_ENGLISH, POOLED
from .rows import column
from .stats import Estimate, interval, mean_ci

PAPER = ("If we project these right singular vectors to the unembedding matrix (v_i^T W_U), we get an "
         "interpretation of the attention head's influence in terms of concepts (i.e., tokens) it promotes in the "
         "residual stream [after applying layer normalization first]. [...] Figure 11: Top 6 tokens after projecting "
         "singular values of W_OV^h onto the unembedding matrix.")
SHOWN_PER_DOMAIN = 2  # heads shown in the figure per domain (code, non-English, addition), most specific first
SHOWN_DOMAINS = ("code", POOLED, "addition")
N_LARGEST = 6  # without a domains result: the heads with the largest first singular value
CLAIM_HEADS = 5  # the claim reads the top tokens of the 5 most specific heads of code and of non-English
#: Python's keywords and public builtins, and words of other programming languages and tools; less the English
#: words among them (a head that promotes "and", "for" or "open" promotes English as much as code)
CODE_WORDS = (set(keyword.kwlist) | set(keyword.softkwlist) | {n for n in dir(builtins) if not n.startswith("_")}
              | {"self", "cls", "args", "kwargs", "__init__", "__name__", "__main__", "def", "elif", "const", "var",
                 "function", "null", "nil", "void", "int", "char", "bool", "struct", "enum", "typedef",
                 "public", "static", "namespace", "include", "printf", "std", "argv", "argc", "stdin", "stdout",
                 "stderr", "sudo", "grep", "sed", "awk", "bash", "chmod", "mkdir", "echo", "json", "yaml", "xml",
                 "html", "css", "sql", "http", "https", "url", "api", "src", "lib", "usr", "bin", "tmp", "np",
                 "torch", "os", "sys", "numpy", "pandas", "config", "init", "utf", "ascii", "regex", "async",
                 "await", "bytes", "dict", "str", "len", "tuple", "isinstance", "getattr", "setattr", "repr"})
CODE_WORDS -= {"and", "or", "not", "in", "is", "for", "if", "else", "with", "as", "from", "all", "any", "set", "map",
               "type", "open", "input", "list", "help", "next", "round", "object", "property", "filter", "format",
               "range", "super", "exit", "quit", "id", "print", "copyright", "credits", "license", "zip", "case",
               "match", "while", "pass", "break", "continue", "try", "global", "raise", "max", "min", "sum", "abs",
               "hash", "vars", "dir", "slice", "reversed", "sorted", "iter", "compile", "let", "dev"}
CODE_MARKS = set("{}[];=<>|&^~#@$\\`_")  # a token of punctuation with one of these is code ("():", "{", "==")
CODE_PUNCTUATION = CODE_MARKS | set("()+-*/%!:.,'\"")
#: Italian and Spanish stop words that are no English words, and the letters of both that English lacks
IT_ES_WORDS = {"il", "gli", "della", "delle", "degli", "dello", "nel", "nella", "nei", "dal", "dalla", "sul",
               "sulla", "che", "non", "per", "sono", "questo", "questa", "anche", "essere", "molto", "ancora",
               "dove", "quando", "perché", "perche", "una", "uno", "alla", "alle", "loro", "suo", "sua",
               "el", "los", "las", "del", "que", "por", "para", "pero", "como", "más", "mas", "está", "esta", "este",
               "muy", "sus", "entre", "desde", "también", "tambien", "fue", "ser", "ya", "porque", "cuando",
               "donde", "sobre", "todo", "todos", "otro", "otra", "puede", "hasta", "según"}
IT_ES_LETTERS = set("àèéìíòóùúñ¿¡çü")


def is_code(token: str) -> bool:
    """A token of programming vocabulary: a word of CODE_WORDS (case as written), or punctuation with a mark of
    code (a bracket other than round, '=', ';', '_', ...)."""
    t = token.strip()
    return bool(t) and (t in CODE_WORDS or (set(t) <= CODE_PUNCTUATION and bool(set(t) & CODE_MARKS)))


def is_non_english(token: str) -> bool:
    """A token of a non-English language of the run's domains: Cyrillic script (russian), a letter of Italian or
    Spanish that English lacks, or an Italian/Spanish stop word that is no English word."""
    t = token.strip().lower()
    return bool(t) and (any("\u0400" <= c <= "\u04ff" for c in t) or bool(set(t) & IT_ES_LETTERS)
                        or t in IT_ES_WORDS)


#: topic -> (the domains whose specific heads are the topic heads, the lexicon of its tokens)
TOPICS = {"code": (("code",), is_code), POOLED: (NON_ENGLISH, is_non_english)}
SCHEMA = pa.schema([("layer", pa.int64()), ("head", pa.int64()), ("vector", pa.int64()),
                    ("singular_value", pa.float64()), ("rank", pa.int64()), ("token_id", pa.int64()),
                    ("token", pa.string()), ("score", pa.float64())])


def thin_svd(a, b):
    """Singular values [r] and right singular vectors [r, d'] (rows) of W = a @ b, a: [d, r], b: [r, d'], r << d.

    W = Qa Ra Rb^T Qb^T (QR of a and of b^T), so the SVD of the small r x r matrix Ra Rb^T = Um S Vm^T gives
    W = (Qa Um) S (Qb Vm)^T without ever forming or decomposing the d x d' matrix.
    """
    import torch

    _qa, ra = torch.linalg.qr(a)  # [d, r], [r, r]
    qb, rb = torch.linalg.qr(b.T)  # [d', r], [r, r]
    _um, s, vmt = torch.linalg.svd(ra @ rb.T)  # [r, r], [r], [r, r]
    return s, vmt @ qb.T  # [r], [r, d']


def final_norm_map(adapter):
    """(apply, has_bias): apply(v [n, d]) -> [n, d], the final norm's action on directions v, as the unembedding
    sees them ("after applying layer normalization first").

    apply(v) = (N(c v) - N(-c v)) / (2 c), c = sqrt(d), with the norm N itself (a float32 copy): its additive bias
    cancels (a constant, the same for every direction), its scale and centring stay. For RMSNorm (Llama) this is
    v * g / sqrt(1 + eps), i.e. v_i^T diag(g) W_U up to a factor 1 - 5e-7; for LayerNorm it also centres v; for
    Gemma's (1 + w) norm the gain is 1 + w. Never touches the model's own module.
    """
    import copy

    import torch

    norm = copy.deepcopy(adapter.final_norm()).float().eval()
    has_bias = getattr(norm, "bias", None) is not None
    param = next(norm.parameters(), None)

    def apply(v):
        c = float(v.shape[-1]) ** 0.5
        x = v.float().to(param.device) if param is not None else v.float()
        with torch.no_grad():
            return (norm(c * x) - norm(-c * x)) / (2.0 * c)

    return apply, has_bias


def svd_rows(loaded, heads: list[int], k: int = 4, top: int = 6) -> pa.Table:
    """For each head (flat index layer * H + head): the thin SVD of W_OV = W_V^{kv(h)} W_O^h, and for its first k
    right singular vectors (singular values above 1e-6 of the largest) the `top` tokens of N(v_i) W_U^T, with N the
    final norm (`final_norm_map`). Singular vectors have no sign: each is oriented so that its strongest token
    score is positive. One row per (head, vector, rank)."""
    import torch

    adapter = loaded.adapter
    n_heads = adapter.n_heads
    w_u = adapter.unembedding().detach().float()  # [V, d]
    project, _ = final_norm_map(adapter)
    tok = loaded.tokenizer
    cols = collections.defaultdict(list)
    cache = {}
    with torch.no_grad():
        for flat in heads:
            layer, head = divmod(int(flat), n_heads)
            if layer not in cache:
                cache = {layer: adapter.ov_weights(layer)}
            ov = cache[layer]
            s, vt = thin_svd(ov.value[adapter.kv_head(head)].double(), ov.output[head].double())  # [r], [r, d]
            n = min(k, int((s > s[0] * 1e-6).sum())) if len(s) and s[0] > 0 else 0
            if n == 0:
                continue
            logits = project(vt[:n]).to(w_u.device) @ w_u.T  # [n, V]
            flip = torch.where(logits.max(dim=-1).values >= -logits.min(dim=-1).values, 1.0, -1.0)  # [n]
            logits = logits * flip[:, None]
            top_ids = logits.topk(min(top, logits.shape[-1]), dim=-1).indices  # [n, top]
            for i in range(n):
                for rank, tid in enumerate(top_ids[i].tolist()):
                    cols["layer"].append(layer)
                    cols["head"].append(head)
                    cols["vector"].append(i)
                    cols["singular_value"].append(float(s[i]))
                    cols["rank"].append(rank)
                    cols["token_id"].append(int(tid))
                    cols["token"].append(tok.decode([tid]))
                    cols["score"].append(float(logits[i, tid]))
    return pa.Table.from_pydict({name: cols[name] for name in SCHEMA.names}, schema=SCHEMA)


def domain_heads(specific: dict, per_domain: int = SHOWN_PER_DOMAIN) -> tuple[list[tuple[int, int]], dict]:
    """The `per_domain` most specific heads of code, non-English and addition (each head once, in that order) and
    head -> the domain it was picked for."""
    heads, labels = [], {}
    for domain in SHOWN_DOMAINS:
        picked = 0
        for h in specific.get(domain, []):
            h = (int(h[0]), int(h[1]))
            if picked == per_domain:
                break
            if h not in labels:
                heads.append(h)
                labels[h] = domain
                picked += 1
    return heads, labels


def summarize(ctx: Context) -> report.Result:
    table = ctx.table
    if table.num_rows == 0:
        raise FlowroutesError("the svd analysis got no singular vectors (every W_OV is zero?)")
    layer, head, vec = column(table, "layer"), column(table, "head"), column(table, "vector")
    sv, tokens = column(table, "singular_value"), table.column("token").to_pylist()
    domains = ctx.inputs.get("domains")
    labels: dict = {}
    if getattr(ctx.opts, "heads", None):
        heads, source = [(int(a), int(b)) for a, b in ctx.opts.heads], "the heads asked for (--heads)"
    else:
        heads = []
        if domains is not None:
            heads, labels = domain_heads(domains.data.get("specific_heads", {}))
            source = (f"the {SHOWN_PER_DOMAIN} most specific heads of code, non-English and addition (domains "
                      "analysis: mean importance in the domain minus in general)")
        if not heads:
            first = vec == 0
            best = sorted({(int(a), int(b), float(s)) for a, b, s in zip(layer[first], head[first], sv[first])},
                          key=lambda t: (-t[2], t[0], t[1]))
            heads, source = [(a, b) for a, b, _ in best[:N_LARGEST]], f"the {N_LARGEST} largest first singular values"
    rows = [["head", "specific to", "sigma", "top tokens"]]
    top_tokens = {}
    for a, b in heads:
        for i in sorted(set(vec[(layer == a) & (head == b)].tolist())):
            sel = np.flatnonzero((layer == a) & (head == b) & (vec == i))
            shown = [tokens[j] for j in sel]
            rows.append([f"L{a}H{b} v{i}", labels.get((a, b), ""), f"{sv[sel[0]]:.2f}",
                         " | ".join(repr(t)[1:-1] for t in shown)])
            top_tokens[f"L{a}H{b} v{i} (sigma {sv[sel[0]]:.3g})"] = shown
    if len(rows) == 1:
        raise FlowroutesError("none of the heads to show exist in this model: give heads as LAYER.HEAD, 0-based")
    boot = {"n_boot": ctx.opts.n_boot, "seed": ctx.opts.seed}
    summary = dict(ctx.counts)
    summary["paper_sample"] = ANALYSIS.paper_size
    summary["heads_shown"] = [f"L{layer}H{head}" for layer, head in heads]
    summary["heads_from"] = source
    if ctx.loaded is not None:
        norm = ctx.loaded.adapter.final_norm()
        _, has_bias = final_norm_map(ctx.loaded.adapter)
        summary["final_norm"] = (f"{type(norm).__name__}: applied to each singular vector before W_U"
                                 + ("; its bias is left out (a constant, the same for every direction)"
                                    if has_bias else "; no bias"))
    summary["top_tokens"] = top_tokens
    if domains is not None:
        measure = topic_measure(table, domains, boot)
        summary["topic tokens (claim svd-topic-tokens)"] = measure if isinstance(measure, str) else {
            "difference": measure["estimate"], **{f"{k}: difference": v for k, v in measure["parts"].items()},
            "heads": measure["heads"]}
    fig = report.text_table(rows, "top tokens of W_OV right singular vectors, final norm applied, projected on W_U")
    explanation = (
        "For every head, the thin SVD W_OV = U S V^T of W_V^{kv(h)} W_O^h (the map from a source token's normalised "
        "residual to what the head adds to the target's); each right singular vector v_i goes through the final "
        "norm's scale (and centring; its bias is left out) and is projected on the unembedding, and the tokens "
        "with the largest scores are shown, each vector's sign chosen so that its strongest score is positive "
        f"(sec. 5.2, fig. 11). The table holds every head; the figure shows {source}."
    )
    data = {"heads_shown": heads, "labels": labels, "boot": boot}
    return report.Result("svd", "What heads write: W_OV singular vectors", explanation, table, summary,
                         {"svd-top-tokens": (fig, "Top tokens per singular vector (fig. 11).")}, data=data,
                         paper=PAPER, paper_size=ANALYSIS.paper_size)


def topic_measure(table: pa.Table, domains: report.Result, boot: dict) -> dict | str:
    """Share of the top tokens of the topic heads (the CLAIM_HEADS most specific heads of code and of non-English)
    that belong to their topic's lexicon (TOPICS: fixed, no text of the run defines them), minus the same share,
    against the same lexicons, for heads drawn at random from the other heads of the table (the model's heads;
    `random_head_ci`). Units: heads. Returns a reason string when it cannot be measured."""
    specific = domains.data.get("specific_heads", {})
    present = set(column(domains.table, "domain").astype(str).tolist())
    keys = np.array([f"L{a}H{b}" for a, b in zip(column(table, "layer"), column(table, "head"))])
    svd_tokens = table.column("token").to_pylist()
    lexicons, topic_heads = {}, {}
    for name, (found_on, lexicon) in TOPICS.items():
        heads = [f"L{a}H{b}" for a, b in specific.get(name, [])[:CLAIM_HEADS]]
        heads = [h for h in heads if h in set(keys.tolist())]
        if any(g in present for g in found_on) and heads:
            lexicons[name] = lexicon
            topic_heads[name] = heads
    if not lexicons:
        return "the domains run has no code or non-English domain (with heads more important there than in general)"
    base = ~np.isin(keys, sorted(set().union(*topic_heads.values())))
    if not base.any():
        return "every head of the table is a topic head: no other heads to compare with"
    base_keys = sorted(set(keys[base].tolist()))
    per_topic, parts, baseline = {}, {}, {}
    for name, lexicon in lexicons.items():
        hit = np.array([lexicon(t) for t in svd_tokens], dtype=np.float64)
        per_topic[name] = (_per_head(hit, keys, topic_heads[name]), _per_head(hit, keys, base_keys))
        parts[name] = random_head_ci({name: per_topic[name]}, boot)
        baseline[name] = mean_ci(hit[base], keys[base], unit="heads", **boot)[0]
    return {"estimate": random_head_ci(per_topic, boot), "parts": parts, "heads": topic_heads, "baseline": baseline,
            "baseline_heads": len(base_keys)}


def _per_head(hit: np.ndarray, keys: np.ndarray, heads: list[str]) -> np.ndarray:
    """[len(heads), 2]: each head's lexicon hits and rows (its top tokens over its singular vectors)."""
    return np.array([[hit[keys == h].sum(), (keys == h).sum()] for h in heads], dtype=np.float64)


def random_head_ci(per_topic: dict[str, tuple[np.ndarray, np.ndarray]], boot: dict) -> Estimate:
    """The topic heads' pooled lexicon share minus that of heads drawn at random from the other heads, the same
    number per topic and scored against the same lexicon: the value uses every other head (the expected draw); each
    replicate resamples the topic heads (with replacement) and draws a random set of other heads (without
    replacement while there are enough). per_topic: name -> (topic heads [T, 2], other heads [B, 2]) of hits, rows."""
    rng = np.random.default_rng(boot.get("seed", 0))
    n_boot = int(boot.get("n_boot", 2000))
    topic = sum(t.sum(axis=0) for t, _ in per_topic.values())
    other = sum(o.sum(axis=0) for _, o in per_topic.values())
    reps = np.empty(n_boot)
    for r in range(n_boot):
        got_t, got_o = np.zeros(2), np.zeros(2)
        for t, o in per_topic.values():
            got_t += t[rng.integers(0, len(t), len(t))].sum(axis=0)
            got_o += o[rng.choice(len(o), len(t), replace=len(o) < len(t))].sum(axis=0)
        reps[r] = got_t[0] / got_t[1] - got_o[0] / got_o[1]
    heads = len(next(iter(per_topic.values()))[1]) + sum(len(t) for t, _ in per_topic.values())
    return interval(np.array([topic[0] / topic[1] - other[0] / other[1]]), reps[:, None],
                    int(topic[1] + next(iter(per_topic.values()))[1][:, 1].sum()), heads, "heads")[0]


def claims(results: dict) -> list[Claim]:
    res = results.get("svd")
    if res is None:
        return []
    key, section = "svd-topic-tokens", "5.2, fig. 11"
    statement = ("code-specific heads promote tokens related to coding and technology [...] Heads most active for "
                 "non-English promote tokens in multiple languages, avoiding English ones")
    measure = (f"share of the top tokens (all shown singular vectors) of the {CLAIM_HEADS} most code-specific and "
               f"{CLAIM_HEADS} most non-English-specific heads that belong to their topic's fixed lexicon "
               "(programming vocabulary: Python keywords and builtins, code punctuation; non-English: Cyrillic "
               "script, Italian/Spanish letters and stop words), minus the same share for as many heads drawn at "
               "random from the model's other heads; the interval resamples the topic heads and redraws the random "
               "ones")
    domains = results.get("domains")
    if domains is None:
        return [untestable(key, section, statement, "needs the domains analysis of the same run (its domain-specific "
                           "heads and texts)", measure)]
    m = topic_measure(res.table, domains, res.data.get("boot", {}))
    if isinstance(m, str):
        return [untestable(key, section, statement, m, measure)]
    est = m["estimate"]
    holds = est.above(0.0)
    why = ("holds when the interval lies above 0; it " + ("does" if holds else "does not") + ". Per topic: "
           + "; ".join(f"{k} {v} (heads {', '.join(m['heads'][k])}; other heads' share {m['baseline'][k]})"
                       for k, v in m["parts"].items()) + f"; {m['baseline_heads']} other heads")
    conditions = (Condition("the topic-token share of the topic heads minus that of the other heads", est),)
    return [Claim(key, section, statement, measure, est, verdict_of(conditions), why, conditions)]


ANALYSIS = Analysis(
    name="svd", title="What heads write: W_OV singular vectors",
    help="top tokens of each head's W_OV right singular vectors through the final norm and W_U (fig. 11)",
    paper=PAPER, paper_size="Llama 2-7B, the code- and non-English-specific heads of fig. 10", kind="weights",
    summarize=summarize, claims=claims,
)
