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
class EditLatents(Intervention):
    """Per row, ``f' = scale·f + target`` for some latents of some layers where ``on``
    (prefill only); ``scale = 0`` sets them to ``target``, ``target = None`` scales them.

    ``latents[l]`` is ``[B, k]`` (row ``b``'s latents at layer ``l``, padded), ``on[l]`` is
    ``[B, T, k]`` (the positions each slot is edited at; False for padding slots) and
    ``target[l]`` ``[B, T, k]``. Elsewhere every latent is left as it is.
    """

    saes: SAESet
    latents: Mapping[int, Int[Tensor, "batch k"]]
    on: Mapping[int, Bool[Tensor, "batch seq k"]]
    target: Mapping[int, Float[Tensor, "batch seq k"]] | None = None
    scale: float = 0.0

    def __post_init__(self) -> None:
        missing = set(self.latents) - set(self.saes.layers)
        if missing:
            raise RefusalScopeError(
                f"edited latents refer to layers {sorted(missing)} that have no SAE "
                f"(SAE layers: {self.saes.layers})"
            )

    def sites(self, n_layers: int) -> set[int]:
        return set(self.latents)

    def active(self, ctx: EditContext) -> bool:
        return ctx.prefill

    def edit(self, site: int, h: Tensor, ctx: EditContext) -> Tensor:
        idx, on = self.latents[site].to(h.device), self.on[site].to(h.device)
        if on.shape[:2] != h.shape[:2]:
            raise RefusalScopeError(
                f"latent edits for a batch of {on.shape[0]} rows × {on.shape[1]} positions "
                f"applied to {h.shape[0]} × {h.shape[1]}"
            )
        now = self.saes.encode(site, h, idx).float()
        delta = (self.scale - 1.0) * now
        if self.target is not None:
            delta = delta + self.target[site].to(h.device)
        rows = self.saes.decoder_rows(site, idx).float()  # [B, k, d]
        return h + torch.bmm(delta * on, rows).to(h.dtype)


def positions(mask: Tensor, where: Tensor) -> Bool[Tensor, "batch seq k"]:
    """``EditLatents.on`` for slots ``mask [B, k]`` edited at positions ``where [B, T]``."""
    return mask[:, None, :] & where[:, :, None]


def per_row_latents(
    features: Sequence[Tensor],
) -> tuple[dict[int, Tensor], dict[int, Tensor]]:
    """Per-row feature lists (``[n_b, 2]`` of (layer, latent)) as ``EditLatents``'s
    ``latents`` and their slot mask: layer -> ``[B, k_max]`` (padded with latent 0, masked)."""
    by_layer = _index_per_row(features)
    return {l: v[0] for l, v in by_layer.items()}, {l: v[1] for l, v in by_layer.items()}
