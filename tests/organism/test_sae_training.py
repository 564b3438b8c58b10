"""SAE training with sae_lens's trainer: quality, exact folding, pickle-free saving."""

from __future__ import annotations

import pytest
import torch
from sae_lens import SAE, JumpReLUSAE, TopKSAE, TopKTrainingSAE, TopKTrainingSAEConfig

from refusalscope.organism.sae_training import (
    SAE_FILES,
    SAEQuality,
    SAETrainConfig,
    _fold_to_inference,
    evaluate_sae,
    load_sae,
    save_sae,
    train_sae,
)
from refusalscope.runtime.errors import RefusalScopeError
from refusalscope.runtime.saes import SAESet

D, N_TRAIN, N_TEST = 32, 50_000, 10_000
HOOK = "blocks.2.hook_resid_post"
SMALL = SAETrainConfig(
    architecture="topk", expansion=4, k=8, lr=3e-3, batch_size=256, n_tokens=N_TRAIN
)


def sparse_acts(n: int, seed: int = 0) -> torch.Tensor:
    """Residual-like data: 3 of 100 random unit directions per token, an offset, noise."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.nn.functional.normalize(torch.randn(100, D, generator=g), dim=-1)
    offset = torch.randn(D, generator=g)
    idx = torch.randint(0, 100, (n, 3), generator=g)
    mag = torch.rand(n, 3, generator=g) * 1.5 + 0.5
    x = torch.einsum("nk,nkd->nd", mag, dirs[idx]) + 0.05 * torch.randn(n, D, generator=g)
    return 4.0 * (x + offset)


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    acts = sparse_acts(N_TRAIN + N_TEST)
    return acts[:N_TRAIN], acts[N_TRAIN:]


@pytest.fixture(scope="module")
def trained(data) -> TopKSAE:
    return train_sae(data[0], SMALL, hook_name=HOOK, model_name="synthetic")


def test_training_reaches_a_useful_sae(trained, data):
    q = evaluate_sae(trained, data[1])
    assert isinstance(trained, TopKSAE)
    assert trained.cfg.d_sae == 4 * D and trained.cfg.k == 8
    assert q.fve > 0.75, q
    assert 7.0 <= q.l0 <= 8.0, q
    assert q.alive_fraction > 0.9, q
    assert trained.cfg.metadata.hook_name == HOOK
    assert trained.cfg.metadata.model_name == "synthetic"


def test_decode_is_exactly_affine_with_unit_rows(trained, data):
    assert trained.cfg.rescale_acts_by_decoder_norm is False
    assert trained.cfg.normalize_activations == "none"  # scale folded into the weights
    norms = trained.W_dec.norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms), rtol=0, atol=1e-5)
    with torch.no_grad():
        for f in (trained.encode(data[1][:500]), torch.relu(torch.randn(500, 4 * D))):
            torch.testing.assert_close(
                trained.decode(f), f @ trained.W_dec + trained.b_dec, rtol=0, atol=1e-5
            )


def test_batchtopk_is_saved_as_a_jumprelu_sae(data, tmp_path):
    """BatchTopK trains with k per token on average and becomes sae_lens's JumpReLUSAE."""
    cfg = SAETrainConfig(expansion=4, k=8, lr=3e-3, batch_size=256, n_tokens=N_TRAIN)
    assert cfg.architecture == "batchtopk"
    sae = train_sae(data[0], cfg, hook_name=HOOK, model_name="synthetic")
    assert isinstance(sae, JumpReLUSAE)
    q = evaluate_sae(sae, data[1])
    # the JumpReLU threshold is sae_lens's running estimate: L0 is near k, not exactly k
    assert q.fve > 0.75 and 4.0 <= q.l0 <= 16.0 and q.alive_fraction > 0.9, q
    threshold = sae.threshold.detach()
    assert float(threshold.min()) > 0 and threshold.unique().numel() == 1
    norms = sae.W_dec.norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms), rtol=0, atol=1e-5)
    f = torch.relu(torch.randn(100, 4 * D))
    with torch.no_grad():
        torch.testing.assert_close(sae.decode(f), f @ sae.W_dec + sae.b_dec, rtol=0, atol=1e-5)
    loaded = SAE.load_from_disk(save_sae(sae, tmp_path / "jr"))
    assert isinstance(loaded, JumpReLUSAE)
    assert abs(evaluate_sae(loaded, data[1]).fve - q.fve) < 1e-6


def test_folding_keeps_reconstructions():
    """Folding non-unit decoder norms of a rescaling TopK SAE changes nothing."""
    torch.manual_seed(0)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D, d_sae=64, k=5))
    with torch.no_grad():
        sae.W_enc.normal_()
        sae.b_enc.normal_()
        sae.W_dec.normal_().mul_(torch.rand(64, 1) * 3 + 0.1)
        sae.b_dec.normal_()
        x = torch.randn(300, D) * 2
        before = sae.decode(sae.encode(x))
    folded = _fold_to_inference(sae, x)
    with torch.no_grad():
        after = folded.decode(folded.encode(x))
    # float32 rounding only: ~1e-7 relative to outputs of size ~100
    assert (after - before).abs().max() / before.abs().max() < 1e-6


def test_saved_folder_round_trips_without_pickles(trained, data, tmp_path):
    folder = save_sae(trained, tmp_path / "layer2")
    assert sorted(p.name for p in folder.iterdir()) == sorted(SAE_FILES)
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".pt", ".pth", ".pkl", ".bin")]
    loaded = SAE.load_from_disk(folder)
    assert isinstance(loaded, TopKSAE)
    assert loaded.cfg.metadata.hook_name == HOOK
    assert loaded.cfg.rescale_acts_by_decoder_norm is False
    q, q_loaded = evaluate_sae(trained, data[1]), evaluate_sae(loaded, data[1])
    assert abs(q.fve - q_loaded.fve) < 1e-6
    assert (q.l0, q.alive_fraction) == (q_loaded.l0, q_loaded.alive_fraction)
    # SAESet reads the layer back from the hook name
    saes = SAESet.from_folders({2: folder})
    saes.check(n_layers=4, d_model=D)
    with pytest.raises(RefusalScopeError, match="layer 2"):
        SAESet.from_folders({1: folder}).check(n_layers=4, d_model=D)


def test_save_replaces_an_existing_folder_atomically(trained, tmp_path):
    folder = tmp_path / "sae"
    folder.mkdir()
    (folder / "stale.txt").write_text("old")
    save_sae(trained, folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(SAE_FILES)
    assert [p.name for p in tmp_path.iterdir()] == ["sae"]  # no temp folders left
    assert isinstance(load_sae(folder), TopKSAE)


def test_load_sae_needs_an_sae_folder(tmp_path):
    with pytest.raises(RefusalScopeError, match="cfg.json"):
        load_sae(tmp_path)


def test_training_is_deterministic_and_leaves_global_rng_alone(data):
    cfg = SAETrainConfig(
        architecture="topk", expansion=2, k=4, batch_size=256, n_tokens=2048, seed=3
    )
    state = torch.random.get_rng_state()
    a = train_sae(data[0][:3000], cfg, hook_name=HOOK, model_name="m")
    assert torch.equal(torch.random.get_rng_state(), state)
    b = train_sae(data[0][:3000], cfg, hook_name=HOOK, model_name="m")
    for name, p in a.state_dict().items():
        assert torch.equal(p, b.state_dict()[name]), name


def test_evaluate_sae_matches_a_hand_computation(trained, data):
    x = data[1][:777]
    with torch.no_grad():
        f = trained.encode(x)
        x_hat = trained.decode(f)
    fve = 1 - (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    q = evaluate_sae(trained, x, batch_size=100)
    assert isinstance(q, SAEQuality) and q.n_tokens == 777
    assert abs(q.fve - fve.item()) < 1e-5
    assert abs(q.l0 - f.ne(0).sum(-1).float().mean().item()) < 1e-6
    assert q.alive_fraction == f.ne(0).any(0).float().mean().item()


@pytest.mark.parametrize(
    "bad",
    [
        {"k": 0},
        {"n_tokens": 100, "batch_size": 256},
        {"lr": 0.0},
        {"lr_warm_up_fraction": 0.9, "lr_decay_fraction": 0.2},
        {"lr_scheduler": "cosineannealing", "lr_end_fraction": 0.0},
    ],
)
def test_config_rejects_bad_values(bad):
    with pytest.raises(RefusalScopeError):
        SAETrainConfig(**bad)


def test_training_rejects_bad_activations():
    with pytest.raises(RefusalScopeError, match="shape"):
        train_sae(torch.zeros(10, 4, 4), SMALL, hook_name=HOOK, model_name="m")
    bad = torch.zeros(300, D)
    bad[0, 0] = float("nan")
    with pytest.raises(RefusalScopeError, match="NaN"):
        train_sae(bad, SMALL, hook_name=HOOK, model_name="m")
