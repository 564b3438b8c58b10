"""Settings of the analyses (harm categories, jailbreak prompts, OOD probes)."""

from __future__ import annotations

from dataclasses import dataclass

from ..runtime.config import require


@dataclass(frozen=True)
class AnalysisConfig:
    """Which analyses run and how; each runs when its inputs exist (always on the organism)."""

    categories: bool = True
    """Harm-category analysis, when the harmful prompts carry ``category`` labels."""
    min_category_prompts: int = 4
    """Harmful train prompts (after filtering) and test prompts each category needs."""
    category_k_star: int | None = None
    """Size of each category's F*; None: the run's K* (the paper's choice)."""
    only_categories: tuple[str, ...] | None = None
    """Restrict the analysis to these categories (None: every labelled category)."""
    jailbreak_pairs: str | None = None
    """A file of (``vanilla``, ``adversarial``) pairs (WildJailbreak's columns); the
    organism brings its own wrapped pairs."""
    max_pairs: int = 256
    """Pairs used at most (a seeded sample of a larger file)."""
    last_positions: int | None = None
    """Prompt positions at the end where refusal features are read; None: the tokens the
    chat template puts after the user's text (5 on Gemma-2, the authors' number)."""
    circuit: bool = True
    """Upstream → downstream: the harm→refusal relative drop and the edges among F*."""
    circuit_k: int | None = None
    """Size of the F* the circuit labels and connects; None: the run's K*."""
    probes: bool = True
    """OOD probe analysis."""
    probe_k: int = 7
    """Refusal features fed to the probe: the top-k of global F* (authors: 7)."""
    probe_random_draws: int = 20
    """Draws of k random latents for the random-latent probe."""
    probe_C: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)
    """Inverse L2 strengths tried; chosen on the validation split."""
    n_bootstrap: int = 2000
    """Bootstrap resamples behind every interval that is not a Wilson interval."""
    seed: int = 0
    """Seed of the random latents, pair sampling and bootstraps."""

    def __post_init__(self) -> None:
        require(self.min_category_prompts >= 1, "analysis.min_category_prompts must be ≥ 1")
        require(
            self.category_k_star is None or self.category_k_star >= 1,
            "analysis.category_k_star must be positive",
        )
        require(self.max_pairs >= 2, "analysis.max_pairs must be at least 2")
        require(
            self.last_positions is None or self.last_positions >= 1,
            "analysis.last_positions must be positive",
        )
        require(self.circuit_k is None or self.circuit_k >= 1, "analysis.circuit_k must be ≥ 1")
        require(self.probe_k >= 1, "analysis.probe_k must be positive")
        require(self.probe_random_draws >= 1, "analysis.probe_random_draws must be positive")
        require(len(self.probe_C) > 0, "analysis.probe_C needs at least one value")
        require(self.n_bootstrap >= 100, "analysis.n_bootstrap must be at least 100")
