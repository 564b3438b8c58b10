"""The evaluation stages' settings: the sweep grid, generation and the sizes of each test."""

from __future__ import annotations

from dataclasses import dataclass

from ..runtime.config import require
from ..runtime.hooks import Positions


@dataclass(frozen=True)
class EvalConfig:
    """Steering and evaluation settings."""

    k_star: int = 20
    """Features clamped per prompt / globally (used when ``use_sweep`` is off)."""
    c: float = -3.0
    """Clamp scale ``f' = c·f`` (used when ``use_sweep`` is off)."""
    use_sweep: bool = True
    """Evaluate with the (c, K*) that jailbreaks most on the train split."""
    sweep_c: tuple[float, ...] = (0.0, -1.0, -2.0, -3.0)
    """Clamp scales tried in the sweep (authors' grid)."""
    sweep_k: tuple[int, ...] = (10, 20, 30, 40, 50)
    """K* values tried in the sweep (authors' grid); values above the pool are skipped."""
    n_sweep: int = 64
    """Harmful train prompts generated per sweep cell."""
    positions: Positions = "all"
    """Where feature clamps act: ``all`` (prompt and generated tokens) or ``prompt``."""
    max_new_tokens: int = 64
    """Greedy tokens per generation."""
    batch_size: int = 32
    """Prompts per generation batch."""
    induction_values: tuple[float, ...] | None = None
    """Values F* is set to for refusal induction; None: multiples of the mean max
    activation of the global F* on harmful prompts."""
    induction_multiples: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
    """Multiples used when ``induction_values`` is None."""
    add_coeffs: tuple[float, ...] = (0.25, 0.5, 1.0, 1.5, 2.0)
    """Activation-addition coefficients (multiples of r_l*)."""
    n_induction: int = 100
    """Harmless test prompts for refusal induction."""
    n_capability: int = 100
    """Harmless test prompts (and text passages) for the capability cost."""
    text_file: str | None = None
    """Plain text for the CE-on-text cost: a ``.txt`` file (one passage per non-empty line)
    or ``.jsonl`` with a ``text`` field. None: ``text_dataset``, else the organism's
    held-out text; for other models no CE on text is computed (``ce_text`` is null)."""
    text_dataset: str | None = None
    """A named plain-text dataset for the CE-on-text cost when no ``text_file`` is given,
    e.g. ``wikitext:test`` (``refusalscope datasets`` lists them; read from
    ``prompts.datasets_dir``, the Hugging Face cache or the hub)."""

    def __post_init__(self) -> None:
        require(self.k_star > 0, "evaluation.k_star must be positive")
        require(self.positions in ("all", "prompt"), "evaluation.positions: all or prompt")
        require(len(self.sweep_c) > 0 and len(self.sweep_k) > 0, "the sweep grid is empty")
