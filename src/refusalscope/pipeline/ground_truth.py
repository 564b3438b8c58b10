"""Stages 14–15: exact patching as ground truth for every selection method
(``faithfulness``) and the upstream → downstream circuit among the F* features
(``circuit``). Each can be turned off; the reason is then in ``results.json``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..analysis.circuit import CircuitResult, compute_circuit
from ..evaluation.faithfulness import FaithfulnessResult, compute_faithfulness
from ..evaluation.steering import Steering
from ..stages.features import global_top
from .context import Context


@dataclass
class GroundTruth:
    """The two stages' results (None: skipped, with the reason in ``skipped``)."""

    faithfulness: FaithfulnessResult | None = None
    circuit: CircuitResult | None = None
    skipped: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in ("faithfulness", "circuit"):
            result = getattr(self, name)
            out[name] = result.table if result is not None else {"skipped": self.skipped[name]}
        return out


def run_ground_truth(ctx: Context, d, steer: Steering, upstream: tuple) -> GroundTruth:
    """Both stages on the harmful test prompts, at the run's (c, K*)."""
    c, out = ctx.cfg, GroundTruth()
    prompts = d.prompts.instructions("harmful_test")
    attr = d.attribution["test"]
    if not c.faithfulness.enabled:
        out.skipped["faithfulness"] = "turned off (faithfulness.enabled = false)"
    else:
        train = (d.prompts.instructions("harmful_train"), d.prompts.instructions("harmless_train"))
        out.faithfulness = ctx.cached(
            "faithfulness",
            (*upstream, c.faithfulness),
            lambda: compute_faithfulness(
                ctx.model,
                steer.saes,
                steer.direction,
                attr,
                prompts,
                steer.features,
                train,
                steer.k_star,
                c.attribution,
                c.faithfulness,
                c.evaluation.batch_size,
            ),
            FaithfulnessResult,
        )
    a = c.analysis
    if not a.circuit:
        out.skipped["circuit"] = "turned off (analysis.circuit = false)"
        return out
    k = min(a.circuit_k or steer.k_star, len(attr.candidates))
    settings = (
        a.circuit_k,
        a.last_positions,
        a.n_bootstrap,
        a.seed,
        c.faithfulness.rows_per_forward,
    )
    out.circuit = ctx.cached(
        "circuit",
        (*upstream, settings),
        lambda: compute_circuit(
            ctx.model,
            steer.saes,
            steer.direction,
            attr,
            prompts,
            global_top(d.attribution["train"].score, attr.candidates, k)[0],
            steer.c,
            c.attribution,
            a,
            c.evaluation.batch_size,
            c.faithfulness.rows_per_forward,
        ),
        CircuitResult,
    )
    return out
