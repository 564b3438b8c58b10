"""Harm (upstream) vs refusal (downstream) features: one labelling rule, shared by the
jailbreak analysis and the upstream → downstream circuit.

    RULE: a feature of a prompt's F* is a *refusal* (downstream) feature when at least half
    of its absolute LA-IG attribution on that prompt lies on the last ``n`` prompt
    positions, and a *harm* (upstream) feature otherwise (its attribution lies on the
    request's own tokens). ``n`` defaults to the tokens the chat template adds after the
    user's text (5 on Gemma-2: the authors' "last 5 tokens"), where the model has read
    the whole request and decides to refuse.

A feature's *onset* on a prompt is its first high-attribution position: the first prompt
position where its absolute attribution reaches half its maximum over the prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..runtime.model import ChatModel
from ..runtime.saes import SAESet
from ..runtime.types import FeatureList
from ..stages.attribution import AttributionConfig, integrated_gradients, position_scores

ONSET_FRACTION = 0.5
"""A position is high-attribution when ``|A[t]| >= ONSET_FRACTION · max_t |A[t]|``."""


def rule_text(last_n: int, pairs: bool = True) -> str:
    """The rule in words; with ``pairs``, also the jailbreak analysis' measurement."""
    rule = (
        f"refusal (downstream) feature: >= 50% of its |LA-IG attribution| on the plain "
        f"prompt lies on the last {last_n} prompt positions; harm (upstream) feature: "
        "otherwise."
    )
    if not pairs:
        return rule
    return rule + (
        " Harm drop: mean activation over the prompt positions; refusal drop: "
        f"mean over the last {last_n} positions; drop = 1 - wrapped / plain, per pair."
    )


@dataclass
class PlainAttribution:
    """LA-IG of the candidates on each prompt, and where it lies."""

    score: Float[Tensor, "prompt cand"]
    """Position-averaged LA-IG (ranks F*)."""
    end_share: Float[Tensor, "prompt cand"]
    """Share of the absolute attribution on the last ``n`` prompt positions."""
    onset_from_end: Int[Tensor, "prompt cand"]
    """The onset as positions before the prompt's last token (0: the last token)."""


def plain_attribution(
    model: ChatModel,
    saes: SAESet,
    prompts: Sequence[str],
    direction: Tensor,
    candidates: FeatureList,
    ref_token: int,
    acfg: AttributionConfig,
    last_n: int,
    jb_token: Tensor | None = None,
) -> PlainAttribution:
    """LA-IG per position (the attribution stage's formula), reduced three ways."""
    direction = direction.to(model.device)
    layers = sorted(set(candidates[:, 0].tolist()))
    score = torch.zeros(len(prompts), len(candidates))
    share = torch.zeros(len(prompts), len(candidates))
    onset = torch.zeros(len(prompts), len(candidates), dtype=torch.long)
    for rows, tokens in model.batches(prompts, acfg.batch_size, "LA-IG (plain)"):
        jb = jb_token[rows] if jb_token is not None else None
        ig = integrated_gradients(model, tokens, layers, direction, ref_token, acfg, jb)
        mask = tokens.prompt_mask[:, :, None].float()
        end = torch.zeros_like(mask)
        end[:, -last_n:] = mask[:, -last_n:]
        rows_t = torch.tensor(rows)[:, None]
        for layer in layers:
            cols = (candidates[:, 0] == layer).nonzero()[:, 0]
            A = position_scores(saes, ig, layer, candidates[cols, 1], direction)
            size = A.abs() * mask
            score[rows_t, cols[None, :]] = ((A * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu()
            frac = (size * end).sum(1) / size.sum(1).clamp(min=1e-12)
            share[rows_t, cols[None, :]] = frac.cpu()
            high = size >= ONSET_FRACTION * size.amax(1, keepdim=True).clamp(min=1e-30)
            first = high.float().argmax(1)  # first True along the positions
            onset[rows_t, cols[None, :]] = (A.shape[1] - 1 - first).cpu()
    return PlainAttribution(score, share, onset)


@dataclass
class PromptFeatures:
    """Per prompt: its F* (top-K* by its own LA-IG), each feature's label (True: refusal)
    and onset."""

    sets: list[FeatureList]
    is_refusal: list[Tensor]
    onset_from_end: list[Tensor]


def label(attr: PlainAttribution, candidates: FeatureList, k: int) -> PromptFeatures:
    """Each prompt's F* with the rule applied."""
    top = attr.score.topk(min(k, attr.score.shape[1]), dim=1).indices
    return PromptFeatures(
        [candidates[row] for row in top],
        [attr.end_share[i, row] >= 0.5 for i, row in enumerate(top)],
        [attr.onset_from_end[i, row] for i, row in enumerate(top)],
    )


def relative_drop(before: Tensor, after: Tensor) -> float | None:
    """``1 − Σ after / Σ before`` (None when nothing was active before)."""
    total = float(before.sum())
    return None if total <= 0 else 1.0 - float(after.sum()) / total
