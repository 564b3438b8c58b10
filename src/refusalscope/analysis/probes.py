"""Out-of-distribution probes: do the refusal features still read harm inside a jailbreak?

Logistic-regression probes (scikit-learn, inputs standardised, L2 strength chosen on the
validation split) on last-token activations, trained on plain harmful vs harmless train
prompts and tested on held-out plain prompts (in distribution) and on adversarial prompts
(out of distribution). Inputs compared:

* ``refusal_features``: the top-k latents of global F* (k = 7 as the authors);
* ``random``: k latents drawn at random among those active on some train prompt's last
  token, ``probe_random_draws`` times (mean and spread over draws);
* ``dense``: the whole residual at the layer that scores best on validation (accuracy, then
  AUROC, then log-loss; every layer is tried, and the chosen one is the one evaluated);
* ``direction``: the residual's projection on the refusal direction at its layer.

Out of distribution, every adversarial prompt is harmful: ``accuracy`` is the share of them
the probe calls harmful (per group too); ``auroc`` ranks them against the harmless test
prompts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..evaluation.generate import EvalResult
from ..evaluation.stats import wilson_interval
from ..runtime.errors import RefusalScopeError
from ..runtime.model import ChatModel
from ..runtime.saes import SAESet
from ..runtime.types import FeatureList, feature_list
from .config import AnalysisConfig

log = logging.getLogger(__name__)

PROBES = ("refusal_features", "random", "dense", "direction")


class ProbeResult(EvalResult):
    """``table``: ``results.json["probes"]`` (no generations)."""


@dataclass
class ProbeData:
    """Prompts per part; labels: 1 harmful, 0 harmless."""

    train: tuple[list[str], np.ndarray]
    val: tuple[list[str], np.ndarray]
    test: tuple[list[str], np.ndarray]
    ood: dict[str, list[str]]
    """group -> adversarial prompts (all harmful); may be empty."""


def labelled(harmful: Sequence[str], harmless: Sequence[str], part: str) -> tuple[list, np.ndarray]:
    """Prompts and labels of one part; an error when either class is missing."""
    if not harmful or not harmless:
        missing = "harmful" if not harmful else "harmless"
        raise RefusalScopeError(
            f"the probe's {part} set has no {missing} prompts (one class only): a probe needs "
            f"both harmful and harmless {part} prompts"
        )
    return [*harmful, *harmless], np.array([1] * len(harmful) + [0] * len(harmless))


def fit_probe(X: np.ndarray, y: np.ndarray, Xv: np.ndarray, yv: np.ndarray, cfg: AnalysisConfig):
    """The standardised L2 logistic regression whose C scores best on validation
    (accuracy, then AUROC, then log-loss, then the strongest regularisation); returns
    (model, (val accuracy, val AUROC, −val log-loss))."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss, roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(y)) < 2:
        raise RefusalScopeError("a probe's training set holds one class only; it needs both")
    best, best_key = None, None
    for C in sorted(cfg.probe_C):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000))
        clf.fit(X, y)
        p = clf.predict_proba(Xv)[:, 1]
        key = (
            float(((p >= 0.5) == yv).mean()),
            float(roc_auc_score(yv, p)),
            -float(log_loss(yv, p, labels=[0, 1])),
        )
        if best_key is None or key > best_key:
            best, best_key = clf, key
    return best, best_key


def auroc_ci(y: np.ndarray, p: np.ndarray, cfg: AnalysisConfig) -> list[float]:
    """Percentile bootstrap 95 % interval of the AUROC (resamples holding both classes).

    Every resample at once: the AUROC is the Mann–Whitney statistic of the positives'
    ranks (ties averaged), as ``roc_auc_score`` computes it."""
    from scipy.stats import rankdata

    rng = np.random.default_rng(cfg.seed)
    idx = rng.integers(0, len(y), (cfg.n_bootstrap, len(y)))
    pos = y[idx] == 1
    n1 = pos.sum(1)
    n0 = len(y) - n1
    keep = (n1 > 0) & (n0 > 0)
    ranks = rankdata(p[idx], axis=1)
    u = (ranks * pos).sum(1) - n1 * (n1 + 1) / 2
    stats = u[keep] / (n1[keep] * n0[keep])
    low, high = np.percentile(stats, [2.5, 97.5])
    return [round(float(low), 4), round(float(high), 4)]


def _accuracy(correct: np.ndarray) -> dict:
    k, n = int(correct.sum()), len(correct)
    low, high = wilson_interval(k, n)
    return {"accuracy": round(k / n, 4), "accuracy_ci95": [round(low, 4), round(high, 4)]}


def evaluate_probe(clf, X: Mapping[str, np.ndarray], data: ProbeData, cfg: AnalysisConfig) -> dict:
    """In-distribution and OOD scores of one fitted probe (``X`` keyed like ``data``)."""
    from sklearn.metrics import roc_auc_score

    y = data.test[1]
    p = clf.predict_proba(X["test"])[:, 1]
    out = {"in_distribution": {**_accuracy((p >= 0.5) == y)}}
    out["in_distribution"]["auroc"] = round(float(roc_auc_score(y, p)), 4)
    out["in_distribution"]["auroc_ci95"] = auroc_ci(y, p, cfg)
    if not data.ood:
        return out
    harmless = p[y == 0]
    adv = {g: clf.predict_proba(X[f"ood:{g}"])[:, 1] for g in data.ood}
    every = np.concatenate(list(adv.values()))
    y_ood = np.r_[np.ones(len(every)), np.zeros(len(harmless))]
    p_ood = np.r_[every, harmless]
    out["ood"] = {
        **_accuracy(every >= 0.5),
        "auroc": round(float(roc_auc_score(y_ood, p_ood)), 4),
        "auroc_ci95": auroc_ci(y_ood, p_ood, cfg),
        "by_group": {g: _accuracy(v >= 0.5) | {"n": len(v)} for g, v in adv.items()},
    }
    return out


def _parts(data: ProbeData) -> dict[str, list[str]]:
    parts = {"train": data.train[0], "val": data.val[0], "test": data.test[0]}
    return parts | {f"ood:{g}": v for g, v in data.ood.items()}


def _split(rows: Tensor, sizes: dict[str, int]) -> dict[str, np.ndarray]:
    out, start = {}, 0
    for name, n in sizes.items():
        out[name] = rows[start : start + n].numpy()
        start += n
    return out


@torch.no_grad()
def _latents(saes: SAESet, resid: Tensor, features: FeatureList) -> Tensor:
    """``[N, k]`` activations of ``features`` from last-token residuals ``[N, site, d]``."""
    cols = []
    for layer, latent in features.tolist():
        h = resid[:, layer][:, None, :].to(saes.saes[layer].W_enc.device)
        cols.append(saes.encode(layer, h, torch.tensor([latent]))[:, 0, 0].float().cpu())
    return torch.stack(cols, 1)


@torch.no_grad()
def alive_latents(saes: SAESet, resid: Tensor) -> FeatureList:
    """(layer, latent) pairs active on at least one of these last-token residuals."""
    alive = []
    for layer in saes.layers:
        h = resid[:, layer][:, None, :].to(saes.saes[layer].W_enc.device)
        active = (saes.encode(layer, h)[:, 0] > 0).any(0).nonzero()[:, 0].cpu()
        alive += [[layer, int(i)] for i in active]
    return feature_list(alive)


def _score(name: str, X: dict[str, np.ndarray], data: ProbeData, cfg: AnalysisConfig) -> dict:
    clf, val = fit_probe(X["train"], data.train[1], X["val"], data.val[1], cfg)
    out = evaluate_probe(clf, X, data, cfg)
    out["val_accuracy"], out["val_auroc"] = round(val[0], 4), round(val[1], 4)
    log.info("probe %s: %s", name, out)
    return out


def _spread(draws: list[dict]) -> dict:
    """Mean, standard deviation and 2.5–97.5 % range over random draws, per figure."""
    out: dict = {"draws": len(draws)}
    for part in ("in_distribution", "ood"):
        if part not in draws[0]:
            continue
        out[part] = {}
        for key in ("accuracy", "auroc"):
            v = np.array([d[part][key] for d in draws])
            out[part][key] = round(float(v.mean()), 4)
            out[part][f"{key}_sd"] = round(float(v.std(ddof=1)) if len(v) > 1 else 0.0, 4)
            out[part][f"{key}_range95"] = [
                round(float(x), 4) for x in np.percentile(v, [2.5, 97.5])
            ]
    return out


def compute_probes(
    model: ChatModel,
    saes: SAESet,
    direction: Tensor,
    direction_layer: int,
    fstar: FeatureList,
    data: ProbeData,
    cfg: AnalysisConfig,
    batch_size: int = 32,
) -> ProbeResult:
    """Fit and score the four probes."""
    parts = _parts(data)
    sizes = {k: len(v) for k, v in parts.items()}
    prompts = [p for v in parts.values() for p in v]
    resid = model.capture(prompts, range(model.n_layers), batch_size=batch_size).acts
    k = min(cfg.probe_k, len(fstar))
    table: dict = {"k": k, "features": feature_list(fstar[:k]).tolist()}
    table["sizes"] = sizes
    probes: dict = {}
    probes["refusal_features"] = _score(
        "refusal_features", _split(_latents(saes, resid, feature_list(fstar[:k])), sizes), data, cfg
    )
    pool = alive_latents(saes, resid[: sizes["train"]])
    rng = np.random.default_rng(cfg.seed)
    draws = []
    for _ in range(cfg.probe_random_draws):
        pick = pool[torch.from_numpy(rng.choice(len(pool), size=min(k, len(pool)), replace=False))]
        draws.append(_score("random", _split(_latents(saes, resid, pick), sizes), data, cfg))
    probes["random"] = _spread(draws) | {"pool": len(pool)}
    probes["dense"] = _dense(resid, sizes, data, cfg)
    r = direction.float().cpu()
    proj = resid[:, direction_layer] @ (r / r.norm().clamp(min=1e-12))
    probes["direction"] = _score("direction", _split(proj[:, None], sizes), data, cfg)
    probes["direction"]["layer"] = direction_layer
    table["in_distribution"] = {n: p["in_distribution"] for n, p in probes.items()}
    table["ood"] = {n: p["ood"] for n, p in probes.items() if "ood" in p}
    table["detail"] = probes
    return ProbeResult(table)


def _dense(resid: Tensor, sizes: dict[str, int], data: ProbeData, cfg: AnalysisConfig) -> dict:
    """The residual probe at the layer with the best validation score (every layer tried;
    the one chosen is the one evaluated). ``val_by_layer``: accuracy, AUROC and −log-loss
    on validation per layer; ties go to the lower log-loss, then the earlier layer.
    ``ood_accuracy_by_layer`` shows how much the choice matters out of distribution (not
    used to choose)."""
    val_by_layer, ood_by_layer, best = {}, {}, None
    for layer in range(resid.shape[1]):
        X = _split(resid[:, layer], sizes)
        clf, val = fit_probe(X["train"], data.train[1], X["val"], data.val[1], cfg)
        val_by_layer[str(layer)] = [round(v, 4) for v in val]
        if data.ood:
            adv = np.concatenate([clf.predict_proba(X[f"ood:{g}"])[:, 1] for g in data.ood])
            ood_by_layer[str(layer)] = round(float((adv >= 0.5).mean()), 4)
        if best is None or val > best[1]:
            best = (layer, val)
    assert best is not None
    out = _score("dense", _split(resid[:, best[0]], sizes), data, cfg)
    out["layer"] = best[0]
    out["val_by_layer"] = val_by_layer
    if ood_by_layer:
        out["ood_accuracy_by_layer"] = ood_by_layer
    return out
