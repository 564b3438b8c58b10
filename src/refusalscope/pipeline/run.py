"""The orchestrator: runs the stages in order, each cached by its key.

prompts → direction → candidates → attribution → features → sweep → jailbreak →
capability → induction → categories → jailbreak_analysis → probes (the analyses,
``pipeline.analyses``) → faithfulness → circuit (``pipeline.ground_truth``) → explain
(the feature cards, ``pipeline.explain``) → lm_eval (benchmarks, ``pipeline.tasks``) →
judges (more judges on every generation, ``pipeline.judging``). Each stage is computed
by its module's ``compute_*`` (or evaluation) function, saved under
``$REFUSALSCOPE_CACHE/runs/<stage>/<key>/`` (marked complete last) and reused while its
config, its code and everything upstream are unchanged; ``force`` recomputes a stage and
all stages after it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from ..analysis.explain import ExplainResult
from ..data.prompts import load_text_passages
from ..data.registry import load_texts, parse_ref
from ..evaluation.capability import CapabilityResult, compute_capability
from ..evaluation.induction import InductionResult, compute_induction, induction_values
from ..evaluation.jailbreak import JailbreakResult, compute_jailbreak
from ..evaluation.judging import JudgesResult
from ..evaluation.lm_eval_tasks import LMEvalResult
from ..evaluation.stats import paired_comparison, verdict_table, wilson_interval
from ..evaluation.steering import JAILBREAK_METHODS, Steering
from ..evaluation.sweep import SweepResult, compute_sweep
from ..runtime.cache import versions
from ..runtime.config import config_hash, to_dict
from ..runtime.errors import RefusalScopeError
from ..runtime.model import ChatModel
from ..runtime.types import Prompt
from ..stages.attribution import (
    AttributionConfig,
    Attributions,
    compute_attribution,
)
from ..stages.candidates import CandidateResult, compute_candidates
from ..stages.direction import DirectionResult, compute_direction
from ..stages.features import FeatureSets, compute_features
from ..stages.prompts import (
    PromptSplits,
    compute_prompts,
    dataset_hashes,
    resolve_refusal_token,
    source_fingerprint,
)
from .analyses import Analyses, run_analyses
from .config import RunConfig
from .context import Context, load_context
from .explain import run_explain
from .ground_truth import GroundTruth, run_ground_truth
from .judging import run_judging
from .tasks import run_tasks

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """Everything a run produces; ``load_run`` reads the same back from an output folder."""

    summary: dict[str, Any]
    """``results.json``: config, versions, every table, the chosen (c, K*), stage times."""
    prompts: PromptSplits
    direction: DirectionResult
    attribution: Attributions
    features: FeatureSets
    """Every method's ranked sets: ``features.per_prompt("fstar", "test", k)`` are the
    per-prompt F* sets of the harmful test prompts, in ``prompts.splits`` order."""
    sweep: SweepResult
    jailbreak: JailbreakResult
    capability: CapabilityResult
    induction: InductionResult
    analyses: Analyses = field(default_factory=Analyses)
    """Harm categories, jailbreak prompts and OOD probes (each None when skipped)."""
    ground_truth: GroundTruth = field(default_factory=GroundTruth)
    """Exact patching against every selection method, and the F* circuit (None: skipped)."""
    cards: ExplainResult | None = None
    """One card per selected feature (None: skipped; the reason in ``summary["explain"]``)."""
    judges: JudgesResult | None = None
    """Every generation judged again by each of ``judges`` (None: no judges configured)."""
    lm_eval: LMEvalResult | None = None
    """lm-eval benchmarks under each method (None: ``lm_eval`` not configured)."""

    @property
    def generations(self) -> list[dict]:
        """Every judged generation (jailbreak, capability, induction, the analyses'), as
        written to ``generations.jsonl``; with more judges, each row also carries every
        judge's verdict (``judgements``), scores and whether they disagree."""
        rows = self.jailbreak.rows + self.capability.rows + self.induction.rows
        rows += self.analyses.rows
        return rows if self.judges is None else self.judges.annotate(rows)


@dataclass
class _Discovery:
    prompts: PromptSplits
    direction: DirectionResult
    candidates: CandidateResult
    attribution: Attributions
    features: FeatureSets


def run(
    cfg: RunConfig | None = None,
    force: str | None = None,
    on_stage: Callable[[str, dict[str, Any]], None] | None = None,
) -> RunResult:
    """Run every stage (each cached) and assemble the results.

    ``cfg`` defaults to ``RunConfig()`` (the organism); ``force`` names a stage to recompute
    with every later one; ``on_stage(name, info)`` is called as each stage finishes.
    """
    ctx = load_context(cfg or RunConfig(), force)
    ctx.on_stage = on_stage
    return _evaluate(ctx, _discover(ctx))


def _discover(ctx: Context) -> _Discovery:
    """Stages 1–6: prompts, direction, candidates, LA-IG attribution, feature sets."""
    model, c = ctx.model, ctx.cfg
    organism_splits = ctx.organism_data.splits if ctx.organism_data is not None else None
    gen_tokens = max(
        c.prompts.filter_max_new_tokens, c.direction.max_new_tokens, c.evaluation.max_new_tokens
    )
    files_by_content = dataclasses.replace(
        c.prompts, files=None, dataset_dir=None, datasets_dir=None
    )
    prompts = ctx.cached(
        "prompts",
        (ctx.model_key, files_by_content, source_fingerprint(c.prompts), ctx.judge.name),
        lambda: compute_prompts(
            model, c.prompts, ctx.judge, organism_splits, max_new_tokens=gen_tokens
        ),
        PromptSplits,
    )
    s = prompts.splits
    direction = ctx.cached(
        "direction",
        (ctx.keys["prompts"], c.direction),
        lambda: compute_direction(
            model,
            s["harmful_train"],
            s["harmless_train"],
            s["harmful_val"],
            s["harmless_val"],
            ctx.judge,
            c.direction,
        ),
        DirectionResult,
    )
    r = direction.direction
    cands = ctx.cached(
        "candidates",
        (ctx.keys["direction"], c.saes.dtype, ctx.sae_keys, c.candidates),
        lambda: compute_candidates(ctx.saes, r, c.candidates),
        CandidateResult,
    )
    ref = _refusal_token(model, c.attribution, prompts)

    def attribute(split: str):
        harmful = prompts.instructions(f"harmful_{split}")
        return compute_attribution(model, ctx.saes, harmful, r, cands.features, ref, c.attribution)

    attr = ctx.cached(
        "attribution",
        (ctx.keys["candidates"], c.attribution, ref),
        lambda: Attributions({split: attribute(split) for split in ("train", "test")}),
        Attributions,
    )
    feats = _feature_sets(ctx, prompts, r, cands, attr)
    return _Discovery(prompts, direction, cands, attr, feats)


def _feature_sets(
    ctx: Context, prompts: PromptSplits, r: Tensor, cands: CandidateResult, attr: Attributions
) -> FeatureSets:
    """Stage 6, ranked as deep as the largest K* the evaluation asks for."""
    ev = ctx.cfg.evaluation
    k_max = min(max([ev.k_star, *ev.sweep_k]), len(cands.features))
    return ctx.cached(
        "features",
        (ctx.keys["attribution"], k_max),
        lambda: compute_features(
            ctx.model,
            ctx.saes,
            r,
            attr,
            prompts.instructions("harmful_train"),
            prompts.instructions("harmless_train"),
            k_max,
            ev.batch_size,
        ),
        FeatureSets,
    )


def _refusal_token(model: ChatModel, cfg: AttributionConfig, prompts: PromptSplits) -> int:
    if cfg.refusal_token is not None:
        return resolve_refusal_token(model, cfg.refusal_token)
    if prompts.refusal_token is None:
        raise RefusalScopeError(
            "could not detect the refusal token (no refusals among harmful train prompts); "
            "set attribution.refusal_token"
        )
    return prompts.refusal_token


def _evaluate(ctx: Context, d: _Discovery) -> RunResult:
    """Stages 7–10: the (c, K*) sweep, jailbreaks, capability cost, refusal induction."""
    model, ev, judge = ctx.model, ctx.cfg.evaluation, ctx.judge
    s = d.prompts.splits
    by_content = dataclasses.replace(ev, text_file=None, text_dataset=None)  # texts: by content
    sweep_key = (ctx.keys["features"], by_content)
    sweep = ctx.cached(
        "sweep",
        sweep_key,
        lambda: compute_sweep(model, ctx.saes, d.features, s["harmful_train"], judge, ev),
        SweepResult,
    )
    c_used, k_used = sweep.best if ev.use_sweep else (ev.c, ev.k_star)
    r, layer = d.direction.direction, d.direction.layer
    steer = Steering(ctx.saes, d.features, r, layer, c_used, k_used, ev.positions)
    methods = [m for m in JAILBREAK_METHODS if m != "ap" or "ap" in d.features.global_sets]
    jb = ctx.cached(
        "jailbreak",
        (*sweep_key, c_used, k_used),
        lambda: compute_jailbreak(model, steer, methods, s["harmful_test"], judge, ev),
        JailbreakResult,
    )
    texts = _texts(ctx)
    cap = ctx.cached(
        "capability",
        (*sweep_key, c_used, k_used, config_hash(texts)),
        lambda: compute_capability(model, steer, methods, s["harmless_test"], texts, judge, ev),
        CapabilityResult,
    )
    values = induction_values(model, steer, d.prompts.instructions("harmful_train"), ev)
    ind = ctx.cached(
        "induction",
        (*sweep_key, c_used, k_used, values),
        lambda: compute_induction(model, steer, s["harmless_test"], values, judge, ev),
        InductionResult,
    )
    key = (*sweep_key, c_used, k_used)
    analyses = run_analyses(ctx, d, steer, key)
    truth = run_ground_truth(ctx, d, steer, key)
    cards, skipped = run_explain(
        ctx, d, steer, key, analyses.summary(), jb.rows + cap.rows, texts, truth
    )
    summary = _summary(ctx, d, sweep, jb, cap, ind, (c_used, k_used))
    summary |= analyses.summary() | truth.summary()
    summary["explain"] = cards.table if cards is not None else {"skipped": skipped}
    res = RunResult(summary, d.prompts, d.direction, d.attribution, d.features, sweep, jb, cap,
                    ind, analyses, truth, cards)  # fmt: skip
    return _benchmarks_and_judges(ctx, res, steer, methods, key)


def _benchmarks_and_judges(
    ctx: Context, res: RunResult, steer: Steering, methods: list[str], key: tuple
) -> RunResult:
    """The last stages: lm-eval benchmarks (which still need the model), then the other
    judges on every generation (which may free it first)."""
    res.lm_eval = run_tasks(ctx, steer, methods, key)
    if res.lm_eval is not None:
        res.summary["lm_eval"] = {"metrics": res.lm_eval.metrics, "n": res.lm_eval.n_samples}
    res.judges = run_judging(ctx, res.prompts, res.generations)
    if res.judges is not None:
        res.summary["judges"] = res.judges.summary()
    return res


def _summary(
    ctx: Context,
    d: _Discovery,
    sweep: SweepResult,
    jb: JailbreakResult,
    cap: CapabilityResult,
    ind: InductionResult,
    used: tuple[float, int],
) -> dict[str, Any]:
    """``results.json``: what a reader (and the report) needs, JSON only."""
    model, c, (c_used, k_used) = ctx.model, ctx.cfg, used
    ref = d.attribution["train"].ref_token
    return {
        "config": to_dict(c),
        "versions": versions(),
        "model": {
            "name": display_name(c),
            "organism": c.model.path is None,
            "n_layers": model.n_layers,
            "d_model": model.d_model,
        },
        "prompts": {k: len(v) for k, v in d.prompts.splits.items()}
        | {"dropped": d.prompts.dropped},
        "refusal_token": {"id": ref, "text": model.tokenizer.decode([ref])},
        "direction": {
            "layer": d.direction.layer,
            "sweep": {str(l): v for l, v in d.direction.sweep.items()},
            "base": d.direction.base,
        },
        "steering": {"c": c_used, "k_star": k_used, "from_sweep": c.evaluation.use_sweep},
        "jailbreak": {
            m: {**v, "complied_ci95": _ci(v["complied"], v["n"])} for m, v in jb.table.items()
        },
        "jailbreak_vs_fstar": paired_comparison(jb.rows, "fstar"),
        "jailbreak_by_dataset": _by_dataset(jb.rows, d.prompts.splits["harmful_test"]),
        "datasets": dataset_hashes(c.prompts),
        "capability": cap.table,
        "induction": ind.table,
        "sweep": sweep.table,
        "sweep_best": list(sweep.best),
        "features": _feature_report(d.features, k_used, d.candidates),
        "stages": ctx.stages,
        "cache_keys": ctx.keys,
    }


def display_name(cfg: RunConfig) -> str:
    """The model as a reader names it: the hub id, a local folder's name (never the
    machine's path), or the organism and its seed."""
    path = cfg.model.path
    if path is None:
        return f"model organism (seed {cfg.organism.seed})"
    local = Path(path).expanduser()
    return local.name if local.is_dir() else path


def _by_dataset(rows: list[dict], prompts: list[Prompt]) -> dict[str, Any]:
    """The jailbreak table per harmful test dataset, when the prompts come from named
    datasets (the paper reports HarmBench, JailbreakBench and AdvBench apart)."""
    labels = [p.meta.get("dataset") for p in prompts]
    if not any(labels):
        return {}
    return verdict_table(rows, lambda r: labels[r["index"]])


def _ci(rate: float, n: int) -> list[float]:
    low, high = wilson_interval(round(rate * n), n)
    return [round(low, 4), round(high, 4)]


def _texts(ctx: Context) -> list[str]:
    """Plain text for the CE-on-text cost: a configured file or named dataset, else the
    organism's."""
    ev = ctx.cfg.evaluation
    if ev.text_file is not None:
        return load_text_passages(ev.text_file)
    if ev.text_dataset is not None:
        name, split = parse_ref(ev.text_dataset)
        return [t for t in load_texts(name, split, ctx.cfg.prompts.datasets_dir) if t.strip()]
    if ctx.organism_data is not None:
        return list(ctx.organism_data.plain_heldout)
    log.warning(
        "no evaluation.text_file or text_dataset: the capability cost has no CE on plain text"
    )
    return []


def _feature_report(feats: FeatureSets, k: int, cands: CandidateResult) -> dict[str, Any]:
    glob = feats.global_set("fstar", k)
    scores = feats.global_scores["fstar"][:k]
    return {
        "global": [
            [int(a), int(b), round(float(v), 6)] for (a, b), v in zip(glob, scores, strict=True)
        ],
        "cossim": feats.global_set("cossim", k).tolist(),
        "actdiff": feats.global_set("actdiff", k).tolist(),
        "n_candidates": len(cands.features),
    }
