"""Domains (sec. 5.1, figs. 10, 16): hand-built corpus rows with known domain differences.

2 layers x 2 heads: vector = [L0H0, L0H1, L1H0, L1H1, FFN0, FFN1]. Every domain has two texts of two identical
predictions each, so a 95% bootstrap interval of a mean is [smaller text mean, larger text mean] and that of a
difference of two domains is [min a - max b, max a - min b] (each extreme has probability >= 1/16 >> 2.5%).
"""

import types

import numpy as np
import pytest

from flowroutes.analyses import domains
from flowroutes.analyses.base import Context
from flowroutes.analyses.rows import table_from_columns
from tests.helpers.tolerances import FEW_F32_ABS

DOCS = {
    "general": ([0.30, 0.00, 0.10, 0.05, 0.20, 0.30], [0.50, 0.00, 0.10, 0.05, 0.40, 0.30]),
    "code": ([0.30, 0.10, 0.10, 0.01, 0.20, 0.30], [0.30, 0.30, 0.12, 0.01, 0.20, 0.30]),
    "addition": ([0.20, 0.00, 0.00, 0.30, 0.004, 0.30], [0.20, 0.00, 0.00, 0.30, 0.006, 0.30]),
    "subtraction": ([0.20, 0.00, 0.02, 0.01, 0.30, 0.002], [0.20, 0.00, 0.02, 0.01, 0.30, 0.004]),
    "russian": ([0.40, 0.00, 0.30, 0.05, 0.20, 0.05], [0.40, 0.00, 0.30, 0.05, 0.20, 0.07]),
    "english": ([0.40, 0.00, 0.10, 0.05, 0.20, 0.25], [0.40, 0.00, 0.10, 0.05, 0.20, 0.35]),
}


def _table(docs: dict):
    cols = {"doc": [], "domain": [], "position": [], "token": [], "vector": []}
    for domain, texts in docs.items():
        for vec in texts:
            doc = len(set(cols["doc"]))
            for p in range(2):
                cols["doc"].append(doc)
                cols["domain"].append(domain)
                cols["position"].append(p)
                cols["token"].append(f"t{p}")
                cols["vector"].append(np.array(vec, dtype=np.float32))
    return table_from_columns(cols)


def _run(docs: dict = DOCS):
    opts = types.SimpleNamespace(n_boot=1000, seed=0)
    return domains.summarize(Context(_table(docs), 2, 2, opts, {"texts": 2 * len(docs)}))


def _close(est, value, low, high):
    assert (est.value, est.low, est.high) == pytest.approx((value, low, high), abs=FEW_F32_ABS)


@pytest.fixture(scope="module")
def result():
    return _run()


def test_specificity_is_measured_against_general(result):
    spec = result.data["specificity"]["code"]  # code mean - general mean, per head
    _close(spec[1], 0.2, 0.1, 0.3)  # L0H1: 0.1 / 0.3 in code, 0.0 in general
    _close(spec[0], -0.1, -0.2, 0.0)  # L0H0: 0.3 in code, 0.3 / 0.5 in general
    _close(spec[3], -0.04, -0.04, -0.04)
    # positive specificity only, largest first: L0H1 (0.2), L1H0 (0.11 - 0.10)
    assert result.data["specific_heads"]["code"] == [(0, 1), (1, 0)]
    assert result.data["specific_heads"]["non-english"] == [(1, 0)]  # russian pooled: L1H0 0.3 - 0.1
    _close(result.data["estimates"]["general"][0], 0.4, 0.3, 0.5)
    listed = result.summary["code: most specific heads (mean - general)"]
    assert [h["head"] for h in listed] == ["L0H1", "L1H0"]
    _close(listed[0]["mean"], 0.2, 0.1, 0.3)


def test_only_heads_above_0015_are_shown_except_general(result):
    shown = result.data["shown"]
    np.testing.assert_allclose(shown["general"], [[0.4, 0.0], [0.1, 0.05]], atol=FEW_F32_ABS)  # in full, zeros too
    np.testing.assert_allclose(shown["code"], [[0.3, 0.2], [0.11, np.nan]], atol=FEW_F32_ABS)  # 0.01 <= 0.015: blank
    np.testing.assert_allclose(shown["subtraction"], [[0.2, np.nan], [0.02, np.nan]], atol=FEW_F32_ABS)
    rows = result.extra_tables["domains_heads"].to_pylist()
    code = {(r["layer"], r["head"]): r for r in rows if r["domain"] == "code"}
    assert code[(0, 1)]["shown"] and not code[(1, 1)]["shown"]
    assert code[(0, 1)]["specificity"] == pytest.approx(0.2, abs=FEW_F32_ABS)
    assert result.summary["code: heads shown (mean > 0.015)"] == 3


def test_addition_vs_subtraction_view(result):
    view = result.data["arithmetic"]
    # L1H1: 0.3 for addition, 0.01 for subtraction; L1H0: 0.0 for addition, 0.02 for subtraction
    np.testing.assert_array_equal(view["only_addition"], [[False, False], [False, True]])
    np.testing.assert_array_equal(view["only_subtraction"], [[False, False], [True, False]])
    np.testing.assert_allclose(view["difference"], [[0.0, 0.0], [-0.02, 0.29]], atol=FEW_F32_ABS)
    listed = {h["head"]: h for h in result.summary["addition vs subtraction: heads active for only one"]}
    assert set(listed) == {"L1H0", "L1H1"} and listed["L1H1"]["active_for"] == "addition"
    _close(listed["L1H1"]["difference"], 0.29, 0.29, 0.29)
    assert set(result.figures) == {"domains-heads", "domains-specificity", "domains-arithmetic", "domains-ffn"}


def test_ffn_per_layer_and_domain(result):
    ffn = {(r["domain"], r["layer"]): r for r in result.extra_tables["domains_ffn"].to_pylist()}
    assert (ffn[("general", 0)]["mean"], ffn[("general", 0)]["low"], ffn[("general", 0)]["high"]) == pytest.approx(
        (0.3, 0.2, 0.4), abs=FEW_F32_ABS)
    assert ffn[("non-english", 1)]["mean"] == pytest.approx(0.06, abs=FEW_F32_ABS)
    _close(result.summary["last-layer FFN importance"]["english"], 0.3, 0.25, 0.35)


def test_claims_on_the_hand_built_domains(result):
    got = {c.key: c for c in domains.claims({"domains": result})}
    overlap = got["domain-specific-heads"]  # top-1 (4 heads // 3): addition L1H1, code L0H1, non-English L1H0
    assert overlap.verdict == "holds" and "top-1" in overlap.measure
    _close(overlap.estimate, 0.0, 0.0, 0.0)
    assert overlap.estimate.units == 12 and overlap.estimate.n == 24
    # held out: code's top head on text 1 (L0H1, 0.1 - 0.0) scores 0.3 - 0.0 on text 2 and vice versa: 0.2;
    # addition 0.25 both ways; russian 0.2 both ways (L1H0): the smallest is 0.2
    assert "smallest held-out specificity 0.200 [0.200, 0.200]" in overlap.why
    assert "addition 0.25, code 0.2, non-English 0.2" in overlap.why
    last = got["last-ffn-non-english"]  # russian 0.05 / 0.07 minus english 0.25 / 0.35
    assert last.verdict == "holds"
    _close(last.estimate, -0.24, -0.30, -0.18)
    assert "vs general -0.240 [-0.250, -0.230]" in last.why
    zero = got["ffn-zero-arithmetic"]  # addition FFN0 0.004 / 0.006, subtraction FFN1 0.002 / 0.004
    assert zero.verdict == "holds" and "addition: layers [0]" in zero.why and "subtraction: layers [1]" in zero.why
    _close(zero.estimate, 0.005, 0.004, 0.006)  # the larger of the two minima (addition's)


def test_claims_that_do_not_hold():
    docs = dict(DOCS)
    # L1H1 becomes the most specific head of code and russian too: the three top-1 sets coincide
    docs["code"] = tuple([*v[:3], 0.5, *v[4:]] for v in DOCS["code"])
    docs["russian"] = tuple([*v[:3], 0.5, *v[4:]] for v in DOCS["russian"])
    # subtraction's smallest FFN mean is 0.01 with upper bound 0.012: not surely below 0.01
    docs["subtraction"] = ([0.2, 0.0, 0.02, 0.01, 0.3, 0.008], [0.2, 0.0, 0.02, 0.01, 0.3, 0.012])
    # russian's last FFN is above english's
    docs["russian"] = tuple([*v[:5], 0.5] for v in docs["russian"])
    got = {c.key: c for c in domains.claims({"domains": _run(docs)})}
    assert got["domain-specific-heads"].verdict == "does not hold"
    _close(got["domain-specific-heads"].estimate, 1.0, 1.0, 1.0)
    assert got["last-ffn-non-english"].verdict == "does not hold"
    _close(got["last-ffn-non-english"].estimate, 0.2, 0.15, 0.25)
    zero = got["ffn-zero-arithmetic"]
    assert zero.verdict == "does not hold" and "subtraction: layers none" in zero.why
    _close(zero.estimate, 0.01, 0.008, 0.012)  # subtraction's minimum is the larger one


def test_overlap_needs_heads_specific_on_held_out_texts():
    docs = dict(DOCS)
    # code's top head is L0H1 on text 1 (0.3 - 0.0) and L0H0 on text 2 (0.7 - 0.5); each scores 0 on the other text
    docs["code"] = ([0.30, 0.30, 0.10, 0.01, 0.2, 0.3], [0.70, 0.00, 0.10, 0.01, 0.2, 0.3])
    overlap = {c.key: c for c in domains.claims({"domains": _run(docs)})}["domain-specific-heads"]
    # code's top head (L0H1 on all texts, L0H0 or L0H1 in resamples) is never addition's or russian's: disjoint
    _close(overlap.estimate, 0.0, 0.0, 0.0)
    assert overlap.verdict == "does not hold" and "smallest held-out specificity 0.000 [0.000, 0.000]" in overlap.why


def test_last_ffn_needs_a_difference_of_at_least_001():
    docs = dict(DOCS)
    docs["english"] = tuple([*v[:5], 0.30] for v in DOCS["english"])
    docs["russian"] = ([0.4, 0.0, 0.3, 0.05, 0.2, 0.295], [0.4, 0.0, 0.3, 0.05, 0.2, 0.296])
    last = {c.key: c for c in domains.claims({"domains": _run(docs)})}["last-ffn-non-english"]
    # below 0 (-0.0045 [-0.005, -0.004]) but not by 0.01: not "much less relevant"
    assert last.verdict == "does not hold"
    _close(last.estimate, -0.0045, -0.005, -0.004)


def test_claims_without_the_needed_domains():
    docs = {k: v for k, v in DOCS.items() if k not in ("addition", "russian", "english")}
    got = {c.key: c for c in domains.claims({"domains": _run(docs)})}
    assert got["domain-specific-heads"].verdict == "cannot be tested"
    assert "addition, non-English" in got["domain-specific-heads"].why
    assert got["last-ffn-non-english"].verdict == "cannot be tested"
    zero = got["ffn-zero-arithmetic"]  # tested on subtraction alone
    assert zero.verdict == "holds" and "addition" not in zero.why
    assert domains.claims({}) == []
    assert "non-english" not in _run(docs).data["specific_heads"]


def test_pairwise_jaccard_and_top_k():
    sets = [{0, 1, 2, 3}, {2, 3, 4, 5}, {6, 7, 8, 9}]
    assert domains.mean_pairwise_jaccard(sets) == pytest.approx((2 / 6 + 0 + 0) / 3)
    assert domains.overlap_k(1024) == 10 and domains.overlap_k(12) == 4 and domains.overlap_k(2) == 1
    assert domains.most_specific(np.array([0.1, -0.2, 0.3, 0.0]), 3) == [2, 0]


def test_needs_a_general_domain():
    from flowroutes.errors import FlowroutesError

    with pytest.raises(FlowroutesError, match="general"):
        _run({"code": DOCS["code"]})


def test_report_writes(result, tmp_path):
    result.write(tmp_path)
    assert (tmp_path / "domains-heads.png").exists() and (tmp_path / "domains_ffn.parquet").exists()
    assert domains.ANALYSIS.default_data[0] == "general=corpus:general" and len(domains.ANALYSIS.default_data) == 8
