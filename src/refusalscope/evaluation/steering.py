"""What each method clamps: the interventions of a jailbreak or a global edit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from ..runtime.hooks import Intervention, Positions
from ..runtime.interventions import AblateDirection, ScaleFeatures
from ..runtime.saes import SAESet
from ..stages.features import FeatureSets

JAILBREAK_METHODS = ("base", "cossim", "actdiff", "ap", "fstar", "ablate_direction")
"""Every method compared: no edit, the three global feature sets' and the per-prompt sets'
clamps, and directional ablation (the upper bound the features should approach)."""
PER_PROMPT_METHODS = ("fstar", "ap")


@dataclass
class Steering:
    """What the interventions need: SAEs, feature sets, direction and the chosen (c, K*)."""

    saes: SAESet
    features: FeatureSets
    direction: Tensor
    layer: int
    c: float
    k_star: int
    positions: Positions = "all"

    def per_prompt(self, method: str, split: str, rows: Sequence[int] | None = None):
        sets = self.features.per_prompt(method, split, self.k_star)
        return sets if rows is None else [sets[i] for i in rows]

    def jailbreak(self, method: str, split: str) -> list[Intervention]:
        """Interventions for ``method`` on the prompts of ``split`` (in split order)."""
        if method == "base":
            return []
        if method == "ablate_direction":
            return [AblateDirection(self.direction)]
        if method in PER_PROMPT_METHODS:
            feats = self.per_prompt(method, split)
        else:
            feats = self.features.global_set(method, self.k_star)
        return [ScaleFeatures(self.saes, feats, positions=self.positions, c=self.c)]

    def global_(self, method: str) -> list[Intervention]:
        """Prompt-independent interventions (capability cost)."""
        if method == "base":
            return []
        if method == "ablate_direction":
            return [AblateDirection(self.direction)]
        feats = self.features.global_set(method, self.k_star)
        return [ScaleFeatures(self.saes, feats, positions=self.positions, c=self.c)]
