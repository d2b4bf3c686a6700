import pytest

import flowroutes
from flowroutes.analyses import tasks


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


def test_greater_than():
    ex = tasks.greater_than(50, seed=0)
    for e in ex:
        yy, xx = int(e.meta["yy"]), e.meta["xx"]
        assert 10 <= yy <= 89 and 11 <= int(xx) <= 17
        assert e.prompt.endswith(f"from the year {xx}{yy:02d} to the year {xx}")
        assert e.contrastive == e.prompt.replace(f"{xx}{yy:02d}", f"{xx}01")
        assert int(e.answer) == yy // 10 + 1 and int(e.wrong) == yy // 10 - 1
        greater, smaller = tasks.greater_than_digit_sets(e)
        assert len(greater) + len(smaller) == 9 and e.answer in greater and e.wrong in smaller
    e00 = tasks.task_examples("greater-than-00", 3)
    assert all("01 to" not in e.contrastive and "00 to the year" in e.contrastive for e in e00)
    with pytest.raises(flowroutes.FlowroutesError, match="unknown task"):
        tasks.task_examples("nope", 3)
    with pytest.raises(flowroutes.FlowroutesError, match="positive"):
        tasks.ioi(0)


@pytest.mark.slow
def test_fillers_are_single_tokens_for_smollm2(smollm2):
    tok = smollm2.tokenizer
    for word in tasks.NAMES + tasks.PLACES + tasks.OBJECTS + tasks.GT_NOUNS:
        assert len(tok(" " + word, add_special_tokens=False)["input_ids"]) == 1, word
    ids = tok("The war lasted from the year 1732 to the year 17", add_special_tokens=False)["input_ids"]
    assert [tok.decode([i]) for i in ids[-3:]] == [" ", "1", "7"]
