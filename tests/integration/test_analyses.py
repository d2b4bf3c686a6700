"""Analyses on tiny models and SmolLM2, checked against independent slow paths; hand-built cases: tests/unit."""


import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import flowroutes
from flowroutes.analyses import compute
from flowroutes.analyses.rows import corpus_rows
from flowroutes.analyses.run import analyze
from tests.helpers.models import tiny_gpt2, tiny_llama, word_tokenizer
from tests.helpers.tolerances import FEW_F32_ABS, OTHER_PATH, SDPA_PROBS_ABS


def _texts(n, length=12, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(f"w{v}" for v in rng.integers(0, 90, length - i % 3)) for i in range(n)]


@pytest.fixture(scope="module")
def llama():
    return flowroutes.load_model(tiny_llama(), tokenizer=word_tokenizer())


def test_importance_vector_matches_a_loop(llama):
    tr = flowroutes.trace(llama, "w1 w5 w9 w2 w7")
    vec = compute.importance_vectors(tr)
    n_layers, n_heads = tr.n_layers, tr.n_heads
    for p in range(tr.n_tokens):
        expected = [float(sum(tr.attention[layer, h, p, j] for j in range(p + 1)))
                    for layer in range(n_layers) for h in range(n_heads)]
        expected += [float(tr.ffn[layer, p]) for layer in range(n_layers)]
        np.testing.assert_allclose(vec[p], expected, rtol=0, atol=FEW_F32_ABS)
    assert compute.vector_names(n_layers, n_heads)[n_heads + 1] == "L1H1"


def _force_previous_token(monkeypatch, forced: dict[int, list[int]]):
    """Make heads forced[layer] of a Llama attend only to the previous token (position 0 to itself)."""
    from transformers.models.llama import modeling_llama

    original = modeling_llama.eager_attention_forward

    def forced_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        _out, weights = original(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
        heads = forced.get(module.layer_idx, [])
        if heads:
            n = weights.shape[-1]
            prev = torch.zeros(n, n, dtype=weights.dtype)
            prev[torch.arange(n), (torch.arange(n) - 1).clamp(min=0)] = 1.0
            weights = weights.clone()
            weights[:, heads] = prev
        values = modeling_llama.repeat_kv(value, module.num_key_value_groups)
        return torch.matmul(weights, values).transpose(1, 2).contiguous(), weights

    monkeypatch.setattr(modeling_llama, "eager_attention_forward", forced_attention)


def test_forced_previous_token_heads_are_found(monkeypatch, tmp_path):
    forced = {0: [1], 1: [0, 3]}
    _force_previous_token(monkeypatch, forced)
    loaded = flowroutes.load_model(tiny_llama(seed=1), tokenizer=word_tokenizer())
    tr = flowroutes.trace(loaded, "w1 w2 w3 w4 w5 w6")
    assert np.allclose(tr.attention[0, 1, 3, [0, 1, 3]], 0) and tr.attention[0, 1, 3, 2] > 0
    data = tmp_path / "d.txt"
    data.write_text("\n".join(_texts(12, 14)))
    result = analyze("head-roles", loaded, data=[str(data)], spacy=False, progress=False, out=tmp_path / "o")
    assert pq.read_table(tmp_path / "o" / "head_roles.parquet").num_rows == result.table.num_rows
    assert pq.read_table(tmp_path / "o" / "head_roles_per_head.parquet").num_rows == loaded.n_layers * loaded.n_heads
    found = {h["head"] for h in result.summary["previous_token_heads"]}
    assert found == {"L0H1", "L1H0", "L1H3"}
    found = {(0, 1), (1, 0), (1, 3)}
    roles = result.extra_tables["head_roles_per_head"].to_pydict()
    freq = dict(zip(zip(roles["layer"], roles["head"]), roles["previous_frequency"]))
    assert min(freq[(0, 1)], freq[(1, 0)], freq[(1, 3)]) >= 0.7 > max(v for k, v in freq.items() if k not in found)
    # wherever a forced head has any influence, all of it is on the previous token
    prev = np.array(result.table.column("previous").to_pylist(), dtype=float)  # [N, L*H]
    pos = np.array(result.table.column("position").to_pylist())
    for flat in (1, loaded.n_heads + 0, loaded.n_heads + 3):
        vals = prev[pos > 0, flat]
        assert np.allclose(vals[~np.isnan(vals)], 1.0, rtol=0, atol=FEW_F32_ABS) and (~np.isnan(vals)).mean() >= 0.7


def test_corpus_rows_labels_and_batching(llama):
    texts = ["w1 w2 w3", "w4 w5 w6 w7 w8"]
    tok = llama.tokenizer
    items = []
    for i, t in enumerate(texts):
        enc = tok(t, return_offsets_mapping=True)
        items.append({"doc": i, "domain": "d", "text": t, "ids": enc["input_ids"], "offsets": enc["offset_mapping"]})
    table = corpus_rows(llama, items, batch_size=2, use_spacy=False)
    rows = table.to_pydict()
    assert rows["position"] == [0, 1, 2, 0, 1, 2, 3, 4]
    assert rows["next_token"][:3] == ["w2", "w3", ""] and rows["word"][4] == "w5"
    assert set(rows["subword"]) == {"first"}
    alone = flowroutes.trace(llama, "w4 w5 w6 w7 w8")
    np.testing.assert_allclose(rows["vector"][5], compute.importance_vectors(alone)[2], rtol=0, atol=OTHER_PATH)
    # a head's strongest sub-edge into each stream, for stream activity at any tau (sec. 4 "Setting")
    np.testing.assert_allclose(rows["head_max"][7], alone.attention[:, :, 4].max(axis=-1).ravel(), rtol=0,
                               atol=OTHER_PATH)
    # the first token's share of the attention block's contribution into position 4, per layer
    block = alone.attention[:, :, 4].sum(axis=1)  # [L, T]
    np.testing.assert_allclose(rows["contrib_first"][7], block[:, 0] / block.sum(axis=-1), rtol=OTHER_PATH)


def test_task_heads_table_and_report(tmp_path):
    loaded = flowroutes.load_model(tiny_gpt2(), tokenizer=word_tokenizer())
    result = analyze("task-heads", loaded, out=tmp_path, n=4, task="ioi", shard_size=3, progress=False)
    table = pq.read_table(tmp_path / "task_heads.parquet").to_pydict()
    assert table["variant"] == ["task"] * 3 + ["contrastive"] * 3 + ["task"] + ["contrastive"]
    assert table["example"] == [0, 1, 2, 0, 1, 2, 3, 3]
    # the frequency table equals a direct recount from the routes of each prompt
    ex = flowroutes.analyses.ioi(4)
    direct = np.zeros((loaded.n_layers, loaded.n_heads))
    for e in ex:  # tau = 0.03 as in figs. 6-7
        for layer, head in flowroutes.trace(loaded, e.prompt).routes(0.03).active_heads:
            direct[layer, head] += 0.25
    freq = result.extra_tables["task_heads_frequency"].to_pydict()
    np.testing.assert_allclose(np.array(freq["task"]).reshape(direct.shape), direct)
    html = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in html and (tmp_path / "task-heads.svg").exists()


@pytest.mark.slow
def test_smollm2_labels_and_task_probabilities(smollm2, tmp_path):
    data = tmp_path / "s.txt"
    data.write_text("When Mary and John went to the store, John gave a drink to Mary.\n")
    result = analyze("vectors", smollm2, data=[str(data)], progress=False, tsne_max=0)
    rows = result.table.to_pydict()
    by_token = dict(zip(rows["token"], zip(rows["pos_in"], rows["pos_next"], rows["word"], rows["subword"])))
    # Petrov et al.'s universal tagset, as the paper (NLTK): proper nouns are NOUN, punctuation '.'
    assert by_token[" Mary"][0] == "NOUN" and by_token["When"][1] == "NOUN" and by_token["When"][0] == "ADV"
    assert by_token[" store"][:3] == ("NOUN", ".", "store") and by_token[" drink"][1] == "ADP"
    assert rows["pos_next"][-1] == "" and set(rows["subword"]) == {"first"}
    assert len(rows["vector"][0]) == 30 * 9 + 30
    task = analyze("task-heads", smollm2, task="ioi", n=2, progress=False)
    t = task.table.to_pydict()
    ex = flowroutes.analyses.ioi(2)[0]
    ids = smollm2.tokenizer(ex.prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        probs = torch.softmax(smollm2.model(input_ids=ids).logits[0, -1].float(), -1)
    p_io = float(probs[smollm2.tokenizer(ex.answer, add_special_tokens=False)["input_ids"][0]])
    p_s = float(probs[smollm2.tokenizer(ex.wrong, add_special_tokens=False)["input_ids"][0]])
    fiftieth = float(probs.topk(200).values[-1])
    in_top = p_s >= fiftieth  # probabilities are read from the top-200 next tokens; outside them they count as 0
    assert t["p_answer"][0] == pytest.approx(p_io, abs=SDPA_PROBS_ABS)
    assert t["metric"][0] == pytest.approx(p_io - (p_s if in_top else 0.0), abs=SDPA_PROBS_ABS)
    assert abs(t["metric"][0] - (p_io - p_s)) <= fiftieth + SDPA_PROBS_ABS
