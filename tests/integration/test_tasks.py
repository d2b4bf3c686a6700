"""Task generators with a model: patching's metric on a tiny GPT-2, and SmolLM2's tokenizer."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

import flowroutes
from flowroutes import tasks
from tests.helpers.bpe import bpe


def test_patching_prepare_uses_the_two_digit_metric():
    from flowroutes.patching import prepare

    tok = bpe()
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=16, n_layer=1, n_head=2)
    torch.manual_seed(0)
    loaded = flowroutes.load_model(GPT2LMHeadModel(cfg).eval(), tokenizer=tok)
    ex = tasks.greater_than(4, seed=1, tokenizer=tok)
    b = prepare(loaded, ex)
    assert b.kind == "prob_diff" and b.n == 4 and b.dropped == 0
    for i, e in enumerate(ex):
        yy = int(e.meta["yy"])
        assert b.plus[i] == tok.convert_tokens_to_ids([f"{y:02d}" for y in range(yy + 1, 100)])
        assert b.minus[i] == tok.convert_tokens_to_ids([f"{y:02d}" for y in range(yy + 1)])
    with pytest.raises(flowroutes.FlowroutesError, match="mix metrics"):
        prepare(loaded, ex[:1] + [tasks.TaskExample("a b", "00", "01", "c b", {})])


@pytest.mark.slow
def test_fillers_are_single_tokens_for_smollm2(smollm2):
    """SmolLM2 keeps every filler and gets the digit form: the examples are those of no tokenizer."""
    tok = smollm2.tokenizer
    for word in tasks.NAMES + tasks.PLACES + tasks.OBJECTS + tasks.GT_NOUNS:
        assert len(tok(" " + word, add_special_tokens=False)["input_ids"]) == 1, word
    ids = tok("The war lasted from the year 1732 to the year 17", add_special_tokens=False)["input_ids"]
    assert [tok.decode([i]) for i in ids[-3:]] == [" ", "1", "7"]
    assert tasks.ioi_vocabulary(tok)["kept"] == tasks.ioi_vocabulary()["total"]
    assert tasks.greater_than_form(tok) == "digit"
    assert tasks.ioi(20, seed=3, tokenizer=tok) == tasks.ioi(20, seed=3)
    assert tasks.greater_than(20, seed=3, tokenizer=tok) == tasks.greater_than(20, seed=3)
