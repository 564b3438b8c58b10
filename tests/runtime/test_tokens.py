"""One padding routine for every batch: left for generation, right for teacher forcing."""

from __future__ import annotations

import torch

from refusalscope.runtime.tokens import TokenBatch, pad


def test_pad_left_right_and_to_a_length():
    rows = [[1, 2, 3], [4]]
    assert pad(rows, 0).tolist() == [[1, 2, 3], [0, 0, 4]]
    assert pad(rows, -1, "right").tolist() == [[1, 2, 3], [4, -1, -1]]
    assert pad(rows, 0, "left", length=5).tolist() == [[0, 0, 1, 2, 3], [0, 0, 0, 0, 4]]
    assert pad(rows, 0, "left", length=2).shape == (2, 3)  # never cuts a row
    masks = pad([torch.tensor([True]), torch.tensor([False, True])], False)
    assert masks.dtype == torch.bool and masks.tolist() == [[False, True], [False, True]]


def test_collate_pads_ids_attention_and_mask_together():
    batch = TokenBatch.collate([[5, 6, 7], [8]], [[False, True, True], [True]], pad_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch.prompt_mask.tolist() == [[False, True, True], [False, False, True]]
    right = TokenBatch.collate([[5, 6], [8]], [[True, True], [True]], pad_id=9, side="right")
    assert right.input_ids.tolist() == [[5, 6], [8, 9]]
    assert right.attention_mask.tolist() == [[1, 1], [1, 0]]
    assert right.input_ids.dtype == torch.long and right.attention_mask.dtype == torch.long
