"""Presets as run configs, and ``--dry-run``: what a run would load, and how big it is,
resolved from the SAE registry, the architecture facts and the dataset registry alone
(no weights are downloaded; datasets are located on disk, not fetched)."""

from __future__ import annotations

from typing import Any

from ..data.registry import get_spec, parse_ref
from ..data.sources import find_on_disk
from ..judges.config import JudgingConfig
from ..judges.panel import loads_model, model_settings
from ..runtime.errors import RefusalScopeError
from .config import RunConfig, no_saes
from .presets import (
    DTYPE_BYTES,
    PRESET_KEY,
    describe_preset,
    gb,
    model_facts,
    preset_run_config,
    resolve_preset,
)

PLAIN_TEXT = "wikitext:test"
"""The plain text the presets measure CE on (real text, not the model's own answers)."""
BENCHMARKS = {"tasks": ["gsm8k", "arc_challenge"], "limit": 250}
"""The presets' lm-eval benchmarks (the paper's GSM8K and ARC-Challenge), 250 items each."""
JUDGE_PARAMETERS = {
    "cais/HarmBench-Llama-2-13b-cls": 13_015_864_320,  # Llama-2-13B
    "cais/HarmBench-Mistral-7b-val-cls": 7_241_732_096,  # Mistral-7B-v0.1
    "meta-llama/Llama-Guard-3-8B": 8_030_261_248,  # Llama-3.1-8B
}


def preset_config(name: str) -> dict[str, Any]:
    """Preset ``name`` as a run-config dict: model, SAEs, the authors' defaults, named
    datasets (the jailbreak table per HarmBench, JailbreakBench and AdvBench), the cheap
    substring judge for the method's choices and the paper's HarmBench classifier on every
    generation, CE on WikiText and GSM8K / ARC-Challenge through lm-eval."""
    raw = preset_run_config(name)
    extra = raw.pop(PRESET_KEY)
    datasets = {split: [ref] for split, ref in extra["prompt_splits"].items()}
    datasets["harmful_test"] = list(extra["jailbreak_sets"])
    raw["prompts"] = {"datasets": datasets}
    raw["judge"] = "substring"
    raw["judges"] = [j for j in extra["judges"] if j != "substring"]
    raw["evaluation"] = {**raw.get("evaluation", {}), "text_dataset": PLAIN_TEXT}
    raw["lm_eval"] = dict(BENCHMARKS)
    return raw


def describe_run(cfg: RunConfig, preset: str | None = None) -> str:
    """The ``--dry-run`` text: model and SAEs (with sizes), datasets and where each would
    be read from, benchmarks and judges (with sizes)."""
    lines = [describe_preset(resolve_preset(preset))] if preset else _model_lines(cfg)
    lines.append("")
    lines += _dataset_lines(cfg)
    if cfg.lm_eval is not None:
        t = cfg.lm_eval
        lines.append(f"benchmarks (lm-eval): {', '.join(t.tasks)}, limit {t.limit}")
    lines += _judge_lines(cfg)
    return "\n".join(lines)


def _model_lines(cfg: RunConfig) -> list[str]:
    m, s = cfg.model, cfg.saes
    if m.path is None:
        return ["model: the embedded model organism (built on first use, ~9 min on 2 cores)"]
    out = [f"model: {m.path} ({m.dtype or 'auto dtype'}){_size(m.path, m.dtype)}"]
    if no_saes(cfg):
        return out + ["SAEs: none configured"]
    layers = sorted((s.folders or s.ids or {}).items())
    source = f"release {s.release}" if s.release else "local folders"
    out.append(f"SAEs ({source}, {s.dtype}), {len(layers)} layers:")
    out += [f"  layer {layer}: {sae}" for layer, sae in layers]
    return out


def _size(model_id: str, dtype: str | None) -> str:
    try:
        n = model_facts(model_id)["parameters"]
    except RefusalScopeError:  # not a model we hold facts for: the load shows its size
        return ""
    return f", {n / 1e9:.2f} B parameters, {gb(n * DTYPE_BYTES[dtype or 'bfloat16'])}"


def _dataset_lines(cfg: RunConfig) -> list[str]:
    p = cfg.prompts
    out = ["datasets:"]
    refs = {ref: split for split, rs in (p.datasets or {}).items() for ref in rs}
    for split, files in sorted((p.files or {}).items()):
        out.append(f"  {split}: file {files}")
    if p.dataset_dir:
        out.append(f"  all splits: refusal_direction layout in {p.dataset_dir}")
    text = cfg.evaluation.text_dataset if cfg.evaluation.text_file is None else None
    for ref, use in [*refs.items(), *([(text, "plain text (CE)")] if text else [])]:
        name, split = parse_ref(ref)
        spec = get_spec(name)
        split = split or spec.default_split
        found = find_on_disk(spec, split, p.datasets_dir)
        entry = spec.splits[split]
        url = spec.source.url(entry.fetch or entry.path)
        where = f"on disk: {found}" if found else f"download: {url}"
        out.append(f"  {ref} -> {use} ({where})")
    if len(out) == 1:
        out.append("  the organism's own splits")
    return out


def _judge_lines(cfg: RunConfig) -> list[str]:
    primary = cfg.judge or ("organism" if cfg.model.path is None else "substring")
    out = [f"judge for the method's choices: {primary}"]
    j: JudgingConfig = cfg.judging
    for name in cfg.judges:
        if loads_model(name):
            jc = model_settings(name, j)
            n = JUDGE_PARAMETERS.get(jc.model)
            size = f", {gb(n * DTYPE_BYTES[jc.dtype])} in {jc.dtype}" if n else ""
            out.append(f"judge on every generation: {name} ({jc.model}{size}; loaded after "
                       "the studied model is freed)")  # fmt: skip
        elif name.startswith("openai"):
            endpoint = f"{j.openai.model} at {j.openai.base_url}"
            out.append(f"judge on every generation: {name} ({endpoint})")
        else:
            out.append(f"judge on every generation: {name}")
    return out
