"""Interventions against slow references: feature clamps, direction ablation/addition."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from sae_lens import (
    JumpReLUSAE,
    JumpReLUSAEConfig,
    StandardSAE,
    StandardSAEConfig,
    TopKSAE,
    TopKSAEConfig,
)

from refusalscope.runtime.errors import RefusalScopeError
from refusalscope.runtime.hooks import EMBED, Capture, EditContext, Intervention
from refusalscope.runtime.interventions import (
    AblateDirection,
    AddDirection,
    ScaleFeatures,
    SetFeatures,
)
from refusalscope.runtime.saes import SAESet

D_SAE = 96
PROMPTS = [
    "how do I bake bread at home",
    "write a short poem about the sea",
    "tell me a story about a dragon and a knight who fix a bicycle chain",
    "explain",
]


@torch.no_grad()
def fitted_sae(arch: str, acts: torch.Tensor, seed: int):
    """A random SAE scaled to ``acts`` ([n, d]) so that its latents fire on them.

    The TopK one rescales by decoder norm and has non-unit decoder rows, so the clamp
    must use the effective (unit-norm) rows to be right.
    """
    g = torch.Generator().manual_seed(seed)
    d = acts.shape[-1]
    if arch == "jumprelu":
        sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d, d_sae=D_SAE))
    elif arch == "standard":
        sae = StandardSAE(StandardSAEConfig(d_in=d, d_sae=D_SAE))
    else:
        sae = TopKSAE(TopKSAEConfig(d_in=d, d_sae=D_SAE, k=8, rescale_acts_by_decoder_norm=True))
    mean, std = acts.mean(0), acts.std(0).mean()
    sae.b_dec.copy_(mean)
    sae.W_enc.copy_(torch.randn(d, D_SAE, generator=g) / (std * d**0.5))
    sae.b_enc.copy_(torch.randn(D_SAE, generator=g) * 0.1)
    rows = torch.randn(D_SAE, d, generator=g)
    norms = torch.rand(D_SAE, 1, generator=g) + 0.5
    sae.W_dec.copy_(rows / rows.norm(dim=-1, keepdim=True) * std * d**0.5 * norms * 0.5)
    if arch == "jumprelu":
        pre = (acts - mean) @ sae.W_enc + sae.b_enc
        # Some thresholds below 0: JumpReLU is then a plain ReLU for those latents.
        sae.threshold.copy_(pre.quantile(0.6, dim=0) - 0.5)
    return sae


def set_of(saes: dict[int, object], tmp_path) -> SAESet:
    folders = {}
    for layer, sae in saes.items():
        folders[layer] = tmp_path / f"layer{layer}"
        sae.save_model(folders[layer])
    return SAESet.from_folders(folders)


def reference_edit(sae, h: torch.Tensor, latents, new) -> torch.Tensor:
    """``decode(f') + (h - decode(f))`` with a full encode/decode; ``new(f_sel) -> f'_sel``."""
    f = sae.encode(h)
    f_new = f.clone()
    f_new[..., latents] = new(f[..., latents])
    return sae.decode(f_new) + (h - sae.decode(f))


@dataclass(eq=False)
class FullDecodeClamp(Intervention):
    """The slow, obviously-correct clamp: full encode/decode at each SAE layer.

    ``latents`` maps layer -> one latent list per prompt in the batch.
    """

    saes: SAESet
    latents: dict[int, list[list[int]]]
    new: object

    def sites(self, n_layers: int) -> set[int]:
        return set(self.latents)

    def edit(self, site: int, h: torch.Tensor, ctx: EditContext) -> torch.Tensor:
        sae = self.saes.saes[site]
        out = h.clone()
        for b, lat in enumerate(self.latents[site]):
            if lat:
                out[b] = reference_edit(sae, h[b], lat, self.new)
        return out


CLAMPS = {
    "scale": (lambda saes, feats: ScaleFeatures(saes, feats, c=-3.0), lambda f: -3.0 * f),
    "set": (lambda saes, feats: SetFeatures(saes, feats, v=2.5), lambda f: torch.full_like(f, 2.5)),
}


# --------------------------------------------------------------- edit itself
@pytest.fixture(scope="module")
def random_acts():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2000, 32, generator=g) * 3 + torch.randn(32, generator=g)


@pytest.mark.parametrize("arch", ["jumprelu", "standard", "topk"])
@pytest.mark.parametrize("kind", CLAMPS)
def test_clamp_edit_equals_full_encode_decode(arch, kind, random_acts, tmp_path):
    saes = set_of({2: fitted_sae(arch, random_acts, seed=1)}, tmp_path)
    sae = saes.saes[2]
    h = random_acts[:60].reshape(3, 20, 32)
    firing = sae.encode(h).ne(0).sum((0, 1)).argsort(descending=True)
    latents = [int(i) for i in torch.cat([firing[:5], firing[-2:]])]
    make, new = CLAMPS[kind]
    got = make(saes, [(2, i) for i in latents]).edit(2, h, EditContext())
    want = reference_edit(sae, h, latents, new)
    assert (want - h).abs().max() > 0.1, "the clamp should change the residual"
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["jumprelu", "standard", "topk"])
@pytest.mark.parametrize("kind", CLAMPS)
def test_per_prompt_clamp_edit_equals_full_encode_decode(arch, kind, random_acts, tmp_path):
    saes = set_of({2: fitted_sae(arch, random_acts, seed=2)}, tmp_path)
    sae = saes.saes[2]
    h = random_acts[:60].reshape(3, 20, 32)
    per_prompt = [[3, 10, 50], [], [7]]
    make, new = CLAMPS[kind]
    iv = make(saes, [[(2, i) for i in lat] for lat in per_prompt])
    got = iv.edit(2, h, EditContext())
    for b, lat in enumerate(per_prompt):
        want = reference_edit(sae, h[b], lat, new) if lat else h[b]
        torch.testing.assert_close(got[b], want, rtol=1e-5, atol=1e-5)
    sub = iv.select([2, 0])
    torch.testing.assert_close(sub.edit(2, h[[2, 0]], EditContext()), got[[2, 0]])


# ---------------------------------------------------------- through the model
@pytest.fixture(scope="module")
def model_saes(tiny_chat_model, tmp_path_factory) -> SAESet:
    """JumpReLU at layer 0 and TopK (rescaled, non-unit rows) at layer 1, d_in 64."""
    acts = tiny_chat_model.capture(PROMPTS, [0, 1], positions="all")
    real = acts.tokens.attention_mask.bool()
    per_layer = {site: acts.acts[:, i][real] for i, site in enumerate(acts.sites)}
    saes = {0: fitted_sae("jumprelu", per_layer[0], 3), 1: fitted_sae("topk", per_layer[1], 4)}
    return set_of(saes, tmp_path_factory.mktemp("tiny_saes"))


def active_latents(model, saes: SAESet, prompt: str, layer: int, n: int) -> list[int]:
    """The ``n`` latents of ``layer`` that fire most on ``prompt`` (un-intervened)."""
    h = model.capture([prompt], [layer], positions="all").acts[:, 0]
    return saes.encode(layer, h)[0].ne(0).sum(0).argsort(descending=True)[:n].tolist()


@pytest.mark.parametrize("kind", CLAMPS)
def test_clamp_in_model_equals_full_encode_decode(kind, tiny_chat_model, model_saes):
    model = tiny_chat_model
    lat = {layer: active_latents(model, model_saes, PROMPTS[0], layer, 4) for layer in (0, 1)}
    make, new = CLAMPS[kind]
    fast = make(model_saes, [(layer, i) for layer in lat for i in lat[layer]])
    slow = FullDecodeClamp(model_saes, {la: [lat[la]] * len(PROMPTS) for la in lat}, new)
    got = model.capture(PROMPTS, [0, 1], positions="all", interventions=[fast]).acts
    want = model.capture(PROMPTS, [0, 1], positions="all", interventions=[slow]).acts
    clean = model.capture(PROMPTS, [0, 1], positions="all").acts
    assert (want - clean).abs().max() > 1e-2, "the clamp should change the residual"
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_per_prompt_features_land_on_their_prompts(tiny_chat_model, model_saes):
    model = tiny_chat_model
    per_prompt = [
        [(0, i) for i in active_latents(model, model_saes, PROMPTS[0], 0, 3)],
        [(1, i) for i in active_latents(model, model_saes, PROMPTS[1], 1, 2)]
        + [(0, i) for i in active_latents(model, model_saes, PROMPTS[1], 0, 1)],
        [],
        [(1, i) for i in active_latents(model, model_saes, PROMPTS[3], 1, 3)],
    ]
    iv = ScaleFeatures(model_saes, per_prompt, c=-3.0)
    # batch_size 2 with length-sorted batches: rows of a batch are not contiguous
    batched = model.last_logits(PROMPTS, [iv], batch_size=2)
    captured = model.capture(PROMPTS, [1], interventions=[iv], batch_size=3).acts[:, 0]
    clean = model.last_logits(PROMPTS)
    for i, (prompt, feats) in enumerate(zip(PROMPTS, per_prompt, strict=True)):
        alone = [ScaleFeatures(model_saes, feats, c=-3.0)]
        torch.testing.assert_close(
            batched[i], model.last_logits([prompt], alone)[0], rtol=1e-4, atol=1e-4
        )
        torch.testing.assert_close(
            captured[i],
            model.capture([prompt], [1], interventions=alone).acts[0, 0],
            rtol=1e-4,
            atol=1e-5,
        )
        if feats:
            assert (batched[i] - clean[i]).abs().max() > 1e-3, f"prompt {i} was not clamped"
        else:
            torch.testing.assert_close(batched[i], clean[i], rtol=1e-4, atol=1e-4)


def _direction(model) -> torch.Tensor:
    """A direction the residual has a large component along (mean last-token state)."""
    return model.capture(PROMPTS, [1]).acts[:, 0].mean(0)


def test_ablation_makes_every_residual_orthogonal(tiny_chat_model):
    model = tiny_chat_model
    r = _direction(model)
    r_hat = r / r.norm()
    sites = [EMBED, 0, 1]
    got = model.capture(PROMPTS, sites, positions="all", interventions=[AblateDirection(r)])
    clean = model.capture(PROMPTS, sites, positions="all")
    assert (clean.acts @ r_hat).abs().amax() > 0.05
    assert (got.acts @ r_hat).abs().amax() < 1e-5


@pytest.mark.parametrize("layer", [0, 1])
def test_add_direction_shifts_its_layer_exactly(tiny_chat_model, layer):
    model = tiny_chat_model
    r = torch.randn(model.d_model, generator=torch.Generator().manual_seed(5))
    before, after = Capture([layer]), Capture([layer])
    tokens = model.tokenize(PROMPTS)
    with torch.no_grad():
        model.forward(tokens, [before, AddDirection(r, layer, coeff=2.5), after])
    shift = after.get(layer) - before.get(layer)
    torch.testing.assert_close(shift, (2.5 * r).expand_as(shift), rtol=0, atol=1e-6)


def _greedy_prefill_ablated(model, prompt: str, r: torch.Tensor, n: int) -> list[int]:
    """Reference: ablate ``r`` in the prefill call only, then decode with the KV cache
    and no hooks."""
    tokens = model.tokenize([prompt])
    mask = tokens.attention_mask
    with torch.no_grad():
        with model.hooked([AblateDirection(r)]):
            out = model.hf(input_ids=tokens.input_ids, attention_mask=mask, use_cache=True)
        ids = []
        for _ in range(n):
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
            ids.append(int(tok))
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            # positional: the cache is ``past_key_values`` in transformers 4.x, ``cache`` in 5.x
            cache = out["cache"] if "cache" in out else out["past_key_values"]
            out = model.hf(tok, mask, None, cache)
    return ids


def test_prompt_only_ablation_acts_in_prefill_only(tiny_chat_model):
    model = tiny_chat_model
    r = _direction(model)
    r_hat = r / r.norm()
    n = 6
    prompt_only = AblateDirection(r, positions="prompt")
    cap = Capture([EMBED, 0, 1])
    gen = model.generate([PROMPTS[0]], [prompt_only, cap], max_new_tokens=n, desc=None)
    want = _greedy_prefill_ablated(model, PROMPTS[0], r, n)
    got = gen.token_ids[0]
    assert got == want[: len(got)]
    if len(got) < n:
        assert want[len(got)] in model.eos_ids
    everywhere = model.generate([PROMPTS[0]], [AblateDirection(r)], max_new_tokens=1, desc=None)
    assert everywhere.token_ids[0][:1] == got[:1]
    # one capture per forward call: the prefill is ablated, the decoding steps are not
    for site in (EMBED, 0, 1):
        prefill, *steps = cap.store[site]
        assert prefill.shape[1] > 1 and all(s.shape[1] == 1 for s in steps) and steps
        assert (prefill @ r_hat).abs().max() < 1e-5
        if site != EMBED:  # token embeddings alone may be near-orthogonal to r
            assert max((s @ r_hat).abs().max() for s in steps) > 1e-2


@pytest.mark.parametrize("kind", CLAMPS)
def test_repeated_features_clamp_once(kind, random_acts, tmp_path):
    """A latent listed twice (e.g. in the union of two sets) is still clamped once."""
    saes = set_of({2: fitted_sae("jumprelu", random_acts, seed=1)}, tmp_path)
    h = random_acts[:40].reshape(2, 20, 32)
    firing = saes.encode(2, h).ne(0).sum((0, 1)).argsort(descending=True)
    a, b = int(firing[0]), int(firing[1])
    make, new = CLAMPS[kind]
    want = reference_edit(saes.saes[2], h, [a, b], new)
    shared = make(saes, [(2, a), (2, b), (2, a)]).edit(2, h, EditContext())
    per_prompt = make(saes, [[(2, a), (2, a), (2, b)], [(2, b), (2, a)]]).edit(2, h, EditContext())
    torch.testing.assert_close(shared, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(per_prompt, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", CLAMPS)
def test_clamp_of_a_bf16_residual_with_fp32_saes(kind, random_acts, tmp_path):
    """A bf16 model with float32 SAEs: encoded in float32, the change added in bf16."""
    saes = set_of({2: fitted_sae("jumprelu", random_acts, seed=5)}, tmp_path)
    h = random_acts[:40].reshape(2, 20, 32).bfloat16()
    firing = saes.encode(2, h.float()).ne(0).sum((0, 1)).argsort(descending=True)
    latents = [int(i) for i in firing[:4]]
    make, new = CLAMPS[kind]
    got = make(saes, [(2, i) for i in latents]).edit(2, h, EditContext())
    want = reference_edit(saes.saes[2], h.float(), latents, new)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=5e-2)


@pytest.mark.parametrize(
    "pairs",
    [
        [(1, 5), (1, 7)],
        [(1, np.int64(5)), (np.int32(1), 7)],
        [(torch.tensor(1), torch.tensor(5)), (1, 7)],
        np.array([[1, 5], [1, 7]]),
        torch.tensor([[1, 5], [1, 7]], dtype=torch.int32),
    ],
    ids=["int", "numpy-scalars", "torch-scalars", "numpy-array", "int32-tensor"],
)
def test_integer_like_pairs_are_one_global_set(pairs, tmp_path):
    """Any integer type names a (layer, latent): the set is global, not per prompt."""
    saes = set_of({1: fitted_sae("jumprelu", torch.randn(64, 16), seed=0)}, tmp_path)
    iv = ScaleFeatures(saes, pairs, c=0.0)
    assert not iv.per_prompt
    assert iv.features.dtype == torch.long
    assert iv.features.tolist() == [[1, 5], [1, 7]]


@pytest.mark.parametrize(
    ("pairs", "phrase"),
    [([(1, 5.5)], "integer pairs"), ([(1, 2, 3)], "integer pairs"), ([(4, 1)], "no SAE")],
)
def test_bad_feature_pairs_say_what_is_expected(pairs, phrase, tmp_path):
    saes = set_of({1: fitted_sae("jumprelu", torch.randn(64, 16), seed=0)}, tmp_path)
    with pytest.raises(RefusalScopeError, match=phrase):
        ScaleFeatures(saes, pairs)
