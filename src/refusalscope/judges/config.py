"""Settings of the model-based judges: which classifier checkpoint, how it is loaded and
how much of each response it reads.

One config class per judge checkpoint (all ``HFJudgeConfig``s) so that a config file
which changes one field of a judge, e.g. ``[judging.harmbench] batch_size = 4``, keeps
that judge's default checkpoint instead of needing ``model`` restated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import get_args

from ..runtime.config import require
from ..runtime.hf import DType
from .openai_judge import OpenAIJudgeConfig


@dataclass(frozen=True)
class HFJudgeConfig:
    """A Hugging Face causal LM used as a classifier."""

    model: str
    """Hub id (``org/name``) or local folder saved with ``save_pretrained``."""
    revision: str | None = None
    """Hub branch, tag or commit to load; None: the default branch. Pin a commit for
    results that can be reproduced after the checkpoint is updated."""
    dtype: DType = "bfloat16"
    """Weights' dtype (the non-quantised parts when ``load_in_8bit``)."""
    device: str | None = None
    """``cuda``, ``cuda:1``, ``cpu``, ...; None: CUDA when available, else CPU."""
    load_in_8bit: bool = False
    """Load the weights in 8 bits (needs the ``bitsandbytes`` package): a 13B classifier
    then fits in about 14 GB."""
    batch_size: int = 8
    """Prompts per forward pass."""
    max_response_tokens: int = 512
    """Responses are cut to this many classifier tokens before judging, as HarmBench's
    ``evaluate_completions.py`` does (``--num_tokens 512``, the count includes BOS)."""
    trust_remote_code: bool = False
    """Run Python code shipped with the checkpoint. Off: the supported judges need none."""

    def __post_init__(self) -> None:
        require(bool(self.model.strip()), "a judge's model must name a hub id or a folder")
        require(
            self.dtype in get_args(DType),
            f"judge dtype {self.dtype!r} is unknown; use float32, bfloat16 or float16",
        )
        require(self.batch_size > 0, f"judge batch_size must be positive, got {self.batch_size}")
        require(
            self.max_response_tokens > 1,
            f"judge max_response_tokens must be at least 2 (BOS and one token of the "
            f"response), got {self.max_response_tokens}",
        )


@dataclass(frozen=True)
class HarmBenchConfig(HFJudgeConfig):
    """The ``harmbench`` judge's classifier."""

    model: str = "cais/HarmBench-Llama-2-13b-cls"
    """HarmBench's official test classifier (Llama-2-13B); hub id or local folder."""


@dataclass(frozen=True)
class HarmBenchMistralConfig(HFJudgeConfig):
    """The ``harmbench-mistral`` judge's classifier."""

    model: str = "cais/HarmBench-Mistral-7b-val-cls"
    """HarmBench's validation classifier (Mistral-7B); hub id or local folder."""


@dataclass(frozen=True)
class LlamaGuardConfig(HFJudgeConfig):
    """The ``llamaguard`` judge's classifier."""

    model: str = "meta-llama/Llama-Guard-3-8B"
    """Llama Guard 3 (gated on the hub: accept Meta's licence first); hub id or folder."""


@dataclass(frozen=True)
class JudgingConfig:
    """The model-based judges that re-judge a run's generations."""

    harmbench: HarmBenchConfig = field(default_factory=HarmBenchConfig)
    """Settings of the ``harmbench`` judge (HarmBench Llama-2-13B classifier)."""
    harmbench_mistral: HarmBenchMistralConfig = field(default_factory=HarmBenchMistralConfig)
    """Settings of the ``harmbench-mistral`` judge (HarmBench Mistral-7B classifier)."""
    llamaguard: LlamaGuardConfig = field(default_factory=LlamaGuardConfig)
    """Settings of the ``llamaguard`` judge (Llama Guard 3)."""
    openai: OpenAIJudgeConfig = field(default_factory=OpenAIJudgeConfig)
    """The OpenAI-compatible endpoint of the ``openai-strongreject`` and ``openai-refusal``
    judges (its key is read from the environment variable it names)."""
