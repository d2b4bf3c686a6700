"""The claims report of `flowroutes reproduce` (report.html, claims.json, the terminal summary) and the analyses'
report.html, on hand-built results: every claim shows the numbers its verdict compares, its rule as a pass
condition and links to its figures; sizes, counts and timings read as words; numbers are short, never 'nan' or raw
JSON."""

import html as htmllib
import operator
import re

import numpy as np
import pytest
from matplotlib.figure import Figure

from flowroutes import report
from flowroutes.analyses import bottom_to_top, domains, head_roles, reproduce, vectors
from flowroutes.analyses.base import Context, registry
from flowroutes.analyses.rows import table_from_columns
from flowroutes.analyses.run import Options
from flowroutes.analyses.stats import Estimate
from tests.helpers.readable import assert_readable, long_decimals, visible_text

L, H = 4, 2  # layers, heads of the hand-built corpus rows (4: bottom-to-top reads layers 1 to L-2)
NAN = float("nan")


# --- hand-built results, one for every analysis that has claims -------------------------------------------------

def corpus_table(n=40):
    """Corpus rows of 10 texts: L0H0 is a previous-token head that leads layer 0; L0H1 puts 0.9 of its influence
    on its own word for every later subword but is never quiet on first subwords, so that no head meets the
    subword-merging definition although L0H1's share (i) is high; activity falls from layer 0 to layer 3 (the claims'
    tau on 2 heads is 0.01 * 33 / 3 = 0.11: layer 1's heads affect about 0.6 of the streams, layers 2-3 none)."""
    rng = np.random.default_rng(0)
    head_max = np.zeros((n, L * H), dtype=np.float32)
    head_max[:, 0] = 0.5
    head_max[:, 1] = 0.005
    head_max[:, H:2 * H] = rng.random((n, H)) * 0.3
    ffn = np.tile(np.array([0.3, 0.2, 0.1, 0.6], dtype=np.float32), (n, 1))
    previous = np.full((n, L * H), 0.1, dtype=np.float32)
    previous[:, 0] = 0.9
    same = np.full((n, L * H), 0.1, dtype=np.float32)
    same[:, 1] = 0.9
    subword = ["first" if i % 2 == 0 else "later" for i in range(n)]
    cols = {"doc": list(np.arange(n) // 4), "domain": ["general"] * n, "position": [1 + i % 4 for i in range(n)],
            "token": ["t"] * n, "subword": subword,
            "vector": [np.concatenate([head_max[i] + 0.01, ffn[i]]) for i in range(n)],
            "head_max": list(head_max), "previous": list(previous), "same_word": list(same)}
    return table_from_columns(cols)


DOMAIN_DOCS = {  # 2 layers x 2 heads: [L0H0, L0H1, L1H0, L1H1, FFN0, FFN1] per text (two predictions each)
    "general": ([0.30, 0.00, 0.10, 0.05, 0.20, 0.30], [0.50, 0.00, 0.10, 0.05, 0.40, 0.30]),
    "code": ([0.30, 0.10, 0.10, 0.01, 0.20, 0.30], [0.30, 0.30, 0.12, 0.01, 0.20, 0.30]),
    "addition": ([0.20, 0.00, 0.00, 0.30, 0.004, 0.30], [0.20, 0.00, 0.00, 0.30, 0.006, 0.30]),
    "subtraction": ([0.20, 0.00, 0.02, 0.01, 0.30, 0.002], [0.20, 0.00, 0.02, 0.01, 0.30, 0.004]),
    "russian": ([0.40, 0.00, 0.30, 0.05, 0.20, 0.05], [0.40, 0.00, 0.30, 0.05, 0.20, 0.07]),
    "english": ([0.40, 0.00, 0.10, 0.05, 0.20, 0.25], [0.40, 0.00, 0.10, 0.05, 0.20, 0.35]),
}


def domains_table():
    cols = {"doc": [], "domain": [], "position": [], "token": [], "vector": []}
    for domain, texts in DOMAIN_DOCS.items():
        for k, vec in enumerate(texts):
            doc = len(set(cols["doc"]))
            for p in range(2):
                cols["doc"].append(doc)
                cols["domain"].append(domain)
                cols["position"].append(p)
                cols["token"].append({"code": "def", "russian": "и"}.get(domain, "the") if p else f"w{k}")
                cols["vector"].append(np.array(vec, dtype=np.float32))
    return table_from_columns(cols)


def _small_table():
    return table_from_columns({"x": [1, 2]})


def _figure():
    fig = Figure(figsize=(1, 1))
    fig.subplots().plot([0, 1], [0, 1])
    return fig


def task_result(task, on, off, n_boot=200):
    return report.Result("task_heads", f"Task heads: {task}", "", _small_table(), {"examples": len(on)},
                         {"task-heads": (_figure(), "frequency")},
                         data={"on": np.asarray(on, float), "off": np.asarray(off, float),
                               "examples": np.arange(len(on)), "boot": {"n_boot": n_boot, "seed": 0}})


def vectors_result():
    """Input POS separates function words (always right) from content words (half right), and the identity control
    gets every token right; next-token POS is recovered less often than input POS; first/later subword: accuracy
    0.9 against a majority of 0.5."""
    n = 40
    docs = np.arange(n) // 4
    labels = np.array(["DET", "NOUN"] * (n // 2))
    right_in = np.where(labels == "DET", 1.0, np.arange(n) % 4 // 2)
    major_in = (labels == "DET").astype(float)
    right_next = np.where(np.arange(n) % 4 == 0, 1.0, 0.0)
    gain = Estimate(0.4, 0.31, 0.48, n, 10)
    keep = np.ones(n, dtype=bool)
    data = {"docs": docs,
            "pos_in": {"keep": keep, "labels": labels, "correct": right_in, "is_majority": major_in,
                       "identity": np.ones(n)},
            "pos_next": {"keep": keep, "labels": labels, "correct": right_next, "is_majority": major_in},
            "subword": {"gain": gain, "majority_baseline": Estimate(0.5, 0.45, 0.55, n, 10)}}
    figures = {f"tsne-{col}": (_figure(), col) for col in vectors.LABELS}
    return report.Result("vectors", "Component importance vectors", "", _small_table(), {}, figures, data=data)


def periods_result():
    quiet = Estimate(-0.0321234, -0.0456789, -0.0198765, 30, 8)
    more = Estimate(0.0123456, -0.0012345, 0.0254321, 30, 8)
    first = Estimate(-0.0712345, -0.0898765, -0.0501234, 30, 8)
    quiet_ratio = Estimate(0.2123456, 0.1456789, 0.2998765, 30, 8)
    later_ratio = Estimate(0.3123456, 0.2456789, 0.3998765, 24, 8)
    over_later = Estimate(0.0212345, 0.0101234, 0.0323456, 20, 8)
    data = {"middle": [2, 3], "n_period": 8, "n_later": 30, "n_other": 40, "quiet": quiet, "gets_more": more,
            "over_later": over_later,
            "quiet_ratio": quiet_ratio, "later_ratio": later_ratio, "n_later_period": 16, "n_texts": 8,
            "n_qualified": 8, "bos": {"contrib": {"period - first": first}}}
    figures = {"periods-blocks": (_figure(), "blocks"), "periods-contrib-shares": (_figure(), "shares")}
    return report.Result("periods", "Periods acting as BOS", "", _small_table(), {}, figures, data=data)


def svd_result():
    tokens = {(0, 0): ["the", "a", "the", "x"], (0, 1): ["def", "(", "def", "x"], (1, 0): ["и", "в", "и", "of"],
              (1, 1): ["the", "a", "b", "c"]}
    cols = {k: [] for k in ("layer", "head", "vector", "singular_value", "rank", "token_id", "token", "score")}
    for (layer, head), words in tokens.items():
        for rank, word in enumerate(words):
            for key, value in (("layer", layer), ("head", head), ("vector", 0), ("singular_value", 1.0),
                               ("rank", rank), ("token_id", rank), ("token", word), ("score", 1.0)):
                cols[key].append(value)
    return report.Result("svd", "W_OV singular vectors", "", table_from_columns(cols), {},
                         {"svd-top-tokens": (_figure(), "top tokens")}, data={"boot": {"n_boot": 200, "seed": 0}})


def hand_built_results():
    ctx = Context(corpus_table(), L, H, Options(n_boot=200, threshold=0.01), {"texts": 10})
    n = 12
    on = np.zeros((n, 4))
    on[:, 0] = 1  # a generic head: active for the task and the contrast
    on[:, 1] = 1  # a task head
    off = np.zeros((n, 4))
    off[:, 0] = 1
    return {
        "head-roles": head_roles.summarize(ctx), "bottom-to-top": bottom_to_top.summarize(ctx),
        "vectors": vectors_result(), "periods": periods_result(),
        "domains": domains.summarize(Context(domains_table(), 2, 2, Options(n_boot=200), {"texts": 12})),
        "svd": svd_result(),
        "task-heads:ioi": task_result("ioi", on, off),
        "task-heads:greater-than": task_result("greater-than", on, on),
        "task-heads:greater-than-00": task_result("greater-than-00", on, np.zeros((n, 4))),
    }


EFFECT = [0.9, 0.8, 0.1, 0.05, 0.7, 0.6, 0.0, 0.02, 0.5, 0.4, 0.3, 0.01]
PATCH = {"effect": EFFECT, "effects": [EFFECT] * 4,
         "active": [[0, 1, 4, 5, 8], [0, 1, 4, 9], [0, 1, 2, 5, 8, 10], [1, 4, 5, 8, 9]],
         "summary": {"spearman(route frequency, |patching effect|)": 0.16594171936692717,
                     "speed_ratio_head_patching_vs_routes": 93.0123456, "speed_ratio_acdc_style_vs_routes": 90.686123,
                     "examples": 16}}
TIMINGS = {"corpus rows": 794.123456, "head-roles": 3.21234, "bottom-to-top": 12.3456, "patching": 2173.4567}
COUNTS = {"texts": 384, "texts_per_domain": {"general": 48, "code": 48}, "skipped_long_or_short": 0, "truncated": 1,
          "predictions": 11931}


@pytest.fixture(scope="module")
def results():
    return hand_built_results()


def hand_built_claims(results) -> list:
    """Every claim of the hand-built results, the patching claims included."""
    out = [c for spec in registry().values() if spec.claims for c in spec.claims(results)]
    return out + reproduce.patching_claims(PATCH)


def write_hand_built(out, results, claims) -> tuple[dict, str]:
    """The hand-built results written into `out` as a reproduce run writes them, with the claims report:
    (claims document, report page)."""
    for key, res in results.items():
        res.write(out / reproduce.folder_of(key))
    (out / "patching").mkdir()
    (out / "patching" / "patching-heatmaps.png").write_bytes(report.figure_bytes(_figure(), "png"))
    doc = reproduce.claims_doc("hand-built", "quick", reproduce.SIZE["quick"].__dict__, COUNTS, TIMINGS, claims, out)
    page = reproduce.claims_html(doc, claims, results)
    (out / "report.html").write_text(page)
    return doc, page


@pytest.fixture(scope="module")
def claims(results):
    return hand_built_claims(results)


@pytest.fixture(scope="module")
def written(results, claims, tmp_path_factory):
    """The hand-built results written as a reproduce run writes them, with the claims report."""
    out = tmp_path_factory.mktemp("reproduce")
    doc, page = write_hand_built(out, results, claims)
    return out, doc, page


def row_of(page: str, key: str) -> str:
    match = re.search(rf"<tr id='claim-{re.escape(key)}'.*?</tr>", page, flags=re.S)
    assert match, key
    return match.group(0)


def cells(row: str) -> list[str]:
    return re.findall(r"<td>(.*?)</td>", re.sub(r"<td style='[^']*'>", "<td>", row), flags=re.S)


# --- the tests -------------------------------------------------------------------------------------------------

CLAIMS = sorted([  # every claim of the paper that `flowroutes reproduce` reports
    "ioi-generic-heads", "greater-than-contrast", "pos-function-words", "first-vs-later-subwords",
    "input-vs-next-pos", "bottom-to-top", "last-layer-ffn", "previous-token-heads-lead", "subword-merging-heads",
    "domain-specific-heads", "last-ffn-non-english", "ffn-zero-arithmetic", "svd-topic-tokens", "first-period-bos",
    "routes-vs-patching", "hundred-times-faster"])
OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


def test_the_hand_built_results_test_every_claim(claims):
    assert sorted(c.key for c in claims) == CLAIMS == sorted(reproduce.CLAIM_FIGURES)
    untested = [c.key for c in claims if c.verdict == "cannot be tested"]
    assert untested == [], untested
    verdicts = {c.key: c.verdict for c in claims}
    assert "holds" in verdicts.values() and "does not hold" in verdicts.values()


@pytest.mark.parametrize("key", CLAIMS)
def test_the_row_shows_the_numbers_the_verdict_compares(claims, written, key):
    """The verdict is recomputed here from the numbers the row shows (each condition's bound of its quantity
    against its threshold), the row shows each of them with the comparison and the rule as a pass condition,
    and the claim's headline estimate is one of them."""
    claim = next(c for c in claims if c.key == key)
    _out, _doc, page = written
    assert claim.conditions, "the verdict's numbers are not stated"
    met = []
    for cond in claim.conditions:
        q = cond.quantity
        x = float(getattr(q, cond.bound)) if isinstance(q, Estimate) else float(q)
        met.append(bool(np.isfinite(x) and OPS[cond.op](x, cond.threshold)))
    assert claim.verdict == ("holds" if all(met) else "does not hold")
    assert claim.estimate is None or any(c.quantity == claim.estimate for c in claim.conditions)
    section, _paper, _measured, shown, verdict, rule, _why, _figures = cells(row_of(page, key))
    assert htmllib.unescape(re.sub(r"<[^>]+>", "", verdict)) == claim.verdict
    shown, rule = htmllib.unescape(shown), htmllib.unescape(rule)
    for cond, ok in zip(claim.conditions, met):
        assert cond.shown() in shown and cond.label in shown
        assert cond.check() in rule and cond.check().endswith("met" if ok else "not met")
    assert rule.startswith("holds if ") and " is " in rule
    assert ("interval" in rule) == any(c.bound != "value" for c in claim.conditions)


def test_subword_merging_shows_the_count_not_the_best_candidate(claims, written, results):
    """The issue's row: 0.858 [0.803, 0.916] (the best candidate's share (i)) next to 'does not hold'. The verdict
    counts the heads of the bottom half that meet the whole definition: the row shows that count."""
    claim = next(c for c in claims if c.key == "subword-merging-heads")
    assert claim.verdict == "does not hold"
    assert not results["head-roles"].data["subword_merging"].any()  # by construction: no head meets it ...
    share = results["head-roles"].data["merging_frequency"][0, 1]
    assert share == 1.0  # ... though L0H1 meets part (i) everywhere
    (cond,) = claim.conditions
    assert (cond.quantity, cond.bound, cond.op, cond.threshold) == (0, "value", ">=", 1)
    shown = htmllib.unescape(cells(row_of(written[2], claim.key))[3])
    assert "meet the subword-merging definition: <b>0</b>" in shown and "1.000" not in shown
    assert claim.estimate is None and "L0H1" in claim.why


def test_ffn_zero_shows_the_layer_bound_it_compares(claims, results):
    """The verdict asks for a layer whose upper bound is below 0.01 where general's lower bound is above 0.01;
    the shown numbers are those layers' estimates, not the minimum of the layer means."""
    claim = next(c for c in claims if c.key == "ffn-zero-arithmetic")
    est = results["domains"].data["estimates"]
    nh = 4
    for cond, domain in zip(claim.conditions, ("addition", "subtraction")):
        layer = int(re.search(r"in layer (\d+)", cond.label).group(1))
        assert cond.quantity == est[domain][nh + layer] and cond.bound == "high" and cond.op == "<"
    assert claim.verdict == "holds"  # addition: layer 0 (0.004-0.006), subtraction: layer 1 (0.002-0.004)


def test_every_row_links_its_figures(claims, written):
    out, doc, page = written
    for claim in claims:
        links = re.findall(r"href='([^']+)'", cells(row_of(page, claim.key))[7])
        expected = reproduce.CLAIM_FIGURES[claim.key]
        if not expected:
            assert links == [] and "no figure" in row_of(page, claim.key)
            continue
        assert links, f"{claim.key}: no figure linked"
        for link in links:
            assert (out / link).is_file(), link
        assert next(c for c in doc["claims"] if c["claim"] == claim.key)["figures"] == links
    # a figure the run did not write gets no link
    missing = reproduce.claim_figures("routes-vs-patching", out)
    assert missing == ["patching/patching-heatmaps.png"]


def test_the_report_opens_with_every_claim_at_a_glance(claims, written):
    """The first table: a row per claim with its verdict in words on the verdict's colour, the headline number,
    and each figure as a thumbnail that links to the full figure; the claim's name links to its detailed row."""
    out, doc, page = written
    glance = re.search(r"<table id='glance'>.*?</table>", page, flags=re.S)
    assert glance and page.index("<table id='glance'>") < page.index("<table>")  # before any other table
    rows = re.findall(r"<tr><th scope='row'>.*?</tr>", glance.group(0), flags=re.S)
    assert len(rows) == len(claims)
    for claim, row in zip(claims, rows):
        assert f"href='#claim-{claim.key}'" in row and f"<tr id='claim-{claim.key}'" in page
        colour, sign = reproduce.VERDICT_LOOK[claim.verdict]
        badge = re.search(r"<span class='verdict' style='background:([^']+)'>(.*?)</span></td>", row).groups()
        assert badge[0] == colour and htmllib.unescape(re.sub(r"<[^>]+>", "", badge[1])) == f"{sign} {claim.verdict}"
        if claim.estimate is not None:
            assert htmllib.escape(str(claim.estimate)) in row
        figures = next(c for c in doc["claims"] if c["claim"] == claim.key)["figures"]
        thumbs = re.findall(r"<a href='([^']+)'><img class='thumb' src='([^']+)' alt='([^']+)'></a>", row)
        assert [(a, b) for a, b, _ in thumbs] == [(f, f) for f in figures], claim.key
        assert all((out / f).is_file() for f in figures) and all(alt.startswith("figure ") for *_, alt in thumbs)
        assert figures or "no figure" in row
    assert len(set(look[0] for look in reproduce.VERDICT_LOOK.values())) == len(reproduce.VERDICT_LOOK)


def test_linked_figure_names_are_the_analyses_own(results):
    """The figure names of CLAIM_FIGURES are those the analyses write (here for the ones summarised from rows)."""
    for key, pairs in reproduce.CLAIM_FIGURES.items():
        for run, name in pairs:
            if run in ("bottom-to-top", "head-roles", "domains"):
                assert name in results[run].figures, (key, run, name)
            if run == "vectors":
                assert name in {f"tsne-{col}" for col in vectors.LABELS}, (key, name)


def test_claims_report_reads_as_words_and_short_numbers(written):
    _out, _doc, page = written
    assert_readable(page)
    text = visible_text(page)
    assert ("quick: 48 texts per domain, 48 examples per task, 16 IOI examples for the patching comparison, "
            "2,000 bootstrap resamples") in text
    assert "384 texts (general 48, code 48), 11,931 predictions; 0 skipped" in text
    assert "corpus rows 13 min 14 s, head-roles 3.2 s, bottom-to-top 12 s, patching 36 min 13 s" in text
    # a timed run has no interval, and says so; the Spearman correlation is rounded
    assert "90.7 (no interval: n=16 in 1 timed run)" in text and "0.166" in text


def test_analysis_report_reads_as_words_and_short_numbers():
    summary = {
        "texts": 48, "texts_per_domain": {"general": 48, "code": 47},
        "top1_valid": Estimate(0.8958333333, 0.8125, 0.979166666, 48, 48, "examples"),
        "one text": Estimate(0.5123456, NAN, NAN, 1, 1),
        "most_task_specific_heads": [{"head": "L8H1", "difference": Estimate(0.896, 0.792, 0.979, 48, 48)},
                                     {"head": "L17H4", "difference": Estimate(0.771, 0.6, 0.9, 48, 48)}],
        "spearman": 0.16594171936692717, "ratio": 90.686123, "missing": NAN, "layers": list(range(30)),
        "separability": {"knn_accuracy": Estimate(0.7761, 0.751, 0.805, 1306, 48), "classes": 12,
                         "read back from JSON": {"value": 0.123456, "ci95": [None, None], "n": 3, "units": 1,
                                                 "unit": "texts"}},
    }
    res = report.Result("x", "X", "explained", _small_table(), summary)
    page = res.html({})
    assert_readable(page)
    text = visible_text(page)
    assert "0.896 [0.812, 0.979] (n=48 examples)" in text
    assert "0.512 (no interval: n=1 text)" in text and "0.123 (no interval: n=3 in 1 text)" in text
    assert "90.7" in text and "0.166" in text and "not computed" in text
    assert "0, 1, 2" in text and "… and 18 more" in text
    assert re.search(r"<th>head</th><th>difference</th>", page)  # a list of records is a table


def test_terminal_summary(written):
    _out, doc, _page = written
    text = reproduce.claims_text(doc)
    assert "{" not in text and not re.search(r"\bnan\b", text) and long_decimals(text) == []
    assert "quick: 48 texts per domain" in text and "time: corpus rows 13 min 14 s" in text
    lines = text.splitlines()
    start = lines.index("     does not hold  subword-merging-heads")
    block = "\n".join(lines[start + 1:start + 3])
    assert ": 0; 0 >= 1: not met" in block and "figure: head-roles/head-roles.png" in block


@pytest.mark.parametrize(("x", "text"), [(0.16594171936692717, "0.166"), (90.686, "90.7"), (2173.4567, "2173"),
                                         (12345.6, "12300"), (0.000123456, "0.000123"), (0.0, "0.000"),
                                         (-0.0, "0.000"), (9.9996, "10.0"), (99.96, "100"), (NAN, "not computed")])
def test_numbers(x, text):
    from flowroutes.formatting import number as fmt

    assert fmt(x) == text


def test_every_claim_interval_uses_the_runs_bootstrap_count(monkeypatch):
    """One bootstrap setting: every interval a claim computes has as many replicates as the run's n_boot (here
    300, against the 2000 default), none a count of its own (the previous-token and patching rows used 300 and the
    domain overlap 200 whatever the run asked)."""
    from flowroutes.analyses import stats

    n_boot = 300
    ctx = Context(corpus_table(), L, H, Options(n_boot=n_boot, threshold=0.01), {"texts": 10})
    n = 12
    on, off = np.zeros((n, 4)), np.zeros((n, 4))
    on[:, :2], off[:, 0] = 1, 1
    results = {
        "head-roles": head_roles.summarize(ctx), "bottom-to-top": bottom_to_top.summarize(ctx),
        "domains": domains.summarize(Context(domains_table(), 2, 2, Options(n_boot=n_boot), {"texts": 12})),
        "task-heads:ioi": task_result("ioi", on, off, n_boot=n_boot),
        "task-heads:greater-than": task_result("greater-than", on, on, n_boot=n_boot),
        "task-heads:greater-than-00": task_result("greater-than-00", on, np.zeros((n, 4)), n_boot=n_boot),
    }
    seen = []
    replicates, interval = stats.replicates, stats.interval

    def counting_replicates(values, groups=None, n_boot=stats.N_BOOT, seed=0):
        seen.append(n_boot)
        return replicates(values, groups, n_boot, seed)

    def counting_interval(value, reps, *args, **kwargs):
        seen.append(len(reps))
        return interval(value, reps, *args, **kwargs)

    monkeypatch.setattr(stats, "replicates", counting_replicates)
    monkeypatch.setattr(stats, "interval", counting_interval)
    claims = [c for spec in registry().values() if spec.claims for c in spec.claims(results)]
    claims += reproduce.patching_claims(PATCH, n_boot)
    assert len(claims) >= 10 and seen
    assert set(seen) == {n_boot}


def test_routes_that_hold_every_head_do_not_hold_the_patching_circuit():
    """Routes with every head in every example cover the patching circuit trivially (coverage 1.0; before
    2026-12-03 that was "holds"). Against the base rate (every head is in the routes), the circuit is enriched 1x:
    the claim must not hold. Routes that hold the circuit's 10 heads and nothing else (of 12) are enriched
    1 / (10/12) = 1.2 and hold."""
    every = {**PATCH, "active": [list(range(12))] * 8, "effects": [EFFECT] * 8}
    claim = {c.key: c for c in reproduce.patching_claims(every, 300)}["routes-vs-patching"]
    assert claim.estimate.value == 1.0 and claim.verdict == "does not hold"
    assert claim.conditions[1].quantity.value == pytest.approx(1.0)
    circuit = np.argsort(-np.abs(np.asarray(PATCH["effect"])))[:10].tolist()
    only = {**PATCH, "active": [circuit] * 8, "effects": [EFFECT] * 8}
    claim = {c.key: c for c in reproduce.patching_claims(only, 300)}["routes-vs-patching"]
    assert claim.verdict == "holds"
    assert claim.conditions[1].quantity.value == pytest.approx(1.0 / (10 / 12))


def test_a_patching_circuit_that_depends_on_the_examples_is_no_circuit_the_routes_hold():
    """Both sides resampled (issue 19): of 20 heads, heads 0-9 carry the task in 8 of 16 examples and heads 10-19 in
    the other 8, so which ten heads are "the patching circuit" depends on the examples drawn (heads 0-9 lead the
    mean by 0.01 only). The routes hold heads 0-9 in every example. With the circuit fixed on all examples (before
    2026-12-03) the coverage read 1.0 [1.0, 1.0] and "held"; chosen again in each resample, it is 0 in about half of
    them, and the claim does not hold. Where every example shows heads 0-9 the same routes still hold."""
    first = [1.01] * 10 + [0.0] * 10
    second = [0.0] * 10 + [1.0] * 10
    routes = [list(range(10))] * 16
    unstable = {**PATCH, "effect": list(np.mean([first, second], axis=0)), "effects": [first, second] * 8,
                "active": routes}
    claim = {c.key: c for c in reproduce.patching_claims(unstable, 2000)}["routes-vs-patching"]
    assert claim.estimate.value == 1.0 and claim.estimate.low == 0.0
    assert claim.verdict == "does not hold"
    stable = {**unstable, "effects": [first] * 16}
    claim = {c.key: c for c in reproduce.patching_claims(stable, 2000)}["routes-vs-patching"]
    assert (claim.estimate.value, claim.estimate.low) == (1.0, 1.0) and claim.verdict == "holds"
