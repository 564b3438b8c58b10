"""SAESet over sae_lens SAEs: loading, checks, and the latent math the fast paths use."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sae_lens import (
    GatedSAE,
    GatedSAEConfig,
    JumpReLUSAE,
    JumpReLUSAEConfig,
    StandardSAE,
    StandardSAEConfig,
    TopKSAE,
    TopKSAEConfig,
)

from refusalscope.runtime.errors import RefusalScopeError
from refusalscope.runtime.saes import SAESet, hook_layer

D_IN, D_SAE = 16, 48
ARCHS = ("standard", "jumprelu", "topk", "topk_rescale", "gated")


@torch.no_grad()
def random_sae(arch: str, d_in: int = D_IN, d_sae: int = D_SAE, seed: int = 0, **cfg):
    """An SAE of ``arch`` with every parameter random, so that some latents fire.

    ``topk_rescale`` is a TopK SAE with ``rescale_acts_by_decoder_norm`` and decoder rows
    of non-unit norm; plain ``topk`` has non-unit rows too.
    """
    g = torch.Generator().manual_seed(seed)
    if arch == "standard":
        sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae, **cfg))
    elif arch == "jumprelu":
        sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, **cfg))
    elif arch.startswith("topk"):
        rescale = arch == "topk_rescale"
        sae = TopKSAE(
            TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=6, rescale_acts_by_decoder_norm=rescale, **cfg)
        )
    elif arch == "gated":
        sae = GatedSAE(GatedSAEConfig(d_in=d_in, d_sae=d_sae, **cfg))
    else:
        raise ValueError(arch)
    for name, p in sae.named_parameters():
        p.copy_(torch.randn(p.shape, generator=g) * (0.3 if name.startswith("b_") else 1.0))
    if arch == "jumprelu":
        sae.threshold.copy_(torch.rand(d_sae, generator=g) * 2.0)
    if arch == "gated":
        sae.r_mag.copy_(torch.randn(d_sae, generator=g) * 0.3)
    # decoder rows with norms far from 1, so rescaling/folding mistakes show
    sae.W_dec.mul_(torch.rand(d_sae, 1, generator=g) * 3 + 0.2)
    return sae


def saved_set(tmp_path: Path, saes: dict[int, object]) -> SAESet:
    folders = {}
    for layer, sae in saes.items():
        folders[layer] = tmp_path / f"sae_{layer}"
        sae.save_model(folders[layer])
    return SAESet.from_folders(folders)


def inputs(batch: int = 3, seq: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, seq, D_IN, generator=torch.Generator().manual_seed(seed)) * 2


@pytest.mark.parametrize("arch", ARCHS)
def test_loaded_sae_matches_original(arch, tmp_path):
    sae = random_sae(arch)
    loaded = saved_set(tmp_path, {2: sae}).saes[2]
    h = inputs()
    assert type(loaded) is type(sae)
    torch.testing.assert_close(loaded.encode(h), sae.encode(h), rtol=0, atol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_encode_selected_latents_shared(arch, tmp_path):
    saes = saved_set(tmp_path, {2: random_sae(arch)})
    sae, h = saes.saes[2], inputs()
    full = sae.encode(h)
    # the latents that fire most, plus some that rarely do
    latents = torch.cat([full.ne(0).sum((0, 1)).argsort(descending=True)[:4], torch.tensor([0, 7])])
    got = saes.encode(2, h, latents)
    assert got.shape == (*h.shape[:-1], len(latents))
    assert got.ne(0).any(), "test needs some selected latents to fire"
    torch.testing.assert_close(got, full[..., latents], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(saes.encode(2, h), full)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("with_seq", [True, False])
def test_encode_selected_latents_per_row(arch, with_seq, tmp_path):
    saes = saved_set(tmp_path, {2: random_sae(arch)})
    sae = saes.saes[2]
    h = inputs() if with_seq else inputs()[:, 0]
    full = sae.encode(h)
    order = full.ne(0).reshape(-1, D_SAE).sum(0).argsort(descending=True)
    latents = torch.stack([order[:4], order[4:8], torch.tensor([3, 3, 0, 40])])  # [B, k]
    got = saes.encode(2, h, latents)
    idx = latents if not with_seq else latents[:, None, :].expand(-1, h.shape[1], -1)
    want = torch.gather(full, -1, idx)
    assert got.shape == want.shape
    assert got.ne(0).any(), "test needs some selected latents to fire"
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_latent_slices_encode_like_the_sae(arch, tmp_path):
    """The pre-sliced fast path used by feature clamps, shared and per-row."""
    saes = saved_set(tmp_path, {2: random_sae(arch)})
    sae, h = saes.saes[2], inputs()
    full = sae.encode(h)
    order = full.ne(0).reshape(-1, D_SAE).sum(0).argsort(descending=True)
    shared = order[:5]
    sl = saes.latent_slice(2, shared, h.device, torch.float32)
    torch.testing.assert_close(saes.encode_slice(2, sl, h), full[..., shared], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sl.rows, saes.decoder_rows(2, shared))
    per_row = torch.stack([order[:4], order[4:8], torch.tensor([3, 3, 0, 40])])
    sl = saes.latent_slice(2, per_row, h.device, torch.float32)
    want = torch.gather(full, -1, per_row[:, None, :].expand(-1, h.shape[1], -1))
    torch.testing.assert_close(saes.encode_slice(2, sl, h), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_decoder_rows_make_decode_affine(arch, tmp_path):
    saes = saved_set(tmp_path, {1: random_sae(arch)})
    sae = saes.saes[1]
    f = torch.relu(torch.randn(4, 3, D_SAE, generator=torch.Generator().manual_seed(2)))
    rows = saes.decoder_rows(1)
    torch.testing.assert_close(
        sae.decode(f) - sae.decode(torch.zeros_like(f)), f @ rows, rtol=1e-5, atol=1e-5
    )
    some = torch.tensor([5, 0, 17])
    torch.testing.assert_close(saes.decoder_rows(1, some), rows[some])
    per_row = torch.tensor([[1, 2], [3, 4]])
    assert saes.decoder_rows(1, per_row).shape == (2, 2, D_IN)


def test_topk_rescale_rows_are_unit_norm(tmp_path):
    saes = saved_set(tmp_path, {0: random_sae("topk_rescale")})
    norms = saes.decoder_rows(0).norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    assert not torch.allclose(saes.saes[0].W_dec.norm(dim=-1), norms)


# ------------------------------------------------------------------ checks
def test_check_accepts_a_fitting_set(tmp_path):
    sae = random_sae("jumprelu")
    sae.cfg.metadata.hook_name = "blocks.1.hook_resid_post"
    saved_set(tmp_path, {1: sae}).check(n_layers=4, d_model=D_IN)


def test_check_rejects_wrong_width(tmp_path):
    saes = saved_set(tmp_path, {1: random_sae("standard")})
    with pytest.raises(RefusalScopeError, match=rf"d_in={D_IN}.*hidden size 32"):
        saes.check(n_layers=4, d_model=32, model_name="tiny")


def test_check_rejects_layer_out_of_range(tmp_path):
    saes = saved_set(tmp_path, {4: random_sae("standard")})
    with pytest.raises(RefusalScopeError, match=r"layer 4 .*layers 0\.\.3"):
        saes.check(n_layers=4, d_model=D_IN)


def test_check_rejects_hook_layer_mismatch(tmp_path):
    sae = random_sae("topk")
    sae.cfg.metadata.hook_name = "blocks.3.hook_resid_post"
    saes = saved_set(tmp_path, {1: sae})
    with pytest.raises(RefusalScopeError, match=r"blocks\.3\.hook_resid_post.*layer 3.*layer 1"):
        saes.check(n_layers=4, d_model=D_IN)


@pytest.mark.parametrize(
    ("hook", "layer"),
    [
        ("blocks.5.hook_resid_post", 5),
        ("blocks.5.hook_resid_pre", 4),
        ("blocks.0.hook_resid_pre", -1),
        ("model.layers.7", 7),
        (None, None),
        ("blocks.2.attn.hook_z", None),
    ],
)
def test_hook_layer(hook, layer):
    assert hook_layer(hook) == layer


def test_hook_layer_rejects_resid_mid():
    with pytest.raises(RefusalScopeError, match="resid_mid"):
        hook_layer("blocks.2.hook_resid_mid")


def test_from_folders_needs_cfg_json(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RefusalScopeError, match="no cfg.json"):
        SAESet.from_folders({0: tmp_path / "empty"})


def test_from_folders_needs_some_sae():
    with pytest.raises(RefusalScopeError, match="no SAEs"):
        SAESet.from_folders({})


def test_layer_norm_sae_is_rejected(tmp_path):
    sae = random_sae("standard", normalize_activations="layer_norm")
    with pytest.raises(RefusalScopeError, match="layer_norm"):
        saved_set(tmp_path, {0: sae})


def test_loaded_saes_are_frozen(tmp_path):
    saes = saved_set(tmp_path, {0: random_sae("gated")})
    assert not any(p.requires_grad for p in saes.saes[0].parameters())
    assert saes.layers == [0] and saes.d_sae(0) == D_SAE
