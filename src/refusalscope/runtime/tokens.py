"""Token batches and the one padding routine every batch is built with."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Bool, Int
from torch import Tensor

Side = Literal["left", "right"]


def pad(
    rows: Sequence[Sequence[int] | Sequence[bool] | Tensor],
    value: int | float | bool,
    side: Side = "left",
    length: int | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """1-D rows stacked into ``[len(rows), T]``, filled with ``value`` on ``side``.

    ``T`` is the longest row, or ``length`` if that is longer. Generation and any
    last-position readout want ``left`` (every row ends at ``T − 1``); teacher-forced
    losses want ``right`` (positions need no shift).
    """
    tensors = [torch.as_tensor(r, dtype=dtype) for r in rows]
    T = max([len(t) for t in tensors] + [length or 0])
    out = torch.full((len(tensors), T), value, dtype=dtype or tensors[0].dtype)
    for i, t in enumerate(tensors):
        if side == "left":
            out[i, T - len(t) :] = t
        else:
            out[i, : len(t)] = t
    return out


@dataclass
class TokenBatch:
    """A padded batch of token sequences (chat-formatted prompts: left-padded)."""

    input_ids: Int[Tensor, "batch seq"]
    attention_mask: Int[Tensor, "batch seq"]
    prompt_mask: Bool[Tensor, "batch seq"]
    """True on the tokens that count as prompt text: for chat prompts, from the first token
    of the user text onwards (False on padding, BOS and any template preamble)."""

    @classmethod
    def collate(
        cls,
        ids: Sequence[Sequence[int]],
        prompt_mask: Sequence[Sequence[bool]],
        pad_id: int,
        side: Side = "left",
        length: int | None = None,
    ) -> TokenBatch:
        """Pad ``ids`` (with ``pad_id``) and their masks to one length on ``side``."""
        return cls(
            pad(ids, pad_id, side, length, torch.long),
            pad([[1] * len(x) for x in ids], 0, side, length, torch.long),
            pad(prompt_mask, False, side, length, torch.bool),
        )

    def to(self, device: torch.device | str) -> TokenBatch:
        return TokenBatch(
            self.input_ids.to(device), self.attention_mask.to(device), self.prompt_mask.to(device)
        )
