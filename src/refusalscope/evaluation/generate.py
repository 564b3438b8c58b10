"""Greedy generations judged, and the table + rows every evaluation stage returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..judges import Judge, summarize
from ..runtime.files import read_json, read_jsonl, write_json, write_jsonl
from ..runtime.hooks import Intervention
from ..runtime.model import ChatModel
from ..runtime.types import Prompt
from .config import EvalConfig


@dataclass
class Judged:
    """Generations of one method on one prompt set, with verdicts."""

    summary: dict
    rows: list[dict] = field(default_factory=list)


def generate_and_judge(
    model: ChatModel,
    prompts: Sequence[Prompt],
    interventions: Sequence[Intervention],
    judge: Judge,
    cfg: EvalConfig,
    tag: dict,
    desc: str | None = None,
) -> Judged:
    gens = model.generate(
        [p.instruction for p in prompts],
        interventions,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        desc=desc,
    )
    verdicts = judge.judge(prompts, gens.texts)
    rows = [
        {**tag, "index": i, "prompt": p.instruction, "response": t, "judgement": v}
        for i, (p, t, v) in enumerate(zip(prompts, gens.texts, verdicts, strict=True))
    ]
    return Judged(summarize(verdicts), rows)


@dataclass
class EvalResult:
    """An evaluation stage's table and the judged generations behind it."""

    table: dict[str, Any]
    rows: list[dict] = field(default_factory=list)
    """One per generation: the tags of its setting, prompt, response and verdict."""

    FILE = "result.json"
    ROWS = "generations.jsonl"

    def save(self, folder: Path) -> None:
        write_json(folder / self.FILE, self.table)
        write_jsonl(folder / self.ROWS, self.rows)

    @classmethod
    def load(cls, folder: Path) -> EvalResult:
        return cls(read_json(folder / cls.FILE), read_jsonl(folder / cls.ROWS))
