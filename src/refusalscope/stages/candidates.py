"""Stage 4 — the candidate pre-filter (Yeo et al. 2025, §3).

For every SAE layer, the ``k`` latents whose decoder rows have the largest signed
cosine with the refusal direction ``r_l*`` (the same direction for every layer).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from ..runtime.config import require
from ..runtime.errors import RefusalScopeError, check_finite
from ..runtime.files import load_tensors, save_tensors
from ..runtime.saes import SAESet
from ..runtime.types import FeatureList
from .direction import check_direction_finite


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

    FILE = "candidates.safetensors"

    def save(self, folder: Path) -> None:
        save_tensors(folder / self.FILE, {"features": self.features, "cosine": self.cosine})

    @classmethod
    def load(cls, folder: Path) -> CandidateResult:
        t = load_tensors(folder / cls.FILE)
        return cls(t["features"], t["cosine"])


def decoder_cosines(saes: SAESet, layer: int, direction: Tensor) -> Float[Tensor, " d_sae"]:
    rows = saes.decoder_rows(layer).float()
    r = direction.float().to(rows.device)
    return (rows @ r) / (rows.norm(dim=-1).clamp(min=1e-12) * r.norm().clamp(min=1e-12))


def check_scores(
    scores: Mapping[str, Tensor],
    stage: str,
    at: Callable[[tuple[int, ...]], str] = lambda i: f"latent {i[-1]}",
) -> None:
    """Raise before ranking if a score is not finite: a NaN would sort first and be
    reported as the top latent. ``at`` names the first bad index (default: a latent)."""
    check_finite(
        scores,
        stage,
        "it comes from a non-finite activation (float16 overflow? load the model in "
        "float32) or a corrupt cached stage (rerun with --force on the stage before)",
        at=at,
    )


def check_candidate_scores(
    score: Float[Tensor, "prompt cand"], candidates: FeatureList, stage: str
) -> None:
    """``check_scores`` for per-prompt scores of ``candidates``."""

    def at(i: tuple[int, ...]) -> str:
        layer, latent = candidates[i[1]].tolist()
        return f"prompt {i[0]}, layer {layer} latent {latent}"

    check_scores({"the candidate scores": score}, stage, at)


def compute_candidates(saes: SAESet, direction: Tensor, cfg: CandidateConfig) -> CandidateResult:
    """Top-``k`` latents per layer by signed decoder cosine with ``direction``."""
    check_direction_finite(direction, "the candidate pre-filter")
    feats, cos = [], []
    for layer in saes.layers:
        c = decoder_cosines(saes, layer, direction).cpu()
        check_scores({f"the decoder cosines of layer {layer}": c}, "the candidate pre-filter")
        if cfg.k_per_layer > c.numel():
            raise RefusalScopeError(
                f"candidates.k_per_layer={cfg.k_per_layer} exceeds the SAE width "
                f"{c.numel()} at layer {layer}"
            )
        top = c.topk(cfg.k_per_layer)
        feats.append(torch.stack([torch.full_like(top.indices, layer), top.indices], dim=1))
        cos.append(top.values)
    return CandidateResult(torch.cat(feats), torch.cat(cos))
