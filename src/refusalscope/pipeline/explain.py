"""Stage 16: the feature cards (``analysis.explain``), after every stage that selects
features, so that each selected feature gets one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..analysis.explain import ExplainInputs, ExplainResult, compute_explain
from ..evaluation.steering import Steering
from ..runtime.config import config_hash
from ..runtime.types import Prompt
from .analyses import pair_source
from .context import Context
from .ground_truth import GroundTruth


def run_explain(
    ctx: Context,
    d,
    steer: Steering,
    upstream: tuple,
    summary: Mapping[str, Any],
    responses: Sequence[Mapping[str, Any]],
    texts: Sequence[str],
    truth: GroundTruth,
) -> tuple[ExplainResult | None, str | None]:
    """The cards, or None and why they were skipped."""
    c = ctx.cfg
    if not c.explain.enabled:
        return None, "turned off (explain.enabled = false)"
    splits = d.prompts.splits
    x = ExplainInputs(
        direction=steer.direction,
        features=steer.features,
        attribution=d.attribution["test"],
        k_star=steer.k_star,
        c=steer.c,
        summary={k: summary.get(k) for k in ("categories", "probes")},
        prompts=[p for name in sorted(splits) for p in splits[name]] + _wrapped(ctx),
        harmful_test=d.prompts.instructions("harmful_test"),
        responses=[
            {k: r[k] for k in ("prompt", "response", "judgement")}
            for r in responses
            if r.get("method") == "base"
        ],
        texts=list(texts),
        attribution_config=c.attribution,
        circuit_nodes=truth.circuit.graph["nodes"] if truth.circuit is not None else (),
        faithfulness=truth.faithfulness.tensors if truth.faithfulness is not None else None,
    )
    key = (
        *upstream,
        c.explain,
        c.attribution,
        config_hash(x.summary, x.responses, x.texts, x.circuit_nodes),
        ctx.keys.get("faithfulness"),
        c.faithfulness.rows_per_forward,
        c.analysis.n_bootstrap,
        c.analysis.seed,
    )
    result = ctx.cached(
        "explain",
        key,
        lambda: compute_explain(
            ctx.model,
            steer.saes,
            x,
            c.explain,
            c.evaluation.batch_size,
            c.faithfulness.rows_per_forward,
            c.analysis.n_bootstrap,
            c.analysis.seed,
        ),
        ExplainResult,
    )
    return result, None


def _wrapped(ctx: Context) -> list[Prompt]:
    """The jailbreak pairs' wrapped prompts, labelled with their wrapper (the corpus's
    ``wrapper`` family; the organism's, or ``analysis.jailbreak_pairs``)."""
    found = pair_source(ctx)
    if found is None:
        return []
    out = []
    for pair in found[0][: ctx.cfg.analysis.max_pairs]:
        p = pair.adversarial
        meta = {**p.meta, "wrapper": pair.kind or p.meta.get("wrapper") or "wrapped"}
        out.append(
            Prompt(p.instruction, True if p.harmful is None else p.harmful, p.category, meta)
        )
    return out
