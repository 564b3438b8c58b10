"""Refusal induction: harmless prompts with the global F* (or CosSim) set to a sweep of
values, against activation addition of the refusal direction."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..judges import Judge
from ..runtime.hooks import Intervention
from ..runtime.interventions import AddDirection, SetFeatures
from ..runtime.model import ChatModel
from ..runtime.types import Prompt
from ..stages.features import mean_max_activations
from .config import EvalConfig
from .generate import EvalResult, generate_and_judge
from .steering import Steering


class InductionResult(EvalResult):
    """``table[method][str(value)]``: the refusal rate; rows: the judged generations."""


def induction_values(
    model: ChatModel, steer: Steering, harmful: Sequence[str], cfg: EvalConfig
) -> list[float]:
    """Explicit values, or multiples of the global F*'s mean max activation."""
    if cfg.induction_values is not None:
        return list(cfg.induction_values)
    feats = steer.features.global_set("fstar", steer.k_star)
    latents = {int(l): feats[feats[:, 0] == l, 1] for l in feats[:, 0].unique()}
    acts = mean_max_activations(model, steer.saes, harmful, latents, cfg.batch_size)
    scale = float(torch.cat(list(acts.values())).mean())
    return [round(m * scale, 4) for m in cfg.induction_multiples]


def compute_induction(
    model: ChatModel,
    steer: Steering,
    harmless: Sequence[Prompt],
    values: Sequence[float],
    judge: Judge,
    cfg: EvalConfig,
) -> InductionResult:
    """Refusal rate on harmless prompts: F*/CosSim set to each value, activation addition."""
    harmless = list(harmless)[: cfg.n_induction]
    table: dict[str, dict[str, float]] = {}
    rows: list[dict] = []
    settings: list[tuple[str, float, list[Intervention]]] = []
    for method in ("fstar", "cossim"):
        feats = steer.features.global_set(method, steer.k_star)
        for v in values:
            clamp = SetFeatures(steer.saes, feats, positions=steer.positions, v=v)
            settings.append((method, v, [clamp]))
    for coeff in cfg.add_coeffs:
        add = AddDirection(steer.direction, steer.layer, coeff)
        settings.append(("add_direction", coeff, [add]))
    for method, value, ivs in settings:
        tag = {"eval": "induction", "method": method, "value": value}
        judged = generate_and_judge(model, harmless, ivs, judge, cfg, tag)
        table.setdefault(method, {})[str(value)] = judged.summary["refused"]
        rows += judged.rows
    return InductionResult(table, rows)
