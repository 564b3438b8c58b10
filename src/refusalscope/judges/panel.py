"""Several judges on the same generations: build any judge by name with its settings.

The run's ``judge`` (``substring`` or ``organism``) is cheap and drives the method's
choices; the judges named in ``judges`` re-judge every generation at the end, one at a
time, after the studied model is freed: the HarmBench classifiers and Llama Guard 3
(Hugging Face models), and any OpenAI-compatible endpoint (StrongREJECT rubric or a
refusal-only prompt).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from ..runtime.errors import RefusalScopeError
from . import get_judge, judge_names
from .base import Judge
from .config import HFJudgeConfig, JudgingConfig
from .harmbench import HarmBenchJudge, HarmBenchMistralJudge
from .hf import bitsandbytes_available
from .llamaguard import LlamaGuardJudge
from .openai_judge import RefusalJudge, StrongRejectJudge, check_openai_judge

Question = Literal["refusal", "harm"]

_MODEL_JUDGES: dict[str, Callable[[JudgingConfig], Judge]] = {
    "harmbench": lambda c: HarmBenchJudge(c.harmbench),
    "harmbench-mistral": lambda c: HarmBenchMistralJudge(c.harmbench_mistral),
    "llamaguard": lambda c: LlamaGuardJudge(c.llamaguard),
    "openai-strongreject": lambda c: StrongRejectJudge(c.openai),
    "openai-refusal": lambda c: RefusalJudge(c.openai),
}
_OPENAI = ("openai-strongreject", "openai-refusal")


def panel_names() -> list[str]:
    """Every judge a run can name: the registered ones and the model-based ones."""
    return judge_names() + [n for n in _MODEL_JUDGES if n not in judge_names()]


def check_panel(names: tuple[str, ...], cfg: JudgingConfig) -> None:
    """Raise a ``RefusalScopeError`` for an unknown or repeated name, or for settings a
    named judge cannot run with (no endpoint, no API key in the environment), before any
    model is loaded."""
    known = panel_names()
    for name in names:
        if name not in known:
            raise RefusalScopeError(
                f"unknown judge {name!r} in judges; choose from {', '.join(known)}"
            )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise RefusalScopeError(
            f"judges names {', '.join(repeated)} more than once; list each judge once"
        )
    if any(n in _OPENAI for n in names):
        check_openai_judge(cfg.openai)
    for name in filter(loads_model, names):
        if model_settings(name, cfg).load_in_8bit and not bitsandbytes_available():
            raise RefusalScopeError(
                f"judging.{_section(name)}.load_in_8bit needs the bitsandbytes package, "
                "which is not installed; pip install bitsandbytes, or set it false"
            )


def make_judge(name: str, cfg: JudgingConfig) -> Judge:
    """A new judge by name; model-based judges load their weights on first use."""
    if name in _MODEL_JUDGES:
        return _MODEL_JUDGES[name](cfg)
    return get_judge(name)


def model_settings(name: str, cfg: JudgingConfig) -> HFJudgeConfig:
    """The ``judging`` section of a judge that loads a model (``judging.harmbench_mistral``
    for ``harmbench-mistral``)."""
    assert loads_model(name), f"{name} loads no model"
    return getattr(cfg, _section(name))


def _section(name: str) -> str:
    return name.replace("-", "_")


def loads_model(name: str) -> bool:
    """Whether judge ``name`` loads a model of its own (and so wants the device free)."""
    return name in _MODEL_JUDGES and name not in _OPENAI


def question(judge: Judge) -> Question:
    """What the judge answers: ``refusal`` (did the model refuse? any prompt) or ``harm``
    (is the response an instance of the harmful request? harmful prompts only)."""
    return getattr(judge, "question", "refusal")


def close(judge: Judge) -> None:
    """Free what the judge loaded (a classifier's weights), if anything."""
    closer = getattr(judge, "close", None)
    if closer is not None:
        closer()
