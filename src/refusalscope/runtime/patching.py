"""Activation patching of SAE latents: set latents to given values at given positions.

With the SAE in the loop and its error kept, setting latent ``i`` of the SAE at layer
``l`` to ``v`` is ``decode(f') + (h − decode(f)) = h + (v − f_i(h)) · W_dec[i]``, where
``f_i(h)`` is the latent on the residual as it arrives (earlier edits included), so only
the patched latents are encoded. Every batch row carries its own latents and targets:
one forward can patch a different latent (or set of latents) in every row, which is how
exact patching of many latents is batched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from .errors import RefusalScopeError
from .hooks import EditContext, Intervention
from .interventions import _index_per_row
from .saes import SAESet


@dataclass(eq=False)
class SetLatents(Intervention):
    """Per row, set some latents of some layers to per-position targets (prefill only).

    ``latents[l]`` is ``[B, k]`` (row ``b``'s latents at layer ``l``; ``mask[l]`` marks the
    real slots), ``target[l]`` is ``[B, T, k]`` and ``where`` ``[B, T]`` marks the positions
    edited (elsewhere every latent is left as it is).
    """

    saes: SAESet
    latents: Mapping[int, Int[Tensor, "batch k"]]
    mask: Mapping[int, Bool[Tensor, "batch k"]]
    target: Mapping[int, Float[Tensor, "batch seq k"]]
    where: Bool[Tensor, "batch seq"]

    def __post_init__(self) -> None:
        missing = set(self.latents) - set(self.saes.layers)
        if missing:
            raise RefusalScopeError(
                f"patched latents refer to layers {sorted(missing)} that have no SAE "
                f"(SAE layers: {self.saes.layers})"
            )

    def sites(self, n_layers: int) -> set[int]:
        return set(self.latents)

    def active(self, ctx: EditContext) -> bool:
        return ctx.prefill

    def edit(self, site: int, h: Tensor, ctx: EditContext) -> Tensor:
        idx = self.latents[site].to(h.device)
        if idx.shape[0] != h.shape[0] or self.where.shape != h.shape[:2]:
            raise RefusalScopeError(
                f"patch targets for a batch of {idx.shape[0]} rows × {self.where.shape[1]} "
                f"positions applied to {h.shape[0]} × {h.shape[1]}"
            )
        now = self.saes.encode(site, h, idx).float()
        keep = self.mask[site].to(h.device)[:, None, :] & self.where.to(h.device)[:, :, None]
        delta = (self.target[site].to(h.device) - now) * keep
        rows = self.saes.decoder_rows(site, idx).float()  # [B, k, d]
        return h + torch.bmm(delta, rows).to(h.dtype)


def per_row_latents(
    features: Sequence[Tensor],
) -> tuple[dict[int, Tensor], dict[int, Tensor]]:
    """Per-row feature lists (``[n_b, 2]`` of (layer, latent)) as ``SetLatents``'s
    ``latents`` and ``mask``: layer -> ``[B, k_max]`` (padded with latent 0, masked)."""
    by_layer = _index_per_row(features)
    return {l: v[0] for l, v in by_layer.items()}, {l: v[1] for l, v in by_layer.items()}
