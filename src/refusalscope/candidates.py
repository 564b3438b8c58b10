"""Stage 4 — the candidate pre-filter (METHOD.md §2).

For every SAE layer, the ``k`` latents whose decoder rows have the largest signed
cosine with the refusal direction ``r_l*`` (the same direction for every layer).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from .config import require
from .errors import RefusalScopeError
from .saes import SAESet
from .types import FeatureList


@dataclass(frozen=True)
class CandidateConfig:
    """Size of the candidate pool."""

    k_per_layer: int = 10
    """Latents kept per SAE layer (authors: 10)."""

    def __post_init__(self) -> None:
        require(self.k_per_layer > 0, "candidates.k_per_layer must be positive")


@dataclass
class CandidateResult:
    """The candidate pool, ordered by layer then cosine."""

    features: FeatureList
    """``[n_cand, 2]`` rows of (layer, latent)."""
    cosine: Float[Tensor, " cand"]
    """Signed decoder cosine with r̂ of each candidate."""


def decoder_cosines(saes: SAESet, layer: int, direction: Tensor) -> Float[Tensor, " d_sae"]:
    rows = saes.decoder_rows(layer).float()
    r = direction.float().to(rows.device)
    return (rows @ r) / (rows.norm(dim=-1).clamp(min=1e-12) * r.norm().clamp(min=1e-12))


def compute_candidates(saes: SAESet, direction: Tensor, cfg: CandidateConfig) -> CandidateResult:
    """Top-``k`` latents per layer by signed decoder cosine with ``direction``."""
    feats, cos = [], []
    for layer in saes.layers:
        c = decoder_cosines(saes, layer, direction).cpu()
        if cfg.k_per_layer > c.numel():
            raise RefusalScopeError(
                f"candidates.k_per_layer={cfg.k_per_layer} exceeds the SAE width "
                f"{c.numel()} at layer {layer}"
            )
        top = c.topk(cfg.k_per_layer)
        feats.append(torch.stack([torch.full_like(top.indices, layer), top.indices], dim=1))
        cos.append(top.values)
    return CandidateResult(torch.cat(feats), torch.cat(cos))
