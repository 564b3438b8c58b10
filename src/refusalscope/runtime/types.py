"""Small value types shared by every stage: prompts and SAE feature lists.

Dimension names used in shape annotations across the package:
``batch`` prompts in a batch, ``seq`` token positions, ``d_model`` residual width,
``d_sae`` SAE width, ``site`` residual sites (layers), ``feat`` selected (layer, latent)
pairs, ``cand`` candidate pairs, ``vocab`` vocabulary.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .errors import RefusalScopeError

# A feature is one SAE latent at one layer: rows of [layer, latent].
FeatureList = Int[Tensor, "feat 2"]


@dataclass(frozen=True)
class Prompt:
    """One user instruction with whatever ground truth is known about it."""

    instruction: str
    """The user turn, without any chat formatting."""
    harmful: bool | None = None
    """True for harmful requests, False for harmless ones, None when unknown."""
    category: str | None = None
    """Harm category or harmless topic, when the dataset has one."""
    meta: Mapping[str, Any] = field(default_factory=dict)
    """Extra labels (the organism's template, wrapper, object, split, ...)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "instruction": self.instruction,
            "harmful": self.harmful,
            "category": self.category,
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Prompt:
        return cls(
            instruction=d["instruction"],
            harmful=d.get("harmful"),
            category=d.get("category"),
            meta=dict(d.get("meta") or {}),
        )


def feature_list(pairs: Any) -> FeatureList:
    """Normalise ``[(layer, latent), ...]`` or an ``[n, 2]`` tensor to a long tensor."""
    try:
        t = torch.as_tensor(pairs)
    except (TypeError, ValueError, RuntimeError) as e:
        raise RefusalScopeError(
            f"features must be (layer, latent) integer pairs, e.g. [(12, 1234)]; got {pairs!r:.80}"
        ) from e
    if t.numel() == 0:
        return t.reshape(0, 2).long()
    if t.ndim != 2 or t.shape[1] != 2 or t.is_floating_point() or t.is_complex():
        raise RefusalScopeError(
            "features must be (layer, latent) integer pairs, e.g. [(12, 1234)] or an [n, 2] "
            f"integer tensor; got shape {tuple(t.shape)} of {t.dtype}"
        )
    return t.long()


def top_pairs(
    per_layer: Mapping[int, Float[Tensor, "... d_sae"]], k: int
) -> tuple[Int[Tensor, "... k 2"], Float[Tensor, "... k"]]:
    """The ``k`` highest scores across layers as (layer, latent) pairs, with the scores.

    ``per_layer`` maps layer -> scores of its latents on the last axis (leading axes, e.g.
    prompts, are kept); layers are concatenated in ascending order before ranking.
    """
    layers = sorted(per_layer)
    cat = torch.cat([per_layer[l].float().cpu() for l in layers], dim=-1)
    sizes = torch.tensor([per_layer[l].shape[-1] for l in layers])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])
    top = cat.topk(k, dim=-1)
    which = torch.searchsorted(offsets[1:], top.indices, right=True)
    pairs = torch.stack([torch.tensor(layers)[which], top.indices - offsets[which]], dim=-1)
    return pairs, top.values
