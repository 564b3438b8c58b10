"""What every stage runs with: the loaded model, SAEs and judge, and the per-stage cache."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..judges import Judge, get_judge
from ..runtime.cache import (
    atomic_folder,
    cache_root,
    code_fingerprint,
    is_complete,
    key_lock,
    source_key,
    versions,
)
from ..runtime.config import config_hash, to_dict
from ..runtime.model import ChatModel
from ..runtime.saes import SAESet
from .config import STAGES, RunConfig, check_run_config, no_saes
from .organism import OrganismData, build_organism

log = logging.getLogger(__name__)

R = TypeVar("R")


@dataclass
class Context:
    """Loaded model, SAEs and judge, plus per-stage bookkeeping."""

    cfg: RunConfig
    model: ChatModel
    saes: SAESet
    judge: Judge
    model_key: str
    """The model's contents (local) or id and revision (hub), dtype and system prompt."""
    sae_keys: dict[int, str]
    """Per layer: the SAE's contents (local) or release name (hub)."""
    organism_data: OrganismData | None = None
    """The organism's data when the run studies it (its splits and held-out text)."""
    force_from: int = len(STAGES)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    on_stage: Callable[[str, dict[str, Any]], None] | None = None
    """Called after each stage finishes (computed or loaded), e.g. to report progress."""

    def cached(self, stage: str, key_parts: tuple, compute: Callable[[], R], result: type[R]) -> R:
        """Load stage ``stage`` if complete and not forced, else compute and save it.

        The key covers ``key_parts`` (configs, upstream keys, content of inputs) and the
        code the stage runs: the module defining its ``result`` class (where its compute
        function lives) and everything that module imports, plus the judge's module.
        Under a per-key lock: a second run needing the same stage waits and then loads it.
        """
        code = code_fingerprint(result.__module__, type(self.judge).__module__)
        key = config_hash(code, *key_parts)
        self.keys[stage] = key
        folder = cache_root() / "runs" / stage / key
        forced = STAGES.index(stage) >= self.force_from
        start = time.perf_counter()
        with key_lock(folder):
            hit = is_complete(folder) and not forced
            if hit:
                value = result.load(folder)
            else:
                value = compute()
                meta = {"stage": stage, "key_parts": to_dict(key_parts)}
                with atomic_folder(folder, meta, replace=forced) as tmp:
                    value.save(tmp)
        seconds = round(time.perf_counter() - start, 3)
        self.stages[stage] = {"seconds": seconds, "cached": hit}
        log.info("stage %s: %.1fs", stage, seconds)
        if self.on_stage is not None:
            self.on_stage(stage, self.stages[stage])
        return value


def load_context(cfg: RunConfig, force: str | None = None) -> Context:
    """Load the model (building the organism if needed), SAEs and judge."""
    check_run_config(cfg, force)
    organism_data = None
    if cfg.model.path is None:
        organism = build_organism(cfg.organism)
        model = ChatModel.load(str(organism.model_path), device=cfg.model.device, dtype="float32")
        device = str(model.device)
        if no_saes(cfg):
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


def _load_saes(cfg: RunConfig, device: str = "cpu") -> SAESet:
    s = cfg.saes
    if s.folders:
        return SAESet.from_folders(s.folders, device=device, dtype=s.dtype)
    return SAESet.from_release(s.release, s.ids or {}, device=device, dtype=s.dtype)
