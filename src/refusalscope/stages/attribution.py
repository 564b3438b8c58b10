"""Stage 5 — LA-IG attribution in its exact SAE-free form (Yeo et al. 2025, §3).

Per batch of harmful prompts:
1. a clean pass caches ``h_l`` after every SAE layer; a counterfactual pass (the
   refusal direction ablated at every layer and position) caches each layer's output
   *before* its own ablation, ``a_l``;
2. per IG step ``α`` one forward+backward of the bare model with
   ``out_l = (1−α)·h_l + α·a_l`` at every SAE layer (``h_l`` live, so each hook passes
   gradient back scaled by ``1−α`` — the authors' joint scheme), keeping
   ``ḡ_l = mean_α ∂m/∂out_l`` with ``m = logit[t_jb] − logit[t_ref]`` at the last
   prompt position;
3. ``A_l = (f_patch − f_clean) · (ḡ_l @ W_dec[i]ᵀ)``, encoding only the latents needed,
   averaged over the prompt positions (no padding, BOS or template preamble).

Because decode is affine and the SAE error is kept, this equals running the SAEs in
the loop (``reference.laig_reference``) to float precision, at the cost of a bare
forward+backward per step whatever the SAE width.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..runtime.config import require
from ..runtime.errors import RefusalScopeError
from ..runtime.files import load_tensors, save_tensors
from ..runtime.hooks import EMBED, Capture, EditContext, Intervention, check_direction
from ..runtime.interventions import AblateDirection
from ..runtime.model import ChatModel
from ..runtime.saes import PER_LATENT_ARCHS, SAESet
from ..runtime.tokens import TokenBatch, pad
from ..runtime.types import FeatureList, top_pairs
from .candidates import check_candidate_scores, check_scores
from .direction import check_direction_finite

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttributionConfig:
    """LA-IG settings (authors' defaults)."""

    ig_steps: int = 10
    """Integrated-gradient steps."""
    alpha_rule: Literal["left", "midpoint"] = "left"
    """``left``: α = 0, 1/n, …, (n−1)/n (the authors' Riemann sum); ``midpoint``: (i+½)/n."""
    mixing: Literal["joint", "per_layer"] = "joint"
    """``joint``: every SAE layer mixed at once (authors); ``per_layer``: one layer at a
    time with the others live (Marks et al.), n_layers× the cost."""
    refusal_token: str | None = None
    """Override the refusal token (default: detected from the model's own refusals)."""
    batch_size: int = 16
    """Prompts per forward/backward batch."""
    all_latents: bool = True
    """Also score every latent of every SAE (the AP baseline), streamed per batch."""
    all_latents_keep: int = 64
    """Per prompt, how many top (layer, latent) pairs of the all-latent scores to keep."""
    latent_chunk: int = 16384
    """Latents encoded at once when scoring all latents (bounds memory)."""

    def __post_init__(self) -> None:
        require(self.ig_steps > 0, "attribution.ig_steps must be positive")
        require(self.alpha_rule in ("left", "midpoint"), "alpha_rule must be left or midpoint")
        require(self.mixing in ("joint", "per_layer"), "mixing must be joint or per_layer")
        require(self.batch_size > 0, "attribution.batch_size must be positive")

    def alphas(self) -> list[float]:
        n = self.ig_steps
        shift = 0.5 if self.alpha_rule == "midpoint" else 0.0
        return [(i + shift) / n for i in range(n)]


@dataclass
class IGCache:
    """Everything LA-IG needs from the model for one batch (no SAE involved)."""

    tokens: TokenBatch
    clean: dict[int, Float[Tensor, "batch seq d_model"]]
    """``h_l``: clean residual after each SAE layer."""
    patch_in: dict[int, Float[Tensor, "batch seq d_model"]]
    """``a_l``: counterfactual residual after each SAE layer, before its own ablation."""
    grad: dict[int, Float[Tensor, "batch seq d_model"]]
    """``ḡ_l = mean_α ∂m/∂out_l``."""
    jb_token: Int[Tensor, " batch"]
    metric_clean: Float[Tensor, " batch"]
    metric_patch: Float[Tensor, " batch"]


@dataclass
class AttributionResult:
    """Position-averaged LA-IG scores of the candidates (and optionally all latents)."""

    candidates: FeatureList
    score: Float[Tensor, "prompt cand"]
    input_ids: Int[Tensor, "prompt seq"]
    position_mask: Bool[Tensor, "prompt seq"]
    jb_token: Int[Tensor, " prompt"]
    ref_token: int
    metric_clean: Float[Tensor, " prompt"]
    """``m`` on the clean run (negative when the model refuses)."""
    metric_patch: Float[Tensor, " prompt"]
    """``m`` on the counterfactual run."""
    all_top: Int[Tensor, "prompt keep 2"] | None = None
    """Per prompt, the top (layer, latent) pairs over all latents (AP baseline)."""
    all_top_score: Float[Tensor, "prompt keep"] | None = None
    all_mean: dict[int, Tensor] = field(default_factory=dict)
    """layer -> mean score over prompts of every latent (AP's global ranking)."""

    def tensors(self) -> dict[str, Tensor]:
        """Every field as a named tensor (safetensors layout)."""
        t = {
            "candidates": self.candidates,
            "score": self.score,
            "input_ids": self.input_ids,
            "position_mask": self.position_mask,
            "jb_token": self.jb_token,
            "ref_token": torch.tensor(self.ref_token),
            "metric_clean": self.metric_clean,
            "metric_patch": self.metric_patch,
        }
        if self.all_top is not None:
            t["all_top"], t["all_top_score"] = self.all_top, self.all_top_score
            t.update({f"all_mean.{l}": v for l, v in self.all_mean.items()})
        return t

    @classmethod
    def from_tensors(cls, t: Mapping[str, Tensor]) -> AttributionResult:
        return cls(
            candidates=t["candidates"],
            score=t["score"],
            input_ids=t["input_ids"],
            position_mask=t["position_mask"].bool(),
            jb_token=t["jb_token"],
            ref_token=int(t["ref_token"]),
            metric_clean=t["metric_clean"],
            metric_patch=t["metric_patch"],
            all_top=t.get("all_top"),
            all_top_score=t.get("all_top_score"),
            all_mean={int(k.split(".")[1]): v for k, v in t.items() if k.startswith("all_mean.")},
        )


@dataclass
class Attributions:
    """The attribution stage's result: LA-IG on each split of harmful prompts."""

    splits: dict[str, AttributionResult]
    """``train`` (ranks the global sets) and ``test`` (per-prompt sets for evaluation)."""

    FILE = "attribution.safetensors"

    def __getitem__(self, split: str) -> AttributionResult:
        return self.splits[split]

    def save(self, folder: Path) -> None:
        for split, a in self.splits.items():
            save_tensors(folder / f"{split}.{self.FILE}", a.tensors())

    @classmethod
    def load(cls, folder: Path) -> Attributions:
        paths = sorted(folder.glob(f"*.{cls.FILE}"))
        return cls(
            {p.name.split(".")[0]: AttributionResult.from_tensors(load_tensors(p)) for p in paths}
        )


@dataclass(eq=False)
class _Mix(Intervention):
    """``out_l = (1−α)·h_l + α·a_l`` at the mixed layers, outputs kept for autograd."""

    patch_in: dict[int, Tensor]
    alpha: float
    mixed: Sequence[int]
    outs: dict[int, Tensor] = field(default_factory=dict)

    def sites(self, n_layers: int) -> set[int]:
        return {EMBED, *self.mixed}

    def edit(self, site: int, h: Tensor, ctx: EditContext) -> Tensor:
        if site == EMBED:  # a leaf that needs grad makes every later residual differentiable
            return h.detach().requires_grad_(True)
        out = (1 - self.alpha) * h + self.alpha * self.patch_in[site].to(h.dtype)
        self.outs[site] = out
        return out


def metric(logits: Tensor, jb: Tensor, ref: int) -> Float[Tensor, " batch"]:
    """``logit[t_jb] − logit[t_ref]`` at the last position (at least float32)."""
    last = logits[:, -1]
    last = last.float() if last.dtype in (torch.float16, torch.bfloat16) else last
    return last.gather(1, jb[:, None].to(last.device))[:, 0] - last[:, ref]


def jailbreak_tokens(patch_logits: Tensor, ref: int) -> Int[Tensor, " batch"]:
    """Argmax of the counterfactual run, never the refusal token itself (m would be 0)."""
    last = patch_logits[:, -1].float().clone()
    last[:, ref] = -torch.inf
    return last.argmax(-1)


def cache_runs(
    model: ChatModel,
    tokens: TokenBatch,
    layers: Sequence[int],
    direction: Tensor,
    ref_token: int,
    jb_token: Tensor | None = None,
) -> IGCache:
    """Step 1: the clean and counterfactual passes (``grad`` left empty).

    ``jb_token`` fixes each prompt's jailbreak token (e.g. the one an earlier run chose);
    by default it is the counterfactual run's argmax.
    """
    layers = list(layers)
    with torch.no_grad():
        cap = Capture(layers)
        clean_logits = model.forward(tokens, [cap], last_only=True)
        clean = {l: cap.get(l) for l in layers}
        cap = Capture(layers)  # before the ablation at each site: a_l
        patch_logits = model.forward(tokens, [cap, AblateDirection(direction)], last_only=True)
        patch_in = {l: cap.get(l) for l in layers}
    jb = jailbreak_tokens(patch_logits, ref_token) if jb_token is None else jb_token
    jb = jb.to(patch_logits.device)
    return IGCache(
        tokens=tokens,
        clean=clean,
        patch_in=patch_in,
        grad={},
        jb_token=jb.cpu(),
        metric_clean=metric(clean_logits, jb, ref_token).cpu(),
        metric_patch=metric(patch_logits, jb, ref_token).cpu(),
    )


def add_gradients(model: ChatModel, ig: IGCache, ref_token: int, cfg: AttributionConfig) -> None:
    """Step 2: ``ig.grad[l] = mean_α ∂m/∂out_l`` with ``out_l = (1−α)·h_l + α·a_l``."""
    layers = list(ig.clean)
    groups = [layers] if cfg.mixing == "joint" else [[l] for l in layers]
    ig.grad = {l: torch.zeros_like(ig.clean[l], dtype=torch.float32) for l in layers}
    jb = ig.jb_token.to(model.device)
    with torch.enable_grad():
        for group in groups:
            for alpha in cfg.alphas():
                mix = _Mix(ig.patch_in, alpha, group)
                m = metric(model.forward(ig.tokens, [mix], last_only=True), jb, ref_token)
                gs = torch.autograd.grad(m.sum(), [mix.outs[l] for l in group])
                for l, g in zip(group, gs, strict=True):
                    ig.grad[l] += g.float() / cfg.ig_steps


def integrated_gradients(
    model: ChatModel,
    tokens: TokenBatch,
    layers: Sequence[int],
    direction: Tensor,
    ref_token: int,
    cfg: AttributionConfig,
    jb_token: Tensor | None = None,
) -> IGCache:
    """Steps 1–2: the two caching passes and the IG gradients at ``layers``."""
    ig = cache_runs(model, tokens, layers, direction, ref_token, jb_token)
    add_gradients(model, ig, ref_token, cfg)
    return ig


def _masked_mean(A: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``A[b, t, k]`` over the positions where ``mask[b, t]``."""
    m = mask.to(A.dtype)[:, :, None]
    return (A * m).sum(1) / m.sum(1).clamp(min=1)


def position_scores(
    saes: SAESet,
    ig: IGCache,
    layer: int,
    latents: Int[Tensor, " k"],
    direction: Tensor,
) -> Float[Tensor, "batch seq k"]:
    """Step 3 at every position: ``A_l[t] = (f_patch − f_clean)·(ḡ_l[t] @ W_dec[i]ᵀ)``
    (zero where the latent does not move; padding is not masked here)."""
    ablate = AblateDirection(direction)
    h, a = ig.clean[layer], ig.patch_in[layer]
    f_clean = saes.encode(layer, h, latents).float()
    f_patch = saes.encode(layer, ablate.edit(layer, a, EditContext()), latents).float()
    rows = saes.decoder_rows(layer, latents).float()
    return (f_patch - f_clean) * (ig.grad[layer] @ rows.T)


def score_latents(
    saes: SAESet,
    ig: IGCache,
    layer: int,
    latents: Int[Tensor, " k"],
    direction: Tensor,
) -> Float[Tensor, "batch k"]:
    """Step 3 for some latents of one layer: position-averaged ``(f_patch − f_clean)·ḡ·W_dec``."""
    A = position_scores(saes, ig, layer, latents, direction)
    return _masked_mean(A, ig.tokens.prompt_mask)


def score_all_latents(
    saes: SAESet, ig: IGCache, layer: int, direction: Tensor, chunk: int
) -> Float[Tensor, "batch d_sae"]:
    """Step 3 for every latent of a layer, a chunk of latents at a time."""
    d_sae = saes.d_sae(layer)
    if saes.saes[layer].cfg.architecture() not in PER_LATENT_ARCHS:
        chunk = d_sae  # TopK-style encoders need the full encode anyway
    parts = []
    for start in range(0, d_sae, chunk):
        idx = torch.arange(start, min(start + chunk, d_sae))
        parts.append(score_latents(saes, ig, layer, idx, direction))
    return torch.cat(parts, dim=1)


def compute_attribution(
    model: ChatModel,
    saes: SAESet,
    prompts: Sequence[str],
    direction: Tensor,
    candidates: FeatureList,
    ref_token: int,
    cfg: AttributionConfig,
) -> AttributionResult:
    """LA-IG scores of ``candidates`` for every prompt (and of all latents if asked)."""
    if len(prompts) == 0:
        raise RefusalScopeError("no prompts to attribute (empty harmful split after filtering?)")
    check_direction(direction, model.d_model)
    direction = direction.to(model.device)
    check_direction_finite(direction, "LA-IG attribution")
    layers = saes.layers
    n, n_cand = len(prompts), len(candidates)
    score = torch.zeros(n, n_cand)
    per_prompt: dict[str, list] = {"ids": [None] * n, "mask": [None] * n}
    jb, m_clean, m_patch = (torch.zeros(n, dtype=torch.long), torch.zeros(n), torch.zeros(n))
    keep = min(cfg.all_latents_keep, sum(saes.d_sae(l) for l in layers))
    all_top = torch.zeros(n, keep, 2, dtype=torch.long) if cfg.all_latents else None
    all_top_score = torch.zeros(n, keep) if cfg.all_latents else None
    all_sum = {l: torch.zeros(saes.d_sae(l)) for l in layers} if cfg.all_latents else {}
    for rows, tokens in model.batches(prompts, cfg.batch_size, "LA-IG"):
        ig = integrated_gradients(model, tokens, layers, direction, ref_token, cfg)
        batch_score = score_features(saes, ig, candidates, direction)
        if cfg.all_latents:
            full = {l: score_all_latents(saes, ig, l, direction, cfg.latent_chunk) for l in layers}
            best, best_vals = top_pairs(full, keep)
            for l in layers:
                all_sum[l] += full[l].sum(0).cpu()
        for j, i in enumerate(rows):
            score[i] = batch_score[j]
            per_prompt["ids"][i] = tokens.input_ids[j].cpu()
            per_prompt["mask"][i] = tokens.prompt_mask[j].cpu()
            jb[i], m_clean[i], m_patch[i] = ig.jb_token[j], ig.metric_clean[j], ig.metric_patch[j]
            if cfg.all_latents:
                all_top[i], all_top_score[i] = best[j], best_vals[j]
    ids, mask = pad(per_prompt["ids"], model.pad_id), pad(per_prompt["mask"], False)
    all_mean = {l: s / n for l, s in all_sum.items()}
    _check_attribution(score, candidates, all_mean)
    return AttributionResult(
        candidates=candidates,
        score=score,
        input_ids=ids,
        position_mask=mask,
        jb_token=jb,
        ref_token=ref_token,
        metric_clean=m_clean,
        metric_patch=m_patch,
        all_top=all_top,
        all_top_score=all_top_score,
        all_mean=all_mean,
    )


def _check_attribution(score: Tensor, candidates: FeatureList, all_mean: dict[int, Tensor]) -> None:
    """Stop on a non-finite score before F* or AP rank it (a NaN would come first)."""
    check_candidate_scores(score, candidates, "LA-IG attribution")
    per_layer = {f"the all-latent mean scores of layer {l}": m for l, m in all_mean.items()}
    check_scores(per_layer, "LA-IG attribution")


def score_features(
    saes: SAESet, ig: IGCache, features: FeatureList, direction: Tensor
) -> Float[Tensor, "batch n"]:
    """Position-averaged attribution (with ``ig.grad``) of (layer, latent) pairs, in their
    order, on the CPU."""
    out = torch.zeros(ig.tokens.input_ids.shape[0], len(features))
    for layer in sorted(set(features[:, 0].tolist())):
        cols = (features[:, 0] == layer).nonzero()[:, 0]
        out[:, cols] = score_latents(saes, ig, layer, features[cols, 1], direction).cpu()
    return out
