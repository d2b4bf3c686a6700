"""Attention weights cost a second forward pass: only analyses that read them (periods) pay for it."""

import numpy as np
import pytest

import flowroutes
from flowroutes.analyses import rows
from flowroutes.analyses.run import analyze
from tests.helpers.models import tiny_llama, word_tokenizer


@pytest.fixture(scope="module")
def llama():
    return flowroutes.load_model(tiny_llama(), tokenizer=word_tokenizer())


@pytest.fixture
def counted(monkeypatch):
    """How many texts `rows.mean_attention` ran its forward pass on."""
    calls = []
    original = rows.mean_attention

    def counting(loaded, id_lists, batch_size):
        calls.append(len(id_lists))
        return original(loaded, id_lists, batch_size)

    monkeypatch.setattr(rows, "mean_attention", counting)
    return calls


def _corpus(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(["w1 w2 . w3 w4 w5", "w7 w8 w9 . w2", "w3 w3 w4 w5 . w6 w7"]) + "\n")
    return [str(path)]


def test_vectors_runs_no_attention_pass(llama, counted, tmp_path):
    result = analyze("vectors", llama, data=_corpus(tmp_path), out=None, spacy=False, progress=False, n_boot=50)
    assert sum(counted) == 0
    table = result.table
    assert table.num_rows > 0
    assert np.isnan(np.stack(table.column("attn_first").to_pylist())).all()


def test_periods_measures_attention_on_every_text(llama, counted, tmp_path):
    result = analyze("periods", llama, data=_corpus(tmp_path), out=None, spacy=False, progress=False, n_boot=50)
    assert sum(counted) == 3
    assert result.table.num_rows > 0
