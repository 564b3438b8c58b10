"""The run's configuration: the model, its SAEs and every stage's settings, and the checks
that run before anything heavy is loaded."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..analysis.config import AnalysisConfig
from ..analysis.explain import ExplainConfig
from ..analysis.explainer import check_explainer
from ..data.corpus import check_datasets_installed
from ..data.pairs import load_pair_file
from ..data.prompts import load_text_passages
from ..data.registry import get_spec, parse_ref
from ..evaluation.config import EvalConfig
from ..evaluation.faithfulness import FaithfulnessConfig
from ..evaluation.lm_eval_tasks import LMEvalConfig, require_lm_eval
from ..judges import check_judge_name
from ..judges.config import JudgingConfig
from ..judges.panel import check_panel
from ..runtime.config import require
from ..runtime.errors import RefusalScopeError
from ..runtime.hf import DType, check_dtype
from ..runtime.saes import check_sae_folder
from ..stages.attribution import AttributionConfig
from ..stages.candidates import CandidateConfig
from ..stages.direction import DirectionConfig
from ..stages.prompts import PromptConfig, check_prompt_files
from .organism import OrganismConfig

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
    "categories",
    "jailbreak_analysis",
    "probes",
    "faithfulness",
    "circuit",
    "explain",
    "lm_eval",
    "judges",
)


@dataclass(frozen=True)
class ModelConfig:
    """Which chat model to study."""

    path: str | None = None
    """Hub id or local folder; None: the embedded organism (built on first use)."""
    device: str | None = None
    """``cuda``, ``cpu``, …; None: a GPU if there is one."""
    dtype: DType | None = None
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
    dtype: DType = "float32"
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
    """The judge the method's choices rest on (filtering, l*, the (c, K*) sweep):
    ``organism`` or ``substring``; None: ``organism`` for the organism, else ``substring``."""
    judges: tuple[str, ...] = ()
    """More judges, run at the end on every generation, one at a time, after the studied
    model is freed: ``harmbench`` (HarmBench's Llama-2-13B classifier, as the paper),
    ``harmbench-mistral``, ``llamaguard``, ``openai-strongreject``, ``openai-refusal``,
    ``substring``, ``organism``. Their tables and their agreement with ``judge`` (Cohen's κ)
    go in results.json["judges"]; disagreeing generations are flagged in generations.jsonl."""
    judging: JudgingConfig = field(default_factory=JudgingConfig)
    """Each model-based judge's model, dtype and batch size, and the OpenAI endpoint."""
    prompts: PromptConfig = field(default_factory=PromptConfig)
    direction: DirectionConfig = field(default_factory=DirectionConfig)
    candidates: CandidateConfig = field(default_factory=CandidateConfig)
    attribution: AttributionConfig = field(default_factory=AttributionConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    faithfulness: FaithfulnessConfig = field(default_factory=FaithfulnessConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    lm_eval: LMEvalConfig | None = None
    """Capability benchmarks through lm-evaluation-harness under each method (``pip
    install 'refusalscope[eval]'``), e.g. ``tasks = ["gsm8k", "arc_challenge"]``; None: none."""


def check_run_config(cfg: RunConfig, force: str | None = None) -> None:
    """Everything that can be checked without loading a model, so that a bad name or path
    fails in a second, not after minutes of loading."""
    if force is not None and force not in STAGES:
        raise RefusalScopeError(f"--force takes one of {', '.join(STAGES)}; got {force!r}")
    if cfg.judge is not None:
        check_judge_name(cfg.judge)
    check_panel(cfg.judges, cfg.judging)
    primary = cfg.judge or ("organism" if cfg.model.path is None else "substring")
    if primary in cfg.judges:
        raise RefusalScopeError(
            f"judges lists {primary!r}, which is already the run's judge; remove it from judges"
        )
    for what, dtype in (("model.dtype", cfg.model.dtype), ("saes.dtype", cfg.saes.dtype)):
        if dtype is not None:
            check_dtype(dtype, what)
    for layer, folder in sorted((cfg.saes.folders or {}).items()):
        check_sae_folder(layer, folder)
    if cfg.evaluation.text_file is not None:
        load_text_passages(cfg.evaluation.text_file)  # exists, right format, not empty
    elif cfg.evaluation.text_dataset is not None:
        name, _ = parse_ref(cfg.evaluation.text_dataset)
        if get_spec(name).kind != "text":
            raise RefusalScopeError(
                f"evaluation.text_dataset {name!r} holds prompts, not plain text; name a text "
                "dataset (e.g. wikitext:test) or use evaluation.text_file"
            )
    if cfg.analysis.jailbreak_pairs is not None:
        load_pair_file(cfg.analysis.jailbreak_pairs)  # exists, both sides on every row
    if cfg.prompts.files or cfg.prompts.dataset_dir or cfg.prompts.datasets:
        check_prompt_files(cfg.prompts)  # parses every file and dataset; warns on duplicates
    elif cfg.model.path is not None:
        raise RefusalScopeError(
            "a real model needs prompts: set prompts.datasets (named datasets, see "
            "`refusalscope datasets`), prompts.dataset_dir (refusal_direction's layout) or "
            "prompts.files"
        )
    if cfg.model.path is not None and no_saes(cfg):
        raise RefusalScopeError("no SAEs configured: set saes.folders or saes.release + saes.ids")
    check_explainer(cfg.explain.explainer)
    if cfg.lm_eval is not None:
        require_lm_eval()
    if cfg.explain.enabled and cfg.explain.corpus_dataset is not None:
        check_datasets_installed()
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


def no_saes(cfg: RunConfig) -> bool:
    """Whether the config names no SAEs (the organism then brings its own)."""
    return not cfg.saes.folders and not cfg.saes.release
