"""Train the organism's SAEs (BatchTopK or TopK) with sae_lens's own trainer.

The organism's SAEs are trained from a fixed tensor of token activations (one layer
at a time) by ``sae_lens.SAETrainer`` fed with shuffled batches of that tensor. The
trained SAE is returned as sae_lens's *inference* SAE (``JumpReLUSAE`` for BatchTopK,
as sae_lens saves it; ``TopKSAE`` for TopK) with the decoder norms folded in, so
``decode(f) = f @ W_dec + b_dec`` with unit-norm rows — the affine form the fast paths
of refusalscope (SAE-free LA-IG, sparse clamping) rely on.

Nothing here writes a pickle: the trainer's checkpoints (``torch.save``) are switched
off, and ``save_sae`` writes the SAELens folder format (``cfg.json`` +
``sae_weights.safetensors``).
"""

from __future__ import annotations

import logging
import math
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from ..runtime.errors import RefusalScopeError

if TYPE_CHECKING:  # sae_lens is imported lazily: it takes seconds to import
    from sae_lens import SAE, BatchTopKTrainingSAE, JumpReLUSAE, TopKSAE, TopKTrainingSAE

log = logging.getLogger(__name__)

SAE_FILES = ("cfg.json", "sae_weights.safetensors")
"""What an SAE folder written by ``save_sae`` holds (sae_lens's file names)."""

_FOLD_TOLERANCE = 1e-4
"""Largest reconstruction change (relative to the mean input norm) of a token when the
decoder norm is folded; folding is exact up to float rounding (~1e-6)."""
_FOLD_MAX_CHANGED = 0.01
"""Fraction of probe tokens allowed past ``_FOLD_TOLERANCE`` (TopK near-ties)."""


@dataclass(frozen=True)
class SAETrainConfig:
    """How to train one SAE (defaults: what worked for the organism, d_model 128)."""

    architecture: Literal["topk", "batchtopk"] = "batchtopk"
    """'topk': exactly ``k`` latents per token, saved as sae_lens's ``TopKSAE``.
    'batchtopk': ``k`` per token on average over a batch during training, saved (as
    sae_lens does) as a ``JumpReLUSAE`` whose threshold is the learned top-k threshold —
    a per-latent encoder, so a clamp encodes only the latents it needs. That threshold is
    a running average from 0 (sae_lens): it needs a few hundred steps to settle, and a
    shorter run leaves L0 well above ``k``."""
    expansion: int = 8
    """Latents per residual dimension: ``d_sae = expansion * d_model``."""
    k: int = 20
    """Active latents per token (TopK), or per token on average (BatchTopK)."""
    lr: float = 3e-3
    """Peak Adam learning rate."""
    batch_size: int = 2048
    """Token activations per training step."""
    n_tokens: int = 650_000
    """Training samples in total; the activation tensor is re-shuffled and reused when
    it holds fewer."""
    lr_scheduler: Literal["constant", "cosineannealing"] = "constant"
    """Shape of the learning rate between warm-up and the final linear decay."""
    lr_warm_up_fraction: float = 0.02
    """Fraction of the steps spent warming the learning rate up linearly from ~0."""
    lr_decay_fraction: float = 0.2
    """Fraction of the steps, at the end, over which the learning rate decays linearly
    to 0 (from ``lr``, or from the cosine's end value)."""
    lr_end_fraction: float = 0.1
    """End value of the cosine schedule as a fraction of ``lr`` (unused by 'constant')."""
    normalize_activations: Literal["none", "expected_average_only_in"] = "expected_average_only_in"
    """'expected_average_only_in' trains on inputs rescaled to mean norm sqrt(d_model),
    so ``lr`` does not depend on the residual's scale; the scale is folded into the
    weights at the end, so the saved SAE reads raw activations."""
    init_b_dec_to_mean: bool = True
    """Start the decoder bias at the mean activation (residuals have a large offset)."""
    aux_loss_coefficient: float = 1.0
    """Weight of the TopK auxiliary loss that revives dead latents."""
    dead_feature_window: int = 50
    """Steps without firing after which a latent counts as dead (feeds the aux loss)."""
    feature_sampling_window: int = 100
    """Steps over which firing rates are accumulated (the final window sets
    ``metadata.l0`` and ``metadata.num_dead_features``)."""
    seed: int = 0
    """Seeds the initialisation and the batch order; training is deterministic."""

    def __post_init__(self) -> None:
        for name in ("expansion", "k", "batch_size", "n_tokens"):
            if getattr(self, name) < 1:
                raise RefusalScopeError(f"SAETrainConfig.{name} must be >= 1")
        if self.n_tokens < self.batch_size:
            raise RefusalScopeError(
                f"n_tokens={self.n_tokens} is less than one batch ({self.batch_size})"
            )
        if not self.lr > 0:
            raise RefusalScopeError(f"SAETrainConfig.lr must be > 0, got {self.lr}")
        for name in ("lr_warm_up_fraction", "lr_decay_fraction", "lr_end_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise RefusalScopeError(f"SAETrainConfig.{name} must be in [0, 1]")
        if self.lr_warm_up_fraction + self.lr_decay_fraction > 1:
            raise RefusalScopeError("lr_warm_up_fraction + lr_decay_fraction must be <= 1")
        if (
            self.lr_scheduler == "cosineannealing"
            and self.lr_decay_fraction > 0
            and self.lr_end_fraction == 0
        ):
            # sae_lens cannot decay linearly from a cosine that already ended at 0
            raise RefusalScopeError(
                "a cosine schedule with a final decay needs lr_end_fraction > 0"
            )
        if self.dead_feature_window < 1 or self.feature_sampling_window < 1:
            raise RefusalScopeError("dead_feature_window and feature_sampling_window must be >= 1")

    @property
    def n_steps(self) -> int:
        """Training steps (sae_lens trains until ``n_tokens`` samples are seen)."""
        return math.ceil(self.n_tokens / self.batch_size)


@dataclass(frozen=True)
class SAEQuality:
    """How well an SAE reconstructs a set of token activations."""

    fve: float
    """Fraction of variance explained: ``1 - Σ‖x - x̂‖² / Σ‖x - mean(x)‖²``."""
    l0: float
    """Mean number of non-zero latents per token."""
    alive_fraction: float
    """Fraction of latents that fire on at least one of the tokens."""
    n_tokens: int
    """Tokens evaluated."""


def _shuffled_batches(
    acts: Tensor, batch_size: int, generator: torch.Generator
) -> Iterator[Tensor]:
    """Endless full batches: a fresh permutation of ``acts`` each epoch."""
    n = acts.shape[0]
    perm, pos = torch.randperm(n, generator=generator), 0
    while True:
        parts, need = [], batch_size
        while need > 0:
            if pos == n:
                perm, pos = torch.randperm(n, generator=generator), 0
            take = min(need, n - pos)
            parts.append(perm[pos : pos + take])
            pos, need = pos + take, need - take
        yield acts[torch.cat(parts)]


def _trainer_config(cfg: SAETrainConfig):
    from sae_lens import LoggingConfig
    from sae_lens.config import SAETrainerConfig

    steps = cfg.n_steps
    # sae_lens's linear warm-up divides by (steps - 1): fewer than 2 steps means none
    warm = int(cfg.lr_warm_up_fraction * steps)
    warm = warm if warm >= 2 else 0
    return SAETrainerConfig(
        total_training_samples=cfg.n_tokens,
        train_batch_size_samples=cfg.batch_size,
        lr=cfg.lr,
        lr_end=cfg.lr * cfg.lr_end_fraction,
        lr_scheduler_name=cfg.lr_scheduler,
        lr_warm_up_steps=warm,
        lr_decay_steps=int(cfg.lr_decay_fraction * steps),
        dead_feature_window=cfg.dead_feature_window,
        feature_sampling_window=cfg.feature_sampling_window,
        # the trainer's checkpoints include torch.save pickles: never write them
        n_checkpoints=0,
        checkpoint_path=None,
        save_final_checkpoint=False,
        logger=LoggingConfig(log_to_wandb=False),
    )


def _check_acts(acts: Tensor) -> Tensor:
    if acts.ndim != 2 or acts.shape[0] == 0:
        raise RefusalScopeError(
            f"SAE training needs token activations of shape [n, d_model], got {tuple(acts.shape)}"
        )
    if not torch.isfinite(acts).all():
        raise RefusalScopeError("SAE training activations contain NaN or inf")
    return acts.detach().float().cpu()


def train_sae(
    acts: Float[Tensor, "n d_model"],
    cfg: SAETrainConfig,
    *,
    hook_name: str,
    model_name: str,
) -> SAE:
    """Train an SAE on ``acts``; return sae_lens's inference ``TopKSAE`` or ``JumpReLUSAE``.

    ``hook_name`` (e.g. ``"blocks.2.hook_resid_post"``) and ``model_name`` go into
    ``cfg.metadata``; ``SAESet.check`` reads the layer back from the hook name.
    """
    acts = _check_acts(acts)
    # fork_rng: deterministic training without touching the caller's global RNG
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        trained = _fit(acts, cfg, hook_name, model_name)
        # inside fork_rng too: building the inference SAE draws a (discarded) random init
        probe = acts[: min(4096, acts.shape[0])]
        if cfg.architecture == "topk":
            inference = _fold_to_inference(trained, probe)
        else:
            inference = _batchtopk_to_jumprelu(trained, probe)
    log.info(
        "trained %s SAE for %s (%d latents, k=%d) on %d samples",
        cfg.architecture,
        hook_name,
        inference.cfg.d_sae,
        cfg.k,
        cfg.n_tokens,
    )
    return inference


def _fit(
    acts: Tensor, cfg: SAETrainConfig, hook_name: str, model_name: str
) -> TopKTrainingSAE | BatchTopKTrainingSAE:
    """A fresh sae_lens training SAE (its init drawn from the global torch RNG) trained by
    sae_lens's ``SAETrainer`` on shuffled batches of ``acts``."""
    from sae_lens import (
        BatchTopKTrainingSAE,
        BatchTopKTrainingSAEConfig,
        SAETrainer,
        TopKTrainingSAE,
        TopKTrainingSAEConfig,
    )
    from sae_lens.saes.sae import SAEMetadata

    d_in = acts.shape[1]
    config_cls, sae_cls = {
        "topk": (TopKTrainingSAEConfig, TopKTrainingSAE),
        "batchtopk": (BatchTopKTrainingSAEConfig, BatchTopKTrainingSAE),
    }[cfg.architecture]
    sae_cfg = config_cls(
        d_in=d_in,
        d_sae=cfg.expansion * d_in,
        k=cfg.k,
        aux_loss_coefficient=cfg.aux_loss_coefficient,
        rescale_acts_by_decoder_norm=True,
        normalize_activations=cfg.normalize_activations,
        metadata=SAEMetadata(hook_name=hook_name, model_name=model_name),
    )
    sae = sae_cls(sae_cfg)
    batches = _shuffled_batches(acts, cfg.batch_size, torch.Generator().manual_seed(cfg.seed))
    trainer = SAETrainer(cfg=_trainer_config(cfg), sae=sae, data_provider=batches)
    if cfg.normalize_activations == "expected_average_only_in":
        # exact factor from all activations (the trainer keeps a preset one); the
        # trainer folds it into the weights after training
        trainer.activation_scaler.scaling_factor = d_in**0.5 / acts.norm(dim=-1).mean().item()
    if cfg.init_b_dec_to_mean:
        scale = trainer.activation_scaler.scaling_factor or 1.0
        with torch.no_grad():
            sae.b_dec.copy_(acts.mean(0) * scale)
    return trainer.fit()


@torch.no_grad()
def _fold_to_inference(trained: TopKTrainingSAE, probe: Tensor) -> TopKSAE:
    """Fold the decoder norms and convert the trained SAE to the inference class.

    Trained with ``rescale_acts_by_decoder_norm`` the SAE decodes with the rows
    ``W_dec / ‖W_dec‖``; folding the norms into the encoder makes the rows unit-norm and
    the flag unnecessary, so ``decode(f) = f @ W_dec + b_dec`` exactly.
    """
    from sae_lens import SAE

    trained.eval()
    before = trained.decode(trained.encode(probe))
    trained.fold_W_dec_norm()
    trained.cfg.rescale_acts_by_decoder_norm = False
    sae = SAE.from_dict(trained.cfg.get_inference_sae_cfg_dict())
    state = {name: p.detach().clone() for name, p in trained.state_dict().items()}
    sae.load_state_dict(state)
    sae.eval()
    after = sae.decode(sae.encode(probe))
    scale = probe.norm(dim=-1).mean().clamp(min=1e-12)
    per_token = (after - before).abs().amax(-1) / scale
    # Folding is exact up to rounding, but rounding can flip a near-tie for the k-th
    # TopK slot, which changes that one token's code; allow a handful of such tokens.
    changed = (per_token > _FOLD_TOLERANCE).float().mean().item()
    assert changed <= _FOLD_MAX_CHANGED, f"folding changed {changed:.2%} of reconstructions"
    return sae


@torch.no_grad()
def _batchtopk_to_jumprelu(trained: BatchTopKTrainingSAE, probe: Tensor) -> JumpReLUSAE:
    """sae_lens's own conversion (what ``save_inference_model`` writes), in memory.

    The decoder norms are folded into the encoder, so the rows are unit-norm and the
    JumpReLU threshold (the learned top-k threshold) applies to the folded
    pre-activations; the result is checked against the trained SAE's rescaled code.
    """
    from sae_lens import SAE

    trained.eval()
    norms = trained.W_dec.norm(dim=-1)
    pre = (probe - trained.b_dec * trained.cfg.apply_b_dec_to_input) @ trained.W_enc
    pre = (pre + trained.b_enc) * norms  # the rescaled pre-activations it thresholds
    thr = trained.topk_threshold.float()
    want = (torch.relu(pre) * (pre > thr)) @ (trained.W_dec / norms[:, None]) + trained.b_dec
    state = {name: t.detach().clone() for name, t in trained.state_dict().items()}
    trained.process_state_dict_for_saving_inference(state)
    sae = SAE.from_dict(trained.cfg.get_inference_sae_cfg_dict())
    sae.load_state_dict(state)
    sae.eval()
    got = sae.decode(sae.encode(probe))
    scale = probe.norm(dim=-1).mean().clamp(min=1e-12)
    per_token = (got - want).abs().amax(-1) / scale
    changed = (per_token > _FOLD_TOLERANCE).float().mean().item()
    assert changed <= _FOLD_MAX_CHANGED, f"conversion changed {changed:.2%} of reconstructions"
    return sae


@torch.no_grad()
def evaluate_sae(sae: SAE, acts: Float[Tensor, "n d_model"], batch_size: int = 8192) -> SAEQuality:
    """Fraction of variance explained, L0 and alive latents of ``sae`` on ``acts``."""
    acts = _check_acts(acts)
    mean = acts.double().mean(0)
    sq_err = total = l0 = 0.0
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
    for start in range(0, acts.shape[0], batch_size):
        x = acts[start : start + batch_size].to(sae.W_dec.device)
        f = sae.encode(x)
        x_hat = sae.decode(f)
        sq_err += (x_hat.double() - x.double()).pow(2).sum().item()
        total += (x.double() - mean.to(x.device)).pow(2).sum().item()
        active = f != 0
        l0 += active.sum().item()
        fired |= active.any(0).cpu()
    n = acts.shape[0]
    return SAEQuality(
        fve=1.0 - sq_err / max(total, 1e-30),
        l0=l0 / n,
        alive_fraction=fired.float().mean().item(),
        n_tokens=n,
    )


def save_sae(sae: SAE, folder: str | Path) -> Path:
    """Write ``sae`` in SAELens format (``cfg.json`` + safetensors), atomically.

    The files are written to a temporary sibling folder that is then renamed, so a
    crash never leaves a half-written SAE that looks whole.
    """
    folder = Path(folder).expanduser()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        sae.save_model(tmp)
        written = sorted(p.name for p in tmp.iterdir())
        assert written == sorted(SAE_FILES), f"unexpected files in an SAE folder: {written}"
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
            folder.rename(old)
        tmp.rename(folder)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return folder


def load_sae(folder: str | Path, device: str = "cpu") -> SAE:
    """Load an SAE folder written by ``save_sae`` (or any SAELens-format folder)."""
    from sae_lens import SAE

    folder = Path(folder).expanduser()
    if not (folder / SAE_FILES[0]).exists():
        raise RefusalScopeError(
            f"{folder} is not an SAE folder (no {SAE_FILES[0]}); train one with train_sae "
            "and save_sae"
        )
    return SAE.load_from_disk(str(folder), device=device)
