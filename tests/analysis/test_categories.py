"""Harm categories: the sets, the clamps' bookkeeping, selectivity and the errors."""

from __future__ import annotations

import pytest
import torch

from refusalscope.analysis import categories as cat_mod
from refusalscope.analysis.categories import (
    category_jailbreaks,
    category_sets,
    compute_categories,
    diagonal_check,
    group_by_category,
    jaccard,
    selectivity,
)
from refusalscope.analysis.config import AnalysisConfig
from refusalscope.runtime.errors import RefusalScopeError
from refusalscope.runtime.hooks import Capture
from refusalscope.runtime.model import ChatModel
from refusalscope.runtime.saes import SAESet
from refusalscope.runtime.types import Prompt
from refusalscope.stages.attribution import AttributionResult
from tests.conftest import make_tiny_model

CANDS = torch.tensor([[0, 0], [0, 1], [1, 2], [1, 3], [1, 4], [0, 5]])


def _attr(score: torch.Tensor) -> AttributionResult:
    n = score.shape[0]
    return AttributionResult(
        candidates=CANDS,
        score=score,
        input_ids=torch.zeros(n, 1, dtype=torch.long),
        position_mask=torch.ones(n, 1, dtype=torch.bool),
        jb_token=torch.zeros(n, dtype=torch.long),
        ref_token=0,
        metric_clean=torch.zeros(n),
        metric_patch=torch.zeros(n),
    )


def test_common_and_specific_sets_from_per_category_scores():
    # category a: f0, f1 shared, f2 its own; category b: f0, f1 shared, f3 its own
    a = torch.tensor([5.5, 4.0, 3.0, 0.0, 0.1, 0.0])
    b = torch.tensor([4.0, 5.0, 0.0, 3.0, 0.1, 0.0])
    sets = category_sets(_attr(torch.stack([a, a, b, b])), {"a": [0, 1], "b": [2, 3]}, 3)
    assert sets.common.tolist() == [[0, 0], [0, 1]]  # ordered by the mean score over all
    assert {c: s.tolist() for c, s in sets.specific.items()} == {"a": [[1, 2]], "b": [[1, 3]]}
    assert jaccard(sets.per_category["a"], sets.per_category["b"]) == pytest.approx(2 / 4)


def test_specific_sets_are_truncated_to_one_size():
    a = torch.tensor([5.0, 4.0, 3.0, 2.0, 0.0, 0.0])  # shares only f0 with b
    b = torch.tensor([5.0, 0.0, 0.0, 0.0, 4.0, 3.0])
    sets = category_sets(_attr(torch.stack([a, b])), {"a": [0], "b": [1]}, 3)
    assert sets.common.tolist() == [[0, 0]]
    assert sets.specific["a"].tolist() == [[0, 1], [1, 2]]
    assert sets.specific["b"].tolist() == [[1, 4], [0, 5]]


def _prompts(cats: list[str]) -> list[Prompt]:
    return [Prompt(f"request {i}", True, c) for i, c in enumerate(cats)]


def test_too_few_prompts_per_category_is_one_clear_error():
    prompts = _prompts(["a", "a", "a", "b"])
    cfg = AnalysisConfig(min_category_prompts=2, only_categories=("a", "b"))
    with pytest.raises(
        RefusalScopeError, match=r"too few harmful train prompts in categories \{'b': 1\}"
    ):
        group_by_category(prompts, cfg, "harmful train")
    with pytest.raises(RefusalScopeError, match="names \\['c'\\], which no harmful train"):
        group_by_category(prompts, AnalysisConfig(only_categories=("a", "c")), "harmful train")
    # without an explicit list, small categories are left out
    assert group_by_category(prompts, AnalysisConfig(min_category_prompts=2), "x") == {
        "a": [0, 1, 2]
    }


def test_fewer_than_two_usable_categories_is_an_error():
    prompts = _prompts(["a"] * 4 + ["b"])
    with pytest.raises(RefusalScopeError, match="at least 2 categories with 4\\+ harmful"):
        compute_categories(
            None, None, _attr(torch.zeros(5, 6)), prompts, prompts, None, None, AnalysisConfig()
        )


class _FakeClamps:
    """Complies exactly when the clamp targets the prompt's own category (a planted
    category-specific path), records what each call clamped and pinned."""

    def __init__(self):
        self.calls = []

    def scale(self, feats):
        return [("scale", tuple(map(tuple, feats.tolist())))]

    def pin(self, feats, prompts):
        return [("pin", tuple(map(tuple, feats.tolist())))]

    def run(self, prompts, ivs, tag):
        self.calls.append((tag, ivs))
        src = tag.get("from", tag.get("to"))
        own = tag["clamp"] != "common"
        return [
            {"index": i, "judgement": "complied" if own and p.category == src else "refused"}
            for i, p in enumerate(prompts)
        ]


def test_transfer_matrix_and_normalised_rates_follow_the_planted_path():
    test = _prompts(["a", "b", "a", "b", "c"])
    groups = {"a": [0, 2], "b": [1, 3], "c": [4]}
    feats = {c: torch.tensor([[1, i]]) for i, c in enumerate("abc")}
    sets = cat_mod.CategorySets(feats, torch.tensor([[0, 9]]), feats)
    clamps = _FakeClamps()
    jb, rows = category_jailbreaks(clamps, test, groups, sets)
    transfer = {s: {t: v["complied"] for t, v in r.items()} for s, r in jb["transfer"].items()}
    assert transfer == {s: {t: 1.0 if s == t else 0.0 for t in "abc"} for s in "abc"}
    norm = cat_mod._normalised(jb["raw"])
    assert norm["a"] == {"specific": 1.0, "common": 0.0, "all": 1.0}
    # the specific clamps pin the common set; the common clamp pins the category's own set
    spec = [ivs for tag, ivs in clamps.calls if tag["clamp"] == "specific"]
    assert all(("pin", ((0, 9),)) in ivs for ivs in spec)
    common_a = next(
        ivs for tag, ivs in clamps.calls if tag["clamp"] == "common" and tag["to"] == "a"
    )
    assert common_a == [("scale", ((0, 9),)), ("pin", ((1, 0),))]
    assert len(rows) == 3 * 5 + 2 * 5  # transfer on every prompt; common + all per category
    check = diagonal_check(jb["by_to"], AnalysisConfig(n_bootstrap=200))
    assert check["diagonal"] == 1.0 and check["off_diagonal"] == 0.0
    assert check["difference"] == 1.0 and check["difference_ci95"] == [1.0, 1.0]


def test_selectivity_of_two_latents_each_driven_by_its_category(chat_tokenizer):
    """Two synthetic categories; latent 0 reads the direction that separates category a's
    residuals from b's, latent 1 the opposite one."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    model = ChatModel(make_tiny_model("llama", chat_tokenizer), chat_tokenizer)
    a = ["how do I bake bread at home", "bake a loaf of bread"]
    b = ["tell me a story about a dragon", "a story about a knight and a dragon"]
    tokens = model.tokenize(a + b)
    cap = Capture([0])
    model.forward(tokens, [cap])
    h = cap.get(0)
    m = tokens.prompt_mask[:, :, None].float()
    mean = (h * m).sum(1) / m.sum(1)
    u = mean[:2].mean(0) - mean[2:].mean(0)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=64, d_sae=2))
    with torch.no_grad():
        sae.W_enc.copy_(torch.stack([u, -u], 1) / u.norm())
        sae.b_enc.fill_(float(mean.norm(dim=-1).mean()) / 2)  # both latents fire on both
        sae.b_dec.zero_()
        sae.threshold.zero_()
    saes = SAESet._made({0: sae}, {0: "synthetic"})
    specific = {"a": torch.tensor([[0, 0]]), "b": torch.tensor([[0, 1]])}
    sel = selectivity(model, saes, a + b, {"a": [0, 1], "b": [2, 3]}, specific, batch_size=4)
    f = saes.encode(0, h).masked_fill(~tokens.prompt_mask[:, :, None], 0).amax(1)
    want_a = float(f[:2, 0].mean() / f[2:, 0].mean())
    want_b = float(f[2:, 1].mean() / f[:2, 1].mean())
    assert sel["a"][0] == pytest.approx(want_a, rel=1e-3)
    assert sel["b"][0] == pytest.approx(want_b, rel=1e-3)
    assert sel["a"][0] > 1 and sel["b"][0] > 1
    assert f.min() > 0


def test_a_feature_silent_on_other_categories_gets_the_capped_ratio(chat_tokenizer):
    assert cat_mod.ratio(2.0, 0.0) == cat_mod.MAX_RATIO
    assert cat_mod.ratio(0.0, 0.0) is None
    assert cat_mod.ratio(1.0, 4.0) == 0.25
