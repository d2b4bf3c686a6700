"""Appendix D's routes (fig. 14) on a tiny model; the statistics on hand-built rows are in tests/unit."""

import numpy as np
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

import flowroutes
from flowroutes.analyses import periods, rows
from flowroutes.analyses.base import Context
from flowroutes.analyses.run import Options
from tests.helpers.models import VOCAB, tiny_llama


def run(table, loaded, n_layers, n_heads):
    ctx = Context(table, n_layers, n_heads, Options(n_boot=200, seed=0), {"texts": 4}, loaded)
    res = periods.ANALYSIS.summarize(ctx)
    return res, periods.ANALYSIS.claims({"periods": res})


def test_example_routes_with_a_tiny_model():

    vocab = {f"w{i}": i for i in range(VOCAB - 2)}
    vocab.update({".": VOCAB - 2, "[UNK]": VOCAB - 1})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    loaded = flowroutes.load_model(tiny_llama(), tokenizer=PreTrainedTokenizerFast(tokenizer_object=tok,
                                                                                    unk_token="[UNK]"))
    n_layers, n_heads = loaded.n_layers, loaded.n_heads
    cols = {"doc": [], "position": [], "token": [], "first_period": [], "vector": []}
    # three periods a text: texts of fewer are not read (periods.MIN_PERIODS)
    for doc, toks in ((0, ["w1", "w2", ".", "w3", ".", "w4", "."]), (1, ["w5", "zzz", ".", "w4", ".", "w6", "."])):
        for p, t in enumerate(toks):
            cols["doc"].append(doc)
            cols["position"].append(p)
            cols["token"].append(t)
            cols["first_period"].append(2)
            cols["vector"].append(np.full(n_layers * n_heads + n_layers, 0.1, dtype=np.float32))
    res, _ = run(rows.table_from_columns(cols), loaded, n_layers, n_heads)
    shown, skipped = res.summary["routes (fig. 14)"]
    assert skipped == {"doc": 1, "skipped": "token 'zzz' is not one token of this tokenizer on its own"}
    assert shown["doc"] == 0 and shown["first_period"] == 2 and shown["prefix"] == "w1w2."
    (rt,) = res.data["routes"]
    assert rt.token_texts == ["w1", "w2", "."] and rt.position == 2
    assert "periods-routes-doc0" in res.figures
    expected = periods.own_stream_layers(flowroutes.trace(loaded, input_ids=[1, 2, VOCAB - 2]).routes(0.01, 2), 2)
    assert shown["layers with a block on its own stream"] == len(expected)
    assert shown["untouched layers (no block on its own stream)"] == [x for x in range(n_layers) if x not in expected]
