"""A run's output folder: what ``refusalscope run`` writes, and ``load_run`` to read it.

``results.json`` (the summary the report shows), ``prompts.json`` (the splits),
``direction.safetensors`` and ``direction_sweep.json``, ``attribution.safetensors`` (train
and test in one table),
``features.safetensors`` (every method's ranked sets, the per-prompt F* sets included),
``generations.jsonl`` (every judged generation), ``faithfulness.safetensors`` (exact
patching; when that stage ran), ``circuit_graph.json`` and ``circuit_viewer.json`` (the F*
feature graph, ours and for circuit-tracer's viewer; when the circuit ran), ``cards.json``
(a card per selected feature; when the explain stage ran), ``lm_eval.json`` and
``lm_eval_samples.jsonl`` (benchmarks; when configured) and ``report.html``. The set is written
whole into a temp folder and swapped in, results.json last: its presence means the
whole set is there.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ..analysis.circuit import CircuitResult
from ..analysis.explain import ExplainResult
from ..evaluation.capability import CapabilityResult
from ..evaluation.faithfulness import FaithfulnessResult
from ..evaluation.induction import InductionResult
from ..evaluation.jailbreak import JailbreakResult
from ..evaluation.judging import JudgesResult
from ..evaluation.lm_eval_tasks import LMEvalResult
from ..evaluation.sweep import SweepResult
from ..report.html import ReportInputs, render_report
from ..runtime.errors import RefusalScopeError
from ..runtime.files import (
    MARKER,
    check_output_folder,
    load_tensors,
    output_folder,
    read_json,
    read_jsonl,
    save_tensors,
    temp_path,
    write_json,
    write_jsonl,
)
from ..runtime.tokens import pad
from ..stages.attribution import AttributionResult, Attributions
from ..stages.direction import DirectionResult
from ..stages.features import FeatureSets
from ..stages.prompts import PromptSplits
from .analyses import Analyses
from .ground_truth import GroundTruth
from .run import RunResult

RESULTS = "results.json"
ATTRIBUTION = "attribution.safetensors"
GENERATIONS = "generations.jsonl"
REPORT = "report.html"
FAITHFULNESS = FaithfulnessResult.FILE
KIND = "run"
NEED_BYTES = 16 * 2**20
SPLITS = ("train", "test")
"""Attribution splits, by their index in the ``split`` column of attribution.safetensors."""
JUDGED = ("judgements", "scores", "judges_disagree")
"""What the judges stage adds to each line of generations.jsonl."""
_PER_PROMPT = ("score", "jb_token", "metric_clean", "metric_patch", "all_top", "all_top_score")


READ = (
    RESULTS,
    GENERATIONS,
    ATTRIBUTION,
    PromptSplits.FILE,
    FeatureSets.FILE,
    DirectionResult.TENSORS,
    DirectionResult.SWEEP,
)
"""The files ``load_run`` reads."""


def check_out(out: Path) -> Path:
    """Raise unless ``out`` can take a run's outputs (checked before any work)."""
    return check_output_folder(out, KIND, NEED_BYTES)


def write_outputs(res: RunResult, out: Path) -> None:
    """Write the run's output set to ``out`` (see the module docstring).

    A failure while writing leaves the previous set as it was.
    """
    with output_folder(out, KIND, last=(RESULTS,), need_bytes=NEED_BYTES) as tmp:
        save_tensors(tmp / ATTRIBUTION, combined_attribution(res.attribution))
        res.direction.save(tmp)
        res.features.save(tmp)
        res.prompts.save(tmp)
        write_jsonl(tmp / GENERATIONS, res.generations)
        truth = res.ground_truth
        if truth.faithfulness is not None:
            save_tensors(tmp / FAITHFULNESS, truth.faithfulness.tensors)
        if truth.circuit is not None:
            write_json(tmp / CircuitResult.GRAPH, truth.circuit.graph)
            write_json(tmp / CircuitResult.VIEWER, truth.circuit.viewer)
        if res.cards is not None:
            write_json(tmp / ExplainResult.FILE, res.cards.files())
        if res.lm_eval is not None:
            res.lm_eval.save(tmp)
        (tmp / REPORT).write_text(render_report(report_inputs(res)), encoding="utf-8")
        write_json(tmp / RESULTS, res.summary)


def report_inputs(res: RunResult) -> ReportInputs:
    """What the report shows of a run (the same whether just run or read back)."""
    truth, cards = res.ground_truth, res.cards
    return ReportInputs(
        summary=res.summary,
        generations=res.generations,
        cards=cards.cards if cards is not None else (),
        examples=cards.examples if cards is not None else (),
        faithfulness=truth.faithfulness.tensors if truth.faithfulness is not None else None,
        circuit_graph=truth.circuit.graph if truth.circuit is not None else None,
    )


def write_report(folder: str | Path, out: str | Path | None = None) -> Path:
    """Re-render ``report.html`` from a run's output folder (through ``load_run``) into
    ``out`` (default: the folder's own report.html), written whole or not at all."""
    res = load_run(folder)
    target = Path(out).expanduser() if out is not None else Path(folder).expanduser() / REPORT
    if target.is_dir():
        raise RefusalScopeError(f"--out {target} is a folder; give a file name, e.g. report.html")
    if not target.parent.is_dir():
        raise RefusalScopeError(f"--out {target}: folder {target.parent} does not exist")
    page = render_report(report_inputs(res))
    tmp = temp_path(target)
    try:
        tmp.write_text(page, encoding="utf-8")
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def combined_attribution(attr: Attributions) -> dict[str, Tensor]:
    """Train and test attributions in one table; ``split`` is 0 for train, 1 for test.

    Token rows are left-padded to the longest prompt of both splits.
    """
    parts = [attr[k].tensors() for k in SPLITS if k in attr.splits]
    T = max(p["input_ids"].shape[1] for p in parts)
    out = {
        "candidates": parts[0]["candidates"],
        "ref_token": parts[0]["ref_token"],
        "input_ids": torch.cat([pad(list(p["input_ids"]), 0, "left", T) for p in parts]),
        "position_mask": torch.cat(
            [pad(list(p["position_mask"]), False, "left", T) for p in parts]
        ),
        "split": torch.cat(
            [torch.full((len(p["score"]),), i, dtype=torch.long) for i, p in enumerate(parts)]
        ),
    }
    for key in _PER_PROMPT:
        if key in parts[0]:
            out[key] = torch.cat([p[key] for p in parts])
    out.update({k: v for k, v in parts[0].items() if k.startswith("all_mean.")})
    return out


def split_attribution(t: dict[str, Tensor]) -> Attributions:
    """The inverse of ``combined_attribution`` (rows keep the common padding).

    The all-latent means were saved for the train split only (the one AP ranks by).
    """
    out = {}
    for i, name in enumerate(SPLITS):
        rows = t["split"] == i
        if not rows.any():
            continue
        part = {k: v for k, v in t.items() if k in ("candidates", "ref_token")}
        part |= {k: t[k][rows] for k in ("input_ids", "position_mask", *_PER_PROMPT) if k in t}
        if name == "train":
            part |= {k: v for k, v in t.items() if k.startswith("all_mean.")}
        out[name] = AttributionResult.from_tensors(part)
    return Attributions(out)


def load_run(folder: str | Path) -> RunResult:
    """Read every artifact of a ``refusalscope run`` output folder back as typed results."""
    folder = Path(folder).expanduser()
    try:
        marker = read_json(folder / MARKER)
    except (OSError, ValueError):
        marker = None
    if not isinstance(marker, dict) or marker.get("kind") != KIND:
        raise RefusalScopeError(
            f"{folder} is not a refusalscope run output (no {MARKER} of a run); give the --out "
            "folder of `refusalscope run`"
        )
    needed = {*marker.get("files", []), *READ}
    missing = sorted(f for f in needed if not (folder / f).is_file())
    if missing:
        raise RefusalScopeError(
            f"{folder} lacks {', '.join(missing)} (incomplete, or written by an older "
            "refusalscope); rerun `refusalscope run` with this --out"
        )
    summary = read_json(folder / RESULTS)
    rows = read_jsonl(folder / GENERATIONS)
    judges = JudgesResult.from_rows(rows, summary["judges"]) if "judges" in summary else None
    rows = [{k: v for k, v in r.items() if k not in JUDGED} for r in rows]
    by_eval = {e: [r for r in rows if r.get("eval") == e] for e in ("jailbreak", "capability")}
    jailbreak = {
        m: {k: v for k, v in s.items() if k != "complied_ci95"}
        for m, s in summary["jailbreak"].items()
    }
    best = summary.get("sweep_best") or [summary["steering"]["c"], summary["steering"]["k_star"]]
    return RunResult(
        summary=summary,
        prompts=PromptSplits.load(folder),
        direction=DirectionResult.load(folder),
        attribution=split_attribution(load_tensors(folder / ATTRIBUTION)),
        features=FeatureSets.load(folder),
        sweep=SweepResult(summary["sweep"], (float(best[0]), int(best[1]))),
        jailbreak=JailbreakResult(jailbreak, by_eval["jailbreak"]),
        capability=CapabilityResult(summary["capability"], by_eval["capability"]),
        induction=InductionResult(
            summary["induction"], [r for r in rows if r.get("eval") == "induction"]
        ),
        analyses=Analyses.from_summary(summary, rows),
        ground_truth=_ground_truth(folder, summary),
        cards=_cards(folder, summary),
        judges=judges,
        lm_eval=LMEvalResult.load(folder) if "lm_eval" in summary else None,
    )


def _cards(folder: Path, summary: dict) -> ExplainResult | None:
    section = summary.get("explain")
    if not section or "skipped" in section:
        return None
    return ExplainResult.from_files(section, read_json(folder / ExplainResult.FILE))


def _ground_truth(folder: Path, summary: dict) -> GroundTruth:
    """The faithfulness and circuit sections (and their files) of an output folder."""
    out = GroundTruth()
    for name in ("faithfulness", "circuit"):
        section = summary.get(name) or {"skipped": "not in this output (older refusalscope)"}
        if "skipped" in section:
            out.skipped[name] = section["skipped"]
            continue
        if name == "faithfulness":
            out.faithfulness = FaithfulnessResult(section, load_tensors(folder / FAITHFULNESS))
        else:
            graph, viewer = (
                read_json(folder / f) for f in (CircuitResult.GRAPH, CircuitResult.VIEWER)
            )
            out.circuit = CircuitResult(section, graph, viewer)
    return out
