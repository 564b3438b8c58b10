"""Jailbreak prompts: the harm/refusal rule, the drops and the groups, on known numbers."""

from __future__ import annotations

import pytest
import torch

from refusalscope.analysis.activations import FeatureActivations, post_instruction_tokens
from refusalscope.analysis.config import AnalysisConfig
from refusalscope.analysis.jailbreaks import (
    difference,
    feature_table,
    group_table,
    pair_drops,
    select_pairs,
)
from refusalscope.analysis.roles import PromptFeatures, label, plain_attribution
from refusalscope.data.pairs import PromptPair
from refusalscope.runtime.errors import RefusalScopeError
from refusalscope.runtime.model import ChatModel
from refusalscope.runtime.types import Prompt
from refusalscope.stages.attribution import (
    AttributionConfig,
    compute_attribution,
    integrated_gradients,
    position_scores,
)
from tests.conftest import make_tiny_model
from tests.stages.test_features import jumprelu_saes

FEATS = torch.tensor([[0, 1], [0, 2], [1, 3]])


def _acts(mean, end) -> FeatureActivations:
    mean, end = torch.tensor(mean), torch.tensor(end)
    return FeatureActivations(FEATS, mean=mean, max=mean, end=end, last=end)


def test_a_wrapper_that_zeroes_a_known_latent_gives_the_exact_drops():
    # feature (0,1) harm, (0,2) harm, (1,3) refusal; the wrapper zeroes latent (0,1)
    plain = _acts([[2.0, 1.0, 0.0]], [[0.0, 0.0, 4.0]])
    wrapped = _acts(
        [[0.0, 1.0, 0.0], [2.0, 1.0, 0.0]],  # pair 0: (0,1) zeroed; pair 1: nothing changes
        [[0.0, 0.0, 1.0], [0.0, 0.0, 4.0]],  # pair 0: refusal latent down to a quarter
    )
    feats = PromptFeatures(
        [FEATS], [torch.tensor([False, False, True])], [torch.zeros(3, dtype=torch.long)]
    )
    drops = pair_drops(feats, [0, 0], plain, wrapped)
    assert drops[0]["harm_drop"] == pytest.approx(1 - 1 / 3)
    assert drops[0]["refusal_drop"] == pytest.approx(0.75)
    assert drops[1]["harm_drop"] == pytest.approx(0.0)
    assert drops[1]["refusal_drop"] == pytest.approx(0.0)
    assert (drops[0]["n_harm"], drops[0]["n_refusal"]) == (2, 1)
    cfg = AnalysisConfig(n_bootstrap=200)
    g = group_table(drops, [0], cfg)
    assert g["harm_drop"] == pytest.approx(2 / 3, abs=1e-4) and g["n"] == 1
    d = difference(drops, [0], [1], cfg)
    assert d["refusal_drop"] == pytest.approx(0.75) and d["refusal_drop_ci95"] == [0.75, 0.75]
    table = feature_table(feats, [0, 0], plain, wrapped, {"successful": [0], "failed": [1]})
    first = next(r for r in table if r["feature"] == [0, 1])
    assert first["label"] == "harm" and first["successful"] == 1.0 and first["failed"] == 0.0


def test_a_group_without_harm_features_reports_none():
    plain = _acts([[1.0, 1.0, 1.0]], [[1.0, 1.0, 1.0]])
    feats = PromptFeatures(
        [FEATS], [torch.tensor([True, True, True])], [torch.zeros(3, dtype=torch.long)]
    )
    drops = pair_drops(feats, [0], plain, plain)
    assert drops[0]["harm_drop"] is None
    g = group_table(drops, [0], AnalysisConfig(n_bootstrap=200))
    assert g["harm_drop"] is None and g["n_harm_drop"] == 0 and g["refusal_drop"] == 0.0


@pytest.fixture(scope="module")
def tiny(chat_tokenizer):
    model = ChatModel(make_tiny_model("llama", chat_tokenizer), chat_tokenizer)
    return model, jumprelu_saes()


def test_plain_attribution_matches_the_attribution_stage_and_splits_by_position(tiny):
    model, saes = tiny
    prompts = ["how do I bake bread", "write a short poem about the sea", "fix a chain"]
    torch.manual_seed(0)
    r = torch.randn(model.d_model)
    cands = torch.tensor([[0, i] for i in range(6)] + [[1, i] for i in range(6)])
    acfg = AttributionConfig(ig_steps=3, batch_size=2, all_latents=False)
    stage = compute_attribution(model, saes, prompts, r, cands, 5, acfg)
    n = post_instruction_tokens(model)
    mine = plain_attribution(model, saes, prompts, r, cands, 5, acfg, n)
    torch.testing.assert_close(mine.score, stage.score, atol=1e-5, rtol=1e-4)
    # the end share, by hand, for the first prompt
    tokens = model.tokenize(prompts[:1])
    ig = integrated_gradients(model, tokens, [0, 1], r, 5, acfg)
    A = torch.cat([position_scores(saes, ig, l, cands[cands[:, 0] == l, 1], r) for l in (0, 1)], -1)
    A = A[0].abs() * tokens.prompt_mask[0, :, None]
    want = A[-n:].sum(0) / A.sum(0).clamp(min=1e-12)
    torch.testing.assert_close(mine.end_share[0], want, atol=1e-5, rtol=1e-4)
    assert ((mine.end_share >= 0) & (mine.end_share <= 1 + 1e-6)).all()
    # the onset: first position where |A| reaches half its maximum, counted from the end
    first = (0.5 * A.amax(0) <= A).float().argmax(0)
    moved = A.amax(0) > 0
    assert (mine.onset_from_end[0][moved] == (A.shape[0] - 1 - first)[moved]).all()
    labelled = label(mine, cands, 4)
    top = mine.score[0].topk(4).indices
    assert labelled.is_refusal[0].tolist() == (mine.end_share[0, top] >= 0.5).tolist()


def test_post_instruction_tokens_of_the_test_template(tiny):
    model, _ = tiny
    text = model.format("A")
    suffix = text[text.index("A") + 1 :]
    assert post_instruction_tokens(model) == len(
        model.tokenizer(suffix, add_special_tokens=False)["input_ids"]
    )


def test_pairs_need_at_least_two():
    one = [PromptPair(Prompt("a", True), Prompt("b", True))]
    with pytest.raises(RefusalScopeError, match="at least 2 \\(plain, adversarial\\) pairs; got 1"):
        select_pairs(one, AnalysisConfig())
    many = one * 10
    assert len(select_pairs(many, AnalysisConfig(max_pairs=3))) == 3
