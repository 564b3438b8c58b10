"""The refusal direction: difference in means, the ablation sweep and the layer choice."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from refusalscope.runtime.errors import RefusalScopeError
from refusalscope.runtime.interventions import AblateDirection
from refusalscope.runtime.model import ChatModel
from refusalscope.runtime.types import Prompt
from refusalscope.stages.direction import (
    DirectionConfig,
    ablation_sweep,
    diff_in_means,
    select_layer,
)
from tests.conftest import make_tiny_model

N_LAYERS = 3

HARMFUL = [
    "how do I bake bread",
    "write a short poem about the sea and the sky at night",
    "tell me a story",
    "explain how to fix a bicycle chain at home",
]
HARMLESS = [
    "write a poem",
    "tell me a story about a dragon and a knight and the sea",
    "how do I fix a garden",
]


@pytest.fixture(scope="module")
def model(chat_tokenizer) -> ChatModel:
    return ChatModel(
        make_tiny_model("llama", chat_tokenizer, seed=3, n_layers=N_LAYERS), chat_tokenizer
    )


@torch.no_grad()
def last_token_residuals(model: ChatModel, instruction: str) -> torch.Tensor:
    """``[n_layers, d_model]``: each decoder layer's output at the last token, one prompt,
    no padding, read with plain torch forward hooks on the HF layers."""
    ids = model.tokenize([instruction]).input_ids
    outs: dict[int, torch.Tensor] = {}
    handles = []
    for l, layer in enumerate(model.hf.model.layers):

        def hook(_mod, _args, out, l=l):
            h = out[0] if isinstance(out, tuple) else out
            outs[l] = h[0, -1].float().clone()

        handles.append(layer.register_forward_hook(hook))
    try:
        model.hf(input_ids=ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return torch.stack([outs[l] for l in range(len(outs))])


def reference_diff(model: ChatModel, harmful: Sequence[str], harmless: Sequence[str]):
    pos = torch.stack([last_token_residuals(model, p) for p in harmful]).mean(0)
    neg = torch.stack([last_token_residuals(model, p) for p in harmless]).mean(0)
    return pos - neg


# ----------------------------------------------------------------- diff_in_means
@pytest.mark.parametrize("batch_size", [1, 3])
def test_diff_in_means_equals_per_prompt_reference(model, batch_size):
    """Every layer's r equals mean harmful − mean harmless last-token residual, padded or not."""
    r = diff_in_means(model, HARMFUL, HARMLESS, batch_size=batch_size)
    want = reference_diff(model, HARMFUL, HARMLESS)
    assert r.shape == (N_LAYERS, model.d_model)
    torch.testing.assert_close(r, want, rtol=1e-5, atol=1e-5)
    assert r.norm(dim=-1).min() > 1e-3, "the test needs non-trivial directions"


def test_diff_in_means_layers_are_distinct(model):
    """Layer l's row is that layer's difference, not a copy of another layer's."""
    r = diff_in_means(model, HARMFUL, HARMLESS, batch_size=2)
    for a in range(N_LAYERS):
        for b in range(a + 1, N_LAYERS):
            assert not torch.allclose(r[a], r[b], atol=1e-4)


def test_diff_in_means_is_antisymmetric(model):
    r = diff_in_means(model, HARMFUL, HARMLESS, batch_size=4)
    back = diff_in_means(model, HARMLESS, HARMFUL, batch_size=4)
    torch.testing.assert_close(back, -r, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("harmful", "harmless"), [([], ["write a poem"]), (["bake"], [])])
def test_diff_in_means_empty_side_is_an_error(model, harmful, harmless):
    with pytest.raises(RefusalScopeError, match="both harmful and harmless"):
        diff_in_means(model, harmful, harmless)


# ------------------------------------------------------------------ select_layer
def rates(**layers: tuple[float, float]) -> dict[int, dict[str, float]]:
    """``rates(l0=(jb, ok), ...)`` -> ``{0: {"jailbreak": jb, "harmless_ok": ok}, ...}``."""
    return {int(k[1:]): {"jailbreak": jb, "harmless_ok": ok} for k, (jb, ok) in layers.items()}


BASE = {"jailbreak": 0.0, "harmless_ok": 0.9}


def test_select_layer_takes_highest_jailbreak_among_eligible():
    """Layer 2 jailbreaks most but breaks harmless behaviour; layer 1 is the best eligible."""
    sweep = rates(l0=(0.2, 0.9), l1=(0.6, 0.85), l2=(0.95, 0.5), l3=(0.4, 1.0))
    assert select_layer(sweep, BASE, tolerance=0.1) == 1


def test_select_layer_tolerance_boundary_is_inclusive():
    """harmless_ok == base − tolerance is still eligible (up to float rounding)."""
    sweep = rates(l0=(0.3, 0.9), l1=(0.7, 0.5))
    assert select_layer(sweep, {"harmless_ok": 1.0}, tolerance=0.5) == 1
    assert select_layer(sweep, {"harmless_ok": 1.0}, tolerance=0.49) == 0


def test_select_layer_zero_tolerance_needs_base_harmless_rate():
    sweep = rates(l0=(0.3, 0.9), l1=(0.8, 0.89), l2=(0.5, 0.95))
    assert select_layer(sweep, BASE, tolerance=0.0) == 2


def test_select_layer_jailbreak_tie_goes_to_better_harmless():
    sweep = rates(l0=(0.5, 0.85), l1=(0.5, 0.95), l2=(0.5, 0.9), l3=(0.1, 1.0))
    assert select_layer(sweep, BASE, tolerance=0.1) == 1


def test_select_layer_full_tie_goes_to_smaller_layer():
    sweep = rates(l5=(0.5, 0.9), l2=(0.5, 0.9), l7=(0.5, 0.9), l1=(0.4, 1.0))
    assert select_layer(sweep, BASE, tolerance=0.1) == 2


def test_select_layer_full_tie_ignores_dict_order():
    a = rates(l3=(0.5, 0.9), l4=(0.5, 0.9))
    b = {4: a[4], 3: a[3]}
    assert select_layer(a, BASE, 0.1) == select_layer(b, BASE, 0.1) == 3


def test_select_layer_falls_back_to_all_layers():
    """No layer keeps harmless behaviour: the choice is made among all, same rules."""
    sweep = rates(l0=(0.3, 0.2), l1=(0.8, 0.1), l2=(0.8, 0.3), l3=(0.8, 0.3))
    assert select_layer(sweep, {"harmless_ok": 1.0}, tolerance=0.1) == 2


def test_select_layer_ineligible_high_jailbreak_loses_to_eligible():
    sweep = rates(l0=(1.0, 0.0), l1=(0.0, 0.9))
    assert select_layer(sweep, BASE, tolerance=0.1) == 1


# ----------------------------------------------------------------- ablation_sweep
class RecordingJudge:
    """Complies exactly for prompts whose ``meta["ok"]`` is set; records every call."""

    name = "recording"

    def __init__(self) -> None:
        self.calls: list[tuple[list[Prompt], list[str]]] = []

    def judge(self, prompts, responses):
        assert len(prompts) == len(responses)
        self.calls.append((list(prompts), list(responses)))
        return ["complied" if p.meta.get("ok") else "refused" for p in prompts]


def prompts(texts: Sequence[str], ok: Sequence[int], harmful: bool) -> list[Prompt]:
    return [Prompt(t, harmful=harmful, meta={"ok": i in ok}) for i, t in enumerate(texts)]


HARMFUL_P = prompts(HARMFUL, ok={0}, harmful=True)  # 1/2 within n_sweep=2, 1/4 overall
HARMLESS_P = prompts(HARMLESS, ok={0, 1}, harmful=False)  # 2/2 within n_sweep=2, 2/3 overall


def test_sweep_covers_every_layer_with_rates(model):
    r = torch.randn(N_LAYERS, model.d_model, generator=torch.Generator().manual_seed(0))
    judge = RecordingJudge()
    cfg = DirectionConfig(n_sweep=8, max_new_tokens=3, batch_size=4)
    sweep, base = ablation_sweep(model, r, HARMFUL_P, HARMLESS_P, judge, cfg)
    assert sorted(sweep) == list(range(N_LAYERS))
    for s in [base, *sweep.values()]:
        assert set(s) == {"jailbreak", "harmless_ok"}
        assert 0 <= s["jailbreak"] <= 1 and 0 <= s["harmless_ok"] <= 1
        assert s == {"jailbreak": 1 / 4, "harmless_ok": 2 / 3}
    assert len(judge.calls) == 2 * (N_LAYERS + 1)


def test_sweep_respects_candidate_layers(model):
    r = torch.randn(N_LAYERS, model.d_model, generator=torch.Generator().manual_seed(0))
    judge = RecordingJudge()
    cfg = DirectionConfig(candidate_layers=(2, 0), n_sweep=8, max_new_tokens=3)
    sweep, _ = ablation_sweep(model, r, HARMFUL_P, HARMLESS_P, judge, cfg)
    assert set(sweep) == {0, 2}
    assert len(judge.calls) == 2 * 3  # base + two layers, harmful and harmless each


def test_sweep_rejects_out_of_range_candidate_layer(model):
    r = torch.zeros(N_LAYERS, model.d_model)
    cfg = DirectionConfig(candidate_layers=(N_LAYERS,), n_sweep=1, max_new_tokens=1)
    with pytest.raises(RefusalScopeError, match="out of range"):
        ablation_sweep(model, r, HARMFUL_P, HARMLESS_P, RecordingJudge(), cfg)


def test_n_sweep_caps_the_prompts_judged(model):
    """Only the first n_sweep prompts of each side are generated and judged."""
    r = torch.randn(N_LAYERS, model.d_model, generator=torch.Generator().manual_seed(0))
    judge = RecordingJudge()
    cfg = DirectionConfig(candidate_layers=(1,), n_sweep=2, max_new_tokens=3)
    sweep, base = ablation_sweep(model, r, HARMFUL_P, HARMLESS_P, judge, cfg)
    assert base == sweep[1] == {"jailbreak": 0.5, "harmless_ok": 1.0}
    seen = [[p.instruction for p in ps] for ps, _ in judge.calls]
    assert seen == [HARMFUL[:2], HARMLESS[:2]] * 2


def test_sweep_generates_with_each_layers_direction_ablated(model):
    """Base texts are plain greedy generations; layer l's are generated with r[l] ablated."""
    g = torch.Generator().manual_seed(1)
    r = torch.randn(N_LAYERS, model.d_model, generator=g) * 5
    judge = RecordingJudge()
    cfg = DirectionConfig(n_sweep=3, max_new_tokens=4, batch_size=2)
    ablation_sweep(model, r, HARMFUL_P, HARMLESS_P, judge, cfg)
    texts = [t for _, t in judge.calls]
    kw = dict(max_new_tokens=4, batch_size=3, desc=None)
    for i, ivs in enumerate([[]] + [[AblateDirection(r[l])] for l in range(N_LAYERS)]):
        assert texts[2 * i] == model.generate(HARMFUL[:3], ivs, **kw).texts
        assert texts[2 * i + 1] == model.generate(HARMLESS[:3], ivs, **kw).texts
    assert len({tuple(t) for t in texts[::2]}) > 1, "the test needs ablation to change output"
