"""Exact patching: batched SAE-free patches equal the SAE in the loop; LA-IG is exact
where the metric is linear."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from refusalscope.evaluation.patching import (
    exact_effects,
    joint_effects,
    latent_values,
    moving_latents,
)
from refusalscope.runtime.model import ChatModel
from refusalscope.runtime.types import feature_list
from refusalscope.stages.attribution import (
    AttributionConfig,
    cache_runs,
    integrated_gradients,
    position_scores,
)
from refusalscope.testing.reference import exact_effect_reference
from tests.conftest import make_tiny_model
from tests.stages.test_attribution import PROMPTS, REF, D, sae_set


@pytest.fixture(scope="module")
def model(chat_tokenizer) -> ChatModel:
    return ChatModel(make_tiny_model("llama", chat_tokenizer, n_layers=3), chat_tokenizer)


def _moving(saes, ig, r, per_layer=2):
    """The (layer, latent) pairs that move most on the batch, from every layer."""
    pairs = []
    for layer in saes.layers:
        idx = moving_latents(saes, ig, layer, r)
        clean, patched = latent_values(saes, ig, feature_list([(layer, int(i)) for i in idx]), r)
        top = (patched - clean).abs().sum((0, 1)).topk(per_layer).indices
        pairs += [(layer, int(idx[i])) for i in top]
    return feature_list(pairs)


def test_exact_effect_equals_the_sae_in_the_loop(model):
    saes = sae_set("jumprelu")
    r = torch.randn(D, generator=torch.Generator().manual_seed(1))
    tokens = model.tokenize(PROMPTS)
    ig = cache_runs(model, tokens, saes.layers, r, REF)
    feats = _moving(saes, ig, r)
    assert len(feats) >= 3
    fast, _ = exact_effects(model, saes, ig, feats, r, REF, rows_per_forward=4)
    for j, (layer, latent) in enumerate(feats.tolist()):
        slow = exact_effect_reference(model, saes, tokens, r, REF, [(layer, latent)])
        assert slow.abs().max() > 1e-5, "the reference must not be trivially zero"
        torch.testing.assert_close(fast[:, j], slow, rtol=1e-4, atol=1e-5)


def test_a_set_of_one_is_the_single_latent_effect(model):
    saes = sae_set("jumprelu")
    r = torch.randn(D, generator=torch.Generator().manual_seed(2))
    ig = cache_runs(model, model.tokenize(PROMPTS), saes.layers, r, REF)
    feats = _moving(saes, ig, r)
    single, _ = exact_effects(model, saes, ig, feats, r, REF)
    sets = [[feats[j : j + 1]] * len(PROMPTS) for j in range(len(feats))]
    joint = joint_effects(model, saes, ig, sets, r, REF)
    torch.testing.assert_close(joint, single, rtol=1e-4, atol=1e-5)


def test_a_joint_patch_equals_the_sae_in_the_loop(model):
    """Two latents of one layer and one of a later layer moved at once: the later one is set
    on the residual as the earlier edits leave it."""
    saes = sae_set("jumprelu")
    r = torch.randn(D, generator=torch.Generator().manual_seed(6))
    tokens = model.tokenize(PROMPTS)
    ig = cache_runs(model, tokens, saes.layers, r, REF)
    feats = _moving(saes, ig, r)
    chosen = feats[[0, 1, len(feats) - 1]]
    assert len(set(chosen[:, 0].tolist())) == 2
    fast = joint_effects(model, saes, ig, [[chosen] * len(PROMPTS)], r, REF)[:, 0]
    slow = exact_effect_reference(model, saes, tokens, r, REF, chosen)
    assert slow.abs().max() > 1e-5
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)


def test_a_latent_that_does_not_move_has_no_effect(model):
    saes = sae_set("jumprelu")
    r = torch.randn(D, generator=torch.Generator().manual_seed(3))
    ig = cache_runs(model, model.tokenize(PROMPTS), saes.layers, r, REF)
    still = sorted(set(range(saes.d_sae(0))) - set(moving_latents(saes, ig, 0, r).tolist()))
    assert still, "some latent of layer 0 must stay put"
    effect, _ = exact_effects(model, saes, ig, feature_list([(0, still[0])]), r, REF)
    assert effect.abs().max() == 0


@pytest.fixture(scope="module")
def linear_model(chat_tokenizer) -> ChatModel:
    """Layers 1–2 write nothing and the final norm is gone: the logits are linear in the
    residual after layer 0."""
    hf = make_tiny_model("llama", chat_tokenizer, n_layers=3)
    with torch.no_grad():
        for layer in hf.model.layers[1:]:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    hf.model.norm = nn.Identity()
    return ChatModel(hf, chat_tokenizer)


def test_laig_is_exact_where_the_metric_is_linear(linear_model):
    """One SAE at layer 0: every latent's summed LA-IG attribution equals its exact effect."""
    saes = sae_set("jumprelu")
    saes = type(saes)._made({0: saes.saes[0]}, {0: "layer 0"})
    r = torch.randn(D, generator=torch.Generator().manual_seed(4))
    tokens = linear_model.tokenize(PROMPTS)
    ig = integrated_gradients(linear_model, tokens, [0], r, REF, AttributionConfig(ig_steps=3))
    latents = moving_latents(saes, ig, 0, r)
    A = position_scores(saes, ig, 0, latents, r)
    laig_sum = (A * tokens.prompt_mask[:, :, None]).sum(1)
    feats = feature_list([(0, int(i)) for i in latents])
    exact, _ = exact_effects(linear_model, saes, ig, feats, r, REF)
    assert exact.abs().max() > 1e-4
    torch.testing.assert_close(laig_sum, exact, rtol=1e-4, atol=1e-5)
