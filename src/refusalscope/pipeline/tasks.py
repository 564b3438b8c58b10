"""The lm-eval stage: capability benchmarks (GSM8K, ARC-Challenge, any lm-eval task) under
each method's prompt-independent interventions, when ``lm_eval`` is configured."""

from __future__ import annotations

from collections.abc import Sequence

from ..evaluation.lm_eval_tasks import LMEvalResult, run_lm_eval
from ..evaluation.steering import Steering
from .context import Context


def run_tasks(
    ctx: Context, steer: Steering, methods: Sequence[str], key: tuple
) -> LMEvalResult | None:
    """Every method's lm-eval metrics (None when ``lm_eval`` is not configured)."""
    cfg = ctx.cfg.lm_eval
    if cfg is None:
        return None
    return ctx.cached(
        "lm_eval",
        (*key, cfg, list(methods)),
        lambda: run_lm_eval(
            ctx.model,
            {m: steer.global_(m) for m in methods},
            cfg.tasks,
            cfg.limit,
            cfg.num_fewshot,
            cfg.include_path,
            cfg.apply_chat_template,
            cfg.batch_size,
            max_gen_toks=cfg.max_gen_toks,
        ),
        LMEvalResult,
    )
