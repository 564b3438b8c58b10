"""Pinning SAE latents to the values they had on the unedited prompt.

The harm-category analysis clamps one set of latents while holding another at its
original value, so that the clamp's effect cannot run through the held set:
``h <- h + Σ_i (f_i^clean − f_i) · W_dec[i]`` at every prompt position, with ``f^clean``
recorded on a clean pass (``clean_latent_values``) and ``f`` the latent on the edited
residual. This is the SAE in the loop with those latents set to their clean values and
the SAE error kept, ``decode(f') + (h − decode(f))`` (as the other clamps; re-encoding the
result need not give back exactly ``f^clean``, the decoder rows not being orthogonal).
Generated tokens have no clean value and are left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from jaxtyping import Float
from torch import Tensor

from .errors import RefusalScopeError
from .hooks import Capture, EditContext, Intervention
from .model import ChatModel
from .saes import SAESet
from .types import FeatureList, feature_list

PromptValues = dict[int, Float[Tensor, "seq k"]]
"""One prompt's clean values: layer -> ``[n_tokens, k]`` over its unpadded tokens."""


def _by_layer(features: FeatureList) -> dict[int, Tensor]:
    """layer -> its latents, in the order of ``features``, each listed once."""
    out: dict[int, list[int]] = {}
    for layer, latent in features.tolist():
        if latent not in out.setdefault(layer, []):
            out[layer].append(latent)
    return {l: torch.tensor(v, dtype=torch.long) for l, v in out.items()}


@torch.no_grad()
def clean_latent_values(
    model: ChatModel,
    saes: SAESet,
    features: FeatureList,
    prompts: Sequence[str],
    batch_size: int = 32,
) -> list[PromptValues]:
    """Each prompt's activations of ``features`` at every one of its tokens, unedited."""
    latents = _by_layer(feature_list(features))
    out: list[PromptValues] = [{} for _ in prompts]
    if not latents:
        return out
    for rows, tokens in model.batches(prompts, batch_size):
        cap = Capture(sorted(latents))
        model.forward(tokens, [cap], last_only=True)
        for layer, idx in latents.items():
            f = saes.encode(layer, cap.get(layer), idx).float().cpu()
            for j, i in enumerate(rows):
                n = int(tokens.attention_mask[j].sum())
                out[i][layer] = f[j, f.shape[1] - n :]  # left padding: the last n tokens
    return out


@dataclass(eq=False)
class PinFeatures(Intervention):
    """Hold ``features`` at their clean values on the prompt tokens (prefill only).

    ``values`` holds one ``clean_latent_values`` entry per prompt; ``select`` picks a
    batch's rows, as for per-prompt clamps.
    """

    saes: SAESet
    features: FeatureList
    values: Sequence[PromptValues]

    def __post_init__(self) -> None:
        self.features = feature_list(self.features)
        self._latents = _by_layer(self.features)
        missing = set(self._latents) - set(self.saes.layers)
        if missing:
            raise RefusalScopeError(
                f"pinned features refer to layers {sorted(missing)} that have no SAE "
                f"(SAE layers: {self.saes.layers})"
            )

    def sites(self, n_layers: int) -> set[int]:
        return set(self._latents)

    def active(self, ctx: EditContext) -> bool:
        return ctx.prefill

    def select(self, rows: Sequence[int]) -> Intervention:
        return replace(self, values=[self.values[i] for i in rows])

    def edit(self, site: int, h: Tensor, ctx: EditContext) -> Tensor:
        if len(self.values) != h.shape[0]:
            raise RefusalScopeError(
                f"pinned values for {len(self.values)} prompts applied to a batch of "
                f"{h.shape[0]}; call .select(rows) for the batch"
            )
        idx = self._latents[site]
        target = torch.zeros(*h.shape[:2], len(idx), dtype=torch.float32, device=h.device)
        known = torch.zeros(*h.shape[:2], 1, dtype=torch.float32, device=h.device)
        for b, v in enumerate(self.values):
            n = v[site].shape[0]
            if n > h.shape[1]:
                raise RefusalScopeError(
                    f"pinned values cover {n} tokens but the prompt has {h.shape[1]}; record "
                    "them with clean_latent_values on the same prompts"
                )
            target[b, h.shape[1] - n :] = v[site].to(h.device)
            known[b, h.shape[1] - n :] = 1.0
        now = self.saes.encode(site, h, idx.to(h.device)).float()
        rows = self.saes.decoder_rows(site, idx).float().to(h.device)
        return h + (((target - now) * known) @ rows).to(h.dtype)
