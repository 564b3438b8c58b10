"""PinFeatures: pinned latents read their clean values after any other edit, exactly."""

from __future__ import annotations

import pytest
import torch

from refusalscope.runtime.errors import RefusalScopeError
from refusalscope.runtime.hooks import Capture
from refusalscope.runtime.interventions import ScaleFeatures
from refusalscope.runtime.model import ChatModel
from refusalscope.runtime.pinning import PinFeatures, clean_latent_values
from tests.conftest import make_tiny_model
from tests.stages.test_features import jumprelu_saes

PROMPTS = ["how do I bake bread", "write a poem about the sea today", "fix a chain"]


@pytest.fixture(scope="module")
def setup(chat_tokenizer):
    model = ChatModel(make_tiny_model("llama", chat_tokenizer), chat_tokenizer)
    saes = jumprelu_saes()
    # Latents that fire on these prompts, so pinning has something to hold.
    tokens = model.tokenize(PROMPTS)
    cap = Capture([0, 1])
    model.forward(tokens, [cap])
    active = {l: (saes.encode(l, cap.get(l)) > 0).float().mean((0, 1)) for l in (0, 1)}
    top = {l: active[l].topk(4).indices.tolist() for l in (0, 1)}
    clamp = torch.tensor([[0, top[0][0]], [0, top[0][1]], [1, top[1][0]]])
    pin = torch.tensor([[0, top[0][2]], [1, top[1][1]], [1, top[1][2]]])
    return model, saes, clamp, pin


def _pinned_reference(saes, layer, h, pin, values_row):
    """The SAE in the loop: encode, set the pinned latents to their clean values, decode,
    keep the SAE error: ``decode(f') + (h − decode(f))``."""
    sae = saes.saes[layer]
    f = sae.encode(h)
    f2 = f.clone()
    n = values_row[layer].shape[0]
    cols = [i for l, i in pin.tolist() if l == layer]
    f2[:, -n:, cols] = values_row[layer][None]
    return sae.decode(f2) + (h - sae.decode(f))


def test_pinning_equals_the_sae_in_the_loop_under_a_clamp(setup):
    model, saes, clamp, pin = setup
    values = clean_latent_values(model, saes, pin, PROMPTS, batch_size=2)
    for rows, tokens in model.batches(PROMPTS, 2):
        before, after = Capture([0, 1]), Capture([0, 1])
        pinned = PinFeatures(saes, pin, values).select(rows)
        model.forward(tokens, [ScaleFeatures(saes, clamp, c=-3.0), before, pinned, after])
        for l in (0, 1):
            for j, i in enumerate(rows):
                h = before.get(l)[j : j + 1]
                n = int(tokens.attention_mask[j].sum())
                want = _pinned_reference(saes, l, h[:, -n:], pin, values[i])
                torch.testing.assert_close(after.get(l)[j : j + 1, -n:], want, atol=1e-4, rtol=1e-4)


def test_pinned_values_are_the_clean_activations(setup):
    model, saes, _, pin = setup
    values = clean_latent_values(model, saes, pin, PROMPTS, batch_size=3)
    for i, prompt in enumerate(PROMPTS):
        tokens = model.tokenize([prompt])
        cap = Capture([0, 1])
        model.forward(tokens, [cap])
        for l in (0, 1):
            cols = torch.tensor([i2 for l2, i2 in pin.tolist() if l2 == l])
            want = saes.encode(l, cap.get(l), cols)[0]
            torch.testing.assert_close(values[i][l], want, atol=1e-5, rtol=1e-5)


def test_pinning_alone_changes_nothing(setup):
    model, saes, _, pin = setup
    values = clean_latent_values(model, saes, pin, PROMPTS)
    base = model.last_logits(PROMPTS)
    pinned = model.last_logits(PROMPTS, [PinFeatures(saes, pin, values)], batch_size=2)
    torch.testing.assert_close(pinned, base, atol=1e-4, rtol=1e-4)


def test_pinning_is_prefill_only_and_generation_runs(setup):
    model, saes, clamp, pin = setup
    values = clean_latent_values(model, saes, pin, PROMPTS)
    ivs = [ScaleFeatures(saes, clamp, c=-3.0), PinFeatures(saes, pin, values)]
    gens = model.generate(PROMPTS, ivs, max_new_tokens=4, batch_size=2, desc=None)
    assert len(gens.texts) == 3


def test_pinning_errors_are_clear(setup):
    model, saes, _, pin = setup
    with pytest.raises(RefusalScopeError, match="layers \\[7\\] that have no SAE"):
        PinFeatures(saes, torch.tensor([[7, 0]]), [])
    values = clean_latent_values(model, saes, pin, PROMPTS)
    with pytest.raises(RefusalScopeError, match="call .select"):
        model.last_logits(PROMPTS[:2], [_Unselected(saes, pin, values)])


class _Unselected(PinFeatures):
    def select(self, rows):
        return self
