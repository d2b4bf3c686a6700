"""Appendix D (periods acting as BOS) on hand-built corpus rows, and the row helpers it rests on.

Layout of the hand-built corpus: L = 7 layers (middle layers 2 and 3), H = 2 heads, texts of 5 tokens with the
first period at position 2 (texts 0, 1) or 3 (text 2), and text 3 (4 tokens) without a period.
"""

import numpy as np
import pytest

from flowroutes.analyses import periods, rows
from flowroutes.analyses.base import Context
from flowroutes.analyses.run import Options
from tests.helpers.tolerances import FEW_F32_ABS

L, H = 7, 2
MID = (2, 3)
NAN = float("nan")
TEXTS = [(0, 5, 2), (1, 5, 2), (2, 5, 3), (3, 4, -1)]  # (doc, tokens, first period)

# the ordinary stream x: head h of layer l has importance 0.01 (l + 1) (h + 1), so the attention block has
# 0.03 (l + 1); the FFN has 0.1 + 0.02 l
HEADS_X = np.array([[0.01 * (layer + 1) * (h + 1) for h in range(H)] for layer in range(L)])
FFN_X = np.array([0.1 + 0.02 * layer for layer in range(L)])


def vector(scale=1.0, quiet_middle=False):
    heads, ffn = HEADS_X * scale, FFN_X * scale
    if quiet_middle:
        heads, ffn = heads.copy(), ffn.copy()
        heads[list(MID)] = 0.0
        ffn[list(MID)] = 0.0
    return np.concatenate([heads.ravel(), ffn]).astype(np.float32)


@pytest.fixture(autouse=True)
def every_text_counts(monkeypatch):
    """The hand-built texts are short: here every text is read and one is enough (the tests of the rule that
    skips texts of fewer than 3 periods set the constants back)."""
    monkeypatch.setattr(periods, "MIN_PERIODS", 0, raising=False)
    monkeypatch.setattr(periods, "MIN_TEXTS", 1, raising=False)


def corpus(period_quiet=True, period_share=(0.1, 0.4), first_share=(0.6, 0.3), no_periods=False,
           period_scale=1.0, attn=True, later_periods=2, later_scale=1.0, later_share=(0.1, 0.1), later_after=1):
    """Rows for TEXTS. After the first period, position p (p - 1 other sources: 1..p without q) gets the shares
    period_share / first_share (outside / inside the middle layers) and the rest spread evenly over the others
    (period_share None: the period is one of p sources like the others); from position q + later_after on, it
    also gets `later_share` per later period (outside / inside the middle layers: the rows carry it as if a later
    period came before them; NaN before that). Text 3's positions have twice the
    importance x, first periods period_scale times x. Position 0 has importance 5 everywhere and rows that no
    statistic should read carry misleading shares. Each text with a first period ends in `later_periods` more
    periods of importance later_scale times x and no shares (NaN)."""
    cols = {k: [] for k in ("doc", "domain", "position", "token", "first_period", "vector")}
    for kind in ("contrib", "attn") if attn else ("contrib",):
        for w in rows.SOURCES:
            cols[f"{kind}_{w}"] = []
    middle = np.isin(np.arange(L), MID)
    for doc, n_tok, q in TEXTS:
        q = -1 if no_periods else q
        for p in range(n_tok):
            cols["doc"].append(doc)
            cols["domain"].append("general")
            cols["position"].append(p)
            cols["token"].append("." if p == q else f" w{p}")
            cols["first_period"].append(q)
            if p == 0:
                vec = np.full(L * H + L, 5.0, dtype=np.float32)
            elif p == q:
                vec = vector(period_scale, quiet_middle=period_quiet)
            else:
                vec = vector(2.0 if doc == 3 else 1.0)
            cols["vector"].append(vec)
            if q >= 1 and p > q:
                first = np.where(middle, first_share[1], first_share[0])
                if period_share is None:
                    per = other = (1.0 - first) / p
                else:
                    per = np.where(middle, period_share[1], period_share[0])
                    other = (1.0 - per - first) / (p - 1)
            else:  # not after a first period: misleading numbers that no statistic may use
                per, first, other = np.full(L, NAN), np.full(L, 0.05), np.full(L, 0.9)
            later = np.where(middle, later_share[1], later_share[0]) if q >= 1 and p >= q + later_after else \
                np.full(L, NAN)
            for kind in ("contrib", "attn") if attn else ("contrib",):
                # attention weights: the same with 0.1 moved from the period to the first token
                shift = 0.0 if kind == "contrib" else 0.1
                cols[f"{kind}_first"].append((first + shift).astype(np.float32))
                cols[f"{kind}_period"].append((per - shift).astype(np.float32))
                cols[f"{kind}_other"].append(other.astype(np.float32))
                cols[f"{kind}_later_period"].append(later.astype(np.float32))
        for p in range(n_tok, n_tok + (later_periods if q >= 1 else 0)):
            for name, value in (("doc", doc), ("domain", "general"), ("position", p), ("token", "."),
                                ("first_period", q), ("vector", vector(later_scale))):
                cols[name].append(value)
            for kind in ("contrib", "attn") if attn else ("contrib",):
                for w in rows.SOURCES:
                    cols[f"{kind}_{w}"].append(np.full(L, NAN, dtype=np.float32))
    return rows.table_from_columns(cols)


def run(table, loaded=None, n_layers=L, n_heads=H):
    ctx = Context(table, n_layers, n_heads, Options(n_boot=200, seed=0), {"texts": 4}, loaded)
    res = periods.ANALYSIS.summarize(ctx)
    return res, periods.ANALYSIS.claims({"periods": res})


def values(ests):
    return np.array([e.value for e in ests])


# --- rows.first_period and rows.source_shares ---------------------------------------------------------------------

def test_first_period():
    assert rows.first_period(["<s>", "The", " cat", ".", " It", "."]) == 3
    assert rows.first_period([".", "a", " .\n", "."]) == 2  # position 0 is the BOS stand-in; spaces do not count
    assert rows.first_period(["a", "...", " b", ".."]) == -1  # an ellipsis is no period
    assert rows.first_period(["a"]) == -1


def test_source_shares_one_layer():
    # one layer, T = 4, first period q = 2; row p holds the weights into target p (upper triangle: junk)
    w = np.array([[[2, 0, 0, 7],
                   [1, 3, 0, 0],
                   [1, 1, 2, 9],
                   [2, 1, 4, 3]]], dtype=float)
    s = rows.source_shares(w, 2)
    # p=0: all on itself; p=1: 1/4 first, other {1}: 3/4; p=2: 1/4 first, other {1}: 1/4 (2/4 on the period
    # itself, which is no "period share" yet); p=3 (total 10): first .2, period .4, other {1, 3}: (.1 + .3) / 2
    np.testing.assert_allclose(s["first"], [[1.0, 0.25, 0.25, 0.2]])
    np.testing.assert_allclose(s["period"], [[NAN, NAN, NAN, 0.4]])
    np.testing.assert_allclose(s["other"], [[NAN, 0.75, 0.25, 0.2]])
    # no period: other sources are 1..p: p=2: (.25 + .5) / 2; p=3: (.1 + .4 + .3) / 3
    s = rows.source_shares(w, -1)
    np.testing.assert_allclose(s["period"], np.full((1, 4), NAN))
    np.testing.assert_allclose(s["other"], [[NAN, 0.75, 0.375, 0.8 / 3]])


def test_later_periods():
    assert rows.later_periods(["<s>", "a", ".", " b", ".", " c", " ."]) == [4, 6]
    assert rows.later_periods([".", "a", " ."]) == []  # position 0 is no first period, so 2 is the first
    assert rows.later_periods(["a", " b"]) == []


def test_source_shares_later_periods():
    # one layer, T = 5, first period q = 1; row p holds the weights into target p (upper triangle: junk)
    w = np.array([[[2, 0, 0, 0, 0],
                   [1, 3, 0, 0, 0],
                   [1, 1, 2, 0, 0],
                   [2, 1, 4, 3, 0],
                   [1, 2, 1, 4, 2]]], dtype=float)
    # one later period at 3: only p = 4 follows it (total 10): 4 / 10; a period is never its own source
    s = rows.source_shares(w, 1, [3])
    np.testing.assert_allclose(s["later_period"], [[NAN, NAN, NAN, NAN, 0.4]])
    np.testing.assert_allclose(s["period"], [[NAN, NAN, 0.25, 0.1, 0.2]])
    # later periods at 2 and 3: p = 3 follows 2 (4 / 10); p = 4 follows both: (0.1 + 0.4) / 2
    s = rows.source_shares(w, 1, [2, 3])
    np.testing.assert_allclose(s["later_period"], [[NAN, NAN, NAN, 0.4, 0.25]])
    assert np.isnan(rows.source_shares(w, 1)["later_period"]).all()  # no later period: NaN everywhere


# --- the analysis ------------------------------------------------------------------------------------------------

def test_middle_layers():
    assert periods.middle_layers(7).tolist() == [2, 3]
    assert periods.middle_layers(32).tolist() == list(range(2, 29))
    assert periods.middle_layers(4).tolist() == [0, 1, 2, 3]  # too few layers: all of them


def test_selection_is_the_first_period_not_low_importance():
    table = corpus()
    sel = periods.selections(table)
    pos = rows.column(table, "position")
    docs = rows.column(table, "doc")
    assert list(zip(docs[sel["period"]], pos[sel["period"]])) == [(0, 2), (1, 2), (2, 3)]
    assert sel["other"].sum() == 12  # 3 + 3 + 3 + 3 positions >= 1 that are no first period
    assert list(zip(docs[sel["later"]], pos[sel["later"]])) == [(0, 3), (0, 4), (0, 5), (0, 6), (1, 3), (1, 4),
                                                                (1, 5), (1, 6), (2, 4), (2, 5), (2, 6)]
    assert list(zip(docs[sel["later_period"]], pos[sel["later_period"]])) == [(0, 5), (0, 6), (1, 5), (1, 6),
                                                                              (2, 5), (2, 6)]
    # a period that is as busy as any other token is still selected
    assert periods.selections(corpus(period_quiet=False))["period"].sum() == 3


def test_quiet_period_that_later_tokens_use_holds():
    res, (claim,) = run(corpus())
    d = res.data
    # fig. 9b: attention block = 0.03 (l + 1), zero in the middle layers at first periods; the other positions are
    # 9 rows of x and 3 rows (text 3) of 2x: mean 1.25x; position 0 (importance 5) is left out
    np.testing.assert_allclose(values(d["layers"]["attention"]["period"]), [0.03, 0.06, 0, 0, 0.15, 0.18, 0.21],
                               atol=FEW_F32_ABS)
    np.testing.assert_allclose(values(d["layers"]["attention"]["other"]), [0.0375 * (k + 1) for k in range(L)],
                               atol=FEW_F32_ABS)
    np.testing.assert_allclose(values(d["layers"]["ffn"]["period"]), [0.1, 0.12, 0, 0, 0.18, 0.2, 0.22],
                               atol=FEW_F32_ABS)
    np.testing.assert_allclose(values(d["layers"]["ffn"]["other"]), [1.25 * (0.1 + 0.02 * k) for k in range(L)],
                               atol=FEW_F32_ABS)
    np.testing.assert_allclose(values(d["layers"]["heads"]["period"])[:4], [0.01, 0.02, 0.02, 0.04], atol=FEW_F32_ABS)
    # layer 2 at first periods: 0 against 1.25 * 0.09; its difference is below 0, layer 0 (1.0x vs 1.25x) too
    diff = d["layers"]["attention"]["difference"]
    assert diff[2].value == pytest.approx(-0.1125, abs=FEW_F32_ABS) and diff[2].below(0)
    # (a) middle layers, attention + FFN: first periods 0; x rows ((0.09 + 0.14) + (0.12 + 0.16)) / 2 = 0.255,
    # 2x rows 0.51, pooled 1.25 * 0.255 = 0.31875
    assert res.summary["middle layers: attention + FFN importance per layer at first periods"].value == 0.0
    assert res.summary["middle layers: attention + FFN importance per layer at other positions"].value == \
        pytest.approx(0.31875, abs=FEW_F32_ABS)
    assert d["quiet"].value == pytest.approx(-0.31875, abs=FEW_F32_ABS) and d["quiet"].high <= -0.255 + FEW_F32_ABS
    # shares after the first period (5 rows: p = 3, 4, 3, 4, 4 with 2, 3, 2, 3, 3 other sources): the period
    # gets 0.4 in the middle layers, 0.1 elsewhere; an other token (0.3 / 2, 0.3 / 3, ...) 0.12 on average
    contrib = d["shares"]["contrib"]
    np.testing.assert_allclose(values(contrib["period"]), [0.1, 0.1, 0.4, 0.4, 0.1, 0.1, 0.1], atol=FEW_F32_ABS)
    np.testing.assert_allclose(values(contrib["first"]), [0.6, 0.6, 0.3, 0.3, 0.6, 0.6, 0.6], atol=FEW_F32_ABS)
    np.testing.assert_allclose(values(contrib["other"]), np.full(L, 0.12), atol=FEW_F32_ABS)
    np.testing.assert_allclose(values(d["shares"]["attn"]["period"]), [0.0, 0.0, 0.3, 0.3, 0.0, 0.0, 0.0],
                               atol=FEW_F32_ABS)
    assert contrib["period"][2].n == 5 and contrib["period"][2].units == 3
    # (b) 0.4 - 0.12; resampling texts, an other token's mean share stays within [0.1, 0.125]
    assert claim.key == "first-period-bos" and claim.verdict == "holds"
    assert claim.estimate.value == pytest.approx(0.28, abs=FEW_F32_ABS)
    assert 0.275 - FEW_F32_ABS <= claim.estimate.low <= claim.estimate.high <= 0.3 + FEW_F32_ABS
    assert d["bos"]["contrib"]["period - first"].value == pytest.approx(0.1, abs=FEW_F32_ABS)
    assert d["bos"]["attn"]["period - other"].value == pytest.approx(0.3 - 0.12, abs=FEW_F32_ABS)
    assert "(a) = 0.000 [0.000, 0.000]" in claim.why and "(c) = 0.000 [0.000, 0.000]" in claim.why
    assert res.summary["first_periods (the paper: 823 of the 826 points of its cluster)"] == 3
    # outside the middle layers first periods have x against 1.25x, but a third of the resamples draw no text 3
    # (0.75 ** 4): there the difference is 0, so the interval reaches 0
    assert res.summary["layers where first periods' blocks are quieter (attention and FFN, both intervals below 0)"] \
        == [2, 3]
    assert {"periods-heads", "periods-blocks", "periods-contrib-shares", "periods-attn-shares"} <= set(res.figures)
    assert res.summary["routes (fig. 14)"].startswith("no model")
    layer_rows = res.extra_tables["periods_layers"].to_pydict()
    assert layer_rows["contrib_period"][3] == pytest.approx(0.4, abs=FEW_F32_ABS)


def test_period_like_any_other_token_does_not_hold():
    # first periods are 1.5 times as busy as x and get the same share as any other earlier token
    res, (claim,) = run(corpus(period_quiet=False, period_scale=1.5, period_share=None, first_share=(0.4, 0.4)))
    # (a) middle layers: 1.5 * 0.255 - 1.25 * 0.255; the other positions' mean moves between 0.255 and 0.51
    assert res.data["quiet"].value == pytest.approx(0.06375, abs=FEW_F32_ABS)
    assert res.data["quiet"].low < 0 < res.data["quiet"].high
    # shares 0.6 / p for the period and every other token: p = 3: 0.2, p = 4: 0.15; the mean 0.17 for both
    np.testing.assert_allclose(values(res.data["shares"]["contrib"]["period"]), np.full(L, 0.17), atol=FEW_F32_ABS)
    assert claim.estimate.value == 0.0 and claim.estimate.low == 0.0 and claim.estimate.high == 0.0
    assert claim.verdict == "does not hold"
    # (a) as a ratio: 1.5 * 0.255 / 0.31875 = 1.2; (c): 1.5 * 0.255 / 0.255
    assert "(a) = 1.200 [" in claim.why and "(c) = 1.500 [" in claim.why
    assert "not met" in claim.why and "not above 0" in claim.why


def test_period_quiet_but_not_attended_does_not_hold():
    # (a) holds, but the period gets 0.05 while an other token gets 0.2 / 2 = 0.1 (p = 3) or 0.2 / 3 (p = 4):
    # mean (2 * 0.1 + 3 * 0.0667) / 5 = 0.08
    res, (claim,) = run(corpus(period_share=(0.05, 0.05), first_share=(0.75, 0.75)))
    assert res.data["quiet"].below(0)
    assert claim.estimate.value == pytest.approx(0.05 - 0.08, abs=FEW_F32_ABS)
    assert claim.estimate.high < 0
    assert claim.verdict == "does not hold" and "(a) = 0.000 [" in claim.why and "not above 0" in claim.why


def test_no_period_cannot_be_tested():
    res, (claim,) = run(corpus(no_periods=True))
    assert claim.verdict == "cannot be tested" and claim.estimate is None
    assert "no text has a first period" in claim.why
    assert res.data["n_period"] == 0 and res.figures == {}
    (claim,) = periods.ANALYSIS.claims({})
    assert claim.verdict == "cannot be tested" and "not run" in claim.why


def test_texts_of_fewer_than_three_periods_are_not_read(monkeypatch):
    monkeypatch.setattr(periods, "MIN_PERIODS", 3, raising=False)
    monkeypatch.setattr(periods, "MIN_TEXTS", 5, raising=False)
    # one period per text (the old samples' 1-2 sentences): no text is read
    res, (claim,) = run(corpus(later_periods=0))
    assert res.data["n_qualified"] == 0 and res.data["n_period"] == 0
    assert claim.verdict == "cannot be tested" and claim.estimate is None
    assert "0 of 4 texts have at least 3 periods" in claim.why and "at least 5 such texts" in claim.why
    # three periods in texts 0-2: they are read, text 3 (no period) is not, and 3 texts are too few
    res, (claim,) = run(corpus())
    sel = periods.selections(res.table)
    assert sorted(set(rows.column(res.table, "doc")[sel["texts"]].tolist())) == [0, 1, 2]
    assert sel["other"].sum() == 9 and res.data["n_qualified"] == 3
    assert claim.verdict == "cannot be tested" and "3 of 4 texts" in claim.why
    monkeypatch.setattr(periods, "MIN_TEXTS", 3, raising=False)
    (claim,) = periods.ANALYSIS.claims({"periods": run(corpus())[0]})
    assert claim.verdict == "holds" and claim.why.startswith("3 of 4 texts have at least 3 periods")


def test_every_period_quiet_is_no_first_period_acting_as_bos():
    """Later periods as quiet as the first: (a) and (b) hold, but the first period is like any period (c)."""
    res, (claim,) = run(corpus(period_quiet=False, period_scale=0.1, later_scale=0.1))
    d = res.data
    # (a): 0.1 * 0.255 / 0.31875 = 0.08; (c): 0.1 x at first periods and at the 6 later periods
    assert d["quiet_ratio"].value == pytest.approx(0.08, abs=FEW_F32_ABS)
    assert d["later_ratio"].value == pytest.approx(1.0, abs=FEW_F32_ABS) and d["later_ratio"].low == pytest.approx(1.0)
    assert [c.met for c in claim.conditions] == [True, True, False, True]
    assert claim.verdict == "does not hold" and "(c) = 1.000 [" in claim.why
    assert claim.estimate is claim.conditions[0].quantity
    assert claim.estimate.value == pytest.approx(0.28, abs=FEW_F32_ABS)
    # later periods like x: first periods (0) minus x's 0.255
    res, (claim,) = run(corpus())
    assert res.data["quiet_vs_later"].value == pytest.approx(-0.255, abs=FEW_F32_ABS) and claim.verdict == "holds"
    assert res.summary["later periods (2nd, 3rd, ... of a text)"] == 6


def test_first_period_no_more_attended_than_later_periods_does_not_hold():
    """(a), (b) and (c) hold, but later tokens give each later period as much as the first period (0.4 in the
    middle layers): the first period is no BOS to them, any period is (appendix D's second reference)."""
    res, (claim,) = run(corpus(later_share=(0.1, 0.4)))
    d = res.data
    # the 5 rows after a first period (p = 3, 4, 3, 4, 4 of texts 0, 1, 2): 0.4 - 0.4 in both middle layers
    assert d["over_later"].value == pytest.approx(0.0, abs=FEW_F32_ABS) and d["over_later"].high == pytest.approx(0.0)
    assert d["over_later"].n == 5 and d["over_later"].units == 3
    assert [c.met for c in claim.conditions] == [True, True, True, False]
    assert claim.verdict == "does not hold" and "(d) = 0.000 [0.000, 0.000]" in claim.why
    assert "not above 0" in claim.why and claim.estimate.value == pytest.approx(0.28, abs=FEW_F32_ABS)
    # attention weights: the first period has 0.1 less (0.3) against the later periods' 0.4
    assert d["bos"]["attn"]["period - later period"].value == pytest.approx(-0.1, abs=FEW_F32_ABS)


def test_first_period_over_later_periods_reads_only_rows_after_a_later_period():
    # only p = q + 2 follows a later period here (p = 4 of texts 0 and 1; text 2's rows end at q + 1 = 4)
    res, (claim,) = run(corpus(later_share=(0.3, 0.25), later_after=2))
    est = res.data["over_later"]
    assert est.value == pytest.approx(0.4 - 0.25, abs=FEW_F32_ABS) and (est.n, est.units) == (2, 2)
    assert est.low == pytest.approx(0.15, abs=FEW_F32_ABS) and claim.verdict == "holds"
    assert "(d) = 0.150 [0.150, 0.150] (n=2 texts): above 0" in claim.why
    # no row follows a later period: the second reference is missing
    res, (claim,) = run(corpus(later_after=9))
    assert claim.verdict == "cannot be tested" and "no later token follows a later period" in claim.why


def test_other_positions_leave_every_period_out():
    # quiet later periods would pull the other positions' mean (0.31875) down if they were counted among them
    res, _ = run(corpus(later_scale=0.0))
    assert res.data["n_other"] == 12
    assert res.summary["middle layers: attention + FFN importance per layer at other positions"].value == \
        pytest.approx(0.31875, abs=FEW_F32_ABS)
    assert res.data["quiet"].value == pytest.approx(-0.31875, abs=FEW_F32_ABS)


def test_summary_serialises():
    import json

    from flowroutes import report

    res, _ = run(corpus(attn=False))
    text = json.dumps(res.summary, default=report._json_default)
    assert '"value": -0.31875' in text
    assert "attn" not in res.data["shares"]


# --- fig. 14 with a tiny model -----------------------------------------------------------------------------------
