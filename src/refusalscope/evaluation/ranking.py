"""How well one ranking of latents agrees with another: per-prompt Spearman and
precision@K, with bootstrap intervals over prompts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor

from ..runtime.types import FeatureList
from .stats import bootstrap_mean_ci


def spearman_rows(score: np.ndarray, truth: np.ndarray) -> list[float]:
    """Spearman correlation per row; ``-inf`` scores (latents a method cannot rank) tie
    last; rows where either side is constant are skipped."""
    from scipy.stats import spearmanr

    out = []
    for s, t in zip(score, truth, strict=True):
        finite = np.isfinite(s)
        s = np.where(finite, s, np.min(s[finite], initial=0.0) - 1.0)
        if np.ptp(s) == 0 or np.ptp(t) == 0:
            continue
        out.append(float(spearmanr(s, t).statistic))
    return out


def mean_ci(values: Sequence[float], n_bootstrap: int, seed: int) -> dict[str, Any]:
    """``{"mean", "ci95", "n"}`` of per-prompt values (bootstrap over prompts)."""
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
