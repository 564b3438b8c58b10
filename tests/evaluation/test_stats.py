"""Wilson intervals, exact McNemar tests and judge agreement (Cohen's κ) against known
values."""

from __future__ import annotations

import math

import pytest

from refusalscope.evaluation.stats import (
    agreement,
    cohen_kappa,
    mcnemar_exact,
    paired_comparison,
    verdict_table,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("k", "n", "want"),
    [
        (91, 100, (0.8377, 0.9519)),
        (0, 100, (0.0, 0.0370)),
        (100, 100, (0.9630, 1.0)),
        (5, 10, (0.2366, 0.7634)),
    ],
)
def test_wilson_interval_known_values(k, n, want):
    low, high = wilson_interval(k, n)
    assert (round(low, 4), round(high, 4)) == pytest.approx(want, abs=1e-4)
    assert low <= k / n <= high


def test_wilson_interval_of_nothing_is_everything():
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("a", "b", "want"),
    [(5, 0, 2 / 32), (1, 6, 2 * 8 / 128), (3, 3, 1.0), (0, 0, 1.0), (10, 0, 2 / 1024)],
)
def test_mcnemar_exact_known_values(a, b, want):
    assert mcnemar_exact(a, b) == pytest.approx(want)
    assert mcnemar_exact(b, a) == pytest.approx(want)


def test_mcnemar_matches_the_binomial_tail():
    a, b = 4, 15
    n = a + b
    tail = sum(math.comb(n, i) for i in range(a + 1)) / 2**n
    assert mcnemar_exact(a, b) == pytest.approx(2 * tail)


def test_paired_comparison_counts_discordant_prompts():
    def row(method, i, ok):
        judgement = "complied" if ok else "refused"
        return {"method": method, "index": i, "prompt": "p", "judgement": judgement}

    # every prompt has the same text: pairs are matched by index, not text
    rows = [row("fstar", i, ok) for i, ok in enumerate([1, 1, 1, 0])]
    rows += [row("cossim", i, ok) for i, ok in enumerate([1, 0, 0, 1])]
    rows += [row("base", i, False) for i in range(4)]
    out = paired_comparison(rows, "fstar")
    assert out["cossim"] == {"reference_only": 2, "other_only": 1, "p_value": 1.0}
    assert out["base"]["reference_only"] == 3 and out["base"]["other_only"] == 0
    assert paired_comparison(rows, "missing") == {}


def test_cohen_kappa_matches_the_textbook_example():
    # Cohen (1960)-style 2×2: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no (n = 50):
    # p_o = 0.7, p_e = 0.5·0.6 + 0.5·0.4 = 0.5, κ = 0.4
    a = [True] * 25 + [False] * 25
    b = [True] * 20 + [False] * 5 + [True] * 10 + [False] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(a, a) == pytest.approx(1.0)
    assert cohen_kappa([True] * 4, [True] * 4) is None  # one label everywhere: undefined
    assert cohen_kappa([], []) is None


def test_agreement_counts_verdict_pairs_and_kappa_on_complied():
    a = ["complied", "complied", "refused", "degenerate", "refused"]
    b = ["complied", "refused", "refused", "refused", "refused"]
    out = agreement(a, b)
    assert out["n"] == 5 and out["agree"] == pytest.approx(3 / 5)
    assert out["confusion"] == {
        "complied": {"complied": 1, "refused": 1},
        "degenerate": {"refused": 1},
        "refused": {"refused": 2},
    }
    # complied-or-not: a = [1,1,0,0,0], b = [1,0,0,0,0]: p_o = 0.8, p_e = 0.4·0.2 + 0.6·0.8
    assert out["kappa"] == pytest.approx(round((0.8 - 0.56) / 0.44, 4))


def test_verdict_table_groups_rows_and_gives_wilson_intervals():
    rows = [
        {"method": "base", "judgement": "refused", "ds": "advbench"},
        {"method": "base", "judgement": "complied", "ds": "advbench"},
        {"method": "fstar", "judgement": "complied", "ds": "advbench"},
        {"method": "base", "judgement": "refused", "ds": "harmbench"},
        {"method": "base", "judgement": "refused", "ds": None},
    ]
    table = verdict_table(rows, lambda r: r["ds"])
    assert set(table) == {"advbench", "harmbench"}
    cell = table["advbench"]["base"]
    assert cell["n"] == 2 and cell["complied"] == 0.5 and cell["refused"] == 0.5
    low, high = wilson_interval(1, 2)
    assert cell["complied_ci95"] == [round(low, 4), round(high, 4)]
    assert table["harmbench"]["base"]["refused"] == 1.0
    other = verdict_table(rows, lambda r: "all", verdict=lambda r: "complied")
    assert other["all"]["base"]["complied"] == 1.0 and other["all"]["base"]["n"] == 4
