"""The shipped corpora (src/flowroutes/data/corpora, built by `make corpora` from Debian packages): enough texts,
prose of at least three sentences in the right language, code that parses and is not ours, every record with its
source; `read_texts("corpus:NAME")` reads them offline. And `reproduce --data DOMAIN=SRC`'s parsing."""

import ast
import gzip
import json
import re
from importlib import resources
from pathlib import Path

import pytest

from flowroutes import FlowroutesError
from flowroutes.analyses import reproduce as rep
from flowroutes.analyses.run import DOMAINS, domain_sources
from flowroutes.texts import CORPORA, corpus_path, read_texts
from tests.helpers.cli import assert_one_line_error, run_cli

ROOT = Path(__file__).resolve().parents[2]
PROSE = ("general", "english", "russian", "italian", "spanish")
def _builder():
    """scripts/build_corpora.py (stdlib only, no side effects on import): its sentence and stop-word rules are what
    the shipped corpora must obey."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_corpora", ROOT / "scripts" / "build_corpora.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILDER = _builder()
#: a sentence ends at . ! ? before an upper-case letter, a digit or an opening quote, or at the end of the text: the
#: builder's rule (which also keeps abbreviations such as "e.g." inside a sentence, so its count is never above this)
SENTENCE_END = BUILDER.SENTENCE_END
#: a line of an option table or a command line: -x/--long at the start, a shell or Python prompt, a column gap
NOT_PROSE = re.compile(r"^\s*(-{1,2}[\w\[]|\$ |# |>>>)|\S {3,}\S")
#: stop words per language, the builder's: a text is kept when at least 12% of its words are its language's stop
#: words (for Italian and Spanish more than twice the English ones: no untranslated English)
STOP = BUILDER.STOPWORDS


def records(name: str) -> list[dict]:
    with gzip.open(corpus_path(name), "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def words(text: str) -> list[str]:
    return re.findall(r"[^\W\d_]+", text.lower())


@pytest.mark.parametrize("name", CORPORA)
def test_each_corpus_holds_1000_to_1500_distinct_texts_with_their_sources(name):
    rows = records(name)
    assert 1000 <= len(rows) <= 1500
    assert len({r["text"] for r in rows}) == len(rows)
    sources = (resources.files("flowroutes") / "data" / "SOURCES.md").read_text("utf-8")
    for r in rows:
        assert set(r) == {"text", "source"} and r["text"].strip() == r["text"] != ""
        package, version, path = r["source"].split(" ")
        assert path.startswith("/usr/share/") or path.startswith("/usr/lib/python3.11/")
        assert f"`{package}`" in sources and version in sources, r["source"]  # documented in SOURCES.md


@pytest.mark.parametrize("name", PROSE)
def test_prose_texts_have_three_sentences_and_no_tables_or_command_lines(name):
    counts = []
    for r in records(name):
        text = r["text"]
        counts.append(len(SENTENCE_END.findall(text)))
        assert counts[-1] >= 3, text
        assert text[-1] in ".!?", text
        assert not any(NOT_PROSE.search(line) for line in text.split("\n")), text
        assert "```" not in text and "::" not in text and "\\f" not in text
    assert sum(counts) / len(counts) >= 3.0


def test_russian_is_cyrillic_and_italian_spanish_are_their_language():
    for r in records("russian"):
        letters = [c for c in r["text"] if c.isalpha()]
        assert sum("\u0400" <= c <= "\u04ff" for c in letters) >= 0.75 * len(letters), r["text"]
    for name in ("italian", "spanish", "english", "general"):
        for r in records(name):
            w = words(r["text"])
            own = sum(x in STOP[name if name != "general" else "english"] for x in w)
            assert own >= 0.12 * len(w), r["text"]
            if name in ("italian", "spanish"):
                assert own > 2 * sum(x in STOP["english"] for x in w), r["text"]  # no untranslated English
    # the languages differ from each other too: Spanish stop words are rare in Italian texts and the reverse
    it = [words(r["text"]) for r in records("italian")]
    assert sum(sum(x in STOP["italian"] for x in w) for w in it) > 3 * sum(
        sum(x in {"los", "las", "para", "por", "el"} for x in w) for w in it)


def test_code_texts_are_whole_standard_library_definitions_that_parse():
    rows = records("code")
    lines = []
    for r in rows:
        tree = ast.parse(r["text"])
        assert len(tree.body) == 1 and isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                  ast.ClassDef)), r["text"][:80]
        assert r["source"].startswith("libpython3.11-stdlib ") and "flowroutes" not in r["source"]
        assert "flowroutes" not in r["text"]
        lines.append(r["text"].count("\n") + 1)
    assert min(lines) >= 4 and max(lines) <= 25
    assert len({r["source"] for r in rows}) >= 100  # from many modules, not a few big ones


@pytest.mark.parametrize("name,op", [("addition", 1), ("subtraction", -1)])
def test_arithmetic_samples_hold_1000_distinct_correct_problems(name, op):
    lines = read_texts(f"sample:{name}")
    added = lines[300:]  # the first 300 as first shipped (with one repeated line in addition)
    assert len(lines) == 1200 and len(set(added)) == 900 and not set(added) & set(lines[:300])
    for i, line in enumerate(lines):
        a, b, c = (int(x) for x in re.findall(r"\d+", line))
        assert 2 <= b <= 99 and 2 <= a <= 99 and a + op * b == c >= 0, line
        assert (i % 5 == 4) == bool(re.fullmatch(r"\d+ [+-] \d+ = \d+", line))  # the templates' order kept


@pytest.mark.parametrize("name", CORPORA)
def test_read_texts_reads_a_corpus_in_order_and_limit_keeps_the_first(name):
    texts = read_texts(f"corpus:{name}")
    assert texts == [r["text"] for r in records(name)]
    assert read_texts(f"corpus:{name}", limit=48) == texts[:48]
    assert read_texts(f"corpus:{name}", field="content") == texts  # the corpora's field is always "text"


def test_unknown_corpus_and_gzipped_user_files(tmp_path):
    with pytest.raises(FlowroutesError, match="unknown corpus 'klingon': choose one of general"):
        read_texts("corpus:klingon")
    path = tmp_path / "mine.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"text": "one"}\n\n{"text": " two "}\n'))
    assert read_texts(path) == ["one", "two"]
    (tmp_path / "lines.txt.gz").write_bytes(gzip.compress("è b\n\nc\n".encode()))
    assert read_texts(tmp_path / "lines.txt.gz") == ["è b", "c"]
    (tmp_path / "cut.jsonl.gz").write_bytes(gzip.compress(b'{"text": "one"}\n')[:-6])
    with pytest.raises(FlowroutesError, match="not a complete gzip file"):
        read_texts(tmp_path / "cut.jsonl.gz")


def test_domain_sources_replace_the_defaults_of_the_named_domains_only():
    got = domain_sources(["general=my-c4.jsonl", "code=hf:bigcode/the-stack:train"])
    assert got[0] == "general=my-c4.jsonl" and got[2] == "code=hf:bigcode/the-stack:train"
    assert got[1:2] + got[3:] == list(DOMAINS[1:2] + DOMAINS[3:]) and len(got) == 8
    assert domain_sources(None) == list(DOMAINS)
    assert DOMAINS[0] == "general=corpus:general" and DOMAINS[-1] == "subtraction=sample:subtraction"
    for bad, words_ in [("my.txt", "write DOMAIN=SRC"), ("=x.txt", "write DOMAIN=SRC"), ("general=", "DOMAIN=SRC"),
                        ("klingon=x.txt", "unknown domain 'klingon'")]:
        with pytest.raises(FlowroutesError, match=words_):
            domain_sources([bad])
    with pytest.raises(FlowroutesError, match="twice"):
        domain_sources(["code=a.txt", "code=b.txt"])


def test_reproduce_reads_the_given_source_for_its_domain(tmp_path, monkeypatch):
    mine = tmp_path / "c4.txt"
    mine.write_text("My first text. It has sentences. Three of them.\nA second one.\n")
    seen = {}

    def stop(model, opts):  # after the data are read, before any model loads
        raise RuntimeError("stop")

    real = rep.read_sources

    def spy(spec, data, opts):
        seen["sources"] = real(spec, data, opts)
        return seen["sources"]

    monkeypatch.setattr(rep, "read_sources", spy)
    monkeypatch.setattr(rep, "load", stop)
    with pytest.raises(RuntimeError, match="stop"):
        rep.reproduce(None, out=tmp_path / "out", progress=False, data=[f"general={mine}", "code=sample:code"])
    got = dict(seen["sources"])
    assert got["general"] == ["My first text. It has sentences. Three of them.", "A second one."]
    assert got["general"].source == str(mine) and got["code"].source == "sample:code"
    assert got["code"] == read_texts("sample:code", limit=48)
    assert got["english"] == read_texts("corpus:english", limit=48)  # --size quick: the first 48
    assert list(got) == [d.split("=")[0] for d in DOMAINS]


@pytest.mark.parametrize("spec,message", [("general.txt", "write DOMAIN=SRC"),
                                          ("klingon=x.txt", "unknown domain 'klingon'"),
                                          ("general=/no/such/file.txt", "does not exist"),
                                          ("general=hf:a/b?colour=red", "'colour=red' is no option"),
                                          ("general=hf:a/b?config=x&config=y", "gives config twice"),
                                          ("general=hf:?field=body", "names no dataset")])
def test_reproduce_cli_bad_data_is_one_line_and_exit_2(capsys, tmp_path, monkeypatch, spec, message):
    def no_model(*a, **k):
        raise AssertionError("the model loaded before the data were checked")

    monkeypatch.setattr(rep, "load", no_model)
    code, _, err = run_cli(capsys, "reproduce", "--data", spec, "--out", str(tmp_path / "o"), "--no-progress")
    assert_one_line_error(code, err, message)


def test_reproduce_hub_data_not_cached_offline_is_one_line(capsys, tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    monkeypatch.setattr(rep, "load", lambda *a, **k: pytest.fail("the model loaded before the data were read"))
    code, _, err = run_cli(capsys, "reproduce", "--data", "general=hf:someone/not-a-cached-dataset:validation",
                           "--out", str(tmp_path / "o"), "--no-progress")
    assert_one_line_error(code, err, "cannot load the dataset 'someone/not-a-cached-dataset'")
    assert "HF_HUB_OFFLINE" in err and not (tmp_path / "o").exists()


def tiny_dataset(root: Path) -> Path:
    """A dataset folder of two configs (Parquet files and a README that names them, as on the Hub): 'en' with 2
    rows, 'it' with 3, the text in column 'body' (not 'text')."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for config, texts in {"en": ["The cat sat.", "A dog ran."], "it": ["Il gatto.", "Un cane.", "Tre."]}.items():
        (root / config).mkdir(parents=True)
        pq.write_table(pa.table({"id": list(range(len(texts))), "body": texts}), root / config / "train.parquet")
    (root / "README.md").write_text("---\nconfigs:\n" + "".join(
        f"- config_name: {c}\n  data_files:\n  - split: train\n    path: {c}/*.parquet\n" for c in ("en", "it"))
        + "---\n")
    return root


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf" / "datasets")
    return datasets


def test_hub_data_names_its_config_and_text_field(tmp_path, monkeypatch, offline_cache):
    """hf:NAME[:SPLIT][?config=CONFIG&field=FIELD], read by `reproduce --data` (for each domain its own config and
    field) before any model loads."""
    root = tiny_dataset(tmp_path / "tiny")
    assert read_texts(f"hf:{root}?config=it&field=body") == ["Il gatto.", "Un cane.", "Tre."]
    assert read_texts(f"hf:{root}:train?config=en&field=body", field="ignored") == ["The cat sat.", "A dog ran."]
    with pytest.raises(FlowroutesError, match=r"\(config 'en', split 'train'\) has no column 'text' \(columns: id, "
                                              r"body\): name it with \?field=COLUMN"):
        read_texts(f"hf:{root}?config=en")
    with pytest.raises(FlowroutesError, match=r"cannot load the dataset '.*tiny' \(config 'fr', split 'train'\)"):
        read_texts(f"hf:{root}?config=fr&field=body")
    seen = {}
    real = rep.read_sources

    def spy(spec, data, opts):
        seen["sources"] = real(spec, data, opts)
        raise RuntimeError("stop")  # after the data are read, before any model loads

    monkeypatch.setattr(rep, "read_sources", spy)
    with pytest.raises(RuntimeError, match="stop"):
        rep.reproduce(None, out=tmp_path / "out", progress=False,
                      data=[f"general=hf:{root}?config=it&field=body", f"code=hf:{root}:train?field=body&config=en"])
    got = dict(seen["sources"])
    assert got["general"] == ["Il gatto.", "Un cane.", "Tre."] and got["code"] == ["The cat sat.", "A dog ran."]
    assert got["general"].source == f"hf:{root}?config=it&field=body"


def test_hub_data_is_read_offline_when_hf_hub_offline_is_set_after_datasets_was_imported(tmp_path, monkeypatch,
                                                                                        offline_cache):
    """`datasets` and `huggingface_hub` read HF_HUB_OFFLINE when first imported: set later, it must still hold, so
    that an uncached dataset gets one line and no download."""
    import huggingface_hub.constants as hub

    datasets = offline_cache
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)  # as if imported before HF_HUB_OFFLINE was set
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    flags = []

    def no_network(name, config=None, **kw):
        flags.append((datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE))
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", no_network)
    with pytest.raises(FlowroutesError, match=r"cannot load the dataset 'someone/uncached' \(config 'en', split "
                                              r"'validation'\) \(ConnectionError\).*cached when HF_HUB_OFFLINE"):
        read_texts("hf:someone/uncached:validation?config=en")
    assert flags == [(True, True)]  # offline during the load
    assert (datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE) == (False, False)  # and as it was after


def test_analyze_data_takes_a_hub_source_without_a_domain(tmp_path, offline_cache):
    """`flowroutes analyze --data hf:NAME?config=...&field=...`: the '=' of the options is no DOMAIN=SRC, and the
    domain is the dataset's name."""
    from flowroutes.analyses.base import registry
    from flowroutes.analyses.run import make_options, read_sources

    root = tiny_dataset(tmp_path / "tiny")
    got = read_sources(registry()["head-roles"], [f"hf:{root}?config=it&field=body", f"code=hf:{root}?field=body&"
                                                  "config=en"], make_options(None, progress=False))
    assert [(d, list(t)) for d, t in got] == [("tiny", ["Il gatto.", "Un cane.", "Tre."]),
                                              ("code", ["The cat sat.", "A dog ran."])]
