"""Which claims' detectors have been seen to flip on planted models: a model built so that the claim is true must
get "holds", one built so that it is false "does not hold" (tests/integration/test_planted.py, run by `make test`).
The report shows each row's entry; a claim with none says so. Computes nothing.

`tests/unit/test_calibration.py` checks that this table and the planted tests name the same claims and tests.
"""

from __future__ import annotations

from dataclasses import dataclass

TESTS = "tests/integration/test_planted.py"
DOMAINS_TEST = "test_domain_claims_on_a_world_of_domains"


@dataclass(frozen=True)
class Planted:
    """The planted pair of one claim: the test that runs both models end to end, and what each plants."""

    test: str
    true: str
    false: str


PLANTED: dict[str, Planted] = {
    "previous-token-heads-lead": Planted(
        "test_previous_token_head_that_leads_its_layer_or_does_not",
        "a previous-token head (RoPE biases) whose output is 3x: the most active head of its layer by far (its "
        "runner-up affects 0.13 as many streams: relative lead 0.87)",
        "the same head at 0.5x: still a previous-token head, and ahead of the other heads of its layer by a hair "
        "only (relative lead 0.07 [-0.03, 0.15]), not by far"),
    "bottom-to-top": Planted(
        "test_blocks_more_active_at_the_bottom_or_at_the_top",
        "attention and FFN outputs scaled 3, 2, 1.5, 0.5, 0.3, 0.3 from the bottom layer up",
        "the same scales from the top layer down"),
    "last-layer-ffn": Planted(
        "test_last_ffn_highly_important_or_nearly_silent",
        "the last FFN's output 8x, the others 0.5x", "the last FFN's output 0.05x"),
    "subword-merging-heads": Planted(
        "test_subword_merging_head_in_a_bottom_layer_or_none",
        "a layer-0 head that reads the previous token and nothing of the word end: later subwords read their own "
        "word, first subwords get no influence, 60% of cases read the previous token",
        "the same head reading the word end too: a previous-token head, and no merging head"),
    "first-period-bos": Planted(
        "test_first_period_as_bos_or_as_any_token",
        "texts of three periods; the first period 20x the others' norm, attended by two heads from every later "
        "token, the later periods ordinary tokens",
        "a first period as quiet but attended by no head; a first period like any other token; every period "
        "quiet and attended (the first like the later ones); and the later periods attended like the first but "
        "otherwise ordinary (the sink's direction at the others' norm: only (d) fails)"),
    "domain-specific-heads": Planted(
        DOMAINS_TEST,
        "six domains whose words live in their own embedding dims; two layer-0 heads per domain (code, russian, "
        "addition) read values only from their domain's dims, every other head writes 1e-4 of its output",
        "the same six heads read all three domains' dims"),
    "ffn-zero-arithmetic": Planted(
        DOMAINS_TEST, "the same world; the layer-1 FFN reads only general, english and code dims",
        "the layer-1 FFN reads every dim"),
    "last-ffn-non-english": Planted(
        DOMAINS_TEST, "the same world; the last FFN reads every dim but russian's", "the last FFN reads every dim"),
    "svd-topic-tokens": Planted(
        DOMAINS_TEST, "the same world (code's words are programming words, russian's Cyrillic); each domain head "
        "writes along a direction the unembedding reads for its domain's words (the other heads keep random W_OV)",
        "the domain heads promote general words"),
    "first-vs-later-subwords": Planted(
        "test_first_and_later_subwords_apart_or_alike",
        "the subword-merging head (zero importance at first subwords)", "every token with the same embedding"),
    "input-vs-next-pos": Planted(
        "test_input_part_of_speech_or_nothing",
        "random English word sequences; words of one part of speech share an embedding",
        "every token with the same embedding"),
    "pos-function-words": Planted(
        "test_function_words_cluster_by_part_of_speech_or_everything_does",
        "determiners share an embedding, prepositions too; content words random",
        "every part of speech shares its embedding; and a random model"),
    "routes-vs-patching": Planted(
        "test_routes_hold_the_patching_circuit_or_miss_it",
        "a copy task solved by ten layer-0 heads that write big vectors along the answer's direction",
        "the same heads writing 1/500 of that, read 500x harder by the unembedding: the same logits and patching "
        "circuit, no importance in eq. 1"),
    "ioi-generic-heads": Planted(
        "test_generic_heads_common_to_task_and_contrast_or_not",
        "a copy task: four copy heads active on 5/8 of the task prompts and no contrastive one, and a "
        "previous-token head active in every prompt (the generic head)",
        "the generic head is a copy head of every candidate: active in every task prompt, in no contrastive one"),
    "greater-than-contrast": Planted(
        "test_a_contrast_that_changes_the_routes_or_one_that_does_not",
        "a copy task run twice: the 01 contrast keeps the copied word a candidate (routes unchanged), the 00 "
        "contrast starts with a word no copy head reads (routes change)",
        "both contrasts keep a candidate first word"),
    "hundred-times-faster": Planted(
        "test_patching_a_hundred_times_slower_or_not",
        "a model of known cost (every forward pass sleeps 150 ms) with 8 layers of 32 heads: the ACDC-style run "
        "makes 259 passes against the routes' 1",
        "the same cost with 2 layers of 12 heads: 27 passes"),
}


def calibration(key: str) -> dict:
    """The row's calibration for claims.json and the report."""
    got = PLANTED.get(key)
    if got is None:
        return {"planted": False, "text": "not yet checked on planted models: the verdict's detector has not been "
                                          "seen to flip"}
    return {"planted": True, "test": f"{TESTS}::{got.test}", "true": got.true, "false": got.false,
            "text": f"checked on planted models: 'holds' where planted true ({got.true}); 'does not hold' where "
                    f"planted false ({got.false})"}
