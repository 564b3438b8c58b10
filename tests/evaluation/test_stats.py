"""Wilson intervals and exact McNemar tests against known values."""

from __future__ import annotations

import math

import pytest

from refusalscope.evaluation.stats import mcnemar_exact, paired_comparison, wilson_interval


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
