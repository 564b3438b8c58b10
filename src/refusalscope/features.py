"""Stage 6 — the feature sets: F* and the baselines' sets (METHOD.md §4, §6).

* F*: per prompt, the top-K* candidates by LA-IG score; globally, the top-K* by the
  mean score over prompts.
* CosSim: global top-K* (layer, latent) pairs by decoder cosine with r̂ over all layers.
* ActDiff: global top-K* by ``mean_harmful(max_t f) − mean_harmless(max_t f)`` over
  prompt positions only (no BOS, padding or template preamble).
* AP: LA-IG over all latents without the pre-filter, per-prompt top-K* (each prompt's
  own list, aligned to that prompt).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from .attribution import AttributionResult
from .candidates import check_candidate_scores, check_scores, decoder_cosines
from .direction import check_direction_finite
from .errors import RefusalScopeError
from .hooks import Capture
from .model import ChatModel
from .saes import SAESet
from .types import FeatureList


@dataclass
class FeatureSets:
    """Every method's ranked feature lists, long enough for the largest K* asked for."""

    prompt_sets: dict[str, dict[str, list[FeatureList]]]
    """method (``fstar``, ``ap``) -> split (``train``, ``test``) -> one list per prompt."""
    global_sets: dict[str, FeatureList]
    """method (``fstar``, ``cossim``, ``actdiff``, ``ap``) -> ranked global list."""
    global_scores: dict[str, Float[Tensor, " feat"]]
    """The score each global list is ranked by (LA-IG mean, cosine, activation diff)."""

    def per_prompt(self, method: str, split: str, k: int) -> list[FeatureList]:
        return [f[:k] for f in self.prompt_sets[method][split]]

    def global_set(self, method: str, k: int) -> FeatureList:
        return self.global_sets[method][:k]


def check_k(k: int, pool: int, what: str) -> None:
    if k > pool:
        raise RefusalScopeError(
            f"K*={k} is larger than the {what} ({pool}); lower features.k_star / the K* sweep "
            "or raise candidates.k_per_layer"
        )


def per_prompt_top(
    score: Float[Tensor, "prompt cand"], candidates: FeatureList, k: int
) -> list[FeatureList]:
    """Each prompt's top-``k`` candidates by its own score."""
    check_k(k, len(candidates), "candidate pool")
    check_candidate_scores(score, candidates, "F*")
    idx = score.topk(k, dim=1).indices
    return [candidates[row] for row in idx]


def global_top(
    score: Float[Tensor, "prompt cand"], candidates: FeatureList, k: int
) -> tuple[FeatureList, Tensor]:
    """Top-``k`` candidates by the mean score over prompts."""
    check_k(k, len(candidates), "candidate pool")
    check_candidate_scores(score, candidates, "F*")
    top = score.mean(0).topk(k)
    return candidates[top.indices], top.values


def _top_pairs(per_layer: dict[int, Tensor], k: int, method: str) -> tuple[FeatureList, Tensor]:
    """Top-``k`` (layer, latent) pairs of per-layer score vectors, across layers."""
    check_scores({f"the scores of layer {l}": s for l, s in sorted(per_layer.items())}, method)
    layers = sorted(per_layer)
    pool = sum(per_layer[l].numel() for l in layers)
    check_k(k, pool, "number of SAE latents")
    cat = torch.cat([per_layer[l].float().cpu() for l in layers])
    sizes = torch.tensor([per_layer[l].numel() for l in layers])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])
    top = cat.topk(k)
    which = torch.searchsorted(offsets[1:], top.indices, right=True)
    pairs = torch.stack([torch.tensor(layers)[which], top.indices - offsets[which]], dim=1)
    return pairs, top.values


def cossim_features(saes: SAESet, direction: Tensor, k: int) -> tuple[FeatureList, Tensor]:
    """CosSim baseline: top-``k`` by signed decoder cosine with r̂ over all layers."""
    check_direction_finite(direction, "CosSim")
    return _top_pairs({l: decoder_cosines(saes, l, direction) for l in saes.layers}, k, "CosSim")


@torch.no_grad()
def mean_max_activations(
    model: ChatModel,
    saes: SAESet,
    prompts: Sequence[str],
    latents: dict[int, Tensor] | None = None,
    batch_size: int = 32,
) -> dict[int, Float[Tensor, " latent"]]:
    """Mean over prompts of each latent's max activation over the prompt positions.

    Streams: memory is one batch of activations plus one vector per layer. ``latents``
    restricts the encode to some latents per layer (all latents when None).
    """
    layers = sorted(latents) if latents is not None else saes.layers
    total: dict[int, Tensor] = {}
    for _rows, tokens in model.batches(prompts, batch_size, "max activations"):
        cap = Capture(layers)
        model.forward(tokens, [cap], last_only=True)
        mask = tokens.prompt_mask[:, :, None]
        for l in layers:
            idx = latents[l] if latents is not None else None
            f = saes.encode(l, cap.get(l), idx).float()
            f = f.masked_fill(~mask, float("-inf")).amax(1).clamp(min=0).sum(0).cpu()
            total[l] = total[l] + f if l in total else f
    return {l: t / len(prompts) for l, t in total.items()}


def actdiff_features(
    model: ChatModel,
    saes: SAESet,
    harmful: Sequence[str],
    harmless: Sequence[str],
    k: int,
    batch_size: int = 32,
) -> tuple[FeatureList, Tensor]:
    """ActDiff baseline: top-``k`` by mean max-activation difference, harmful − harmless."""
    pos = mean_max_activations(model, saes, harmful, batch_size=batch_size)
    neg = mean_max_activations(model, saes, harmless, batch_size=batch_size)
    return _top_pairs({l: pos[l] - neg[l] for l in saes.layers}, k, "ActDiff")


def ap_features(attr: AttributionResult, k: int) -> tuple[list[FeatureList], FeatureList]:
    """AP baseline: per-prompt top-``k`` over all latents and the global top-``k``."""
    if attr.all_top is None:
        raise RefusalScopeError("AP needs attribution.all_latents = true")
    check_k(k, attr.all_top.shape[1], "kept all-latent scores (attribution.all_latents_keep)")
    per_prompt = [row[:k] for row in attr.all_top]
    glob, _ = _top_pairs(attr.all_mean, k, "AP")
    return per_prompt, glob


def compute_features(
    model: ChatModel,
    saes: SAESet,
    direction: Tensor,
    attr: dict[str, AttributionResult],
    harmful: Sequence[str],
    harmless: Sequence[str],
    k_max: int,
    batch_size: int = 32,
) -> FeatureSets:
    """Feature lists of every method; ``attr`` maps split -> attribution of its prompts.

    Global sets come from the ``train`` attribution; per-prompt sets exist per split.
    """
    prompt_sets: dict[str, dict[str, list[FeatureList]]] = {"fstar": {}, "ap": {}}
    for split, a in attr.items():
        prompt_sets["fstar"][split] = per_prompt_top(a.score, a.candidates, k_max)
        if a.all_top is not None:
            prompt_sets["ap"][split] = ap_features(a, k_max)[0]
    train = attr["train"]
    glob, scores = {}, {}
    glob["fstar"], scores["fstar"] = global_top(train.score, train.candidates, k_max)
    glob["cossim"], scores["cossim"] = cossim_features(saes, direction, k_max)
    glob["actdiff"], scores["actdiff"] = actdiff_features(
        model, saes, harmful, harmless, k_max, batch_size
    )
    if train.all_top is not None:
        glob["ap"], scores["ap"] = _top_pairs(train.all_mean, k_max, "AP")
    if not prompt_sets["ap"]:
        del prompt_sets["ap"]
    return FeatureSets(prompt_sets, glob, scores)
