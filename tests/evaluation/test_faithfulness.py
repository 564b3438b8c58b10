"""The faithfulness stage's bookkeeping on known numbers: rankings, sets, settings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from refusalscope.evaluation.faithfulness import FaithfulnessConfig, MethodSets
from refusalscope.evaluation.faithfulness_checks import parse_variant, variant_configs
from refusalscope.evaluation.ranking import (
    paired_difference,
    precision_at_k,
    spearman_rows,
    top_sets,
)
from refusalscope.runtime.errors import RefusalScopeError
from refusalscope.runtime.types import feature_list
from refusalscope.stages.attribution import AttributionConfig


def test_spearman_ties_what_a_method_cannot_rank_last():
    truth = np.array([[4.0, 3.0, 2.0, 1.0]])
    assert spearman_rows(np.array([[4.0, 3.0, 2.0, 1.0]]), truth) == [pytest.approx(1.0)]
    # the last two unrankable: tied last, which is where they belong here
    both_last = spearman_rows(np.array([[2.0, 1.0, -np.inf, -np.inf]]), truth)[0]
    first_last = spearman_rows(np.array([[-np.inf, 1.0, 2.0, -np.inf]]), truth)[0]
    assert both_last > 0.9 and first_last < 0
    assert math.isnan(spearman_rows(np.array([[1.0, 1.0, 1.0, 1.0]]), truth)[0])


def test_precision_and_paired_difference_on_known_sets():
    feats = feature_list([(0, 1), (0, 2), (1, 3), (1, 4)])
    exact = torch.tensor([[0.1, 5.0, 3.0, -1.0]])
    top = top_sets(exact, feats, 2)
    assert top == [{(0, 2), (1, 3)}]
    assert precision_at_k([feature_list([(0, 2), (1, 4)])], top, 2) == [0.5]
    d = paired_difference([0.9, 0.8, math.nan], [0.7, 0.7, 0.1], 200, 0)
    assert d["mean"] == pytest.approx(0.15) and d["n"] == 2


def test_the_evaluated_set_is_the_pool_then_every_selected_latent():
    pool = feature_list([(0, 1), (1, 3)])
    sets = {"fstar": [pool], "ap": [feature_list([(1, 3), (2, 9)])], "cossim": [pool]}
    ms = MethodSets.make(sets, pool)
    assert ms.evaluated.tolist() == [[0, 1], [1, 3], [2, 9]]
    assert ms.in_pool.tolist() == [True, True, False]


def test_variants_are_named_and_checked_before_any_work():
    assert parse_variant("per_layer/midpoint/20") == ("per_layer", "midpoint", 20)
    v = variant_configs(AttributionConfig(), ["joint/left/5"])
    assert list(v) == ["joint/left/10", "joint/left/5"] and v["joint/left/5"].ig_steps == 5
    with pytest.raises(RefusalScopeError, match="not <mixing>/<rule>/<steps>"):
        FaithfulnessConfig(variants=("joint/left/ten",))
    with pytest.raises(RefusalScopeError, match="sample_prompts"):
        FaithfulnessConfig(sample_prompts=-1)
