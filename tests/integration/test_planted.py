"""Known answers for the claims report (issue 18): for each claim, a tiny model whose weights plant the claim true
and one that plants it false (tests/helpers/planted.py), run end to end as `flowroutes reproduce` runs it: model ->
traces -> rows -> the analysis's summary -> the claim's verdict. Each test fails if either verdict is wrong.

The planted parts are formulas of the weights (no training); each test first checks that the planted part is
there (an attention pattern, a scale), so that a verdict is never compared with a model that missed its plan.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import flowroutes
from flowroutes.capture import run_with_capture
from tests.helpers.models import word_tokenizer
from tests.helpers.planted import (
    LATER_PERIOD,
    POS_WORDS,
    copy_examples,
    copy_model,
    corpus_claims,
    domain_head,
    domain_model,
    domain_texts,
    domain_tokenizer,
    ffn_reads_only,
    like_the_sink,
    merging_head,
    period_texts,
    period_tokenizer,
    planted_llama,
    pos_embeddings,
    pos_texts,
    pos_tokenizer,
    promote,
    quiet_heads,
    reads_only,
    relative_head,
    same_embeddings,
    scale_attention,
    scale_ffn,
    scale_head,
    sink_token,
    subword_texts,
    subword_tokenizer,
    task_claims,
    unlike_candidates,
    word_ends_apart,
    word_texts,
)

TEXTS = word_texts(40)


def attention_of(model, tokenizer, text: str, layer: int) -> np.ndarray:
    """[H, T, T] the attention weights of `layer` on `text`."""
    loaded = flowroutes.load_model(model, tokenizer=tokenizer)
    got = {}
    ids = torch.as_tensor(tokenizer(text)["input_ids"])
    run_with_capture(loaded, ids, lambda cap: got.setdefault(cap.layer, cap.alpha.numpy()))
    return got[layer]


def verdicts(claims: dict, key: str) -> str:
    claim = claims[key]
    print(f"{key}: {claim.verdict}; " + "; ".join(c.check() for c in claim.conditions))
    return claim.verdict


# --- 4.3: previous-token heads lead their layer -----------------------------------------------------------------
@pytest.mark.parametrize("planted, factor, other", [("holds", 3.0, 1.0), ("does not hold", 0.5, 1.0)])
def test_previous_token_head_that_leads_its_layer_or_does_not(planted, factor, other):
    """L0H1 attends to the previous token (RoPE biases); its output is scaled by `factor`: 3x, it is the most
    active head of its layer by far (tau = 0.01 * 33 / 5 on 4 heads; relative lead 0.87, the runner-up at most half
    as active needed); 0.5x, it is still a previous-token head (> 1/2 of its influence on the previous token in >=
    70% of cases) but ahead of its layer's next head by a hair only (relative lead 0.07)."""
    tok = word_tokenizer()
    model = planted_llama(len(tok))
    relative_head(model, 0, 1, offset=1)
    scale_head(model, 0, 1, factor)
    alpha = attention_of(model, tok, TEXTS[0], 0)[1]  # [T, T]
    assert (alpha.argmax(-1)[1:] == np.arange(alpha.shape[0] - 1)).all() and alpha.max(-1).min() > 0.99
    claims = corpus_claims(model, tok, TEXTS, ("head-roles", "bottom-to-top"))
    assert verdicts(claims, "previous-token-heads-lead") == planted


# --- 4.2: bottom-to-top activity and the last FFN ----------------------------------------------------------------
FALLING = [3.0, 2.0, 1.5, 0.5, 0.3, 0.3]


@pytest.mark.parametrize("planted, scales", [("holds", FALLING), ("does not hold", FALLING[::-1])])
def test_blocks_more_active_at_the_bottom_or_at_the_top(planted, scales):
    """Six layers whose attention and FFN outputs are scaled by `scales`: falling from the bottom, the heads affect
    fewer streams and the FFNs matter less from layer 1 to layer 4 (the slopes over layers 1-4 are below 0);
    rising, the reverse."""
    tok = word_tokenizer()
    model = planted_llama(len(tok), n_layers=6)
    for layer, s in enumerate(scales):
        scale_attention(model, layer, s)
        scale_ffn(model, layer, s)
    assert verdicts(corpus_claims(model, tok, TEXTS, ("bottom-to-top",)), "bottom-to-top") == planted


@pytest.mark.parametrize("planted, last", [("holds", 8.0), ("does not hold", 0.05)])
def test_last_ffn_highly_important_or_nearly_silent(planted, last):
    """The last layer's FFN output scaled by 8 (the other FFNs by 0.5), or by 0.05."""
    tok = word_tokenizer()
    model = planted_llama(len(tok), n_layers=6)
    for layer in range(6):
        scale_ffn(model, layer, last if layer == 5 else (0.5 if last > 1 else 1.0))
    assert verdicts(corpus_claims(model, tok, TEXTS, ("bottom-to-top",)), "last-layer-ffn") == planted


# --- 4.3: subword-merging heads in the bottom layers -----------------------------------------------------------
@pytest.mark.parametrize("planted", ["holds", "does not hold"])
def test_subword_merging_head_in_a_bottom_layer_or_none(planted):
    """Words of 1-2 letters ending in 'z' (' abz' -> ' a', 'b', 'z'). L0H2 reads the previous token in both models.
    Planted true, it reads nothing of 'z' (W_V blind to the word end's dimensions): later subwords put all their
    influence on their own word, first subwords (which read the 'z' before them) have none, and 60% < 70% of the
    cases read the previous token, so it is a merging head, not a previous-token head. Planted false, 'z' has a
    value like any token: the head is a previous-token head, and no head merges subwords."""
    tok = subword_tokenizer()
    texts = subword_texts(40)
    model = planted_llama(len(tok))
    if planted == "holds":
        merging_head(model, tok, 0, 2)
    else:
        word_ends_apart(model, tok)
        relative_head(model, 0, 2, offset=1)
    alpha = attention_of(model, tok, texts[0], 0)[2]
    assert (alpha.argmax(-1)[1:] == np.arange(alpha.shape[0] - 1)).all() and alpha.max(-1).min() > 0.99
    claims = corpus_claims(model, tok, texts, ("head-roles", "bottom-to-top"))
    assert verdicts(claims, "subword-merging-heads") == planted
    if planted == "holds":  # and it is not a previous-token head: there is none
        assert claims["previous-token-heads-lead"].verdict == "cannot be tested"


# --- app. D: the first period acts as BOS ----------------------------------------------------------------------
@pytest.mark.parametrize("planted, quiet, attended, later, later_attended", [
    ("holds", True, True, "P", False), ("does not hold", True, False, "P", False),
    ("does not hold", False, False, "P", False), ("does not hold", True, True, ".", False),
    ("does not hold", True, True, "P", True)])
def test_first_period_as_bos_or_as_any_token(planted, quiet, attended, later, later_attended):
    """Texts of three periods: a first '.' and two later ones, `later` ('P', a token of its own that decodes to
    '.', or '.' itself). `quiet`: the '.' token's embedding is 20x the others' norm, so its own stream ignores its
    blocks; `attended`: heads L0H0 and L1H0 attend to it from every later position (a key only it has), output 3x.
    Planted true: both, for the first period only; planted false: quiet but never attended, an ordinary token,
    every period a sink (the first period is like the later ones), or the later periods 'P' attended like the
    first but ordinary otherwise (`later_attended`: the sink's direction at the others' norm; L0H0 then attends to
    the latest period, L1H0 still to the first: (a), (b), (c) hold, (d) does not)."""
    tok = period_tokenizer()
    texts = period_texts(40, later=later)
    period = tok.convert_tokens_to_ids(".")
    model = planted_llama(len(tok))
    if quiet:
        sink_token(model, period, [(0, 0), (1, 0)] if attended else [])
    if later_attended:
        like_the_sink(model, period, tok.convert_tokens_to_ids(LATER_PERIOD))
    if attended:
        for layer in (0, 1):
            scale_head(model, layer, 0, 3.0)
    alpha = attention_of(model, tok, texts[0], 0)[0]  # [T, T]
    ids = tok(texts[0])["input_ids"]
    q = ids.index(period)
    assert [tok.decode([i]) for i in ids].count(".") == 3
    q2 = q + 1 + [tok.decode([i]) for i in ids[q + 1:]].index(".")  # the second period
    assert (alpha[q:q2, q].min() > 0.99) == attended  # up to the second period (a second sink where later='.')
    later_periods = [p for p in range(q + 1, len(ids)) if tok.decode([ids[p]]) == "."]
    assert (alpha[-1, later_periods].sum() > 0.99) == (later_attended or later == ".")  # L0H0 at the last token
    claims = corpus_claims(model, tok, texts, ("periods",))
    assert verdicts(claims, "first-period-bos") == planted
    if later_attended:  # only (d) fails: the first period gets less than a later period
        assert [c.met for c in claims["first-period-bos"].conditions] == [True, True, True, False]


# --- 5.1, 5.2: domains ---------------------------------------------------------------------------------------------
DOMAIN_HEADS = {"code": [(0, 0), (0, 1)], "russian": [(0, 2), (0, 3)], "addition": [(0, 4), (0, 5)]}
#: each claim of the domain world, and what its planted-false model changes
DOMAIN_CLAIMS = {"domain-specific-heads": "shared", "ffn-zero-arithmetic": "ffn_reads_all",
                 "last-ffn-non-english": "last_reads_all", "svd-topic-tokens": "promote_general"}


def domain_world(change: str | None = None):
    """Six domains whose words live in their own embedding dims (general, english, code, russian, addition,
    subtraction; 3 layers of 8 heads). Planted true: two layer-0 heads per domain (code, russian, addition) read the
    previous word's values only from their domain's dims (the other heads write 1e-4 of their output), and write
    along a direction the unembedding reads for their domain's words; the layer-1 FFN reads only general, english
    and code dims (so it has nothing to do on addition and subtraction), the last FFN all but russian's.
    `change` plants one claim false: "shared" (the six heads read all three domains), "ffn_reads_all",
    "last_reads_all", "promote_general" (the heads promote general words)."""
    model = domain_model()
    for domain, heads in DOMAIN_HEADS.items():
        for layer, head in heads:
            domain_head(model, layer, head, ("code", "russian", "addition") if change == "shared" else (domain,))
            promote(model, layer, head, "general" if change == "promote_general" else domain)
    quiet_heads(model, {h for heads in DOMAIN_HEADS.values() for h in heads})
    if change != "ffn_reads_all":
        ffn_reads_only(model, 1, ("general", "english", "code"))
    if change != "last_reads_all":
        ffn_reads_only(model, 2, ("general", "english", "code", "addition", "subtraction"))
    scale_ffn(model, 1, 3.0)
    scale_ffn(model, 2, 3.0)
    return model


@pytest.fixture(scope="module")
def domain_claims_true():
    return corpus_claims(domain_world(), domain_tokenizer(), domain_texts(30), ("domains", "svd"))


@pytest.mark.parametrize("planted", ["holds", "does not hold"])
@pytest.mark.parametrize("key", sorted(DOMAIN_CLAIMS))
def test_domain_claims_on_a_world_of_domains(domain_claims_true, key, planted):
    tok = domain_tokenizer()
    if planted == "holds":
        claims = domain_claims_true
        alpha = attention_of(domain_world(), tok, domain_texts(1)["code"][0], 0)[0]
        assert alpha.max(-1).min() > 0.99  # the planted heads read the previous word
    else:
        claims = corpus_claims(domain_world(DOMAIN_CLAIMS[key]), tok, domain_texts(30), ("domains", "svd"))
    assert verdicts(claims, key) == planted


# --- 4.1: component importance vectors ---------------------------------------------------------------------------
@pytest.mark.parametrize("planted", ["holds", "does not hold"])
def test_first_and_later_subwords_apart_or_alike(planted):
    """Planted true: the subword-merging head (its importance is zero at first subwords, high at later ones);
    planted false: every token has the same embedding, so no component can tell a first subword from a later one."""
    tok = subword_tokenizer()
    model = planted_llama(len(tok))
    if planted == "holds":
        merging_head(model, tok, 0, 2)
    else:
        same_embeddings(model)
    assert verdicts(corpus_claims(model, tok, subword_texts(40), ("vectors",)), "first-vs-later-subwords") == planted


@pytest.mark.parametrize("planted", ["holds", "does not hold"])
def test_input_part_of_speech_or_nothing(planted):
    """Random sequences of English words that spaCy tags by the word alone (the next word's part of speech is
    independent of the current one's). Planted true: words of one part of speech share an embedding, so the
    components see the input's part of speech; planted false: every token has the same embedding."""
    tok = pos_tokenizer()
    model = planted_llama(len(tok))
    if planted == "holds":
        pos_embeddings(model, tok)
    else:
        same_embeddings(model)
    claims = corpus_claims(model, tok, pos_texts(40), ("vectors",), spacy=True)
    assert verdicts(claims, "input-vs-next-pos") == planted


@pytest.mark.parametrize("planted, shared", [("holds", ("DET", "ADP")), ("does not hold", tuple(POS_WORDS)),
                                             ("does not hold", ())])
def test_function_words_cluster_by_part_of_speech_or_everything_does(planted, shared):
    """Planted true: determiners share an embedding, and so do prepositions; content words keep random ones.
    Planted false: every part of speech shares its embedding (content words cluster too), or none does (a random
    model: function words are few types, which a k-NN over same-type neighbours took for clusters)."""
    tok = pos_tokenizer()
    model = planted_llama(len(tok))
    pos_embeddings(model, tok, shared)
    claims = corpus_claims(model, tok, pos_texts(40), ("vectors",), spacy=True)
    assert verdicts(claims, "pos-function-words") == planted


# --- 3.1: routes against patching ----------------------------------------------------------------------------------
@pytest.mark.parametrize("planted, write, unembed", [("holds", 1.0, 1.0), ("does not hold", 0.002, 500.0)])
def test_routes_hold_the_patching_circuit_or_miss_it(tmp_path, planted, write, unembed):
    """A copy task (the answer is the prompt's first word) that ten layer-0 heads solve: they read the first word
    and write along its answer direction, which nothing else writes. Head patching finds the ten in both models.
    Planted true: they write big vectors (they are in the routes). Planted false: they write 1/500 of that, read
    500x harder by the unembedding: the same logits, but eq. 1 gives them no importance, so the routes miss the
    circuit patching finds."""
    from flowroutes.analyses.reproduce import patching_claims, patching_summary
    from flowroutes.analyses.run import make_options

    tok = word_tokenizer()
    heads = [(0, h) for h in range(10)]
    examples = copy_examples(16)
    loaded = flowroutes.load_model(copy_model(heads, write, unembed), tokenizer=tok)
    tr = flowroutes.trace(loaded, examples[0].prompt)
    assert tr.top_tokens[-1][0] == examples[0].answer  # the copy works in both models
    saved = patching_summary(loaded, tmp_path, 16, make_options(None, progress=False), full=False,
                             examples=examples)
    circuit = set(np.argsort(-np.abs(saved["effect"]))[:10].tolist())
    assert circuit == set(range(10))  # patching's circuit is the ten copy heads (flat index = head in layer 0)
    claims = {c.key: c for c in patching_claims(saved)}
    assert verdicts(claims, "routes-vs-patching") == planted


# --- 3.1: generic heads vanish against the contrastive prompts -------------------------------------------------
@pytest.mark.parametrize("planted", ["holds", "does not hold"])
def test_generic_heads_common_to_task_and_contrast_or_not(planted):
    """The copy task; contrastive prompts start with a word no copy head reads (w8..w15, made orthogonal to the
    candidates). Four copy heads read only candidates w0..w4: active in 5/8 of the task prompts and in no
    contrastive one (task-specific, not generic). Planted true: L0H4 reads the previous token in every prompt
    (generic in both). Planted false: L0H4 is a copy head for every candidate: active in every task prompt, in no
    contrastive one, so the one generic head does not vanish in the difference. Other heads write 1e-4."""
    tok = word_tokenizer()
    copiers = [(0, h) for h in range(4)]
    model = copy_model(copiers + ([(0, 4)] if planted == "does not hold" else []), 1.0, 1.0)
    for _, head in copiers:
        reads_only(model, 0, head, range(5))
    if planted == "holds":
        relative_head(model, 0, 4, offset=1)
        scale_head(model, 0, 4, 3.0)
    quiet_heads(model, set(copiers) | {(0, 4)})
    unlike_candidates(model, range(8, 16))
    claims = task_claims(model, tok, {"ioi": copy_examples(48, contrast_from=8)})
    assert verdicts(claims, "ioi-generic-heads") == planted


# --- 3.2: which contrast changes the routes ---------------------------------------------------------------------
@pytest.mark.parametrize("planted, contrast_00", [("holds", 8), ("does not hold", 0)])
def test_a_contrast_that_changes_the_routes_or_one_that_does_not(planted, contrast_00):
    """The copy task, ten copy heads (the model of the routes-vs-patching pair), run twice as the claim's two
    greater-than runs. The "01" contrast starts with another candidate word: the copy heads stay active, the
    routes do not change. The "00" contrast: planted true, it starts with a word no copy head reads (the routes
    change); planted false, with a candidate again (as the 01 one)."""
    tok = word_tokenizer()
    model = copy_model([(0, h) for h in range(10)], 1.0, 1.0)
    unlike_candidates(model, range(8, 16))
    runs = {"greater-than": copy_examples(32, contrast_from=0),
            "greater-than-00": copy_examples(32, seed=1, contrast_from=contrast_00)}
    assert verdicts(task_claims(model, tok, runs), "greater-than-contrast") == planted


# --- 3.3: the speed claim on models of known cost ---------------------------------------------------------------
@pytest.mark.parametrize("planted, n_layers, n_heads", [("holds", 8, 32), ("does not hold", 2, 12)])
def test_patching_a_hundred_times_slower_or_not(tmp_path, planted, n_layers, n_heads):
    """Models of known cost: every forward pass sleeps 150 ms, so a run's wall time is its pass count times 150 ms
    plus a little compute. The ACDC-style run over heads makes one pass per head and example batch (plus three);
    the routes make one. Planted true: 8 layers of 32 heads, 259 passes of ACDC against the routes' 1 (a ratio
    near 190 on a quiet machine, about 130 with the routes' compute slowed 3x by other work). Planted false: 2
    layers of 12 heads, 27 passes (a ratio near 20). The pass counts are asserted first: they are what makes the
    ratio known. (With a 50 ms sleep the planted-true ratio fell below 100 while other test runs shared the CPU.)"""
    from flowroutes.analyses.reproduce import patching_claims, patching_summary
    from flowroutes.analyses.run import make_options

    tok = word_tokenizer()
    model = copy_model([(0, h) for h in range(10)], 1.0, 1.0, sleep=0.15, n_layers=n_layers, n_heads=n_heads)
    loaded = flowroutes.load_model(model, tokenizer=tok)
    saved = patching_summary(loaded, tmp_path, 2, make_options(None, progress=False), full=False,
                             examples=copy_examples(2))
    passes = saved["summary"]["forward_passes"]
    assert passes["routes"] == 1 and passes["acdc_style"] == n_layers * n_heads + 3
    claims = {c.key: c for c in patching_claims(saved)}
    assert verdicts(claims, "hundred-times-faster") == planted
