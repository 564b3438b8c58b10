"""The reduced run the pipeline tests share: the tiny organism, small counts, two judges."""

from __future__ import annotations

import dataclasses

from refusalscope.analysis.config import AnalysisConfig
from refusalscope.evaluation.config import EvalConfig
from refusalscope.evaluation.faithfulness import FaithfulnessConfig
from refusalscope.pipeline.config import RunConfig
from refusalscope.stages.attribution import AttributionConfig
from refusalscope.stages.candidates import CandidateConfig
from refusalscope.stages.direction import DirectionConfig
from refusalscope.stages.prompts import PromptConfig
from tests.conftest import tiny_organism_config

METHODS = {"base", "cossim", "actdiff", "ap", "fstar", "ablate_direction"}


def small_run(**changes) -> RunConfig:
    cfg = RunConfig(
        organism=tiny_organism_config(),
        prompts=PromptConfig(n_train=16, n_val=8, n_test=10, filter_max_new_tokens=16),
        direction=DirectionConfig(n_sweep=8, max_new_tokens=16),
        candidates=CandidateConfig(k_per_layer=5),
        attribution=AttributionConfig(ig_steps=3, batch_size=8, all_latents_keep=16),
        evaluation=EvalConfig(
            k_star=4,
            sweep_c=(0.0, -3.0),
            sweep_k=(2, 4),
            n_sweep=8,
            max_new_tokens=16,
            n_induction=6,
            n_capability=6,
            induction_multiples=(0.0, 1.0),
            add_coeffs=(0.0, 1.0),
        ),
        # 2 harmful train prompts per category here (the full organism has 16)
        analysis=AnalysisConfig(
            min_category_prompts=1, probe_random_draws=3, n_bootstrap=200, circuit_k=10
        ),
        faithfulness=FaithfulnessConfig(sample_prompts=2, variant_prompts=4, n_bootstrap=200),
        judges=("substring",),  # a second judge on every generation, with agreement
    )
    return dataclasses.replace(cfg, **changes)
