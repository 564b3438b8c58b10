"""The orchestrator: runs the stages in order, caching each by config hash.

prompts → direction → candidates → attribution → features → sweep → jailbreak →
capability → induction → outputs. Each stage is computed by its module's
``compute_*``/evaluation function, saved under
``$REFUSALSCOPE_CACHE/runs/<stage>/<hash>/`` (marked complete last) and reused while
its config and everything upstream are unchanged; ``force`` recomputes a stage and
all stages after it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import artifacts as art
from .attribution import AttributionConfig, compute_attribution, resolve_refusal_token
from .cache import (
    atomic_folder,
    cache_root,
    code_fingerprint,
    is_complete,
    key_lock,
    source_key,
    versions,
)
from .candidates import CandidateConfig, compute_candidates
from .config import config_hash, require, to_dict
from .direction import DirectionConfig, compute_direction
from .errors import RefusalScopeError
from .evaluate import (
    JAILBREAK_METHODS,
    EvalConfig,
    Steering,
    capability_cost,
    generate_and_judge,
    induction_values,
    refusal_induction,
    run_sweep,
)
from .features import compute_features
from .judges import check_judge_name, get_judge
from .model import ChatModel, check_dtype
from .organism.build import OrganismConfig, build_organism
from .prompts import (
    PromptConfig,
    check_prompt_files,
    compute_prompts,
    load_text_passages,
    source_fingerprint,
)
from .saes import SAESet, check_sae_folder
from .stats import paired_comparison, wilson_interval

log = logging.getLogger(__name__)

STAGES = (
    "prompts",
    "direction",
    "candidates",
    "attribution",
    "features",
    "sweep",
    "jailbreak",
    "capability",
    "induction",
)


@dataclass(frozen=True)
class ModelConfig:
    """Which chat model to study."""

    path: str | None = None
    """Hub id or local folder; None: the embedded organism (built on first use)."""
    device: str | None = None
    """``cuda``, ``cpu``, …; None: a GPU if there is one."""
    dtype: str | None = None
    """``float32``, ``bfloat16``, …; None: bf16 on a capable GPU, else float32."""
    system_prompt: str | None = None
    """Optional system message put before every prompt."""
    trust_remote_code: bool = False
    """Allow custom modelling code from the hub (off unless asked)."""


@dataclass(frozen=True)
class SAESourceConfig:
    """Which SAEs to attach (residual stream, after the given layers)."""

    folders: dict[int, str] | None = None
    """layer -> local SAELens-format folder."""
    release: str | None = None
    """SAELens release name, e.g. ``gemma-scope-2b-pt-res-canonical``."""
    ids: dict[int, str] | None = None
    """layer -> SAE id within ``release``."""
    dtype: str = "float32"
    """SAE parameter dtype."""

    def __post_init__(self) -> None:
        require(
            not (self.folders and self.release),
            "give saes.folders or saes.release + saes.ids, not both",
        )
        require(bool(self.ids) == bool(self.release), "saes.release needs saes.ids and v.v.")


@dataclass(frozen=True)
class RunConfig:
    """The whole run; saved with the results and hashed per stage for the cache."""

    model: ModelConfig = field(default_factory=ModelConfig)
    saes: SAESourceConfig = field(default_factory=SAESourceConfig)
    organism: OrganismConfig = field(default_factory=OrganismConfig)
    """Used when ``model.path`` is None."""
    judge: str | None = None
    """``organism`` or ``substring``; None: ``organism`` for the organism, else ``substring``."""
    prompts: PromptConfig = field(default_factory=PromptConfig)
    direction: DirectionConfig = field(default_factory=DirectionConfig)
    candidates: CandidateConfig = field(default_factory=CandidateConfig)
    attribution: AttributionConfig = field(default_factory=AttributionConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class Context:
    """Loaded model, SAEs and judge, plus per-stage bookkeeping."""

    cfg: RunConfig
    model: ChatModel
    saes: SAESet
    judge: Any
    model_key: str
    """The model's contents (local) or id and revision (hub), dtype and system prompt."""
    sae_keys: dict[int, str]
    """Per layer: the SAE's contents (local) or release name (hub)."""
    organism_data: Any = None
    force_from: int = len(STAGES)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    on_stage: Callable[[str, dict[str, Any]], None] | None = None
    """Called after each stage finishes (computed or loaded), e.g. to report progress."""

    def cached(self, stage: str, key_parts: tuple, compute: Callable, save, load) -> Any:
        """Load stage ``stage`` if complete and not forced, else compute and save it.

        Under a per-key lock: a second run needing the same stage waits and then loads it.
        """
        key = config_hash(code_fingerprint(), *key_parts)
        self.keys[stage] = key
        folder = cache_root() / "runs" / stage / key
        forced = STAGES.index(stage) >= self.force_from
        start = time.perf_counter()
        with key_lock(folder):
            hit = is_complete(folder) and not forced
            if hit:
                result = load(folder)
            else:
                result = compute()
                meta = {"stage": stage, "key_parts": to_dict(key_parts)}
                with atomic_folder(folder, meta, replace=forced) as tmp:
                    save(tmp, result)
        seconds = round(time.perf_counter() - start, 3)
        self.stages[stage] = {"seconds": seconds, "cached": hit}
        log.info("stage %s: %.1fs", stage, seconds)
        if self.on_stage is not None:
            self.on_stage(stage, self.stages[stage])
        return result


def check_run_config(cfg: RunConfig, force: str | None = None) -> None:
    """Everything that can be checked without loading a model, so that a bad name or path
    fails in a second, not after minutes of loading."""
    if force is not None and force not in STAGES:
        raise RefusalScopeError(f"--force takes one of {', '.join(STAGES)}; got {force!r}")
    if cfg.judge is not None:
        check_judge_name(cfg.judge)
    for what, dtype in (("model.dtype", cfg.model.dtype), ("saes.dtype", cfg.saes.dtype)):
        if dtype is not None:
            check_dtype(dtype, what)
    for layer, folder in sorted((cfg.saes.folders or {}).items()):
        check_sae_folder(layer, folder)
    if cfg.evaluation.text_file is not None:
        load_text_passages(cfg.evaluation.text_file)  # exists, right format, not empty
    if cfg.prompts.files or cfg.prompts.dataset_dir:
        check_prompt_files(cfg.prompts)  # parses every file; warns on duplicates
    elif cfg.model.path is not None:
        raise RefusalScopeError(
            "a real model needs prompts: set prompts.dataset_dir (refusal_direction's layout) "
            "or prompts.files"
        )
    if cfg.model.path is not None and _no_saes(cfg):
        raise RefusalScopeError("no SAEs configured: set saes.folders or saes.release + saes.ids")
    _check_pool(cfg)


def _check_pool(cfg: RunConfig) -> None:
    """The K* in use must fit the candidate pool (SAE layers × k per layer): the fixed
    ``k_star``, or at least one value of the sweep (larger ones are skipped)."""
    n_layers = len(cfg.saes.folders or cfg.saes.ids or {}) or cfg.organism.model.n_layers
    pool = n_layers * cfg.candidates.k_per_layer
    ev = cfg.evaluation
    if ev.use_sweep:
        fits = [k for k in ev.sweep_k if k <= pool]
        what = f"every value of evaluation.sweep_k {list(ev.sweep_k)} is"
        if fits and len(fits) < len(ev.sweep_k):
            skipped = [k for k in ev.sweep_k if k > pool]
            log.warning("the sweep skips K* = %s, above the candidate pool of %d", skipped, pool)
    else:
        fits = [ev.k_star] if ev.k_star <= pool else []
        what = f"evaluation.k_star = {ev.k_star} is"
    if not fits:
        raise RefusalScopeError(
            f"{what} larger than the candidate pool of {pool} latents ({n_layers} SAE "
            f"layers × candidates.k_per_layer = {cfg.candidates.k_per_layer}); lower it to at "
            f"most {pool}, or raise candidates.k_per_layer"
        )


def load_context(cfg: RunConfig, force: str | None = None) -> Context:
    """Load the model (building the organism if needed), SAEs and judge."""
    check_run_config(cfg, force)
    organism_data = None
    if cfg.model.path is None:
        organism = build_organism(cfg.organism)
        model = ChatModel.load(str(organism.model_path), device=cfg.model.device, dtype="float32")
        device = str(model.device)
        if _no_saes(cfg):
            saes = SAESet.from_folders(organism.sae_paths, device=device)
        else:
            saes = _load_saes(cfg, device=device)
        organism_data = organism.data()
        source = config_hash(source_key(organism.model_path), source_key(organism.data_path))
    else:
        m = cfg.model
        model = ChatModel.load(
            m.path,
            device=m.device,
            dtype=m.dtype,
            trust_remote_code=m.trust_remote_code,
            system_prompt=m.system_prompt,
        )
        saes = _load_saes(cfg, device=str(model.device))
        source = _hub_or_local_key(m.path, model)
    saes.check(model.n_layers, model.d_model, model.name)
    judge_name = cfg.judge or ("organism" if cfg.model.path is None else "substring")
    return Context(
        cfg,
        model,
        saes,
        get_judge(judge_name),
        model_key=config_hash(source, str(model.hf.dtype), cfg.model.system_prompt),
        sae_keys={layer: _sae_key(src) for layer, src in saes.sources.items()},
        organism_data=organism_data,
        force_from=STAGES.index(force) if force else len(STAGES),
    )


def _hub_or_local_key(path: str, model: ChatModel) -> str:
    """A local folder by content; a hub model by id and the commit it resolved to."""
    if Path(path).expanduser().is_dir():
        return source_key(path)
    commit = getattr(model.hf.config, "_commit_hash", None)
    if commit is None:
        log.warning("no resolved revision for %s: cached stages are keyed by its id only", path)
    return f"{path}@{commit}"


def _sae_key(source: str) -> str:
    """A local SAE folder by content; a release SAE by name and sae_lens version (whose
    registry maps the name to files)."""
    key = source_key(source)
    return key if key != source else f"{source}@sae_lens-{versions()['sae-lens']}"


def _no_saes(cfg: RunConfig) -> bool:
    return not cfg.saes.folders and not cfg.saes.release


def _load_saes(cfg: RunConfig, device: str = "cpu") -> SAESet:
    s = cfg.saes
    if s.folders:
        return SAESet.from_folders(s.folders, device=device, dtype=s.dtype)
    return SAESet.from_release(s.release, s.ids or {}, device=device, dtype=s.dtype)


@dataclass
class RunResult:
    """Everything ``refusalscope run`` reports."""

    results: dict[str, Any]
    generations: list[dict]
    attribution: dict[str, Any]
    direction: Any


def run_pipeline(
    cfg: RunConfig,
    force: str | None = None,
    on_stage: Callable[[str, dict[str, Any]], None] | None = None,
) -> RunResult:
    """Run every stage (cached) and assemble the results; ``on_stage(name, info)`` is
    called as each stage finishes."""
    ctx = load_context(cfg, force)
    ctx.on_stage = on_stage
    model, c = ctx.model, cfg
    organism_splits = ctx.organism_data.splits if ctx.organism_data is not None else None
    prompts = ctx.cached(
        "prompts",
        (
            ctx.model_key,
            dataclasses.replace(c.prompts, files=None, dataset_dir=None),  # paths: by content
            source_fingerprint(c.prompts),
            ctx.judge.name,
        ),
        lambda: compute_prompts(
            model,
            c.prompts,
            ctx.judge,
            organism_splits,
            max_new_tokens=max(
                c.prompts.filter_max_new_tokens,
                c.direction.max_new_tokens,
                c.evaluation.max_new_tokens,
            ),
        ),
        art.save_prompts,
        art.load_prompts,
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
        art.save_direction,
        art.load_direction,
    )
    r = direction.direction
    cands = ctx.cached(
        "candidates",
        (ctx.keys["direction"], c.saes.dtype, ctx.sae_keys, c.candidates),
        lambda: compute_candidates(ctx.saes, r, c.candidates),
        art.save_candidates,
        art.load_candidates,
    )
    ref = _refusal_token(model, c.attribution, prompts)
    attr = ctx.cached(
        "attribution",
        (ctx.keys["candidates"], c.attribution, ref),
        lambda: {
            split: compute_attribution(
                model,
                ctx.saes,
                prompts.instructions(f"harmful_{split}"),
                r,
                cands.features,
                ref,
                c.attribution,
            )
            for split in ("train", "test")
        },
        art.save_attribution,
        art.load_attribution,
    )
    k_max = max([c.evaluation.k_star, *c.evaluation.sweep_k])
    k_max = min(k_max, len(cands.features))
    feats = ctx.cached(
        "features",
        (ctx.keys["attribution"], k_max),
        lambda: compute_features(
            model,
            ctx.saes,
            r,
            attr,
            prompts.instructions("harmful_train"),
            prompts.instructions("harmless_train"),
            k_max,
            c.evaluation.batch_size,
        ),
        art.save_features,
        art.load_features,
    )
    return _evaluate(ctx, prompts, direction, cands, attr, feats)


def _refusal_token(model: ChatModel, cfg: AttributionConfig, prompts) -> int:
    if cfg.refusal_token is not None:
        return resolve_refusal_token(model, cfg.refusal_token)
    if prompts.refusal_token is None:
        raise RefusalScopeError(
            "could not detect the refusal token (no refusals among harmful train prompts); "
            "set attribution.refusal_token"
        )
    return prompts.refusal_token


def _evaluate(ctx: Context, prompts, direction, cands, attr, feats) -> RunResult:
    model, c, ev = ctx.model, ctx.cfg, ctx.cfg.evaluation
    s = prompts.splits
    sweep_key = (ctx.keys["features"], dataclasses.replace(ev, text_file=None))  # texts: by content
    sweep, best = ctx.cached(
        "sweep",
        sweep_key,
        lambda: run_sweep(model, ctx.saes, feats, s["harmful_train"], ctx.judge, ev),
        lambda f, res: art.save_result(f, {"table": res[0], "best": res[1]}),
        lambda f: (lambda d: (d["table"], tuple(d["best"])))(art.load_result(f)[0]),
    )
    c_used, k_used = best if ev.use_sweep else (ev.c, ev.k_star)
    steer = Steering(
        ctx.saes, feats, direction.direction, direction.layer, c_used, k_used, ev.positions
    )
    methods = [m for m in JAILBREAK_METHODS if m != "ap" or "ap" in feats.global_sets]
    jb, jb_rows = ctx.cached(
        "jailbreak",
        (*sweep_key, c_used, k_used),
        lambda: _jailbreak(ctx, steer, methods, s["harmful_test"]),
        lambda f, res: art.save_result(f, res[0], res[1]),
        art.load_result,
    )
    texts = _texts(ctx)
    cap, cap_rows = ctx.cached(
        "capability",
        (*sweep_key, c_used, k_used, config_hash(texts)),
        lambda: capability_cost(model, steer, methods, s["harmless_test"], texts, ctx.judge, ev),
        lambda f, res: art.save_result(f, res[0], res[1]),
        art.load_result,
    )
    values = induction_values(model, steer, prompts.instructions("harmful_train"), ev)
    ind, ind_rows = ctx.cached(
        "induction",
        (*sweep_key, c_used, k_used, values),
        lambda: refusal_induction(model, steer, s["harmless_test"], values, ctx.judge, ev),
        lambda f, res: art.save_result(f, res[0], res[1]),
        art.load_result,
    )
    results = {
        "config": to_dict(c),
        "versions": versions(),
        "model": {"name": model.name, "n_layers": model.n_layers, "d_model": model.d_model},
        "prompts": {k: len(v) for k, v in s.items()} | {"dropped": prompts.dropped},
        "refusal_token": {
            "id": attr["train"].ref_token,
            "text": model.tokenizer.decode([attr["train"].ref_token]),
        },
        "direction": {
            "layer": direction.layer,
            "sweep": {str(l): v for l, v in direction.sweep.items()},
            "base": direction.base,
        },
        "steering": {"c": c_used, "k_star": k_used, "from_sweep": ev.use_sweep},
        "jailbreak": {m: {**v, "complied_ci95": _ci(v["complied"], v["n"])} for m, v in jb.items()},
        "jailbreak_vs_fstar": paired_comparison(jb_rows, "fstar"),
        "capability": cap,
        "induction": ind,
        "sweep": sweep,
        "features": _feature_report(feats, k_used, cands),
        "stages": ctx.stages,
        "cache_keys": ctx.keys,
    }
    return RunResult(results, jb_rows + cap_rows + ind_rows, attr, direction)


def _jailbreak(ctx: Context, steer: Steering, methods, prompts) -> tuple[dict, list[dict]]:
    table, rows = {}, []
    for method in methods:
        judged = generate_and_judge(
            ctx.model,
            prompts,
            steer.jailbreak(method, "test"),
            ctx.judge,
            ctx.cfg.evaluation,
            {"eval": "jailbreak", "method": method},
            desc=f"jailbreak {method}",
        )
        table[method], rows = judged.summary, rows + judged.rows
        log.info("jailbreak %s: %s", method, judged.summary)
    return table, rows


def _ci(rate: float, n: int) -> list[float]:
    low, high = wilson_interval(round(rate * n), n)
    return [round(low, 4), round(high, 4)]


def _texts(ctx: Context) -> list[str]:
    """Plain text for the CE-on-text cost: a configured file, else the organism's."""
    if ctx.cfg.evaluation.text_file is not None:
        return load_text_passages(ctx.cfg.evaluation.text_file)
    if ctx.organism_data is not None:
        return list(ctx.organism_data.plain_heldout)
    log.warning("no evaluation.text_file: the capability cost has no CE on plain text")
    return []


def _feature_report(feats, k: int, cands) -> dict[str, Any]:
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
