"""Jailbreaks: greedy generations on harmful test prompts under each method, judged."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..judges import Judge
from ..runtime.model import ChatModel
from ..runtime.types import Prompt
from .config import EvalConfig
from .generate import EvalResult, generate_and_judge
from .steering import Steering

log = logging.getLogger(__name__)


class JailbreakResult(EvalResult):
    """``table[method]``: the judged summary (``n``, ``refused``, ``complied``,
    ``degenerate``); rows: every generation with its verdict."""


def compute_jailbreak(
    model: ChatModel,
    steer: Steering,
    methods: Sequence[str],
    prompts: Sequence[Prompt],
    judge: Judge,
    cfg: EvalConfig,
) -> JailbreakResult:
    """Each method's interventions on the harmful test prompts (per-prompt sets aligned
    to the prompts of the ``test`` split, in order)."""
    table, rows = {}, []
    for method in methods:
        judged = generate_and_judge(
            model,
            prompts,
            steer.jailbreak(method, "test"),
            judge,
            cfg,
            {"eval": "jailbreak", "method": method},
            desc=f"jailbreak {method}",
        )
        table[method], rows = judged.summary, rows + judged.rows
        log.info("jailbreak %s: %s", method, judged.summary)
    return JailbreakResult(table, rows)
