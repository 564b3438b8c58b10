"""How faithful is each selection method? Its scores against exact patching.

On every harmful test prompt, the exact effect ``Δm`` of each latent of the *evaluated
set* — the pre-filter's candidate pool plus every latent any method selected (its K*
sets, global and per prompt) — is measured by patching (``evaluation.patching``). Each
method is then scored against it:

* **Spearman** (per prompt, over the evaluated set) between the method's score and
  ``Δm``: ``fstar`` is LA-IG on the pool (latents outside the pool, which F* cannot pick,
  tie last); ``ap`` is LA-IG on every latent; ``atp`` is attribution patching without IG
  (the gradient at the clean run, ``α = 0``); ``cossim`` the decoder cosine with r̂ and
  ``actdiff`` the activation difference (both global, the same on every prompt);
* **precision@K***: the share of the method's K* set (per prompt for F*, AP and AtP;
  global for CosSim and ActDiff) among the exact top-K* of the evaluated set;
* **joint effect**: ``Δm`` of patching the method's whole K* set at once, beside the
  exact top-K* set's and the whole counterfactual's (``m_patch − m_clean``).

On a sample of prompts every latent of every SAE is patched (only those that move: the
others have no effect), giving the pre-filter's recall — how many of the exact top-K*
over all latents the cosine pool holds — and each method's precision against it. LA-IG
variants (mixing, Riemann rule, steps) are compared on the pool by Spearman and cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..runtime.config import require
from ..runtime.files import load_tensors, read_json, save_tensors, write_json
from ..runtime.model import ChatModel
from ..runtime.saes import SAESet
from ..runtime.types import FeatureList, feature_list, top_pairs
from ..stages.attribution import (
    AttributionConfig,
    AttributionResult,
    add_gradients,
    cache_runs,
    score_all_latents,
    score_features,
)
from ..stages.candidates import decoder_cosines
from ..stages.features import FeatureSets, mean_max_activations
from .faithfulness_checks import (
    compare_variants,
    parse_variant,
    prefilter_sample,
    variant_configs,
)
from .patching import exact_effects, joint_effects
from .ranking import mean_ci, precision_at_k, spearman_rows, top_sets

METHODS = ("fstar", "ap", "atp", "cossim", "actdiff")
PER_PROMPT = ("fstar", "ap", "atp")
"""Methods whose K* set is chosen per prompt (the others use their global set)."""


@dataclass(frozen=True)
class FaithfulnessConfig:
    """Exact patching as ground truth (``[faithfulness]``)."""

    enabled: bool = True
    """Run the faithfulness stage."""
    rows_per_forward: int = 256
    """Patched (prompt, latent) rows per forward pass."""
    sample_prompts: int = 8
    """Test prompts on which every latent of every SAE is patched (pre-filter recall);
    0 turns it off (on a 65k-wide SAE at every layer it is the stage's dominant cost)."""
    variant_prompts: int = 32
    """Test prompts the LA-IG variants are compared on (0: no comparison)."""
    variants: tuple[str, ...] = (
        "per_layer/left/10",
        "joint/midpoint/10",
        "joint/left/5",
        "joint/left/20",
    )
    """LA-IG variants (``<mixing>/<rule>/<steps>``) compared with the run's own setting;
    by default one factor at a time (mixing, Riemann rule, steps). ``per_layer`` costs a
    gradient pass per SAE layer and step."""
    n_bootstrap: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.rows_per_forward >= 1, "faithfulness.rows_per_forward must be positive")
        require(self.sample_prompts >= 0, "faithfulness.sample_prompts must be ≥ 0")
        require(self.variant_prompts >= 0, "faithfulness.variant_prompts must be ≥ 0")
        for name in self.variants:
            parse_variant(name)
        require(self.n_bootstrap >= 100, "faithfulness.n_bootstrap must be at least 100")


@dataclass
class FaithfulnessResult:
    """``table``: ``results.json["faithfulness"]``; ``tensors``: ``faithfulness.safetensors``
    (``exact_effect [prompt, n]`` over ``candidates [n, 2]`` — the evaluated set, ``in_pool``
    marking the pre-filter's — with each method's ``score.<method>``, ``joint.<method>``,
    the prompts' ``input_ids``/``position_mask``/``jb_token``/``ref_token`` in the order of
    the attribution's test rows, and the all-latent sample's exact top-K*)."""

    table: dict[str, Any]
    tensors: dict[str, Tensor]

    FILE = "faithfulness.safetensors"
    TABLE = "faithfulness.json"

    def save(self, folder: Path) -> None:
        save_tensors(folder / self.FILE, self.tensors)
        write_json(folder / self.TABLE, self.table)

    @classmethod
    def load(cls, folder: Path) -> FaithfulnessResult:
        return cls(read_json(folder / cls.TABLE), load_tensors(folder / cls.FILE))


@dataclass
class MethodSets:
    """Each method's K* set for every test prompt, and the evaluated set they span."""

    sets: dict[str, list[FeatureList]]
    pool: FeatureList
    evaluated: FeatureList
    in_pool: Tensor

    @classmethod
    def make(cls, sets: dict[str, list[FeatureList]], pool: FeatureList) -> MethodSets:
        seen = {tuple(f) for f in pool.tolist()}
        extra = sorted(
            {tuple(f) for lists in sets.values() for s in lists for f in s.tolist()} - seen
        )
        evaluated = torch.cat([pool, feature_list(extra)])
        in_pool = torch.arange(len(evaluated)) < len(pool)
        return cls(sets, pool, evaluated, in_pool)


def method_sets(
    features: FeatureSets, atp_sets: list[FeatureList], pool: FeatureList, k: int, n: int
) -> MethodSets:
    """F*, AP (per prompt, as the jailbreak evaluation clamps them), AtP (per prompt),
    CosSim and ActDiff (global) at K* = ``k``."""
    sets = {"fstar": features.per_prompt("fstar", "test", k)}
    if "ap" in features.prompt_sets:
        sets["ap"] = features.per_prompt("ap", "test", k)
    sets["atp"] = atp_sets
    for m in ("cossim", "actdiff"):
        sets[m] = [features.global_set(m, k)] * n
    return MethodSets.make(sets, pool)


def atp_config(acfg: AttributionConfig) -> AttributionConfig:
    """Attribution patching: one gradient at the clean run (``α = 0``), no IG."""
    return replace(acfg, ig_steps=1, alpha_rule="left", mixing="joint")


def atp_top_sets(
    model: ChatModel,
    saes: SAESet,
    prompts: Sequence[str],
    attr: AttributionResult,
    direction: Tensor,
    acfg: AttributionConfig,
    k: int,
) -> list[FeatureList]:
    """AtP's per-prompt top-``k``: over all latents when the attribution scores all
    latents (as AP), else over the candidate pool."""
    out: list[FeatureList] = [feature_list([])] * len(prompts)
    for rows, tokens in model.batches(prompts, acfg.batch_size, "AtP"):
        ig = cache_runs(model, tokens, saes.layers, direction, attr.ref_token, attr.jb_token[rows])
        add_gradients(model, ig, attr.ref_token, atp_config(acfg))
        if acfg.all_latents:
            full = {
                l: score_all_latents(saes, ig, l, direction, acfg.latent_chunk) for l in saes.layers
            }
            best, _ = top_pairs(full, k)
        else:
            score = score_features(saes, ig, attr.candidates, direction)
            best = attr.candidates[score.topk(k, dim=1).indices]
        for j, i in enumerate(rows):
            out[i] = best[j]
    return out


@dataclass
class _Measured:
    """Per test prompt: exact effects and every method's scores on the evaluated set,
    and the joint effects of every method's set."""

    exact: Tensor
    scores: dict[str, Tensor]
    joint: dict[str, Tensor]


def _measure(
    model: ChatModel,
    saes: SAESet,
    prompts: Sequence[str],
    attr: AttributionResult,
    ms: MethodSets,
    direction: Tensor,
    acfg: AttributionConfig,
    cfg: FaithfulnessConfig,
    k: int,
) -> _Measured:
    """One pass over the test prompts: exact patching, LA-IG and AtP on the evaluated set,
    joint patches of every method's set (and of the exact top-K*)."""
    n, E = len(prompts), ms.evaluated
    exact = torch.zeros(n, len(E))
    scores = {m: torch.zeros(n, len(E)) for m in ("ap", "atp")}
    joint = {m: torch.zeros(n) for m in (*ms.sets, "exact_top", "direction")}
    for rows, tokens in model.batches(prompts, acfg.batch_size, "exact patching"):
        ref = attr.ref_token
        ig = cache_runs(model, tokens, saes.layers, direction, ref, attr.jb_token[rows])
        exact[rows], _ = exact_effects(model, saes, ig, E, direction, ref, cfg.rows_per_forward)
        for name, grad_cfg in (("ap", acfg), ("atp", atp_config(acfg))):
            add_gradients(model, ig, ref, grad_cfg)
            scores[name][rows] = score_features(saes, ig, E, direction)
        top = exact[rows].topk(min(k, len(E)), dim=1).indices
        sets = [[ms.sets[m][i] for i in rows] for m in ms.sets]
        sets.append([E[row] for row in top])
        effects = joint_effects(model, saes, ig, sets, direction, ref)
        for j, m in enumerate((*ms.sets, "exact_top")):
            joint[m][rows] = effects[:, j]
        joint["direction"][rows] = ig.metric_patch - ig.metric_clean
    scores["fstar"] = scores["ap"].masked_fill(~ms.in_pool[None, :], -torch.inf)
    return _Measured(exact, scores, joint)


def _global_scores(
    model: ChatModel,
    saes: SAESet,
    E: FeatureList,
    direction: Tensor,
    harmful: Sequence[str],
    harmless: Sequence[str],
    batch_size: int,
) -> dict[str, Tensor]:
    """CosSim's and ActDiff's scores of the evaluated latents (one value per latent)."""
    by_layer = {l: E[E[:, 0] == l, 1] for l in sorted(set(E[:, 0].tolist()))}
    pos = mean_max_activations(model, saes, harmful, by_layer, batch_size)
    neg = mean_max_activations(model, saes, harmless, by_layer, batch_size)
    cos, act = torch.zeros(len(E)), torch.zeros(len(E))
    for l, latents in by_layer.items():
        cols = (E[:, 0] == l).nonzero()[:, 0]
        cos[cols] = decoder_cosines(saes, l, direction).cpu()[latents]
        act[cols] = (pos[l] - neg[l]).cpu()
    return {"cossim": cos, "actdiff": act}


def compute_faithfulness(
    model: ChatModel,
    saes: SAESet,
    direction: Tensor,
    attr: AttributionResult,
    prompts: Sequence[str],
    features: FeatureSets,
    train: tuple[Sequence[str], Sequence[str]],
    k: int,
    acfg: AttributionConfig,
    cfg: FaithfulnessConfig,
    batch_size: int = 32,
) -> FaithfulnessResult:
    """Every selection method against exact patching on the harmful test ``prompts`` (the
    rows of ``attr``, the test attribution); ``train`` = the (harmful, harmless) train
    prompts ActDiff ranks by; ``k`` = the K* in use."""
    direction = direction.to(model.device)
    atp = atp_top_sets(model, saes, prompts, attr, direction, acfg, k)
    ms = method_sets(features, atp, attr.candidates, k, len(prompts))
    got = _measure(model, saes, prompts, attr, ms, direction, acfg, cfg, k)
    E = ms.evaluated
    glob = _global_scores(model, saes, E, direction, *train, batch_size)
    for m, v in glob.items():
        got.scores[m] = v[None, :].expand(len(prompts), -1).clone()
    table = _table(got, ms, k, len(prompts), cfg)
    tensors = {
        "exact_effect": got.exact.float(),
        "candidates": E,
        "in_pool": ms.in_pool,
        "input_ids": attr.input_ids,
        "position_mask": attr.position_mask,
        "jb_token": attr.jb_token,
        "ref_token": torch.tensor(attr.ref_token),
        **{f"score.{m}": v.float() for m, v in got.scores.items()},
        **{f"joint.{m}": v.float() for m, v in got.joint.items()},
    }
    table["variants"] = _variants(model, saes, prompts, attr, got, ms, direction, acfg, cfg)
    sample = (cfg.sample_prompts, cfg.rows_per_forward, cfg.n_bootstrap, cfg.seed)
    table["prefilter_recall"], sample_t = prefilter_sample(
        model, saes, prompts, attr, ms.sets, ms.pool, E, direction, k, *sample
    )
    return FaithfulnessResult(table, tensors | sample_t)


def _variants(model, saes, prompts, attr, got, ms, direction, acfg, cfg) -> dict[str, Any]:
    """The LA-IG variants on the first ``variant_prompts`` test prompts (the run's own
    setting marked ``default``)."""
    n = min(cfg.variant_prompts, len(prompts))
    if n == 0:
        return {}
    variants = variant_configs(acfg, cfg.variants)
    exact_pool = got.exact[:n][:, ms.in_pool]
    return compare_variants(
        model, saes, prompts[:n], attr, exact_pool, direction, variants, cfg.n_bootstrap, cfg.seed
    )


def _table(got: _Measured, ms: MethodSets, k: int, n: int, cfg: FaithfulnessConfig) -> dict:
    """Spearman (over the evaluated set and over the pool), precision@K* and joint effects."""
    E, truth, pool = ms.evaluated, got.exact.numpy(), ms.in_pool.numpy()
    top = top_sets(got.exact, E, k)
    boot = (cfg.n_bootstrap, cfg.seed)
    table: dict[str, Any] = {
        "k": k,
        "n_prompts": n,
        "n_evaluated": len(E),
        "n_pool": int(ms.in_pool.sum()),
        "spearman": {
            m: mean_ci(spearman_rows(got.scores[m].numpy(), truth), *boot)
            for m in METHODS
            if m in ms.sets
        },
        "spearman_pool": {
            m: mean_ci(spearman_rows(got.scores[m][:, pool].numpy(), truth[:, pool]), *boot)
            for m in METHODS
            if m in ms.sets
        },
        "precision_at_k": {
            m: mean_ci(precision_at_k(s, top, k), *boot) for m, s in ms.sets.items()
        },
        "joint_effect": {m: round(float(v.mean()), 4) for m, v in got.joint.items()},
        "joint_effect_ci95": {m: mean_ci(v.tolist(), *boot)["ci95"] for m, v in got.joint.items()},
    }
    return table
