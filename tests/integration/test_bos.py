"""A tokenizer that adds a BOS (as Gemma's does): trace, task prompts and corpus rows start with it, the BOS
belongs to no word (so the first word's first token is a first subword), and the reproduce report says so."""

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

import flowroutes
from flowroutes.analyses import compute
from flowroutes.analyses.data import bos_status, tokenize_texts
from flowroutes.analyses.reproduce import bos_report
from flowroutes.analyses.rows import corpus_rows
from tests.helpers.models import VOCAB, tiny_llama

BOS = VOCAB - 2


def bos_tokenizer(add_bos: bool = True) -> PreTrainedTokenizerFast:
    """Words 'w0'..'w94', '<s>' (the BOS) and '[UNK]'; with `add_bos`, every encoding starts with '<s>'."""
    vocab = {f"w{i}": i for i in range(VOCAB - 2)}
    vocab.update({"<s>": BOS, "[UNK]": VOCAB - 1})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="<s>", add_bos_token=add_bos)


@pytest.fixture(scope="module")
def loaded():
    return flowroutes.load_model(tiny_llama(), tokenizer=bos_tokenizer())


def test_trace_and_task_prompts_start_with_bos(loaded):
    assert flowroutes.trace(loaded, "w1 w2 w3").input_ids.tolist() == [BOS, 1, 2, 3]
    batch = flowroutes.trace(loaded, ["w1 w2", "w4 w5 w6"], batch_size=2)  # how task prompts are traced
    assert [t.input_ids[0] for t in batch] == [BOS, BOS]
    assert flowroutes.trace(loaded, "w1 w2", add_special_tokens=False).input_ids.tolist() == [1, 2]


def test_corpus_rows_start_with_a_bos_of_no_word(loaded):
    texts = ["w1 w2 w3", "w4 w5 w6 w7"]
    tok = tokenize_texts(loaded.tokenizer, texts, max_tokens=64)
    assert [ids[0] for ids in tok.ids] == [BOS, BOS] and tok.offsets[0][0] == (0, 0)
    items = [{"doc": i, "domain": "d", "text": t, "ids": ids, "offsets": offs}
             for i, (t, ids, offs) in enumerate(zip(tok.texts, tok.ids, tok.offsets))]
    rows = corpus_rows(loaded, items, batch_size=2, use_spacy=False).to_pydict()
    assert rows["token_id"][:4] == [BOS, 1, 2, 3] and rows["position"][:4] == [0, 1, 2, 3]
    # the BOS has no word and no labels; the first word's token is a first subword, not a later one of the BOS's word
    assert (rows["word"][0], rows["subword"][0], rows["pos_in"][0]) == ("", "", "")
    assert rows["word"][1:4] == ["w1", "w2", "w3"] and rows["subword"][1:4] == ["first"] * 3
    assert rows["pos_next"][0] != ""  # the BOS's prediction is the first word's
    assert np.isnan(rows["same_word"][1]).all()  # no earlier subword of w1: the BOS is not one
    words = compute.token_words(tok.offsets[0], texts[0], compute.word_spans(texts[0]))
    assert words == [-1, 0, 1, 2]


def test_report_states_whether_a_bos_was_prepended(loaded):
    tok = tokenize_texts(loaded.tokenizer, ["w1 w2 w3"], max_tokens=64)
    items = [{"doc": 0, "domain": "d", "text": "w1 w2 w3", "ids": tok.ids[0], "offsets": tok.offsets[0]}]
    corpus = corpus_rows(loaded, items, use_spacy=False)
    bos = bos_report(loaded.tokenizer, corpus, ["w1 w2", "w3 w4"])
    assert bos["prepended"] and bos["tokenizer_adds"] and bos["token"] == "<s>"
    assert bos["starts_with_bos"] == {"corpus texts": [1, 1], "task prompts": [2, 2]}
    assert bos["text"] == "BOS <s> prepended (the tokenizer adds it): 1 of 1 corpus texts, 2 of 2 task prompts " \
                          "start with it"
    plain = bos_status(bos_tokenizer(add_bos=False), {"task prompts": [[1, 2]]})
    assert not plain["prepended"] and plain["text"].startswith("no BOS prepended")
