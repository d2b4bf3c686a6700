"""Every fenced code block of README.md and docs/*.md is executed or checked, so that an example that stops
working fails here (issue 22, item 5).

- ```python blocks run as written, each in a fresh namespace with a temporary folder as the working directory.
  What is not available offline, or too slow for a test, is replaced by SUBSTITUTIONS below: text replaced in
  the block before it runs (each replacement must still match the docs, so a stale one fails too), plus SIZES
  (smaller run sizes set for one file's blocks). The models they use are the tests' tiny random-init models.
- Shell blocks (no language): every line must be of a kind this module knows, else the test fails:
  `flowroutes ...` lines are parsed by the real CLI parser (a renamed or removed option fails); a usage synopsis
  (`[--option ...]`) must name only options of that command; `flowroutes trace ...` lines also run for real, on a
  tiny model folder (`--model` appended); `make X` needs target X in the Makefile; `pip install` pins must
  equal requirements.lock and every `flowroutes[extra]` must be an extra of pyproject.toml; `python -c "..."`
  must compile and its `from M import N` must resolve (when M is installed); comments are not checked.
- ```toml blocks are read by `flowroutes serve --config`'s own loader (unknown keys and wrong types fail).
- NOT_CODE lists the blocks that are diagrams, each with the reason.
"""

from __future__ import annotations

import ast
import importlib
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib

import flowroutes
from flowroutes.cli import _parser, main

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: (doc, text in one of its python blocks, replacement, why)
SUBSTITUTIONS = [
    ("docs/interop.md", 'TransformerBridge.boot_transformers("gpt2")',
     'TransformerBridge.boot_transformers("gpt2", hf_model=tiny_gpt2(), tokenizer=word_tokenizer())',
     "GPT-2's weights are on the hub: the bridge wraps a tiny random-init GPT-2 instead"),
    ("docs/patching.md", "flowroutes.load_model()", "ioi_model()",
     "head patching on SmolLM2 takes minutes: a tiny Llama whose tokenizer has the IOI names as tokens"),
    ("docs/patching.md", 'compare_patching(model, "ioi", n=32)', 'compare_patching(model, "ioi", n=4, force=True)',
     "a random tiny model is at chance on IOI, which compare_patching refuses unless forced"),
    ("docs/analyses.md", "flowroutes.load_model()", "ioi_model()",
     "a full reproduce on SmolLM2 takes minutes: the same tiny Llama as for patching.md"),
    ("docs/analyses.md", 'task="ioi", n=100', 'task="ioi", n=8', "fewer examples: the run stays within seconds"),
]
#: run sizes made small for one doc's blocks: (doc, module, attribute, key, value, why)
SIZES = [
    ("docs/analyses.md", "flowroutes.analyses.reproduce", "SIZE", "quick", "TINY_SIZE",
     "reproduce --size quick on 4 texts per domain, 4 task examples and 20 resamples (test_reproduce.py: 50)"),
]
#: blocks that are not code: (doc, first line of the block, why)
NOT_CODE = [
    ("docs/architecture.md", "model source --load_model--> LoadedModel",
     "the data path as a diagram; the functions it names are checked by test_diagram_names_resolve"),
    ("docs/architecture.md", "data (samples, files) --run.corpus_items--> items",
     "the analyses' data path as a diagram; the functions it names are checked as above"),
]


@dataclass(frozen=True)
class Block:
    doc: str  # relative to the repository root
    line: int  # 1-based line of the opening fence
    lang: str
    text: str

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def blocks_of(path: Path) -> list[Block]:
    out, lines, i = [], path.read_text().splitlines(), 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        assert i < len(lines), f"{path.name}:{start + 1}: unclosed code block"
        out.append(Block(str(path.relative_to(ROOT)), start + 1, fence.group(1), "\n".join(body) + "\n"))
        i += 1
    return out


BLOCKS = [b for doc in DOCS for b in blocks_of(doc)]
PYTHON = [b for b in BLOCKS if b.lang == "python"]
TOML = [b for b in BLOCKS if b.lang == "toml"]
DIAGRAMS = [b for b in BLOCKS if b.lang == "" and any(b.doc == d and b.text.startswith(f) for d, f, _ in NOT_CODE)]
SHELL = [b for b in BLOCKS if b.lang == "" and b not in DIAGRAMS]
SLOW_DOCS = {"README.md"}  # their python blocks load the real SmolLM2


def test_every_block_is_of_a_kind_that_is_checked():
    assert BLOCKS, "no code blocks found"
    unknown = [b.id for b in BLOCKS if b.lang not in ("", "python", "toml")]
    assert not unknown, f"blocks of a language this module does not check: {unknown}"
    for doc, first, _ in NOT_CODE:  # a stale entry fails
        assert any(b.doc == doc and b.text.startswith(first) for b in BLOCKS), (doc, first)


# --- python blocks -----------------------------------------------------------------------------------------------
def ioi_model():
    """A tiny random-init Llama whose tokenizer makes every IOI name, place and object one token."""
    from flowroutes.tasks import NAMES, OBJECTS, PLACES
    from tests.helpers.bpe import bpe
    from tests.helpers.models import tiny_llama

    tok = bpe(words=NAMES + PLACES + OBJECTS)
    model = tiny_llama(vocab_size=len(tok))
    model.config.max_position_embeddings = 512  # rotary positions: the shipped texts run past 64 tokens here
    return flowroutes.load_model(model, tokenizer=tok)


def _namespace() -> dict:
    from tests.helpers.models import tiny_gpt2, word_tokenizer

    return {"__name__": "__doc_example__", "ioi_model": ioi_model, "tiny_gpt2": tiny_gpt2,
            "word_tokenizer": word_tokenizer}


def substituted(block: Block) -> str:
    text = block.text
    for doc, old, new, _ in SUBSTITUTIONS:
        if doc == block.doc and old in text:
            text = text.replace(old, new)
    return text


def test_every_substitution_still_matches_the_docs():
    for doc, old, _, why in SUBSTITUTIONS:
        assert any(b.doc == doc and old in b.text for b in PYTHON), f"{doc} no longer holds {old!r} ({why})"


def _params(blocks: list[Block]):
    return [pytest.param(b, id=b.id, marks=[pytest.mark.slow] if b.doc in SLOW_DOCS else []) for b in blocks]


@pytest.mark.parametrize("block", _params(PYTHON))
def test_python_block_runs(block, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    for doc, module, attr, key, value, _ in SIZES:
        if doc == block.doc:
            monkeypatch.setitem(getattr(importlib.import_module(module), attr), key, globals()[value]())
    exec(compile(substituted(block), block.id, "exec"), _namespace())  # noqa: S102


def TINY_SIZE():  # noqa: N802 (named like the table entry that uses it)
    from flowroutes.analyses import reproduce as rep

    return rep.Size(texts_per_domain=4, task_examples=4, patching_examples=4, n_boot=20, tsne_max=40)


# --- shell blocks ------------------------------------------------------------------------------------------------
def commands(block: Block) -> list[str]:
    """The block's lines, a line that starts with whitespace joined to the one before (a wrapped synopsis)."""
    out: list[str] = []
    for line in block.text.splitlines():
        if line.strip() and line[:1].isspace() and out:
            out[-1] += " " + line.strip()
        elif line.strip():
            out.append(line.strip())
    return out


def options_of(command: str) -> set[str]:
    sub = next(a for a in _parser()._actions if a.dest == "command")
    return set(sub.choices[command]._option_string_actions)


def check_flowroutes_line(line: str, tmp_path: Path, tiny_folder: Path) -> str:
    """What was checked, or raises. A synopsis names only existing options; a command parses; a trace runs."""
    if "[--" in line:  # a usage synopsis: flowroutes trace "PROMPT" [--model M] ...
        command = line.split()[1]
        named = set(re.findall(r"(--[a-z][a-z0-9-]*)", line))
        missing = named - options_of(command)
        assert not missing, f"the synopsis names options `flowroutes {command}` does not have: {sorted(missing)}"
        return "synopsis"
    argv = shlex.split(line, comments=True)[1:]
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"`{line}` does not parse (exit {exc.code})") from None
    if args.command != "trace":
        return "parsed"
    out = tmp_path / "trace-out"
    run = [*argv, "--model", str(tiny_folder)] + ([] if "--out" in argv else ["--out", str(out)])
    assert main(run) == 0, f"`{line}` failed on the tiny model"
    written = Path(args.out) if "--out" in argv else out
    assert written.is_dir() and any(written.iterdir()), f"`{line}` wrote nothing into {written}"
    return "ran"


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return {m.group(1) for m in re.finditer(r"^([A-Za-z][\w-]*):", text, flags=re.M)}


def locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def check_pip_line(line: str) -> str:
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    pins = locked()
    for word in shlex.split(line, comments=True)[2:]:
        if word.startswith("-"):
            continue
        name, _, version = word.partition("==")
        base, _, extra = name.partition("[")
        if extra:
            assert base == "flowroutes" and extra.rstrip("]") in extras, f"`{word}`: no such extra in pyproject.toml"
        if version:
            assert pins.get(base.lower()) == version, f"`{word}`: requirements.lock pins {pins.get(base.lower())}"
    return "pins and extras"


def check_python_c(line: str) -> str:
    code = shlex.split(line)[2]
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            try:
                module = importlib.import_module(node.module)
            except ImportError:
                return f"compiled ({node.module} not installed)"
            for alias in node.names:
                assert hasattr(module, alias.name), f"`{line}`: {node.module} has no {alias.name}"
    return "compiled, imports resolve"


@pytest.mark.parametrize("block", [pytest.param(b, id=b.id) for b in SHELL])
def test_shell_block(block, tmp_path, monkeypatch, tiny_folder):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    checked = []
    for line in commands(block):
        if line.startswith("#"):
            checked.append("comment")
        elif line.startswith("flowroutes "):
            checked.append(check_flowroutes_line(line, tmp_path, tiny_folder))
        elif line.startswith("make "):
            target = shlex.split(line, comments=True)[1]
            assert target in make_targets(), f"`{line}`: the Makefile has no target {target}"
            checked.append("make target")
        elif line.startswith("pip install "):
            checked.append(check_pip_line(line))
        elif line.startswith("python -c "):
            checked.append(check_python_c(line))
        else:
            raise AssertionError(f"{block.id}: a line of a kind this module does not check: {line!r}")
    assert any(c != "comment" for c in checked), f"{block.id}: nothing checked"


# --- toml blocks -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("block", [pytest.param(b, id=b.id) for b in TOML])
def test_toml_block_is_a_valid_serve_config(block, tmp_path):
    from flowroutes.web.cli import read_config

    path = tmp_path / "serve.toml"
    path.write_text(block.text)
    assert read_config(str(path)) == tomllib.loads(block.text)


# --- names the docs use ------------------------------------------------------------------------------------------
#: backticked names with an underscore that are not in this repository's code, each with the reason
FOREIGN_NAMES = {
    "c_p": "a symbol of a formula (docs/architecture.md)",
    "from_pretrained_no_processing": "TransformerLens's HookedTransformer method",
    "resolve_ip_for_localhost": "Ray's own function (docs/security.md)",
    "_private": "Ray's own module (docs/security.md)",
    "opp_idx": "a tracr program's variable (docs/tracr.md)",
}
CLASSES = ("Routes", "Trace", "LazyTrace", "LoadedModel", "FlowroutesError")


def spans() -> list[tuple[str, str]]:
    """(doc, text) of every `backticked` span of the docs."""
    return [(str(d.relative_to(ROOT)), m.group(1)) for d in DOCS for m in re.finditer(r"`([^`\n]+)`", d.read_text())]


def code_files() -> list[Path]:
    return [p for base in ("src/flowroutes", "tests", "benchmarks", "scripts") for p in (ROOT / base).rglob("*")
            if p.suffix in (".py", ".js", ".html") and ".venv" not in p.parts]


def test_named_code_exists():
    """Every `flowroutes.x.y` resolves, every `Routes.x` (and the other public classes') attribute exists, and
    every name with an underscore occurs in the code (an example citing a helper that exists nowhere fails)."""
    files = code_files()
    words = {w for p in files for w in re.findall(r"\w+", p.read_text(errors="ignore"))}
    missing = []
    for doc, span in spans():
        name = re.fullmatch(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?:\(.*\))?", span)
        if not name or name.group(1).endswith((".py", ".md", ".js", ".json", ".html", ".parquet")):
            continue
        parts = name.group(1).split(".")
        if parts[0] == "flowroutes" and not _resolves(parts):
            missing.append((doc, span, "does not resolve"))
        elif parts[0] in CLASSES and len(parts) > 1 and not _has_attribute(getattr(flowroutes, parts[0], None)
                                                                              or _public_class(parts[0]), parts[1]):
            missing.append((doc, span, f"{parts[0]} has no {parts[1]}"))
        for part in parts:
            if "_" in part.strip("_") and part not in words and part not in FOREIGN_NAMES:
                missing.append((doc, span, f"{part} is nowhere in the code"))
    assert not missing, missing


def _public_class(name: str):
    from flowroutes.models.loading import LoadedModel
    from flowroutes.trace import LazyTrace

    return {"LazyTrace": LazyTrace, "LoadedModel": LoadedModel}[name]


def _has_attribute(cls, attr: str) -> bool:
    import dataclasses

    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    return hasattr(cls, attr) or attr in fields


def _resolves(parts: list[str]) -> bool:
    obj = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], start=1):
        try:  # a module first: flowroutes.trace is also the function trace()
            obj = importlib.import_module(".".join(parts[: i + 1]))
        except ImportError:
            if not hasattr(obj, part):
                return False
            obj = getattr(obj, part)
    return True


#: files the docs name that belong to other projects, each with the reason
FOREIGN_FILES = {
    "notebooks/auc_tables.py": "the ACDC repository's plotting script (docs/tracr.md)",
    "notebooks/roc_plot_generator.py": "the ACDC repository's plotting script (docs/tracr.md)",
    "flashtrace/core.py": "FlashTrace 0.1.1's installed source (docs/generation.md)",
}


def test_named_files_exist():
    """Every `file.py` / `folder/file.py` the docs name is a file of the repository (a renamed module fails)."""
    tracked = [p.relative_to(ROOT).as_posix() for p in code_files()]
    missing = []
    for doc, span in spans():
        for name in re.findall(r"(?:[\w.-]+/)*[\w-]+\.py\b", span):
            if name not in FOREIGN_FILES and not any(t == name or t.endswith("/" + name) for t in tracked):
                missing.append((doc, name))
    assert not missing, missing


# --- statements the docs make about the code ---------------------------------------------------------------------
def _help_texts() -> str:
    parser = _parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return "\n".join(p.format_help() for p in sub.choices.values())


def test_hub_ids_are_downloaded_unless_offline(monkeypatch):
    """The loader tries the local cache, then the hub unless HF_HUB_OFFLINE is set; no doc or --help says hub
    ids are read from the local cache only."""
    from flowroutes.models import loading

    tried = []

    def not_cached(ref, dtype, local_only, where):
        tried.append(local_only)
        raise OSError("not in the cache")

    monkeypatch.setattr(loading, "_load_pretrained", not_cached)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(flowroutes.FlowroutesError, match="the hub could not provide it"):
        flowroutes.load_model("someone/some-model")
    assert tried == [True, False]
    tried.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(flowroutes.FlowroutesError, match="HF_HUB_OFFLINE is set"):
        flowroutes.load_model("someone/some-model")
    assert tried == [True]
    texts = "\n".join(d.read_text() for d in DOCS) + _help_texts()
    said = re.findall(r".{0,60}(?:from the local (?:HF )?cache|in the local cache|\(local cache\)|read from the "
                      r"local cache).{0,20}", " ".join(texts.split()))
    assert not said, said


def test_pass_counts_are_the_codes():
    """Head patching and the ACDC-style run each cost L*H + 3 passes per batch (tested on a tiny model); every
    pass count the docs give is that of SmolLM2 (30 x 9 heads) or Gemma 3 270M (18 x 4)."""
    from flowroutes.patching import acdc_prune, head_patching, prepare
    from flowroutes.tasks import ioi

    model = ioi_model()
    batch = prepare(model, ioi(3, tokenizer=model.tokenizer))
    heads = model.adapter.n_layers * model.adapter.n_heads
    assert head_patching(model, batch, progress=False).forward_passes == heads + 3
    assert acdc_prune(model, batch, progress=False).forward_passes == heads + 3
    allowed = {30 * 9 + 3, 18 * 4 + 3}
    text = " ".join("\n".join(d.read_text() for d in DOCS).split())
    counts = re.findall(r"(\d+) (?:head-patching|ACDC-style)(?: forward)? passes", text)
    counts += re.findall(r"\((\d+) batched passes\)", text)
    counts += re.findall(r"L\*H \+ 3 per batch, (\d+) on", text)
    # the README's speed table: forward / backward passes of the patching rows
    counts += re.findall(r"\| (?:head patching|ACDC-style over heads)[^|]*\|[^|]*\|[^|]*\| (\d+) / 0 \|", text)
    assert len(counts) >= 6, counts
    assert {int(c) for c in counts} <= allowed, counts


@pytest.mark.slow
def test_smollm2_has_the_head_count_the_pass_counts_use(smollm2):
    assert (smollm2.adapter.n_layers, smollm2.adapter.n_heads) == (30, 9)


def test_body_cap_is_the_codes():
    from flowroutes.web.store import Settings

    text = " ".join((ROOT / "docs" / "web.md").read_text().split())
    got = re.search(r"request bodies are capped at the larger of (\d+) KiB and (\d+) x this \+ (\d+) KiB", text)
    assert got, "docs/web.md does not state the body cap"
    floor, per_char, extra = (int(g) for g in got.groups())
    for chars in (10, 4000, 100_000):
        assert Settings(models={}, max_prompt_chars=chars).body_limit == max(floor * 1024, per_char * chars + extra
                                                                             * 1024)


#: the memory per cached prompt as docs/web.md writes it, and as Python
MEMORY_DOC = "4 T (L (2 H T + 4 d + F) + d + V)"


def memory_formula(T, L, H, d, F, V):  # noqa: N803 (the formula's symbols)
    return 4 * T * (L * (2 * H * T + 4 * d + F) + d + V)


def test_memory_formula_is_the_codes():
    """docs/web.md's bytes per cached prompt: within 3% of what the explorer's cache counts (trace + internals)."""
    import numpy as np

    from flowroutes.inspection import capture_internals
    from flowroutes.web.store import nbytes
    from tests.helpers.models import tiny_llama, word_tokenizer

    assert f"`{MEMORY_DOC}` bytes" in (ROOT / "docs" / "web.md").read_text()
    model = flowroutes.load_model(tiny_llama(), tokenizer=word_tokenizer())
    T = 60  # noqa: N806
    tr = flowroutes.trace(model, " ".join(f"w{i % 90}" for i in range(T)))
    used = nbytes(tr) + nbytes(capture_internals(model, np.asarray(tr.input_ids)))
    cfg = model.model.config
    want = memory_formula(T, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.hidden_size, cfg.intermediate_size,
                          cfg.vocab_size)
    assert abs(used - want) <= 0.03 * used, (used, want)
    # the SmolLM2 example next to it (30 layers, 9 heads, d = 576, F = 1536, V = 49152, T = 256)
    trace_mb = 4 * 30 * 9 * 256 * 256 / 1e6
    internals_mb = memory_formula(256, 30, 9, 576, 1536, 49152) / 1e6 - trace_mb
    assert f"{trace_mb:.0f} MB of trace and {internals_mb:.0f} MB of internals" in " ".join(
        (ROOT / "docs" / "web.md").read_text().split())


def written_parquet_names() -> set[str]:
    """The Parquet files report.Result.write writes: each Result's name and its extra tables' names, read from
    the code (every `report.Result(name, ..., extra)` call: the extra tables are a dict literal or a variable set
    to one)."""
    names = set()
    for path in (ROOT / "src" / "flowroutes").rglob("*.py"):
        tree = ast.parse(path.read_text())
        dicts = {t.id: node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                 and isinstance(node.value, ast.Dict) for t in node.targets if isinstance(t, ast.Name)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "Result":
                if node.args and isinstance(node.args[0], ast.Constant):
                    names.add(node.args[0].value)
                extra = node.args[6] if len(node.args) > 6 else None
                extra = dicts.get(extra.id) if isinstance(extra, ast.Name) else extra
                if isinstance(extra, ast.Dict):
                    names |= {k.value for k in extra.keys if isinstance(k, ast.Constant)}
    return names


def test_parquet_names_are_the_codes():
    written = written_parquet_names()
    assert {"task_heads", "task_heads_frequency", "patching", "patching_examples"} <= written, written
    user_data = {"code"}  # `--data python=code.parquet`: the user's own file
    named = {m for _, span in spans() for m in re.findall(r"([\w-]+)\.parquet", span)} - user_data
    assert named, "no Parquet file named"
    assert named <= written, sorted(named - written)


# --- one node notation (docs/architecture.md, "Nodes and layers") ------------------------------------------------
#: older or the paper's forms of our nodes, each with what to write instead
OLD_NOTATION = {
    r"l\s*\+\s*1\s*,\s*A": "x^{l+1,A}: the node after block l's attention is x^{lA}",
    r"\((?:l|layer)\s*\+\s*1\)\s*A": "x^{(l+1)A}: the paper's name of our x^{lA}",
    r"x\^\{lA\}(?:_p)?\s*=\s*x\^\{l-1\}": "x^{lA} = x^{l-1} + ...: the paper's numbering (ours: x^{lA} = x^l + ...)",
    r"x\^l(?:_p)?\s*=\s*x\^\{lA\}": "x^l = x^{lA} + FFN: the paper's numbering (ours: x^{l+1} = x^{lA} + FFN)",
    r"x\^l(?:_p)?\s*-\s*x\^\{lA\}": "x^l - x^{lA}: block l's FFN update is x^{l+1} - x^{lA}",
    r"both read `?x\^\{l-1\}": "a parallel block l reads x^l",
}


def test_one_node_notation():
    """The docs, the package's docstrings and the strings its reports write use one notation; the paper's
    numbering is stated once, in docs/architecture.md."""
    files = DOCS + [p for p in (ROOT / "src" / "flowroutes").rglob("*") if p.suffix in (".py", ".js", ".html")
                    and "data" not in p.relative_to(ROOT / "src" / "flowroutes").parts]  # data/: shipped texts
    found = []
    for path in files:
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            found += [f"{path.relative_to(ROOT)}:{n}: {why}" for pattern, why in OLD_NOTATION.items()
                      if re.search(pattern, line)]
    assert not found, found
    arch = (ROOT / "docs" / "architecture.md").read_text()
    assert "## Nodes and layers" in arch and "the paper's `x^{lA}` is our\n`x^{(l-1)A}`" in arch
    # what help(Trace) shows
    doc = flowroutes.Trace.__doc__
    assert "x^{lA}_p" in doc and "x^{l+1}_p" in doc and "architecture.md" in doc, doc


def test_bottom_to_top_report_uses_the_notation(tmp_path):
    from flowroutes.analyses.run import analyze
    from tests.helpers.models import tiny_llama, word_tokenizer

    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(" ".join(f"w{(i * 7 + k) % 90}" for k in range(12)) for i in range(3)) + "\n")
    model = flowroutes.load_model(tiny_llama(), tokenizer=word_tokenizer())
    result = analyze("bottom-to-top", model, data=[str(texts)], progress=False)
    assert "sub-edges into x^{lA}_p" in result.explanation, result.explanation
    assert not any(re.search(p, result.explanation) for p in OLD_NOTATION)


def test_diagram_names_resolve():
    """Every module.name a diagram block names (capture.run_with_capture, rows.corpus_rows, ...) exists, in
    flowroutes or flowroutes.analyses."""
    named = {m for b in DIAGRAMS for m in re.findall(r"(?<![<\w.])([a-z_]+\.[A-Za-z_]\w*)", b.text)
             if not m.endswith(".py")}
    assert len(named) >= 8, named
    prefixes = (["flowroutes"], ["flowroutes", "analyses"])
    missing = [m for m in sorted(named) if not any(_resolves([*prefix, *m.split(".")]) for prefix in prefixes)]
    assert not missing, missing


# --- the main figure ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_main_figure_is_the_current_codes(tmp_path, monkeypatch):
    """README's main figure is what `make figures` draws from today's code (the same pixels), and its caption's
    numbers are the routes' own."""
    import json

    import numpy as np
    from matplotlib import image

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    makefile = (ROOT / "Makefile").read_text()
    assert "cp build/figures/routes.png docs/img/ioi-routes.png" in makefile and "figures" in make_targets()
    prompt = re.search(r"^PROMPT\s*:=\s*(.+)$", makefile, flags=re.M).group(1).strip()
    assert main(["trace", prompt, "--out", str(tmp_path)]) == 0  # the command of the figures target
    new, old = image.imread(tmp_path / "routes.png"), image.imread(ROOT / "docs" / "img" / "ioi-routes.png")
    assert new.shape == old.shape, "docs/img/ioi-routes.png is not today's figure: run make figures"
    assert float(np.abs(new - old).mean()) < 1e-3, "docs/img/ioi-routes.png is not today's figure: run make figures"
    readme = " ".join((ROOT / "README.md").read_text().split())
    caption = re.search(r'on "([^"]+)" -> " Mary" \((\d+)%\), tau = ([\d.]+)\. Blue: attention edges '
                        r'\(the first " Mary" is read at layer (\d+)\)', readme)
    assert caption and caption.group(1) == prompt, "README's caption does not describe the figure"
    routes = json.loads((tmp_path / "routes.json").read_text())
    assert routes["prediction"][0]["token"] == " Mary"
    assert round(100 * routes["prediction"][0]["prob"]) == int(caption.group(2))
    assert routes["attention_threshold"] == float(caption.group(3))
    first_mary = routes["token_texts"].index(" Mary")
    read = {e["layer"] for e in routes["edges"] if e["kind"] == "attention" and e["source"].endswith(f"@{first_mary}")
            and not e["target"].endswith(f"@{first_mary}")}
    assert int(caption.group(4)) == max(read), read


def test_makefile_commands_parse():
    """The flowroutes commands that the Makefile's targets run (the docs' `make demo`, `make reproduce`, `make
    figures`, ...) parse with the real CLI parser."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    prompt = re.search(r"^PROMPT\s*:=\s*(.+)$", text, flags=re.M).group(1).strip()
    ran = 0
    for line in text.splitlines():
        if "$(BIN)/flowroutes " not in line:
            continue
        command = line.split("$(BIN)/flowroutes ", 1)[1].replace("$(PROMPT)", prompt)
        command = command.replace('"$(GEMMA_GGUF)"', "gemma.gguf")
        assert "$(" not in command, f"a Makefile variable this test does not know: {command}"
        try:
            _parser().parse_args(shlex.split(command))
        except SystemExit as exc:
            raise AssertionError(f"the Makefile runs `flowroutes {command}`, which does not parse") from exc
        ran += 1
    assert ran >= 4, ran
