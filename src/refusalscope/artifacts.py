"""Symmetric ``save_*``/``load_*`` pairs for every stage result (safetensors + JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .attribution import AttributionResult
from .candidates import CandidateResult
from .direction import DirectionResult
from .features import FeatureSets
from .files import load_tensors, read_json, read_jsonl, save_tensors, write_json, write_jsonl
from .prompts import PromptSplits
from .types import Prompt

PROMPTS_FILE = "prompts.json"
DIRECTION_FILE = "direction.safetensors"
DIRECTION_SWEEP_FILE = "direction_sweep.json"
CANDIDATES_FILE = "candidates.safetensors"
ATTRIBUTION_FILE = "attribution.safetensors"
FEATURES_FILE = "features.safetensors"
RESULT_FILE = "result.json"
ROWS_FILE = "generations.jsonl"


def save_prompts(folder: Path, p: PromptSplits) -> None:
    write_json(
        folder / PROMPTS_FILE,
        {
            "splits": {k: [x.to_dict() for x in v] for k, v in p.splits.items()},
            "dropped": p.dropped,
            "refusal_token": p.refusal_token,
            "refusal_token_text": p.refusal_token_text,
        },
    )


def load_prompts(folder: Path) -> PromptSplits:
    d = read_json(folder / PROMPTS_FILE)
    splits = {k: [Prompt.from_dict(x) for x in v] for k, v in d["splits"].items()}
    return PromptSplits(splits, d["dropped"], d["refusal_token"], d["refusal_token_text"])


def save_direction(folder: Path, d: DirectionResult) -> None:
    save_tensors(folder / DIRECTION_FILE, {"r": d.r, "layer": torch.tensor(d.layer)})
    write_json(
        folder / DIRECTION_SWEEP_FILE,
        {"sweep": {str(k): v for k, v in d.sweep.items()}, "base": d.base, "layer": d.layer},
    )


def load_direction(folder: Path) -> DirectionResult:
    t = load_tensors(folder / DIRECTION_FILE)
    j = read_json(folder / DIRECTION_SWEEP_FILE)
    sweep = {int(k): v for k, v in j["sweep"].items()}
    return DirectionResult(r=t["r"], layer=int(t["layer"]), sweep=sweep, base=j["base"])


def save_candidates(folder: Path, c: CandidateResult) -> None:
    save_tensors(folder / CANDIDATES_FILE, {"features": c.features, "cosine": c.cosine})


def load_candidates(folder: Path) -> CandidateResult:
    t = load_tensors(folder / CANDIDATES_FILE)
    return CandidateResult(t["features"], t["cosine"])


def attribution_tensors(a: AttributionResult) -> dict[str, torch.Tensor]:
    t = {
        "candidates": a.candidates,
        "score": a.score,
        "input_ids": a.input_ids,
        "position_mask": a.position_mask,
        "jb_token": a.jb_token,
        "ref_token": torch.tensor(a.ref_token),
        "metric_clean": a.metric_clean,
        "metric_patch": a.metric_patch,
    }
    if a.all_top is not None:
        t["all_top"], t["all_top_score"] = a.all_top, a.all_top_score
        t.update({f"all_mean.{l}": v for l, v in a.all_mean.items()})
    return t


def _attribution_from(t: dict[str, torch.Tensor]) -> AttributionResult:
    return AttributionResult(
        candidates=t["candidates"],
        score=t["score"],
        input_ids=t["input_ids"],
        position_mask=t["position_mask"].bool(),
        jb_token=t["jb_token"],
        ref_token=int(t["ref_token"]),
        metric_clean=t["metric_clean"],
        metric_patch=t["metric_patch"],
        all_top=t.get("all_top"),
        all_top_score=t.get("all_top_score"),
        all_mean={int(k.split(".")[1]): v for k, v in t.items() if k.startswith("all_mean.")},
    )


def save_attribution(folder: Path, attr: dict[str, AttributionResult]) -> None:
    for split, a in attr.items():
        save_tensors(folder / f"{split}.{ATTRIBUTION_FILE}", attribution_tensors(a))


def load_attribution(folder: Path) -> dict[str, AttributionResult]:
    out = {}
    for path in sorted(folder.glob(f"*.{ATTRIBUTION_FILE}")):
        out[path.name.split(".")[0]] = _attribution_from(load_tensors(path))
    return out


def save_features(folder: Path, f: FeatureSets) -> None:
    t: dict[str, torch.Tensor] = {}
    for method, sets in f.global_sets.items():
        t[f"global.{method}"] = sets
        t[f"global_score.{method}"] = f.global_scores[method]
    for method, by_split in f.prompt_sets.items():
        for split, lists in by_split.items():
            t[f"prompt.{method}.{split}"] = torch.stack(lists)
    save_tensors(folder / FEATURES_FILE, t)


def load_features(folder: Path) -> FeatureSets:
    t = load_tensors(folder / FEATURES_FILE)
    glob, scores, prompt = {}, {}, {}
    for key, v in t.items():
        kind, *rest = key.split(".")
        if kind == "global":
            glob[rest[0]] = v
        elif kind == "global_score":
            scores[rest[0]] = v
        else:
            prompt.setdefault(rest[0], {})[rest[1]] = list(v)
    return FeatureSets(prompt, glob, scores)


def save_result(folder: Path, result: Any, rows: list[dict] | None = None) -> None:
    write_json(folder / RESULT_FILE, result)
    if rows is not None:
        write_jsonl(folder / ROWS_FILE, rows)


def load_result(folder: Path) -> tuple[Any, list[dict]]:
    rows_path = folder / ROWS_FILE
    rows = read_jsonl(rows_path) if rows_path.exists() else []
    return read_json(folder / RESULT_FILE), rows
