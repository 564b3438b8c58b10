"""Stage 6 — the feature sets: F* and the baselines' sets (Yeo et al. 2025, §3–4).

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
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from ..runtime.errors import RefusalScopeError
from ..runtime.files import load_tensors, save_tensors
from ..runtime.hooks import Capture
from ..runtime.model import ChatModel
from ..runtime.saes import SAESet
from ..runtime.types import FeatureList, top_pairs
from .attribution import AttributionResult, Attributions
from .candidates import check_candidate_scores, check_scores, decoder_cosines
from .direction import check_direction_finite


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

    FILE = "features.safetensors"

    def save(self, folder: Path) -> None:
        t: dict[str, Tensor] = {}
        for method, sets in self.global_sets.items():
            t[f"global.{method}"] = sets
            t[f"global_score.{method}"] = self.global_scores[method]
        for method, by_split in self.prompt_sets.items():
            for split, lists in by_split.items():
                t[f"prompt.{method}.{split}"] = torch.stack(lists)
        save_tensors(folder / self.FILE, t)

    @classmethod
    def load(cls, folder: Path) -> FeatureSets:
        glob, scores, prompt = {}, {}, {}
        for key, v in load_tensors(folder / cls.FILE).items():
            kind, *rest = key.split(".")
            if kind == "global":
                glob[rest[0]] = v
            elif kind == "global_score":
                scores[rest[0]] = v
            else:
                prompt.setdefault(rest[0], {})[rest[1]] = list(v)
        return cls(prompt, glob, scores)


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
    """Top-``k`` (layer, latent) pairs of per-layer score vectors, checked first."""
    check_scores({f"the scores of layer {l}": s for l, s in sorted(per_layer.items())}, method)
    check_k(k, sum(s.numel() for s in per_layer.values()), "number of SAE latents")
    return top_pairs(per_layer, k)


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
    attr: Attributions,
    harmful: Sequence[str],
    harmless: Sequence[str],
    k_max: int,
    batch_size: int = 32,
) -> FeatureSets:
    """Feature lists of every method from the attributions of each split.

    Global sets come from the ``train`` attribution; per-prompt sets exist per split.
    """
    prompt_sets: dict[str, dict[str, list[FeatureList]]] = {"fstar": {}, "ap": {}}
    for split, a in attr.splits.items():
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
