"""The general-domain sample and the universal POS tagset (Petrov et al. 2012) of analyses/data.py."""

from __future__ import annotations

import pytest

from flowroutes.analyses.data import (
    CONTENT_TAGS,
    FUNCTION_TAGS,
    SAMPLES,
    UNIVERSAL_TAGS,
    read_texts,
    universal_tag,
    words_and_pos,
)

CAT = "The cat sat on the mat ."
CAT_SPANS = [(0, 3), (4, 7), (8, 11), (12, 14), (15, 18), (19, 22), (23, 24)]


def test_tagsets():
    assert len(UNIVERSAL_TAGS) == 12 == len(set(UNIVERSAL_TAGS))
    assert set(FUNCTION_TAGS) == {"DET", "ADP", "PRON", "CONJ", "PRT", "."}
    assert set(CONTENT_TAGS) == {"NOUN", "VERB", "ADJ", "ADV"}
    assert set(UNIVERSAL_TAGS) - set(FUNCTION_TAGS) - set(CONTENT_TAGS) == {"NUM", "X"}


@pytest.mark.parametrize(("upos", "ptb", "tag"), [
    # the PTB tag wins (NLTK's en-ptb map)
    ("PART", "TO", "PRT"),
    ("ADP", "IN", "ADP"),
    ("SCONJ", "IN", "ADP"),
    ("ADP", "RP", "PRT"),  # spaCy says ADP for the particle of "give up"; PTB RP -> PRT
    ("PART", "POS", "PRT"),
    ("AUX", "MD", "VERB"),
    ("PRON", "EX", "DET"),  # existential "there"
    ("DET", "PDT", "DET"),
    ("PRON", "WDT", "DET"),
    ("PRON", "WP", "PRON"),
    ("PRON", "PRP$", "PRON"),
    ("ADV", "WRB", "ADV"),
    ("NUM", "CD", "NUM"),
    ("SYM", "$", "."),
    ("PUNCT", "``", "."),
    ("PUNCT", "-LRB-", "."),
    ("PUNCT", ":", "."),
    ("SYM", "SYM", "X"),  # NLTK maps the PTB symbol tag to X
    ("INTJ", "UH", "X"),
    ("PROPN", "NNPS", "NOUN"),
    ("CCONJ", "CC", "CONJ"),
    ("ADJ", "JJR", "ADJ"),
    # spaCy-only fine tags and missing fine tags: the UPOS table
    ("PROPN", None, "NOUN"),
    ("SCONJ", None, "ADP"),
    ("AUX", "", "VERB"),
    ("CCONJ", None, "CONJ"),
    ("PART", None, "PRT"),
    ("SYM", None, "."),
    ("PUNCT", "HYPH", "."),
    ("PUNCT", "NFP", "."),
    ("ADJ", "AFX", "ADJ"),
    ("X", "ADD", "X"),
    ("X", "XX", "X"),
    ("SPACE", "_SP", "X"),
    ("INTJ", None, "X"),
    ("NOT-A-TAG", None, "X"),
])
def test_universal_tag(upos, ptb, tag):
    assert universal_tag(upos, ptb) == tag


def test_without_spacy_every_tag_is_x():
    spans, tags = words_and_pos(CAT, use_spacy=False)
    assert spans == CAT_SPANS
    assert tags == ["X"] * 7


def test_spacy_tags_are_universal():
    pytest.importorskip("spacy")
    spans, tags = words_and_pos(CAT, use_spacy=True)
    assert spans == CAT_SPANS
    assert tags == ["DET", "NOUN", "VERB", "ADP", "DET", "NOUN", "."]
    # "to" TO -> PRT, "up" RP -> PRT (spaCy's UPOS says ADP), "because" IN -> ADP, "'s" VBZ -> VERB, "$" -> '.'
    text = "I want to give up because it's $5"
    spans, tags = words_and_pos(text, use_spacy=True)
    assert [text[a:b] for a, b in spans] == ["I", "want", "to", "give", "up", "because", "it", "'s", "$", "5"]
    assert tags == ["PRON", "VERB", "PRT", "VERB", "PRT", "ADP", "PRON", "VERB", ".", "NUM"]


def test_general_sample():
    assert SAMPLES[0] == "general"
    texts = read_texts("sample:general")
    assert len(texts) >= 320 and len(set(texts)) == len(texts)
    assert all(12 <= len(t.split()) <= 35 for t in texts)
    assert sum("." in t for t in texts) >= 0.9 * len(texts)
    assert any("St. " in t for t in texts) and any("Dr. " in t for t in texts)


def test_general_sample_tags_are_universal():
    pytest.importorskip("spacy")
    seen = set()
    for text in read_texts("sample:general"):
        spans, tags = words_and_pos(text, use_spacy=True)
        assert len(spans) == len(tags)
        seen.update(tags)
    assert seen <= set(UNIVERSAL_TAGS)
    assert set(FUNCTION_TAGS) | set(CONTENT_TAGS) | {"NUM"} <= seen
