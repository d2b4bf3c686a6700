"""formatting: how the terminal shows a summary: estimates as '0.759 [0.717, 0.803] (n=348 in 20 texts)', a list of
records as an aligned table, long lists and tables cut with a count of what was left out, 'wrote' lines."""

import numpy as np

from flowroutes import formatting
from flowroutes.analyses.stats import Estimate

NAN = float("nan")


def test_an_estimate_reads_as_value_interval_and_n():
    est = Estimate(0.7586206896551724, 0.7167401054992262, 0.8031, 348, 20, "texts")
    assert str(est) == "0.759 [0.717, 0.803] (n=348 in 20 texts)"
    assert formatting.plain(est.to_dict()) == str(est)  # read back from JSON: the same words
    assert str(Estimate(0.5, NAN, NAN, 1, 1)) == "0.500 (no interval: n=1 text)"
    assert str(Estimate(NAN, NAN, NAN, 0, 0, "examples")) == "not computed (n=0 examples)"
    assert formatting.entry("top1_valid", est) == ["  top1 valid: 0.759 [0.717, 0.803] (n=348 in 20 texts)"]


def test_a_list_of_records_is_a_table_cut_with_a_count():
    rows = [{"head": f"L{i}H0", "difference": Estimate(0.1 * i, 0.0, 0.2, 48, 48, "examples")} for i in range(11)]
    lines = formatting.entry("most_task_specific_heads", rows)
    assert lines[0] == "  most task specific heads (11):"
    assert lines[1].split() == ["head", "difference"]
    assert lines[2] == "    L0H0  0.000 [0.000, 0.200] (n=48 examples)"
    assert len(lines) == 2 + formatting.ROWS + 1 and lines[-1] == "    … and 3 more"
    # the columns line up
    assert len({line.index("[") for line in lines[2:-1]}) == 1


def test_long_lists_and_dicts_are_cut_with_a_count():
    assert formatting.plain(list(range(30))) == "0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, … and 18 more"
    words = [f"token-{i:03d}" for i in range(40)]
    (head, line) = formatting.entry("tokens", words)
    assert head == "  tokens (40):" and len(line) <= formatting.WIDTH
    shown = line.strip().split(", ")
    assert shown[-1] == f"… and {40 - len(shown) + 1} more" and shown[:-1] == words[:len(shown) - 1]
    many = {f"domain {i}": Estimate(0.5, 0.4, 0.6, 10, 2) for i in range(20)}
    lines = formatting.entry("per domain", many)
    assert lines[0] == "  per domain:" and lines[1] == "    domain 0: 0.500 [0.400, 0.600] (n=10 in 2 texts)"
    assert lines[-1] == f"    … and {20 - 2 * formatting.ROWS} more"


def test_scalars_read_as_words():
    assert [formatting.plain(v) for v in (None, True, np.bool_(False), 12345, np.int64(3), 0.16594171936692717,
                                       NAN, [], {})] == ["-", "yes", "no", "12,345", "3", "0.166", "not computed",
                                                         "none", "none"]
    assert formatting.plain({"a_b": [[1, 2], [3, 4]]}) == "a b: (1, 2), (3, 4)"
    assert formatting.token("a\nb\t") == '"a\\nb\\t"'


def test_wrote_lines(tmp_path):
    assert formatting.wrote(tmp_path / "routes.json", "routes of position 14, 37 edges") == \
        f"wrote routes.json (routes of position 14, 37 edges) → {tmp_path / 'routes.json'}"
    assert formatting.wrote_many([tmp_path / "b.png", tmp_path / "a.png"], "figure", "as PNG and SVG", tmp_path) == \
        f"wrote 2 figures as PNG and SVG (a, b) → {tmp_path}/"
    assert formatting.count(1, "figure") == "1 figure"
