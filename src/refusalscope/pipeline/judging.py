"""The judges stage's wiring: which generations, freeing the studied model, the cache."""

from __future__ import annotations

import gc
import logging

import torch

from ..evaluation.judging import JudgesResult, compute_judges, row_prompts
from ..judges.panel import loads_model
from ..runtime.config import config_hash
from ..stages.prompts import PromptSplits
from .context import Context

log = logging.getLogger(__name__)


def run_judging(ctx: Context, prompts: PromptSplits, rows: list[dict]) -> JudgesResult | None:
    """Every generation judged by each of ``judges`` (None when none are configured)."""
    names = ctx.cfg.judges
    if not names:
        return None
    known = [p for split in prompts.splits.values() for p in split]
    return ctx.cached(
        "judges",
        (ctx.judge.name, names, ctx.cfg.judging, config_hash(rows)),
        lambda: compute_judges(
            rows,
            row_prompts(rows, known),
            ctx.judge.name,
            names,
            ctx.cfg.judging,
            before_loading=lambda: _free_model(ctx) if any(map(loads_model, names)) else None,
        ),
        JudgesResult,
    )


def _free_model(ctx: Context) -> None:
    """Drop the studied model's weights (the last stage that needs it has run), so that a
    classifier judge has the device to itself."""
    ctx.model.hf.to("meta")
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    log.info("freed the studied model's weights before loading the judges")
