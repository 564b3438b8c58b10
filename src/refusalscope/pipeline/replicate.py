"""The method and its analyses over several organism seeds: one build is an anecdote.

``replicate(cfg, seeds, out)`` builds (or reuses) one organism per seed, runs everything on
each, writes each run's outputs to ``out/seed-<s>/`` and one table over seeds to
``out/replicate.json`` and ``out/replicate.md``: per figure the value of each seed, the
mean and a 95 % Student-t interval over seeds, and the paired differences F* − each
baseline (seed by seed).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..evaluation.stats import t_interval
from ..runtime.config import to_dict
from ..runtime.errors import RefusalScopeError
from ..runtime.files import check_output_folder, output_folder, write_json
from .config import RunConfig
from .outputs import write_outputs
from .run import run

log = logging.getLogger(__name__)

KIND = "replicate"
TABLE, MARKDOWN = "replicate.json", "replicate.md"


def figures(summary: Mapping[str, Any]) -> dict[str, float | None]:
    """The numbers one run contributes to the table (None where a run has none)."""
    out: dict[str, float | None] = {}
    jb = summary["jailbreak"]
    for method, row in jb.items():
        out[f"jailbreak.{method}"] = row["complied"]
    for method in jb:
        if method != "fstar":
            out[f"paired.fstar-{method}"] = jb["fstar"]["complied"] - jb[method]["complied"]
    out |= _category_figures(summary.get("categories") or {})
    out |= _jailbreak_figures(summary.get("jailbreak_analysis") or {})
    out |= _probe_figures(summary.get("probes") or {})
    out |= _faithfulness_figures(summary.get("faithfulness") or {})
    out |= _circuit_figures(summary.get("circuit") or {})
    return out


def _faithfulness_figures(f: Mapping[str, Any]) -> dict[str, float | None]:
    if "spearman" not in f:
        return {}
    out: dict[str, float | None] = {}
    for what in ("spearman", "spearman_pool", "precision_at_k"):
        for method, row in f.get(what, {}).items():
            out[f"faithfulness.{what}.{method}"] = row["mean"]
    for method, value in f["joint_effect"].items():
        out[f"faithfulness.joint_effect.{method}"] = value
    for name, row in f.get("variants", {}).items():
        out[f"faithfulness.variant.{name}.spearman"] = row["spearman"]["mean"]
        if not row["default"]:
            out[f"faithfulness.variant.{name}.minus_default"] = row["minus_default"]["mean"]
    out["faithfulness.prefilter_recall"] = f["prefilter_recall"]["mean"]
    return out


def _circuit_figures(c: Mapping[str, Any]) -> dict[str, float | None]:
    if "edges" not in c:
        return {}
    return {
        "circuit.relative_drop": c["relative_drop"],
        "circuit.edge_spearman": c["edge_spearman"],
        "circuit.edge_sign_agreement": c["edge_sign_agreement"],
        "circuit.prompts_with_both_roles": float(c["n_prompts"]),
    }


def _mean(values: Sequence[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return sum(v) / len(v) if v else None


def _category_figures(c: Mapping[str, Any]) -> dict[str, float | None]:
    if "checks" not in c:
        return {}
    diag = c["checks"]["transfer_diagonal"]
    return {
        "categories.n_common": float(len(c["common"])),
        "categories.n_specific": float(len(next(iter(c["specific"].values())))),
        "categories.selective_fraction": c["checks"]["selective_fraction"],
        "categories.transfer_diagonal": diag["diagonal"],
        "categories.transfer_off_diagonal": diag["off_diagonal"],
        "categories.diagonal-off_diagonal": diag["difference"],
        "categories.specific/all": _mean([v["specific"] for v in c["jailbreak"].values()]),
        "categories.common/all": _mean([v["common"] for v in c["jailbreak"].values()]),
        "categories.common_in_global_fstar": c["checks"]["common_in_global_fstar"],
    }


def _jailbreak_figures(j: Mapping[str, Any]) -> dict[str, float | None]:
    if "groups" not in j:
        return {}
    out: dict[str, float | None] = {}
    for group in ("successful", "failed"):
        for what in ("harm_drop", "refusal_drop"):
            out[f"jailbreak_analysis.{group}.{what}"] = j["groups"].get(group, {}).get(what)
    for what in ("harm_drop", "refusal_drop"):
        out[f"jailbreak_analysis.successful-failed.{what}"] = j["difference"][what]
    return out


def _probe_figures(p: Mapping[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for part in ("in_distribution", "ood"):
        for probe, row in p.get(part, {}).items():
            for key in ("accuracy", "auroc"):
                out[f"probes.{part}.{probe}.{key}"] = row.get(key)
    ood = p.get("ood", {})
    if "refusal_features" in ood:
        for other in ("random", "dense", "direction"):
            if other in ood:
                a, b = ood["refusal_features"]["auroc"], ood[other]["auroc"]
                out[f"probes.ood.auroc.refusal_features-{other}"] = a - b
    return out


def summarise(per_seed: Mapping[int, Mapping[str, float | None]]) -> dict[str, dict]:
    """Per figure: each seed's value, the mean and the 95 % t-interval over seeds."""
    names = list(dict.fromkeys(n for f in per_seed.values() for n in f))
    out = {}
    for name in names:
        values = {s: f.get(name) for s, f in per_seed.items()}
        present = [v for v in values.values() if v is not None and math.isfinite(v)]
        mean, low, high = t_interval(present)
        out[name] = {
            "seeds": {str(s): v for s, v in values.items()},
            "n": len(present),
            "mean": _round(mean),
            "ci95": [_round(low), _round(high)],
        }
    return out


def _round(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else round(v, 4)


def markdown(table: Mapping[str, dict], seeds: Sequence[int]) -> str:
    """The table as Markdown: figure, mean, 95 % interval, then each seed's value."""
    head = "| figure | mean | 95 % CI (t, over seeds) | " + " | ".join(f"seed {s}" for s in seeds)
    lines = [head + " |", "|---" * (3 + len(seeds)) + "|"]
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    for name, row in table.items():
        ci = row["ci95"]
        interval = "—" if ci[0] is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"
        cells = [fmt(row["seeds"][str(s)]) for s in seeds]
        lines.append(f"| {name} | {fmt(row['mean'])} | {interval} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def replicate(
    cfg: RunConfig,
    seeds: Sequence[int],
    out: Path,
    on_seed: Callable[[int, dict], None] | None = None,
) -> dict[str, Any]:
    """Run ``cfg`` on the organism built with each seed; write and return the table."""
    if cfg.model.path is not None:
        raise RefusalScopeError(
            "replicate builds organisms with different seeds; it needs the organism "
            f"(model.path unset), not {cfg.model.path}"
        )
    if len(set(seeds)) < 2:
        raise RefusalScopeError("replicate needs at least 2 distinct seeds (use --seeds 5)")
    out = check_output_folder(Path(out).expanduser(), KIND)
    per_seed: dict[int, dict[str, float | None]] = {}
    # One output set: the seed folders and the table appear together, or not at all (a
    # rerun after an interruption reuses every cached stage).
    with output_folder(out, KIND, last=(TABLE,)) as tmp:
        for s in seeds:
            seeded = dataclasses.replace(cfg, organism=dataclasses.replace(cfg.organism, seed=s))
            log.info("replicate: seed %d", s)
            res = run(seeded)
            write_outputs(res, tmp / f"seed-{s}")
            per_seed[s] = figures(res.summary)
            if on_seed is not None:
                on_seed(s, per_seed[s])
        table = summarise(per_seed)
        result = {"seeds": list(seeds), "config": to_dict(cfg), "figures": table}
        (tmp / MARKDOWN).write_text(markdown(table, seeds))
        write_json(tmp / TABLE, result)
    return result
