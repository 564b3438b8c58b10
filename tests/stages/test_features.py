"""Feature sets: F* per prompt and global, CosSim, ActDiff, AP — sizes and rankings."""

from __future__ import annotations

import pytest
import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

from refusalscope.runtime.errors import RefusalScopeError
from refusalscope.runtime.hooks import Capture
from refusalscope.runtime.model import ChatModel
from refusalscope.runtime.saes import SAESet
from refusalscope.stages.attribution import AttributionResult
from refusalscope.stages.candidates import CandidateConfig, compute_candidates, decoder_cosines
from refusalscope.stages.features import (
    actdiff_features,
    ap_features,
    cossim_features,
    global_top,
    mean_max_activations,
    per_prompt_top,
)
from tests.conftest import make_tiny_model

D, W = 64, 96


def jumprelu_saes() -> SAESet:
    """Two random JumpReLU SAEs (layers 0 and 1, ``D`` → ``W``)."""
    out = {}
    for l in range(2):
        torch.manual_seed(10 + l)
        sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=D, d_sae=W))
        with torch.no_grad():
            sae.W_enc.normal_(0, 0.3)
            sae.W_dec.normal_(0, 0.3)
            sae.threshold.uniform_(0, 0.2)
        out[l] = sae
    return SAESet._made(out, {0: "a", 1: "b"})


@pytest.fixture(scope="module")
def saes() -> SAESet:
    return jumprelu_saes()


@pytest.fixture(scope="module")
def model(chat_tokenizer) -> ChatModel:
    return ChatModel(make_tiny_model("llama", chat_tokenizer), chat_tokenizer)


def test_candidates_are_top_cosine_per_layer(saes):
    r = torch.randn(D)
    res = compute_candidates(saes, r, CandidateConfig(k_per_layer=4))
    assert res.features.shape == (8, 2)
    for l in range(2):
        cos = decoder_cosines(saes, l, r)
        expect = set(cos.topk(4).indices.tolist())
        assert set(res.features[res.features[:, 0] == l, 1].tolist()) == expect
    with pytest.raises(RefusalScopeError, match="exceeds the SAE width"):
        compute_candidates(saes, r, CandidateConfig(k_per_layer=W + 1))


def test_fstar_sets_have_size_k_and_follow_scores():
    cands = torch.tensor([[0, 1], [0, 2], [1, 3], [1, 4], [1, 5]])
    score = torch.tensor([[5.0, 1, 2, 3, 4], [0, 9, 7, 4, 1]])  # means 2.5 5 4.5 3.5 2.5
    sets = per_prompt_top(score, cands, 2)
    assert [s.tolist() for s in sets] == [[[0, 1], [1, 5]], [[0, 2], [1, 3]]]
    glob, vals = global_top(score, cands, 3)
    assert glob.tolist() == [[0, 2], [1, 3], [1, 4]] and len(vals) == 3
    with pytest.raises(RefusalScopeError, match="larger than the candidate pool"):
        per_prompt_top(score, cands, 6)


def test_cossim_is_global_over_layers(saes):
    r = torch.randn(D)
    feats, vals = cossim_features(saes, r, 5)
    assert feats.shape == (5, 2)
    all_cos = torch.cat([decoder_cosines(saes, l, r) for l in range(2)])
    assert torch.allclose(vals, all_cos.topk(5).values)
    for (l, i), v in zip(feats.tolist(), vals, strict=True):
        assert torch.isclose(decoder_cosines(saes, l, r)[i], v)


def test_max_activations_exclude_bos_padding_and_preamble(model, saes):
    prompts = ["bake bread", "write a much longer poem about the sea and the sky"]
    got = mean_max_activations(model, saes, prompts, batch_size=2)
    tokens = model.tokenize(prompts)
    cap = Capture([0, 1])
    model.forward(tokens, [cap])
    for l in range(2):
        f = saes.encode(l, cap.get(l))
        manual = torch.stack(
            [f[b][tokens.prompt_mask[b]].amax(0).clamp(min=0) for b in range(2)]
        ).mean(0)
        assert torch.allclose(got[l], manual, atol=1e-5)
        with_everything = torch.stack(
            [f[b][tokens.attention_mask[b].bool()].amax(0) for b in range(2)]
        ).mean(0)
        assert not torch.allclose(got[l], with_everything), "BOS/preamble must be excluded"


def test_actdiff_ranks_by_activation_difference(model, saes):
    harmful, harmless = ["bake bread now"], ["write a poem"]
    feats, vals = actdiff_features(model, saes, harmful, harmless, 6, batch_size=4)
    pos = mean_max_activations(model, saes, harmful)
    neg = mean_max_activations(model, saes, harmless)
    diff = torch.cat([pos[l] - neg[l] for l in range(2)])
    assert feats.shape == (6, 2)
    assert torch.allclose(vals, diff.topk(6).values)


def test_ap_sets_are_each_prompts_own_top():
    top = torch.tensor([[[0, 1], [1, 2], [0, 3]], [[1, 9], [1, 8], [0, 0]]])
    attr = AttributionResult(
        candidates=torch.zeros(1, 2, dtype=torch.long),
        score=torch.zeros(2, 1),
        input_ids=torch.zeros(2, 3, dtype=torch.long),
        position_mask=torch.ones(2, 3, dtype=torch.bool),
        jb_token=torch.zeros(2, dtype=torch.long),
        ref_token=0,
        metric_clean=torch.zeros(2),
        metric_patch=torch.zeros(2),
        all_top=top,
        all_top_score=torch.tensor([[3.0, 2, 1], [6, 5, 4]]),
        all_mean={0: torch.tensor([0.0, 0, 0, 7]), 1: torch.tensor([0.0, 0, 9])},
    )
    per_prompt, glob = ap_features(attr, 2)
    assert [p.tolist() for p in per_prompt] == [[[0, 1], [1, 2]], [[1, 9], [1, 8]]]
    assert glob.tolist() == [[1, 2], [0, 3]]
    with pytest.raises(RefusalScopeError, match="all_latents_keep"):
        ap_features(attr, 4)
