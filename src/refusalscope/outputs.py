"""What ``refusalscope run`` writes to its output folder.

``results.json``, ``attribution.safetensors``, ``direction.safetensors``,
``generations.jsonl`` and ``report.html``, written whole into a temp folder and swapped
in, results.json last: its presence means the whole set is there.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from . import artifacts as art
from .files import check_output_folder, output_folder, save_tensors, write_json, write_jsonl
from .report import render_report

if TYPE_CHECKING:
    from .pipeline import RunResult

RESULTS = "results.json"
ATTRIBUTION = "attribution.safetensors"
DIRECTION = "direction.safetensors"
GENERATIONS = "generations.jsonl"
REPORT = "report.html"
KIND = "run"
NEED_BYTES = 16 * 2**20
"""About what a run's output set takes (1.2 MiB on the organism), with room to spare."""


def check_out(out: Path) -> Path:
    """Raise unless ``out`` can take a run's outputs (checked before any work)."""
    return check_output_folder(out, KIND, NEED_BYTES)


def combined_attribution(attr: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Train and test attributions in one table; ``split`` is 0 for train, 1 for test."""
    splits = [k for k in ("train", "test") if k in attr]
    parts = [art.attribution_tensors(attr[k]) for k in splits]
    T = max(p["input_ids"].shape[1] for p in parts)

    def left_pad(t: torch.Tensor, value) -> torch.Tensor:
        return torch.nn.functional.pad(t, (T - t.shape[1], 0), value=value)

    out = {
        "candidates": parts[0]["candidates"],
        "ref_token": parts[0]["ref_token"],
        "input_ids": torch.cat([left_pad(p["input_ids"], 0) for p in parts]),
        "position_mask": torch.cat([left_pad(p["position_mask"], False) for p in parts]),
        "split": torch.cat(
            [torch.full((len(p["score"]),), i, dtype=torch.long) for i, p in enumerate(parts)]
        ),
    }
    for key in ("score", "jb_token", "metric_clean", "metric_patch", "all_top", "all_top_score"):
        if key in parts[0]:
            out[key] = torch.cat([p[key] for p in parts])
    out.update({k: v for k, v in parts[0].items() if k.startswith("all_mean.")})
    return out


def write_outputs(res: RunResult, out: Path) -> None:
    """results.json, attribution/direction safetensors, generations.jsonl, report.html.

    The set is written into a temp folder inside ``out`` and swapped in with renames,
    results.json last; a failure while writing leaves the previous set as it was.
    """
    with output_folder(out, KIND, last=(RESULTS,), need_bytes=NEED_BYTES) as tmp:
        save_tensors(tmp / ATTRIBUTION, combined_attribution(res.attribution))
        save_tensors(
            tmp / DIRECTION,
            {"r": res.direction.r, "layer": torch.tensor(res.direction.layer)},
        )
        write_jsonl(tmp / GENERATIONS, res.generations)
        (tmp / REPORT).write_text(render_report(res.results))
        write_json(tmp / RESULTS, res.results)
