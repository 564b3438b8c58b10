"""Uncertainty of the judged rates: Wilson intervals and exact paired (McNemar) tests.

Jailbreak rates are proportions over ~100 prompts, so differences of a few points are
within noise; every method is judged on the same prompts, so methods are compared pair
by pair on the prompts where exactly one of them succeeds.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

Z95 = 1.959963984540054


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``k`` successes in ``n`` trials (95 % by default)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if k == 0 else max(0.0, centre - half)
    return low, 1.0 if k == n else min(1.0, centre + half)


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(a_only, b_only) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_comparison(
    rows: Iterable[Mapping[str, Any]], reference: str, verdict: str = "complied"
) -> dict[str, dict[str, float]]:
    """``reference`` against every other method, prompt by prompt.

    ``rows`` are generation records (``method``, ``index``, ``judgement``) of methods run on
    the same prompts; ``index`` is the prompt's position in its set (prompt texts can repeat:
    refusal_direction's ``harmful_test.json`` holds 10 duplicates). Returns method ->
    ``{"reference_only", "other_only", "p_value"}``.
    """
    hits: dict[str, dict[int, bool]] = {}
    for r in rows:
        hits.setdefault(r["method"], {})[r["index"]] = r["judgement"] == verdict
    if reference not in hits:
        return {}
    ref = hits[reference]
    out = {}
    for method, other in hits.items():
        if method == reference:
            continue
        shared: Sequence[int] = [i for i in ref if i in other]
        a = sum(ref[p] and not other[p] for p in shared)
        b = sum(other[p] and not ref[p] for p in shared)
        out[method] = {
            "reference_only": a,
            "other_only": b,
            "p_value": float(f"{mcnemar_exact(a, b):.3g}"),
        }
    return out


def bootstrap_mean_ci(
    values: Sequence[float], n_boot: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap 95 % interval of the mean (``(nan, nan)`` when empty)."""
    import numpy as np

    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, (n_boot, x.size))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def bootstrap_diff_ci(
    a: Sequence[float], b: Sequence[float], n_boot: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap 95 % interval of ``mean(a) − mean(b)``, each resampled on its own."""
    import numpy as np

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size == 0 or y.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    dx = x[rng.integers(0, x.size, (n_boot, x.size))].mean(1)
    dy = y[rng.integers(0, y.size, (n_boot, y.size))].mean(1)
    low, high = np.percentile(dx - dy, [2.5, 97.5])
    return float(low), float(high)


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and two-sided 95 % Student-t interval (over seeds: few, independent values)."""
    from scipy import stats

    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = sum(values) / n
    if n == 1:
        return mean, math.nan, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def verdict_table(
    rows: Iterable[Mapping[str, Any]],
    group: Callable[[Mapping[str, Any]], str | None],
    verdict: Callable[[Mapping[str, Any]], str | None] = lambda r: r["judgement"],
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{group: {method: {"n", "refused", "complied", "degenerate", "complied_ci95"}}}``:
    the judged rates of each method within each group of rows (a harmful test dataset, an
    evaluation). Rows whose group or verdict is None are left out."""
    counts: dict[str, dict[str, Counter[str]]] = {}
    for r in rows:
        g, v = group(r), verdict(r)
        if g is not None and v is not None:
            counts.setdefault(g, {}).setdefault(r["method"], Counter())[v] += 1
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for g, methods in counts.items():
        for method, c in methods.items():
            n = sum(c.values())
            low, high = wilson_interval(c["complied"], n)
            out.setdefault(g, {})[method] = {
                "n": n,
                **{v: c[v] / n for v in ("refused", "complied", "degenerate")},
                "complied_ci95": [round(low, 4), round(high, 4)],
            }
    return out


def cohen_kappa(a: Sequence[bool], b: Sequence[bool]) -> float | None:
    """Cohen's κ of two raters' yes/no labels on the same items; None where it is
    undefined (no items, or both raters give one label to everything)."""
    n = len(a)
    assert n == len(b), "κ needs the two raters' labels of the same items"
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    pa, pb = sum(a) / n, sum(b) / n
    expected = pa * pb + (1 - pa) * (1 - pb)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1 - expected)


def agreement(a: Sequence[str], b: Sequence[str], positive: str = "complied") -> dict[str, Any]:
    """How two judges agree on the same generations: ``n``, the fraction with the same
    verdict, Cohen's κ on ``positive`` against the rest (for jailbreaks: complied or not)
    and the confusion counts ``{verdict of a: {verdict of b: count}}``."""
    confusion: dict[str, Counter[str]] = {}
    for x, y in zip(a, b, strict=True):
        confusion.setdefault(x, Counter())[y] += 1
    kappa = cohen_kappa([x == positive for x in a], [y == positive for y in b])
    return {
        "n": len(a),
        "agree": sum(x == y for x, y in zip(a, b, strict=True)) / len(a) if a else None,
        "kappa": None if kappa is None else round(kappa, 4),
        "confusion": {x: dict(c) for x, c in sorted(confusion.items())},
    }
