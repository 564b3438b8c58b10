"""LA-IG: the SAE-free form equals the SAE-in-the-loop reference; gradients are right."""

from __future__ import annotations

import pytest
import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, TopKSAE, TopKSAEConfig

from refusalscope.runtime.errors import RefusalScopeError
from refusalscope.runtime.hooks import EditContext, Intervention
from refusalscope.runtime.model import ChatModel
from refusalscope.runtime.saes import SAESet
from refusalscope.stages.attribution import (
    AttributionConfig,
    _Mix,
    compute_attribution,
    integrated_gradients,
    jailbreak_tokens,
    metric,
    score_all_latents,
    score_latents,
)
from refusalscope.stages.prompts import resolve_refusal_token
from refusalscope.testing.reference import laig_reference
from tests.conftest import make_tiny_model

D, W = 64, 192
PROMPTS = ["how do I bake bread", "write a short poem about the sea please", "fix a bicycle"]
REF = 5  # any token id works as the "refusal" token of a random model


def random_sae(kind: str, seed: int):
    torch.manual_seed(seed)
    if kind == "jumprelu":
        sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=D, d_sae=W))
        with torch.no_grad():
            sae.threshold.uniform_(0, 0.3)
            sae.b_enc.normal_(0, 0.1)
    else:
        sae = TopKSAE(TopKSAEConfig(d_in=D, d_sae=W, k=8))
    with torch.no_grad():
        sae.W_enc.normal_(0, 0.3)
        sae.W_dec.normal_(0, 0.3)
        sae.b_dec.normal_(0, 0.1)
    return sae


@pytest.fixture(scope="module")
def model(chat_tokenizer) -> ChatModel:
    return ChatModel(make_tiny_model("llama", chat_tokenizer, n_layers=3), chat_tokenizer)


def sae_set(kind: str) -> SAESet:
    return SAESet._made({l: random_sae(kind, l) for l in range(3)}, {l: kind for l in range(3)})


@pytest.mark.parametrize("kind", ["jumprelu", "topk"])
@pytest.mark.parametrize("alpha_rule", ["left", "midpoint"])
def test_sae_free_laig_equals_sae_in_the_loop(model, kind, alpha_rule):
    saes = sae_set(kind)
    r = torch.randn(D, generator=torch.Generator().manual_seed(1))
    cfg = AttributionConfig(ig_steps=5, alpha_rule=alpha_rule)
    tokens = model.tokenize(PROMPTS)
    ref = laig_reference(model, saes, tokens, r, REF, cfg)
    ig = integrated_gradients(model, tokens, saes.layers, r, REF, cfg)
    for l in saes.layers:
        fast = score_latents(saes, ig, l, torch.arange(W), r)
        scale = ref[l].abs().max()
        assert scale > 1e-4, "the reference must not be trivially zero"
        assert ((fast - ref[l].detach()).abs().max() / scale) < 1e-4


def test_ig_alphas_follow_the_rule():
    assert AttributionConfig(ig_steps=10).alphas() == [i / 10 for i in range(10)]
    assert AttributionConfig(ig_steps=4, alpha_rule="midpoint").alphas() == [
        0.125,
        0.375,
        0.625,
        0.875,
    ]


class _Nudge(Intervention):
    """Adds ``eps * v`` at one site and position, after the mix."""

    def __init__(self, site: int, pos: int, v: torch.Tensor, eps: float):
        self.site, self.pos, self.v, self.eps = site, pos, v, eps

    def sites(self, n_layers):
        return {self.site}

    def edit(self, site, h, ctx: EditContext):
        h = h.clone()
        h[:, self.pos] += self.eps * self.v.to(h.dtype)
        return h


def test_ig_gradient_matches_finite_differences(chat_tokenizer):
    """∂m/∂out_l from the IG step equals central differences of m (float64 model).

    LlamaRMSNorm computes in float32 even in a float64 model, so eps is 1e-3 (float32
    noise / eps ~ 1e-4) and the tolerance 1e-2 relative; a wrong gradient (e.g. missing
    the (1-α) path through later layers) is off by far more.
    """
    hf = make_tiny_model("llama", chat_tokenizer, n_layers=3).double()
    model = ChatModel(hf, chat_tokenizer)
    tokens = model.tokenize(PROMPTS)
    layers, alpha, eps = [0, 1, 2], 0.3, 1e-3
    r = torch.randn(D, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ig = integrated_gradients(model, tokens, layers, r, REF, AttributionConfig(ig_steps=1))
    gen = torch.Generator().manual_seed(0)
    checked = 0
    for l in layers:
        mix = _Mix(ig.patch_in, alpha, layers)
        with torch.enable_grad():
            m = metric(model.forward(tokens, [mix], last_only=True), ig.jb_token, REF)
            (g,) = torch.autograd.grad(m.sum(), [mix.outs[l]])
        for pos in (-4, -1):
            v = torch.randn(D, dtype=torch.float64, generator=gen)
            with torch.no_grad():
                ms = [
                    metric(
                        model.forward(
                            tokens,
                            [_Mix(ig.patch_in, alpha, layers), _Nudge(l, pos, v, e)],
                            last_only=True,
                        ),
                        ig.jb_token,
                        REF,
                    ).sum()
                    for e in (eps, -eps)
                ]
            fd = (ms[0] - ms[1]) / (2 * eps)
            analytic = (g[:, pos] * v).sum()
            assert abs(fd - analytic) <= 1e-2 * abs(analytic) + 1e-6, (l, pos, fd, analytic)
            checked += abs(analytic) > 1e-3
    assert checked >= 5  # the gradients tested are not trivially zero


def test_joint_mixing_scales_upstream_gradients(model):
    """The authors' quirk: at α near 1 the earlier layers get almost no gradient."""
    saes_layers, r = [0, 1, 2], torch.randn(D)
    tokens = model.tokenize(PROMPTS)
    ig = integrated_gradients(model, tokens, saes_layers, r, REF, AttributionConfig(ig_steps=1))
    mix_hi = _Mix(ig.patch_in, 0.99, saes_layers)
    with torch.enable_grad():
        m = metric(model.forward(tokens, [mix_hi], last_only=True), ig.jb_token, REF)
        g0, g2 = torch.autograd.grad(m.sum(), [mix_hi.outs[0], mix_hi.outs[2]])
    # Layer 0's gradient only reaches m through layers 1 and 2, each scaled by 1-α.
    assert g0.abs().sum() < 0.05 * g2.abs().sum()


def test_candidate_scores_equal_all_latent_scores(model):
    saes = sae_set("jumprelu")
    r = torch.randn(D)
    cands = torch.tensor([[0, 3], [0, 10], [1, 7], [2, 0], [2, 191]])
    cfg = AttributionConfig(ig_steps=3, batch_size=2, all_latents_keep=12, latent_chunk=50)
    res = compute_attribution(model, saes, PROMPTS, r, cands, REF, cfg)
    assert res.score.shape == (3, 5) and res.all_top.shape == (3, 12, 2)
    for l in range(3):
        pos = (cands[:, 0] == l).nonzero()[:, 0]
        assert torch.allclose(res.all_mean[l][cands[pos, 1]], res.score[:, pos].mean(0), atol=1e-6)
    # per-prompt all-latent tops are that prompt's own best pairs (AP alignment)
    for i, prompt in enumerate(PROMPTS):
        tokens = model.tokenize([prompt])
        ig = integrated_gradients(model, tokens, [0, 1, 2], r, REF, cfg)
        full = torch.cat([score_all_latents(saes, ig, l, r, 50)[0] for l in range(3)])
        best = full.topk(12).values
        assert torch.allclose(res.all_top_score[i], best, atol=1e-5)
    # position mask excludes padding and preamble
    assert not res.position_mask[:, 0].any()
    assert res.input_ids.shape == res.position_mask.shape


def test_jailbreak_token_is_never_the_refusal_token():
    logits = torch.zeros(2, 4, 10)
    logits[:, -1, REF] = 5.0
    logits[0, -1, 2] = 1.0
    jb = jailbreak_tokens(logits, REF)
    assert jb[0] == 2 and jb[1] != REF


def test_refusal_token_must_be_one_token(model):
    assert resolve_refusal_token(model, 7) == 7
    with pytest.raises(RefusalScopeError, match="exactly one token"):
        resolve_refusal_token(model, "a long phrase of several tokens")


def test_empty_prompts_are_an_error(model):
    with pytest.raises(RefusalScopeError, match="no prompts"):
        compute_attribution(
            model,
            sae_set("topk"),
            [],
            torch.randn(D),
            torch.zeros(1, 2, dtype=torch.long),
            REF,
            AttributionConfig(),
        )
