"""Interventions as values: direction ablation/addition and SAE feature clamps.

Each is a small dataclass applied through ``ChatModel.hooked`` (or any ChatModel call
that takes ``interventions``). Feature clamps use an exact sparse form:
with the SAE error kept, ``decode(f') + (h - decode(f)) = h + Σ_i (f'_i - f_i) W_dec[i]``,
so only the selected latents are encoded and the cost does not grow with SAE width.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from jaxtyping import Float
from torch import Tensor

from .errors import RefusalScopeError
from .hooks import EMBED, EditContext, Intervention, Positions, attn_write, check_direction
from .saes import LatentSlice, SAESet
from .types import FeatureList, feature_list


def _unit(r: Tensor) -> Tensor:
    r = r.detach().float()
    return r / r.norm().clamp(min=1e-12)


@dataclass(eq=False)
class AblateDirection(Intervention):
    """``h <- h - (h·r̂) r̂`` at the embedding output and after every layer (or ``at``).

    ``resid_mid=True`` also removes r̂ from what each layer's attention writes, so the
    stream is ⊥ r̂ between attention and MLP too — Arditi et al.'s ablation (resid_pre,
    resid_mid and resid_post of every layer), which weight orthogonalisation reproduces
    exactly. Without it each MLP still reads its own layer's attention write along r̂."""

    direction: Float[Tensor, " d_model"]
    at: Sequence[int] | None = None
    positions: Positions = "all"
    resid_mid: bool = False

    def __post_init__(self) -> None:
        self._r = _unit(self.direction)

    def sites(self, n_layers: int) -> set[int]:
        sites = set(self.at) if self.at is not None else {EMBED, *range(n_layers)}
        if self.resid_mid:
            layers = self.at if self.at is not None else range(n_layers)
            sites |= {attn_write(layer) for layer in layers if layer != EMBED}
        return sites

    def validate(self, n_layers: int, d_model: int) -> None:
        check_direction(self.direction, d_model, "AblateDirection.direction")

    def edit(self, site: int, h: Tensor, ctx: EditContext) -> Tensor:
        r = self._r.to(h.device, h.dtype)
        return h - (h @ r).unsqueeze(-1) * r


@dataclass(eq=False)
class AddDirection(Intervention):
    """``h <- h + coeff · r`` after one layer (activation addition)."""

    direction: Float[Tensor, " d_model"]
    layer: int
    coeff: float = 1.0
    positions: Positions = "all"

    def sites(self, n_layers: int) -> set[int]:
        return {self.layer}

    def validate(self, n_layers: int, d_model: int) -> None:
        check_direction(self.direction, d_model, "AddDirection.direction")

    def edit(self, site: int, h: Tensor, ctx: EditContext) -> Tensor:
        return h + self.coeff * self.direction.to(h.device, h.dtype)


@dataclass(eq=False)
class _FeatureClamp(Intervention):
    """Shared machinery of ScaleFeatures/SetFeatures.

    ``features`` is one ``[n, 2]`` list of (layer, latent) for every prompt, or a list
    with one such list per prompt (per-prompt sets); ``select`` picks a batch's rows.
    """

    saes: SAESet
    features: FeatureList | Sequence[FeatureList]
    positions: Positions = "all"
    _per_layer: dict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._plans: dict = {}
        self.per_prompt = not isinstance(self.features, Tensor) and not _is_pair_list(self.features)
        if self.per_prompt:
            self.features = [feature_list(f) for f in self.features]
            self._per_layer = _index_per_row(self.features)
        else:
            self.features = feature_list(self.features)
            self._per_layer = {
                # unique: a latent listed twice must still be clamped once
                int(layer): (self.features[self.features[:, 0] == layer, 1].unique(), None)
                for layer in self.features[:, 0].unique().tolist()
            }
        missing = set(self._per_layer) - set(self.saes.layers)
        if missing:
            raise RefusalScopeError(
                f"features refer to layers {sorted(missing)} that have no SAE "
                f"(SAE layers: {self.saes.layers})"
            )

    def sites(self, n_layers: int) -> set[int]:
        return set(self._per_layer)

    def select(self, rows: Sequence[int]) -> Intervention:
        if not self.per_prompt:
            return self
        return replace(self, features=[self.features[i] for i in rows])

    def affine(self) -> tuple[float, float]:
        """``(a, b)`` with ``f' = a·f + b`` for every selected latent."""
        raise NotImplementedError

    def _plan(self, site: int, h: Tensor) -> _ClampPlan:
        # Planned once per intervention and site: every generated token reuses it.
        key = (site, h.device, h.dtype)
        if key not in self._plans:
            latents, mask = self._per_layer[site]
            dtype = self.saes.saes[site].W_dec.dtype
            sl = self.saes.latent_slice(site, latents, h.device, dtype)
            self._plans[key] = _ClampPlan.make(sl, mask, *self.affine())
        return self._plans[key]

    def edit(self, site: int, h: Tensor, ctx: EditContext) -> Tensor:
        latents, mask = self._per_layer[site]
        if latents.numel() == 0:
            return h
        if mask is not None and latents.shape[0] != h.shape[0]:
            raise RefusalScopeError(
                f"per-prompt features for {latents.shape[0]} prompts applied to a batch of "
                f"{h.shape[0]}; call .select(rows) for the batch"
            )
        plan = self._plan(site, h)
        return plan.apply(h, self.saes.encode_slice(site, plan.slice, h))


@dataclass(eq=False)
class ScaleFeatures(_FeatureClamp):
    """``f'_i = c · f_i`` for the selected latents (``c=-3``: the paper's jailbreak clamp)."""

    c: float = -3.0

    def affine(self) -> tuple[float, float]:
        return self.c, 0.0


@dataclass(eq=False)
class SetFeatures(_FeatureClamp):
    """``f'_i = v`` for the selected latents (refusal induction)."""

    v: float = 10.0

    def affine(self) -> tuple[float, float]:
        return 0.0, self.v


@dataclass(eq=False)
class _ClampPlan:
    """One site's clamp as one matrix product per generated token.

    With ``f' = a·f + b``, the edit ``Σ_i (f'_i − f_i) W_dec[i]`` is ``f @ M + u`` with
    ``M = (a − 1)·W_dec[S]`` and ``u = b·Σ_{i∈S} W_dec[i]`` (masked rows zeroed for
    per-prompt sets); the latents ``f`` come from the slice's fused encode.
    """

    slice: LatentSlice
    b: float
    M: Tensor
    """``[k, d]`` or ``[B, k, d]``."""
    u: Tensor
    """``[d]`` or ``[B, 1, d]``."""

    @classmethod
    def make(cls, sl: LatentSlice, mask: Tensor | None, a: float, b: float) -> _ClampPlan:
        rows = sl.rows
        if mask is not None:
            rows = rows * mask.to(rows.device, rows.dtype)[:, :, None]
        u = b * rows.sum(-2)
        return cls(sl, b, (a - 1.0) * rows, u if mask is None else u[:, None, :])

    def apply(self, h: Tensor, f: Tensor) -> Tensor:
        """``h + f @ M + u``, fused into one product when the dtypes agree."""
        M = self.M
        if h.dtype != M.dtype:
            shift = (f @ M if M.ndim == 2 else torch.bmm(f, M)) + self.u
            return h + shift.to(h.dtype)
        base = h + self.u if self.b != 0 else h
        if M.ndim == 3:
            return torch.baddbmm(base, f, M)
        flat = torch.addmm(base.reshape(-1, h.shape[-1]), f.reshape(-1, f.shape[-1]), M)
        return flat.view(h.shape)


def _is_pair_list(x: Sequence) -> bool:
    """True for ``[(layer, latent), ...]``; False for a list of per-prompt lists/tensors."""
    if len(x) == 0:
        return True
    first = x[0]
    return not isinstance(first, Tensor) and len(first) == 2 and all(map(_is_integer, first))


def _is_integer(v: object) -> bool:
    """Python, NumPy and 0-d torch integers alike (anything with ``__index__``)."""
    try:
        operator.index(v)
    except TypeError:
        return False
    return not isinstance(v, bool)


def _index_per_row(per_row: Sequence[Tensor]) -> dict[int, tuple[Tensor, Tensor]]:
    """layer -> (latents ``[B, k_max]`` padded with 0, mask ``[B, k_max]``)."""
    layers = sorted({int(lay) for f in per_row for lay in f[:, 0].tolist()})
    out = {}
    for layer in layers:
        lists = [f[f[:, 0] == layer, 1].unique() for f in per_row]  # clamp each latent once
        k = max(len(x) for x in lists)
        latents = torch.zeros(len(lists), k, dtype=torch.long)
        mask = torch.zeros(len(lists), k, dtype=torch.bool)
        for b, x in enumerate(lists):
            latents[b, : len(x)] = x
            mask[b, : len(x)] = True
        out[layer] = (latents, mask)
    return out
