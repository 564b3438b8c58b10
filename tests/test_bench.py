"""The benchmark's own machinery: synthetic SAEs and the interleaved paired timing."""

from __future__ import annotations

import pytest
import torch

from refusalscope.bench import _interleaved_times, _paired_ratio, synthetic_saes


@pytest.mark.parametrize("arch", ["jumprelu", "topk"])
def test_synthetic_saes_are_sparse_sae_lens_saes(arch):
    saes = synthetic_saes(16, [0, 1], 256, arch=arch)
    assert saes.layers == [0, 1] and saes.d_sae(0) == 256
    assert saes.saes[0].cfg.architecture() == arch
    f = saes.encode(1, torch.randn(3, 5, 16) * 3)
    active = f.ne(0).sum(-1)
    if arch == "topk":
        assert (active == 20).all()
    else:
        assert 0 < active.float().mean() < 128  # threshold 2 on unit rows: a minority fires
    rows = saes.decoder_rows(0, torch.arange(256))
    torch.testing.assert_close(rows.norm(dim=-1), torch.ones(256))


def test_interleaved_times_rotate_the_order_and_pair_by_round():
    calls: list[str] = []
    fns = {k: (lambda k=k: calls.append(k)) for k in "abc"}
    times = _interleaved_times(fns, 3)
    assert calls[:3] == list("abc")  # warm-up
    assert calls[3:] == list("abc") + list("bca") + list("cab")
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    paired = {"x": [2.0, 4.0, 9.0], "y": [1.0, 4.0, 3.0]}
    assert _paired_ratio(paired, "x", "y") == 2.0  # median of 2, 1, 3
