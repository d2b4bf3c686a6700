"""The claims report's calibration table (flowroutes.analyses.calibration) names exactly the planted tests of
tests/integration/test_planted.py, each of which runs a model planted true and one planted false; and the power
rules of a condition, worked out by hand."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from flowroutes.analyses.base import Condition, verdict_of
from flowroutes.analyses.calibration import PLANTED, TESTS, calibration
from flowroutes.analyses.stats import Estimate
from tests.helpers.tolerances import printed_to

ROOT = Path(__file__).resolve().parents[2]


def planted_tests() -> dict[str, set[str]]:
    """test name -> the verdicts its parametrisation asks for."""
    tree = ast.parse((ROOT / TESTS).read_text(encoding="utf-8"))
    out = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            wanted = {c.value for d in node.decorator_list for c in ast.walk(d)
                      if isinstance(c, ast.Constant) and c.value in ("holds", "does not hold")}
            out[node.name] = wanted
    return out


def test_every_planted_test_is_in_the_table_and_asks_for_both_verdicts():
    found = planted_tests()
    assert {p.test for p in PLANTED.values()} == set(found)
    for key, planted in PLANTED.items():
        assert found[planted.test] == {"holds", "does not hold"}, key


def test_a_claim_without_planted_models_says_so():
    assert calibration("no-such-claim")["planted"] is False
    assert "not yet checked on planted models" in calibration("no-such-claim")["text"]
    row = calibration("bottom-to-top")
    assert row["planted"] and row["test"].endswith("::test_blocks_more_active_at_the_bottom_or_at_the_top")


def est(value, low, high):
    return Estimate(value, low, high, 100, 20)


def test_detectable_effect_by_hand():
    # 95% interval [0.0, 0.2]: se = 0.1 / 1.96; an effect meets "low > 0" with 80% power from (1.96 + 0.84) se on
    c = Condition("the x", est(0.1, 0.0, 0.2), "low", ">", 0.0)
    assert c.detectable == pytest.approx((1.959964 + 0.841621) * 0.1 / 1.959964)
    assert c.detectable == pytest.approx(0.14294, abs=printed_to(5))
    below = Condition("the x", est(-0.1, -0.2, 0.0), "high", "<", 0.05)
    assert below.detectable == pytest.approx(0.05 - 0.14294, abs=printed_to(5))
    assert Condition("the n", 3, "value", ">=", 1).detectable is None


@pytest.mark.parametrize("low, high, threshold, effect, verdict", [
    (0.01, 0.03, 0.02, 0.05, "does not hold"),  # not met, and the interval excludes the paper's effect of 0.05
    (-0.02, 0.08, 0.0, 0.05, "not enough data to tell"),  # not met, but the interval reaches 0.05
    (-0.02, 0.08, 0.0, None, "does not hold"),  # the paper states no size: the rule alone decides
    (0.01, 0.08, 0.0, 0.05, "holds"),
])
def test_an_unmet_condition_whose_interval_reaches_the_paper_effect_is_undecided(low, high, threshold, effect,
                                                                                 verdict):
    rule = Condition("the difference", est((low + high) / 2, low, high), "low", ">", threshold, effect=effect)
    assert verdict_of([rule]) == verdict
    assert rule.undecided == (verdict == "not enough data to tell")
    # a condition that fails decidedly makes the claim fail, whatever the other says
    decided = Condition("the other", est(-0.5, -0.6, -0.4), "low", ">", 0.0, effect=0.1)
    assert verdict_of([rule, decided]) == "does not hold"
