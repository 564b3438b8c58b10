"""SAEs through ``sae_lens`` only: loading, checks against the model, and latent math.

The fast paths of refusalscope (SAE-free LA-IG, sparse clamping) rely on the decoder
being affine, ``decode(f) = f @ W_dec_eff + b_dec``. ``decoder_rows`` returns
``W_dec_eff`` (TopK SAEs trained with ``rescale_acts_by_decoder_norm`` decode with
unit-norm rows), and ``encode`` computes only the requested latents when the encoder
is per-latent (ReLU, JumpReLU, gated); TopK-style encoders need the full encode.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .errors import RefusalScopeError, check_finite

log = logging.getLogger(__name__)

PER_LATENT_ARCHS = ("standard", "jumprelu", "gated")
"""Architectures whose latent ``i`` depends only on column ``i`` of the encoder."""

_AFFINE_NORMS = ("none", "expected_average_only_in")


def hook_layer(hook_name: str | None) -> int | None:
    """Residual layer (resid_post index) an SAE reads, from its hook name, if known."""
    if not hook_name:
        return None
    m = re.search(r"(?:blocks|layers?|h)\.(\d+)\.hook_resid_(pre|post|mid)", hook_name)
    if m:
        layer, kind = int(m.group(1)), m.group(2)
        if kind == "mid":
            raise RefusalScopeError(
                f"SAE hook {hook_name!r} reads resid_mid; refusalscope needs residual-stream "
                "SAEs after a layer (hook_resid_post, or hook_resid_pre of the next layer)"
            )
        return layer if kind == "post" else layer - 1
    m = re.search(r"layers?\.(\d+)$", hook_name)
    return int(m.group(1)) if m else None


def check_sae_folder(layer: int, folder: str | Path) -> Path:
    """The folder as a path; a ``RefusalScopeError`` unless it holds a sae_lens ``cfg.json``."""
    path = Path(folder).expanduser()
    if not (path / "cfg.json").is_file():
        raise RefusalScopeError(
            f"SAE folder for layer {layer} ({path}) has no cfg.json; give a folder "
            "written by sae_lens (SAE.save_model / save_inference_model)"
        )
    return path


def _check_affine(sae, where: str) -> None:
    norm = sae.cfg.normalize_activations
    if norm not in _AFFINE_NORMS:
        raise RefusalScopeError(
            f"SAE {where} uses normalize_activations={norm!r}, whose decoder depends on the "
            "input; refusalscope supports 'none' and 'expected_average_only_in' SAEs"
        )
    if getattr(sae.cfg, "reshape_activations", "none") != "none":
        raise RefusalScopeError(f"SAE {where} reshapes activations (hook_z); use a residual SAE")


def _corrupt_weights_fix(source: str) -> str:
    """What to do about non-finite weights loaded from ``source`` (folder or release id)."""
    cause = "is corrupt or came from a diverged training run"
    if Path(source).is_dir():
        from sae_lens.constants import SAE_WEIGHTS_FILENAME

        weights = Path(source) / SAE_WEIGHTS_FILENAME
        return f"the weights file {weights} {cause}; re-download or retrain it"
    return (
        f"the downloaded release {cause}; delete its files from the Hugging Face cache "
        "(~/.cache/huggingface/hub) and load it again, or use another release"
    )


@dataclass
class LatentSlice:
    """Some latents of one SAE, sliced once, to encode them and decode their change fast.

    ``latents`` is ``[k]`` (shared) or ``[B, k]`` (one list per batch row); for encoders
    that are not per-latent (TopK) the encoder slices are None and a full encode is used.
    """

    latents: Tensor
    rows: Tensor
    """Effective decoder rows, ``[k, d]`` or ``[B, k, d]``."""
    b_dec_in: Tensor
    """What the encoder subtracts from its input (``b_dec`` or 0)."""
    W_enc: Tensor | None = None
    """Encoder columns, ``[d, k]`` or ``[B, d, k]``."""
    b_enc: Tensor | None = None
    """Encoder bias with ``b_dec_in`` folded in: ``b_enc − b_dec_in @ W_enc`` (``[k]`` or
    ``[B, 1, k]``), so ``pre = h @ W_enc + b_enc`` is one fused product."""
    threshold: Tensor | None = None
    """``max(θ, 0)`` (JumpReLU) or 0 (ReLU): the latent is ``pre·[pre > threshold]``."""
    topk: tuple[Tensor, Tensor, Tensor | None, int] | None = None
    """TopK: the full ``W_enc``, ``b_enc``, decoder norms (if rescaled) and ``k``; a
    latent is active when its pre-activation is among the ``k`` largest of the token."""


@dataclass
class SAESet:
    """The SAEs attached to a model, keyed by the residual layer they read."""

    saes: dict[int, object]
    """layer -> ``sae_lens.SAE`` (inference class)."""
    sources: dict[int, str] = field(default_factory=dict)
    """layer -> where it was loaded from (folder, or ``release:sae_id``)."""

    def __post_init__(self) -> None:
        self._rows: dict[int, Tensor] = {}

    @property
    def layers(self) -> list[int]:
        return sorted(self.saes)

    def d_sae(self, layer: int) -> int:
        return int(self.saes[layer].cfg.d_sae)

    # ------------------------------------------------------------ loading
    @classmethod
    def from_folders(
        cls, folders: Mapping[int, str | Path], device: str = "cpu", dtype: str = "float32"
    ) -> SAESet:
        """Load one SAELens-format folder (``cfg.json`` + ``sae_weights.safetensors``) per layer."""
        from sae_lens import SAE

        saes, sources = {}, {}
        for layer, folder in sorted(folders.items()):
            path = check_sae_folder(layer, folder)
            saes[int(layer)] = SAE.load_from_disk(str(path), device=device, dtype=dtype)
            sources[int(layer)] = str(path)
        return cls._made(saes, sources)

    @classmethod
    def from_release(
        cls, release: str, sae_ids: Mapping[int, str], device: str = "cpu", dtype: str = "float32"
    ) -> SAESet:
        """Load pretrained SAEs, e.g. ``gemma-scope-2b-pt-res-canonical`` + per-layer ids."""
        from sae_lens import SAE

        saes, sources = {}, {}
        for layer, sae_id in sorted(sae_ids.items()):
            try:
                saes[int(layer)] = SAE.from_pretrained(release, sae_id, device=device, dtype=dtype)
            except (OSError, ValueError, KeyError) as e:
                raise RefusalScopeError(
                    f"could not load SAE {release}:{sae_id} for layer {layer}: {e}"
                ) from e
            sources[int(layer)] = f"{release}:{sae_id}"
        return cls._made(saes, sources)

    @classmethod
    def _made(cls, saes: dict, sources: dict) -> SAESet:
        if not saes:
            raise RefusalScopeError("no SAEs given: configure at least one layer")
        for layer, sae in saes.items():
            _check_affine(sae, sources[layer])
            check_finite(
                dict(sae.named_parameters()),
                f"SAE for layer {layer} ({sources[layer]})",
                _corrupt_weights_fix(sources[layer]),
            )
            sae.eval()
            for p in sae.parameters():
                p.requires_grad_(False)
        return cls(saes, sources)

    def check(self, n_layers: int, d_model: int, model_name: str = "the model") -> None:
        """Raise if an SAE does not fit the model (width or layer)."""
        for layer, sae in self.saes.items():
            where = self.sources.get(layer, f"layer {layer}")
            if sae.cfg.d_in != d_model:
                raise RefusalScopeError(
                    f"SAE for layer {layer} ({where}) expects d_in={sae.cfg.d_in} but "
                    f"{model_name} has hidden size {d_model} — wrong SAE release for this model?"
                )
            if not 0 <= layer < n_layers:
                raise RefusalScopeError(
                    f"SAE configured for layer {layer} ({where}) but {model_name} has layers "
                    f"0..{n_layers - 1}"
                )
            hooked = hook_layer(getattr(sae.cfg.metadata, "hook_name", None))
            if hooked is not None and hooked != layer:
                raise RefusalScopeError(
                    f"SAE {where} was trained on {sae.cfg.metadata.hook_name!r} (residual after "
                    f"layer {hooked}) but is configured for layer {layer}; fix the layer mapping"
                )

    # --------------------------------------------------------- latent math
    def decoder_rows(
        self, layer: int, latents: Int[Tensor, " *n"] | None = None
    ) -> Float[Tensor, "*n d_model"]:
        """Effective decoder rows: ``decode(f) - decode(0) = f @ rows``."""
        if layer not in self._rows:
            sae = self.saes[layer]
            W = sae.W_dec.detach()
            if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
                W = W / W.norm(dim=-1, keepdim=True).clamp(min=1e-8)
            self._rows[layer] = W
        rows = self._rows[layer]
        return rows if latents is None else rows[latents.to(rows.device)]

    def latent_slice(self, layer: int, latents: Tensor, device, dtype) -> LatentSlice:
        """Slice the encoder/decoder of ``layer`` for ``latents`` (``[k]`` or ``[B, k]``)."""
        sae = self.saes[layer]
        latents = latents.to(sae.W_enc.device)
        rows = self.decoder_rows(layer, latents).to(device, dtype)
        b_dec_in = (sae.b_dec * sae.cfg.apply_b_dec_to_input).detach().to(device, dtype)
        sl = LatentSlice(latents.to(device), rows, b_dec_in)
        arch = sae.cfg.architecture()
        if arch in ("standard", "jumprelu"):
            shared = latents.ndim == 1
            W = sae.W_enc.detach()[:, latents]
            sl.W_enc = (W if shared else W.permute(1, 0, 2)).to(device, dtype)
            b = sae.b_enc.detach()[latents].to(device, dtype) - b_dec_in @ sl.W_enc
            sl.b_enc = b if shared else b[:, None, :]
            # relu(pre)·[pre > θ] == pre·[pre > max(θ, 0)]: ReLU folded into the threshold.
            sl.threshold = torch.zeros((), device=device, dtype=dtype)
            if arch == "jumprelu":
                t = sae.threshold.detach()[latents].clamp(min=0).to(device, dtype)
                sl.threshold = t if shared else t[:, None, :]
        elif arch == "topk":
            norms = None
            if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
                norms = sae.W_dec.detach().norm(dim=-1).to(device, dtype)
            W, b = sae.W_enc.detach().to(device, dtype), sae.b_enc.detach().to(device, dtype)
            sl.topk = (W, b, norms, int(sae.cfg.k))
        return sl

    def encode_slice(
        self, layer: int, sl: LatentSlice, h: Float[Tensor, "batch seq d_model"]
    ) -> Float[Tensor, "batch seq k"]:
        """The sliced latents' activations (equals ``encode(layer, h, sl.latents)``).

        Per-latent encoders cost one fused product and a mask: this runs on every
        generated token of a clamped generation.
        """
        x = h.to(sl.b_dec_in.dtype)
        if sl.topk is not None:
            return _topk_slice(x - sl.b_dec_in, sl)
        if sl.W_enc is None:
            return self.encode(layer, h, sl.latents)
        W = sl.W_enc
        if W.ndim == 2:
            pre = torch.addmm(sl.b_enc, x.reshape(-1, x.shape[-1]), W).view(*x.shape[:-1], -1)
        else:
            pre = torch.baddbmm(sl.b_enc, x, W)
        return pre * (pre > sl.threshold)

    def encode(
        self,
        layer: int,
        h: Float[Tensor, "batch seq d_model"],
        latents: Int[Tensor, " k"] | Int[Tensor, "batch k"] | None = None,
    ) -> Float[Tensor, "batch seq k"]:
        """Latent activations; only the ``latents`` asked for when the encoder allows it.

        ``latents`` is shared by every row (``[k]``) or given per row (``[batch, k]``).
        """
        sae = self.saes[layer]
        if latents is None:
            return sae.encode(h)
        latents = latents.to(sae.W_enc.device)
        arch = sae.cfg.architecture()
        if arch not in PER_LATENT_ARCHS:
            full = sae.encode(h)
            return _gather_latents(full, latents)
        x = sae.process_sae_in(h)
        if arch == "gated":
            W_gate = sae.W_enc
            W_mag = sae.W_enc * sae.r_mag.exp()
            gate = _project(x, W_gate, sae.b_gate, latents) > 0
            mag = torch.relu(_project(x, W_mag, sae.b_mag, latents))
            return gate.to(mag.dtype) * mag
        pre = _project(x, sae.W_enc, sae.b_enc, latents)
        acts = torch.relu(pre)
        if arch == "jumprelu":
            thr = sae.threshold[latents]
            if latents.ndim == 2:  # [B, k] -> broadcast over every non-batch dim of pre
                thr = thr.reshape(thr.shape[0], *([1] * (pre.ndim - 2)), thr.shape[1])
            acts = acts * (pre > thr).to(acts.dtype)
        return acts


def _topk_slice(x: Tensor, sl: LatentSlice) -> Tensor:
    """TopK activations of the sliced latents without materialising the full code."""
    W, b, norms, k = sl.topk
    pre = x @ W + b
    if norms is not None:
        pre = pre * norms
    kth = pre.topk(k, dim=-1).values[..., -1:]
    sel = _gather_latents(pre, sl.latents)
    return torch.relu(sel) * (sel >= kth).to(sel.dtype)


def _project(x: Tensor, W: Tensor, b: Tensor, latents: Tensor) -> Tensor:
    """``x @ W[:, latents] + b[latents]`` for shared ``[k]`` or per-row ``[B, k]`` latents."""
    if latents.ndim == 1:
        return x @ W[:, latents] + b[latents]
    W_rows = W[:, latents].permute(1, 0, 2)  # [B, d, k]
    flat = x.reshape(x.shape[0], -1, x.shape[-1])
    out = torch.bmm(flat, W_rows) + b[latents][:, None, :]
    return out.reshape(*x.shape[:-1], latents.shape[-1])


def _gather_latents(full: Tensor, latents: Tensor) -> Tensor:
    if latents.ndim == 1:
        return full[..., latents]
    idx = latents.reshape(latents.shape[0], *([1] * (full.ndim - 2)), latents.shape[1])
    return torch.gather(full, -1, idx.expand(*full.shape[:-1], latents.shape[1]))
