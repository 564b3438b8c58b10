"""The sweep: clamp scale c × K* on harmful train prompts, which picks the defaults."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..judges import Judge
from ..runtime.errors import RefusalScopeError
from ..runtime.files import read_json, write_json
from ..runtime.interventions import ScaleFeatures
from ..runtime.model import ChatModel
from ..runtime.saes import SAESet
from ..runtime.types import Prompt
from ..stages.features import FeatureSets
from .config import EvalConfig
from .generate import generate_and_judge

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    """Judged summaries per (c, K*) cell and the cell that jailbreaks most."""

    table: dict[str, dict[str, dict]]
    """``table[str(c)][str(k)]``: the judged summary of that cell."""
    best: tuple[float, int]
    """(c, K*) chosen by ``choose_sweep_cell``."""

    FILE = "result.json"

    def save(self, folder: Path) -> None:
        write_json(folder / self.FILE, {"table": self.table, "best": list(self.best)})

    @classmethod
    def load(cls, folder: Path) -> SweepResult:
        d = read_json(folder / cls.FILE)
        return cls(d["table"], (float(d["best"][0]), int(d["best"][1])))


def compute_sweep(
    model: ChatModel,
    saes: SAESet,
    features: FeatureSets,
    prompts: Sequence[Prompt],
    judge: Judge,
    cfg: EvalConfig,
) -> SweepResult:
    """Per-prompt F* clamped with each (c, K*) on harmful train prompts; best cell."""
    n = min(cfg.n_sweep, len(prompts))
    prompts = list(prompts)[:n]
    pool = len(features.prompt_sets["fstar"]["train"][0])
    ks = [k for k in cfg.sweep_k if k <= pool]
    if not ks:
        raise RefusalScopeError(
            f"every K* in evaluation.sweep_k {cfg.sweep_k} exceeds the {pool} ranked features"
        )
    table: dict[str, dict[str, dict]] = {}
    for c in cfg.sweep_c:
        for k in ks:
            sets = [f[:k] for f in features.prompt_sets["fstar"]["train"][:n]]
            iv = ScaleFeatures(saes, sets, positions=cfg.positions, c=c)
            res = generate_and_judge(model, prompts, [iv], judge, cfg, {}, desc=None)
            table.setdefault(str(c), {})[str(k)] = res.summary
            log.info("sweep c=%s K*=%d: %s", c, k, res.summary)
    return SweepResult(table, choose_sweep_cell(table))


def choose_sweep_cell(table: dict[str, dict[str, dict]]) -> tuple[float, int]:
    """The (c, K*) that jailbreaks most; ties go to the smaller K*, then the gentler c.

    ``table[str(c)][str(k)]`` is a judged summary with a ``complied`` rate. Fewer
    features and a clamp closer to 0 change the model less, so they win ties.
    """
    return max(
        ((float(c), int(k)) for c in table for k in table[c]),
        key=lambda ck: (table[str(ck[0])][str(ck[1])]["complied"], -ck[1], ck[0]),
    )
