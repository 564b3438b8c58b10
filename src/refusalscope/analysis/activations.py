"""Summaries of SAE latent activations per prompt, the measurements every analysis reads."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from ..runtime.hooks import Capture
from ..runtime.model import ChatModel
from ..runtime.saes import SAESet
from ..runtime.types import FeatureList, feature_list


def post_instruction_tokens(model: ChatModel) -> int:
    """Tokens the chat template puts after the user's text (Gemma-2: ``<end_of_turn>``,
    newline, ``<start_of_turn>``, ``model``, newline = 5, the authors' "last 5 tokens"):
    where the model reads the request as a whole and decides to refuse. At least 1."""
    a, b = model.format("A")[::-1], model.format("B")[::-1]
    suffix = os.path.commonprefix([a, b])[::-1]
    ids = model.tokenizer(suffix, add_special_tokens=False)["input_ids"] if suffix else []
    return max(1, len(ids))


@dataclass
class FeatureActivations:
    """Each prompt's activation of each feature, reduced over positions four ways."""

    features: FeatureList
    mean: Float[Tensor, "prompt feat"]
    """Mean over the prompt positions (the user text and what follows; no padding, BOS
    or template preamble)."""
    max: Float[Tensor, "prompt feat"]
    """Max over the prompt positions."""
    end: Float[Tensor, "prompt feat"]
    """Mean over the last ``last_n`` positions (the end of the prompt, where refusal is
    decided)."""
    last: Float[Tensor, "prompt feat"]
    """At the last position."""

    def columns(self, features: FeatureList) -> list[int]:
        """Column of each of ``features`` (which must all have been measured)."""
        index = {tuple(f): i for i, f in enumerate(self.features.tolist())}
        return [index[tuple(f)] for f in feature_list(features).tolist()]


@torch.no_grad()
def feature_activations(
    model: ChatModel,
    saes: SAESet,
    prompts: Sequence[str],
    features: FeatureList,
    last_n: int = 5,
    batch_size: int = 32,
) -> FeatureActivations:
    """Encode only ``features`` on every prompt (no intervention) and reduce."""
    features = feature_list(features)
    n, k = len(prompts), len(features)
    out = {name: torch.zeros(n, k) for name in ("mean", "max", "end", "last")}
    layers = sorted(set(features[:, 0].tolist()))
    for rows, tokens in model.batches(prompts, batch_size):
        cap = Capture(layers)
        model.forward(tokens, [cap], last_only=True)
        mask = tokens.prompt_mask.cpu()
        end = torch.zeros_like(mask)
        end[:, -last_n:] = tokens.attention_mask[:, -last_n:].cpu().bool()
        for layer in layers:
            cols = (features[:, 0] == layer).nonzero()[:, 0]
            f = saes.encode(layer, cap.get(layer), features[cols, 1]).float().cpu()
            rows_t = torch.tensor(rows)
            for name, reduced in _reduce(f, mask, end).items():
                out[name][rows_t[:, None], cols[None, :]] = reduced
    return FeatureActivations(features, **out)


def _reduce(f: Tensor, mask: Tensor, end: Tensor) -> dict[str, Tensor]:
    m = mask[:, :, None].float()
    e = end[:, :, None].float()
    return {
        "mean": (f * m).sum(1) / m.sum(1).clamp(min=1),
        "max": f.masked_fill(~mask[:, :, None], float("-inf")).amax(1).clamp(min=0),
        "end": (f * e).sum(1) / e.sum(1).clamp(min=1),
        "last": f[:, -1],
    }
