"""Slow, obviously-correct implementations kept to check the fast paths against.

``laig_reference`` is the authors' LA-IG formula with every SAE in the loop (full
encode/decode at every layer, gradients taken on the mixed latent vectors), and
``FullClamp`` clamps features by a full encode/decode with the SAE error kept. The
tests assert the fast forms equal these; ``refusalscope bench`` times them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from ..runtime.hooks import EMBED, Capture, EditContext, Intervention
from ..runtime.interventions import AblateDirection
from ..runtime.model import ChatModel
from ..runtime.saes import SAESet
from ..runtime.tokens import TokenBatch
from ..runtime.types import FeatureList, feature_list
from ..stages.attribution import AttributionConfig, _masked_mean, jailbreak_tokens, metric


@dataclass(eq=False)
class _SAEMix(Intervention):
    """The authors' replacement at each SAE layer, SAE in the loop."""

    saes: SAESet
    patch_in: dict[int, Tensor]
    f_patch: dict[int, Tensor]
    alpha: float
    mixed: dict[int, Tensor] = field(default_factory=dict)

    def sites(self, n_layers: int) -> set[int]:
        return {EMBED, *self.patch_in}

    def edit(self, site: int, h: Tensor, ctx: EditContext) -> Tensor:
        if site == EMBED:
            return h.detach().requires_grad_(True)
        sae, a, fp = self.saes.saes[site], self.patch_in[site], self.f_patch[site]
        f_live = sae.encode(h)
        mixed = (1 - self.alpha) * f_live + self.alpha * fp
        self.mixed[site] = mixed
        error_live = h - sae.decode(f_live)
        error_patch = a - sae.decode(fp)
        return sae.decode(mixed) + (1 - self.alpha) * error_live + self.alpha * error_patch


def laig_reference(
    model: ChatModel,
    saes: SAESet,
    tokens: TokenBatch,
    direction: Tensor,
    ref_token: int,
    cfg: AttributionConfig,
) -> dict[int, Float[Tensor, "batch d_sae"]]:
    """Position-averaged LA-IG score of every latent, SAE-in-the-loop (the paper's formula)."""
    layers = saes.layers
    ablate = AblateDirection(direction)
    with torch.no_grad():
        cap = Capture(layers)
        model.forward(tokens, [cap], last_only=True)
        f_clean = {l: saes.encode(l, cap.get(l)) for l in layers}
        cap = Capture(layers)
        patch_logits = model.forward(tokens, [cap, ablate], last_only=True)
        patch_in = {l: cap.get(l) for l in layers}
        f_patch = {l: saes.encode(l, ablate.edit(l, patch_in[l], EditContext())) for l in layers}
    jb = jailbreak_tokens(patch_logits, ref_token)
    grad = {l: torch.zeros_like(f_clean[l]) for l in layers}
    with torch.enable_grad():
        for alpha in cfg.alphas():
            mix = _SAEMix(saes, patch_in, f_patch, alpha)
            m = metric(model.forward(tokens, [mix], last_only=True), jb, ref_token)
            gs = torch.autograd.grad(m.sum(), [mix.mixed[l] for l in layers])
            for l, g in zip(layers, gs, strict=True):
                grad[l] += g / cfg.ig_steps
    return {
        l: _masked_mean((f_patch[l] - f_clean[l]) * grad[l], tokens.prompt_mask) for l in layers
    }


@dataclass(eq=False)
class FullClamp(Intervention):
    """Clamp by full encode/decode: ``h' = decode(f') + (h − decode(f))``."""

    saes: SAESet
    features: FeatureList | Sequence
    scale: float | None = -3.0
    value: float | None = None

    def __post_init__(self) -> None:
        self.features = feature_list(self.features)

    def sites(self, n_layers: int) -> set[int]:
        return set(self.features[:, 0].tolist())

    def edit(self, site: int, h: Tensor, ctx: EditContext) -> Tensor:
        sae = self.saes.saes[site]
        f = sae.encode(h)
        latents = self.features[self.features[:, 0] == site, 1].to(f.device)
        f_new = f.clone()
        if self.value is not None:
            f_new[..., latents] = self.value
        else:
            f_new[..., latents] = self.scale * f[..., latents]
        return (sae.decode(f_new) + (h - sae.decode(f))).to(h.dtype)


@dataclass(eq=False)
class _PatchLatents(Intervention):
    """Full SAE in the loop at each layer, some latents set to given values where asked."""

    saes: SAESet
    values: dict[int, dict[int, Tensor]]
    """layer -> latent -> ``[batch, seq]`` counterfactual values."""
    where: Tensor

    def sites(self, n_layers: int) -> set[int]:
        return set(self.values)

    def edit(self, site: int, h: Tensor, ctx: EditContext) -> Tensor:
        sae = self.saes.saes[site]
        f = sae.encode(h)
        f_new = f.clone()
        for latent, value in self.values[site].items():
            f_new[..., latent] = torch.where(self.where, value, f[..., latent])
        return (sae.decode(f_new) + (h - sae.decode(f))).to(h.dtype)


@torch.no_grad()
def exact_effect_reference(
    model: ChatModel,
    saes: SAESet,
    tokens: TokenBatch,
    direction: Tensor,
    ref_token: int,
    features: FeatureList | Sequence,
) -> Float[Tensor, " batch"]:
    """``Δm`` of moving ``features`` (one latent, or a set moved at once) from their clean to
    their counterfactual values at the prompt positions, written the slow way: full
    encode/decode in the loop at every layer involved."""
    features = feature_list(features)
    layers = sorted(set(features[:, 0].tolist()))
    ablate = AblateDirection(direction)
    clean_logits = model.forward(tokens, [], last_only=True)
    cap_cf = Capture(layers)
    patch_logits = model.forward(tokens, [cap_cf, ablate], last_only=True)
    jb = jailbreak_tokens(patch_logits, ref_token)
    values: dict[int, dict[int, Tensor]] = {}
    for layer, latent in features.tolist():
        f_cf = saes.saes[layer].encode(ablate.edit(layer, cap_cf.get(layer), EditContext()))
        values.setdefault(layer, {})[latent] = f_cf[..., latent]
    patched = model.forward(tokens, [_PatchLatents(saes, values, tokens.prompt_mask)], True)
    return metric(patched, jb, ref_token) - metric(clean_logits, jb, ref_token)
