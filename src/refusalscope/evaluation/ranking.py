"""How well one ranking of latents agrees with another: per-prompt Spearman and
precision@K, with bootstrap intervals over prompts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor

from ..runtime.types import FeatureList
from .stats import bootstrap_mean_ci


def spearman_rows(score: np.ndarray, truth: np.ndarray) -> list[float]:
    """Spearman correlation per row; ``-inf`` scores (latents a method cannot rank) tie
    last; NaN where either side is constant (undefined)."""
    from scipy.stats import spearmanr

    out = []
    for s, t in zip(score, truth, strict=True):
        finite = np.isfinite(s)
        s = np.where(finite, s, np.min(s[finite], initial=0.0) - 1.0)
        undefined = np.ptp(s) == 0 or np.ptp(t) == 0
        out.append(math.nan if undefined else float(spearmanr(s, t).statistic))
    return out


def mean_ci(values: Sequence[float], n_bootstrap: int, seed: int) -> dict[str, Any]:
    """``{"mean", "ci95", "n"}`` of per-prompt values (bootstrap over prompts; NaN values,
    undefined on their prompt, left out)."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return {"mean": None, "ci95": None, "n": 0}
    low, high = bootstrap_mean_ci(values, n_bootstrap, seed)
    return {
        "mean": round(float(np.mean(values)), 4),
        "ci95": [round(low, 4), round(high, 4)],
        "n": len(values),
    }


def top_sets(score: Tensor, features: FeatureList, k: int) -> list[set]:
    """Per row of ``score [prompt, n]``, the ``k`` best of ``features`` as a set of pairs."""
    idx = score.topk(min(k, score.shape[1]), dim=1).indices
    return [{tuple(f) for f in features[row].tolist()} for row in idx]


def precision_at_k(sets: Sequence[FeatureList], top: Sequence[set], k: int) -> list[float]:
    """Per prompt: the share of ``top`` (the true top-``k``) that the method's set holds."""
    return [len({tuple(f) for f in s.tolist()} & t) / k for s, t in zip(sets, top, strict=True)]


def paired_difference(
    a: Sequence[float], b: Sequence[float], n_bootstrap: int, seed: int
) -> dict[str, Any]:
    """Mean of ``a − b`` over the prompts where both are defined, with its interval."""
    diffs = [x - y for x, y in zip(a, b, strict=True) if not (math.isnan(x) or math.isnan(y))]
    return mean_ci(diffs, n_bootstrap, seed)
