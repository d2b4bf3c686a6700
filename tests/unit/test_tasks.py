"""Task generators and metrics (flowroutes.tasks), on tokenizers built by hand (tests/helpers/bpe.py); never
downloads one. With a model: tests/integration/test_tasks.py."""

import pytest

import flowroutes
from flowroutes import tasks
from tests.helpers.bpe import G, bpe

NAMES_KEPT = ["Mary", "John", "Tom", "Ben", "Kate"]  # in NAMES order
PLACES_KEPT, OBJECTS_KEPT = ["park", "zoo"], ["pen", "key"]  # in PLACES / OBJECTS order


def pieces(tok, text: str) -> list[str]:
    return tok.convert_ids_to_tokens(tok.encode(text, add_special_tokens=False))


def gt_example(yy: str, form: str) -> tasks.TaskExample:
    meta = {"task": "greater-than", "form": form, "yy": yy}
    if form == "digit":
        meta["first_digit"] = int(yy) // 10
    return tasks.TaskExample("...", "", "", "...", meta)


def test_hand_built_tokenizers_split_as_intended():
    tok = bpe(["Mary", "zoo"], whole_years=["1700"])
    assert pieces(tok, "year 1732 to 1700 Mary zoo Jo") == [
        "y", "e", "a", "r", G + "17", "32", G, "t", "o", G + "1700", G + "Mary", G + "zoo", G, "J", "o"]
    assert pieces(bpe(years=False), " 1732") == [G, "1", "7", "3", "2"]


# --- IOI ---------------------------------------------------------------------------------------------------------


def test_ioi_orders_and_contrastive():
    ex = tasks.ioi(40, seed=3)
    assert [e.meta["order"] for e in ex[:4]] == ["ABBA", "BABA", "ABBA", "BABA"]
    for e in ex:
        a, b, c = e.meta["io"], e.meta["subject"], e.meta["third"]
        assert len({a, b, c}) == 3
        assert e.answer == " " + a and e.wrong == " " + b
        assert e.prompt.count(b) == 2 and e.prompt.count(a) == 1
        assert e.contrastive.count(b) == 1 and e.contrastive.count(c) == 1
        first = e.prompt.index(a) < e.prompt.index(b)
        assert first == (e.meta["order"] == "ABBA")
        # the contrastive prompt differs from the prompt only in the second-clause subject
        assert e.contrastive.replace(f" {c} ", f" {b} ", 1) == e.prompt or e.contrastive.replace(c, b) == e.prompt
    assert len({e.meta["template"] for e in ex}) > 4 and len({e.meta["io"] for e in ex}) > 20
    assert tasks.ioi(5, seed=1) == tasks.ioi(5, seed=1) and tasks.ioi(5, seed=1) != tasks.ioi(5, seed=2)


def test_ioi_first_example_by_hand():
    e = tasks.ioi(1, seed=0)[0]
    m = e.meta
    template = tasks.IOI_TEMPLATES[m["template"]]
    assert e.prompt == template.format(A=m["io"], B=m["subject"], S=m["subject"], place=m["place"], obj=m["object"])


def test_ioi_keeps_only_single_token_fillers():
    # "Joe", "Tony", "Max", "Karen" share a first piece with a kept name but are 2+ tokens: they must go
    tok = bpe(NAMES_KEPT + PLACES_KEPT + OBJECTS_KEPT, years=False)
    assert len(tok.encode(" Joe", add_special_tokens=False)) == 2
    vocab = tasks.ioi_vocabulary(tok)
    assert (vocab["names"], vocab["places"], vocab["objects"]) == (NAMES_KEPT, PLACES_KEPT, OBJECTS_KEPT)
    assert vocab["kept"] == {"names": 5, "places": 2, "objects": 2}
    assert vocab["total"] == {"names": len(tasks.NAMES), "places": 25, "objects": 25}
    assert len(tasks.NAMES) == 194 and tasks.ioi_vocabulary()["kept"] == {"names": 194, "places": 25, "objects": 25}
    ex = tasks.ioi(40, seed=0, tokenizer=tok)
    assert {e.meta["io"] for e in ex} | {e.meta["subject"] for e in ex} | {e.meta["third"] for e in ex} == set(
        NAMES_KEPT)
    assert {e.meta["place"] for e in ex} == set(PLACES_KEPT) and {e.meta["object"] for e in ex} == set(OBJECTS_KEPT)
    for e in ex:
        assert len(tok.encode(e.answer, add_special_tokens=False)) == 1
        assert len(tok.encode(e.wrong, add_special_tokens=False)) == 1
    # a tokenizer that keeps every filler draws exactly the examples of no tokenizer
    everything = bpe(tasks.NAMES + tasks.PLACES + tasks.OBJECTS, years=False)
    assert tasks.ioi(12, seed=4, tokenizer=everything) == tasks.ioi(12, seed=4)
    assert tasks.task_examples("ioi", 6, 2, tokenizer=tok) == tasks.ioi(6, 2, tokenizer=tok)


def test_ioi_refuses_a_tokenizer_with_too_few_names():
    with pytest.raises(flowroutes.FlowroutesError, match=r"names 2/194, places 2/25, objects 2/25"):
        tasks.ioi(3, tokenizer=bpe(["Mary", "John"] + PLACES_KEPT + OBJECTS_KEPT, years=False))
    with pytest.raises(flowroutes.FlowroutesError, match=r"names 5/194, places 0/25, objects 2/25"):
        tasks.ioi(3, tokenizer=bpe(NAMES_KEPT + OBJECTS_KEPT, years=False))


# --- greater-than ------------------------------------------------------------------------------------------------


def test_greater_than_digit_form():
    ex = tasks.greater_than(50, seed=0)
    for e in ex:
        yy, xx = int(e.meta["yy"]), e.meta["xx"]
        assert e.meta["form"] == "digit" and 10 <= yy <= 89 and 11 <= int(xx) <= 17
        assert e.prompt.endswith(f"from the year {xx}{yy:02d} to the year {xx}")
        assert e.contrastive == e.prompt.replace(f"{xx}{yy:02d}", f"{xx}01")
        assert int(e.answer) == yy // 10 + 1 and int(e.wrong) == yy // 10 - 1
        greater, smaller = tasks.metric_tokens(e)
        assert len(greater) + len(smaller) == 9 and e.answer in greater and e.wrong in smaller
        assert tasks.metric_kind(e) == "prob_diff"
    e00 = tasks.task_examples("greater-than-00", 3)
    assert all("01 to" not in e.contrastive and "00 to the year" in e.contrastive for e in e00)
    with pytest.raises(flowroutes.FlowroutesError, match="unknown task"):
        tasks.task_examples("nope", 3)
    with pytest.raises(flowroutes.FlowroutesError, match="positive"):
        tasks.ioi(0)


def test_digit_form_metric_by_hand():
    e = gt_example("45", "digit")  # first digit 4: greater 5..9, smaller 0..3, "4" in neither
    assert tasks.metric_tokens(e) == (["5", "6", "7", "8", "9"], ["0", "1", "2", "3"])
    probs = {"5": 0.2, "9": 0.1, "4": 0.3, "3": 0.05, "0": 0.05, "45": 0.25}
    assert tasks.task_metric(e, probs) == pytest.approx(0.3 - 0.1)
    assert [tasks.top_valid(e, t) for t in ("5", "4", "3", "45")] == [True, True, False, False]
    legacy = gt_example("45", "digit")
    del legacy.meta["form"]  # examples stored before forms existed are digit-form
    assert tasks.metric_tokens(legacy) == tasks.metric_tokens(e)


def test_two_digit_form_metric_by_hand():
    e = gt_example("32", "two-digit")
    plus, minus = tasks.metric_tokens(e)
    assert (len(plus), plus[0], plus[-1]) == (67, "33", "99") and plus == [str(y) for y in range(33, 100)]
    assert (len(minus), minus[0], minus[-1]) == (33, "00", "32") and "07" in minus
    # "5" and " 33" are not two-digit year tokens and count 0; "32" (not greater) counts against
    probs = {"33": 0.20, "40": 0.10, "99": 0.05, "32": 0.15, "00": 0.01, "5": 0.30, " 33": 0.07}
    assert tasks.task_metric(e, probs) == pytest.approx(0.35 - 0.16)
    assert tasks.task_metric(e, {}) == 0.0
    assert [tasks.top_valid(e, t) for t in ("33", "99", "32", "05", "5", "100", " 40")] == [
        True, True, False, False, False, False, False]


def test_ioi_metric_by_hand():
    e = tasks.ioi(1, seed=0)[0]
    assert tasks.metric_tokens(e) == ([e.answer], [e.wrong]) and tasks.metric_kind(e) == "logit_diff"
    probs = {e.answer: 0.5, e.wrong: 0.2, e.answer.strip(): 0.1}
    assert tasks.task_metric(e, probs) == pytest.approx(0.3)
    assert tasks.top_valid(e, e.answer) and not tasks.top_valid(e, e.wrong)
    toy = tasks.TaskExample("w1 w2", " w3", " w4", "w5 w2", {"task": "toy"})
    assert tasks.metric_tokens(toy) == ([" w3"], [" w4"]) and tasks.metric_kind(toy) == "logit_diff"


def test_greater_than_picks_two_digit_for_a_bpe_with_year_tokens():
    tok = bpe()
    assert tasks.greater_than_form(tok) == "two-digit"
    ex = tasks.greater_than(30, seed=0, tokenizer=tok)
    assert {e.meta["form"] for e in ex} == {"two-digit"}
    for e in ex:
        yy, xx = int(e.meta["yy"]), e.meta["xx"]
        assert 2 <= yy <= 98 and 11 <= int(xx) <= 17
        assert (e.answer, e.wrong) == (f"{yy + 1:02d}", f"{yy - 1:02d}")
        assert e.prompt.endswith(f"from the year {xx}{yy:02d} to the year {xx}")
        assert pieces(tok, e.prompt)[-1] == G + xx
        assert pieces(tok, e.prompt + e.answer) == pieces(tok, e.prompt) + [e.answer]
        assert len(pieces(tok, e.contrastive)) == len(pieces(tok, e.prompt))
        assert tasks.metric_kind(e) == "prob_diff" and len(tasks.metric_tokens(e)[0]) == 99 - yy
    assert len({e.meta["yy"] for e in ex}) > 15
    assert tasks.describe_form(ex) == "greater-than, two-digit form: p(> YY) - p(<= YY) over two-digit tokens"
    assert [e.meta["form"] for e in tasks.task_examples("greater-than-00", 3, tokenizer=tok)] == ["two-digit"] * 3


def test_greater_than_picks_digit_for_a_tokenizer_that_splits_digits():
    chars = bpe(years=False)
    assert tasks.greater_than_form(chars) == "digit" and tasks.greater_than_form(None) == "digit"
    assert tasks.greater_than(10, seed=5, tokenizer=chars) == tasks.greater_than(10, seed=5)
    assert tasks.describe_form(tasks.greater_than(2)) == (
        "greater-than, digit form: p(first digit > d1) - p(first digit < d1) over single digits")
    with pytest.raises(flowroutes.FlowroutesError, match="splits no year"):
        tasks.greater_than(3, tokenizer=chars, form="two-digit")


def test_form_tolerates_some_whole_year_tokens_and_skips_those_years():
    # 50 of the 100 continuations of "... to the year 17" are whole-year tokens: still two-digit; 51: digit
    assert tasks.greater_than_form(bpe(whole_years=[f"17{y:02d}" for y in range(50)])) == "two-digit"
    assert tasks.greater_than_form(bpe(whole_years=[f"17{y:02d}" for y in range(51)])) == "digit"
    tok = bpe(whole_years=["1700", "1150"])  # " 1700" and " 1150" are one token each
    with01 = tasks.greater_than(60, seed=0, tokenizer=tok)
    with00 = tasks.greater_than(60, seed=0, contrastive_yy="00", tokenizer=tok)
    assert "17" in {e.meta["xx"] for e in with01}  # 1701 splits, so the 17s stay
    assert "17" not in {e.meta["xx"] for e in with00}  # 1700 does not: no contrastive prompt of the same length
    assert all((e.meta["xx"], e.meta["yy"]) != ("11", "50") for e in with01 + with00)
    assert [e.meta["form"] for e in tasks.greater_than(3, tokenizer=tok, form="digit")] == ["digit"] * 3
    assert tasks.greater_than(3, tokenizer=tok, form="digit") == tasks.greater_than(3)
    assert {e.meta["form"] for e in tasks.greater_than(4, form="two-digit")} == {"two-digit"}
    with pytest.raises(flowroutes.FlowroutesError, match="unknown greater-than form"):
        tasks.greater_than(3, form="three-digit")


def test_describe_form():
    assert tasks.describe_form(tasks.ioi(2)) == "ioi: logit(indirect object) - logit(subject), single-token names"
    mixed = tasks.ioi(1) + tasks.greater_than(1)
    assert tasks.describe_form(mixed).count("; ") == 1
    assert tasks.describe_form([]) == "no examples"
