"""The faithfulness stage's two side checks: LA-IG variants against the exact effect, and
every latent patched on a sample of prompts (the cosine pre-filter's recall)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from ..runtime.errors import RefusalScopeError
from ..runtime.model import ChatModel
from ..runtime.saes import SAESet
from ..runtime.types import FeatureList
from ..stages.attribution import (
    AttributionConfig,
    AttributionResult,
    add_gradients,
    cache_runs,
    score_features,
)
from .patching import all_latent_top
from .ranking import mean_ci, paired_difference, precision_at_k, spearman_rows


def variant_name(acfg: AttributionConfig) -> str:
    return f"{acfg.mixing}/{acfg.alpha_rule}/{acfg.ig_steps}"


def parse_variant(name: str) -> tuple[str, str, int]:
    """``"<mixing>/<rule>/<steps>"``, e.g. ``per_layer/midpoint/20``, as its three parts."""
    parts = name.split("/")
    ok = (
        len(parts) == 3
        and parts[0] in ("joint", "per_layer")
        and parts[1] in ("left", "midpoint")
        and parts[2].isdigit()
        and int(parts[2]) > 0
    )
    if not ok:
        raise RefusalScopeError(
            f"LA-IG variant {name!r} is not <mixing>/<rule>/<steps> with mixing joint or "
            "per_layer, rule left or midpoint and a positive number of steps (e.g. "
            "'per_layer/left/10')"
        )
    return parts[0], parts[1], int(parts[2])


def variant_configs(acfg: AttributionConfig, names: Sequence[str]) -> dict[str, AttributionConfig]:
    """The run's own LA-IG setting first, then each named variant."""
    out = {variant_name(acfg): acfg}
    for name in names:
        mix, rule, steps = parse_variant(name)
        out[name] = replace(acfg, mixing=mix, alpha_rule=rule, ig_steps=steps)
    return out


def compare_variants(
    model: ChatModel,
    saes: SAESet,
    prompts: Sequence[str],
    attr: AttributionResult,
    exact_pool: Float[Tensor, "prompt cand"],
    direction: Tensor,
    variants: Mapping[str, AttributionConfig],
    n_bootstrap: int,
    seed: int,
) -> dict[str, dict[str, Any]]:
    """Spearman of each LA-IG variant with the exact effect on the candidate pool, per
    prompt, its paired difference from the first variant (the run's own setting) and its
    cost (gradient passes and scoring, summed over ``prompts``)."""
    n = len(prompts)
    score = {name: torch.zeros(n, len(attr.candidates)) for name in variants}
    seconds = dict.fromkeys(variants, 0.0)
    batch = next(iter(variants.values())).batch_size
    for rows, tokens in model.batches(prompts, batch, "LA-IG variants"):
        jb = attr.jb_token[rows]
        ig = cache_runs(model, tokens, saes.layers, direction, attr.ref_token, jb)
        for name, vcfg in variants.items():
            start = time.perf_counter()
            add_gradients(model, ig, attr.ref_token, vcfg)
            score[name][rows] = score_features(saes, ig, attr.candidates, direction)
            seconds[name] += time.perf_counter() - start
    truth = exact_pool[:n].numpy()
    rho = {name: spearman_rows(score[name].numpy(), truth) for name in variants}
    default = next(iter(variants))
    return {
        name: {
            "spearman": mean_ci(rho[name], n_bootstrap, seed),
            "minus_default": paired_difference(rho[name], rho[default], n_bootstrap, seed),
            "seconds": round(seconds[name], 3),
            "default": name == default,
        }
        for name in variants
    }


def prefilter_sample(
    model: ChatModel,
    saes: SAESet,
    prompts: Sequence[str],
    attr: AttributionResult,
    sets: Mapping[str, Sequence[FeatureList]],
    pool: FeatureList,
    evaluated: FeatureList,
    direction: Tensor,
    k: int,
    n_prompts: int,
    rows_per_forward: int,
    n_bootstrap: int,
    seed: int,
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Every latent patched on ``n_prompts`` spread-out test prompts: the share of the
    exact top-``k`` over all latents that the pool (and the evaluated set) holds, and each
    method's precision against it."""
    n = min(n_prompts, len(prompts))
    rows = np.linspace(0, len(prompts) - 1, n).round().astype(int).tolist() if n else []
    in_pool = {tuple(f) for f in pool.tolist()}
    in_evaluated = {tuple(f) for f in evaluated.tolist()}
    tops, effects, moved, recall, covered = [], [], [], [], []
    precision: dict[str, list[float]] = {m: [] for m in sets}
    start = time.perf_counter()
    for i in rows:
        tokens = model.tokenize([prompts[i]]).to(model.device)
        ig = cache_runs(model, tokens, saes.layers, direction, attr.ref_token, attr.jb_token[[i]])
        top, eff, n_moved = all_latent_top(
            model, saes, ig, direction, attr.ref_token, k, rows_per_forward
        )
        best = {tuple(f) for f in top.tolist()}
        tops.append(torch.cat([top, torch.full((k - len(top), 2), -1)]))
        effects.append(torch.cat([eff, torch.zeros(k - len(eff))]))
        moved.append(n_moved)
        recall.append(len(best & in_pool) / k)
        covered.append(len(best & in_evaluated) / k)
        for m, per_prompt in sets.items():
            precision[m] += precision_at_k([per_prompt[i]], [best], k)
    table = {
        "k": k,
        "n_prompts": n,
        "prompts": rows,
        "mean": round(float(np.mean(recall)), 4) if rows else None,
        "ci95": mean_ci(recall, n_bootstrap, seed)["ci95"],
        "per_prompt": [round(r, 4) for r in recall],
        "evaluated_set_recall": round(float(np.mean(covered)), 4) if rows else None,
        "latents_moved": moved,
        "precision_at_k": {m: mean_ci(v, n_bootstrap, seed) for m, v in precision.items()},
        "seconds": round(time.perf_counter() - start, 3),
    }
    if not rows:
        return table, {}
    return table, {
        "sample.rows": torch.tensor(rows),
        "sample.top": torch.stack(tops),
        "sample.top_effect": torch.stack(effects),
    }
