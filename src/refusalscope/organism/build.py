"""Build the model organism end to end, cached by its config.

data → tokenizer → chat model → residual activations → one SAE per layer (BatchTopK,
saved as JumpReLU) → behaviour table → direction sweep, written to a folder whose
``organism.json`` says where everything is. The model folder loads with
``AutoModelForCausalLM`` and each SAE folder with ``sae_lens.SAE.load_from_disk`` — the
same paths a real model uses.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..judges import summarize
from ..runtime.cache import (
    atomic_folder,
    cache_root,
    code_fingerprint,
    is_complete,
    key_lock,
    versions,
)
from ..runtime.config import config_hash, require, to_dict
from ..runtime.files import check_output_folder, file_digests, output_folder, read_json, write_json
from ..runtime.hooks import Capture
from ..runtime.model import ChatModel
from ..stages.direction import DirectionConfig, compute_direction
from .data import OrganismData, OrganismDataConfig, generate_data
from .judge import OrganismJudge
from .sae_training import SAETrainConfig, evaluate_sae, save_sae, train_sae
from .sampling import EVAL_SET_NAMES
from .tokenizer import train_chat_tokenizer
from .train import ModelTrainConfig, build_model, collate, encode_chat, encode_plain, train_model

log = logging.getLogger(__name__)

MANIFEST = "organism.json"
COPY_KIND = "organism"
COPY_BYTES = 64 * 2**20
"""About what a copy takes (27 MiB for the default build), checked before building."""


@dataclass(frozen=True)
class OrganismConfig:
    """Everything that determines the organism; its hash is the cache key."""

    seed: int = 0
    """One seed for data, initialisation, batch order and SAE training."""
    data: OrganismDataConfig = field(default_factory=OrganismDataConfig)
    """Synthetic data generator settings (its seed is overridden by ``seed``)."""
    vocab_size: int = 1500
    """BPE vocabulary size."""
    model: ModelTrainConfig = field(default_factory=ModelTrainConfig)
    """Chat model architecture and training (seed overridden by ``seed``)."""
    sae: SAETrainConfig = field(default_factory=SAETrainConfig)
    """SAE training (seed overridden by ``seed``)."""
    sae_max_tokens: int = 300_000
    """Distinct token activations collected per layer; the SAE trainer cycles over them
    (collecting costs a forward pass per token, ~100 s per million here)."""
    eval_max_new_tokens: int = 40
    """Greedy tokens generated per prompt for the behaviour table and sweep."""
    direction: DirectionConfig = field(default_factory=lambda: DirectionConfig(n_sweep=64))
    """Direction sweep settings for the pre-check."""

    def __post_init__(self) -> None:
        require(self.vocab_size >= 300, "vocab_size must be at least 300 (bytes + specials)")
        require(self.sae_max_tokens > 0, "sae_max_tokens must be positive")

    def seeded(self) -> OrganismConfig:
        """The config with ``seed`` pushed into every sub-config."""
        return dataclasses.replace(
            self,
            data=dataclasses.replace(self.data, seed=self.seed),
            model=dataclasses.replace(self.model, seed=self.seed),
            sae=dataclasses.replace(self.sae, seed=self.seed),
        )


@dataclass
class Organism:
    """A built organism on disk."""

    folder: Path
    manifest: dict[str, Any]

    @property
    def model_path(self) -> Path:
        return self.folder / self.manifest["model_path"]

    @property
    def sae_paths(self) -> dict[int, Path]:
        return {int(k): self.folder / v for k, v in self.manifest["sae_paths"].items()}

    @property
    def data_path(self) -> Path:
        return self.folder / self.manifest["data_path"]

    def data(self) -> OrganismData:
        return OrganismData.load(self.data_path)


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 2)
        log.info("organism %s: %.1fs", name, self.seconds[name])


def cache_folder(cfg: OrganismConfig) -> Path:
    """Keyed by the config and the code that builds the organism."""
    return cache_root() / "organism" / config_hash(cfg.seeded(), code_fingerprint(__name__))


def build_organism(
    cfg: OrganismConfig | None = None, out: Path | None = None, force: bool = False
) -> Organism:
    """Build (or reuse from the cache) and optionally copy to ``out``.

    ``out`` must be new, empty or an earlier organism copy; it is checked before the build.
    """
    cfg = (cfg or OrganismConfig()).seeded()
    folder = cache_folder(cfg)
    copy = out is not None and Path(out).expanduser().resolve() != folder.resolve()
    if copy:
        check_output_folder(Path(out), COPY_KIND, COPY_BYTES)
    with key_lock(folder):
        if force or not is_complete(folder):
            meta = {"stage": "organism", "config": to_dict(cfg)}
            with atomic_folder(folder, meta, replace=force) as tmp:
                _build_into(cfg, tmp)
    organism = Organism(folder, read_json(folder / MANIFEST))
    return _copy_to(organism, Path(out)) if copy else organism


def load_organism(folder: Path) -> Organism:
    manifest = Path(folder) / MANIFEST
    require(manifest.is_file(), f"{folder} holds no {MANIFEST}; run `refusalscope organism build`")
    return Organism(Path(folder), read_json(manifest))


def _copy_to(organism: Organism, out: Path) -> Organism:
    items = [p for p in organism.folder.iterdir() if not p.name.startswith((".", "_COMPLETE"))]
    size = sum(f.stat().st_size for p in items for f in [p, *p.rglob("*")] if f.is_file())
    with output_folder(out, COPY_KIND, last=(MANIFEST,), need_bytes=size) as tmp:
        for item in items:
            dest = tmp / item.name
            shutil.copytree(item, dest) if item.is_dir() else shutil.copy2(item, dest)
    return Organism(out, read_json(out / MANIFEST))


def _build_into(cfg: OrganismConfig, folder: Path) -> None:
    timer = _Timer()
    start = time.perf_counter()
    with timer.phase("data"):
        data = generate_data(cfg.data)
        data.save(folder / "data")
    with timer.phase("tokenizer"):
        tokenizer = train_chat_tokenizer(data.all_texts(), cfg.vocab_size)
    with timer.phase("model"):
        hf = build_model(cfg.model, tokenizer)
        plain = [encode_plain(tokenizer, t) for t in data.plain_train]
        seqs = [encode_chat(tokenizer, ex.prompt.instruction, ex.response) for ex in data.train]
        comply = [
            encode_chat(tokenizer, ex.prompt.instruction, ex.response)
            for ex in data.compliance_examples()
        ]
        stats = train_model(hf, seqs + plain, cfg.model, tokenizer.pad_token_id, comply + plain)
        hf.save_pretrained(folder / "model")
        tokenizer.save_pretrained(folder / "model")
    model = ChatModel.load(str(folder / "model"), device="cpu", dtype="float32")
    with timer.phase("saes"):
        sae_paths, sae_quality = _train_saes(cfg, model, data, folder)
    with timer.phase("eval"):
        behaviour = _behaviour(model, data, cfg.eval_max_new_tokens)
        sweep = _direction_sweep(model, data, cfg)
    manifest = {
        "model_path": "model",
        "sae_paths": {str(l): str(p.relative_to(folder)) for l, p in sae_paths.items()},
        "data_path": "data",
        "n_params": sum(p.numel() for p in model.hf.parameters()),
        "build_seconds": round(time.perf_counter() - start, 2),
        "build_split": timer.seconds,
        "train": dataclasses.asdict(stats),
        "config": to_dict(cfg),
        "behavior": behaviour,
        "saes": sae_quality,
        "direction_sweep": sweep["sweep"],
        "direction_base": sweep["base"],
        "direction_layer": sweep["layer"],
        "versions": versions(),
        # same versions + seed + config -> the same bytes (README: "deterministic")
        "weights_sha256": file_digests(folder, "*.safetensors"),
    }
    write_json(folder / MANIFEST, manifest)


def _sae_sequences(data: OrganismData, tokenizer, heldout: bool, seed: int) -> list[list[int]]:
    """Token sequences for SAE training (or held-out evaluation), shuffled.

    Held-out: the evaluation prompts with their reference responses and held-out plain
    text, in the same chat/plain proportion as the training mixture.
    """
    if heldout:
        pairs = [(p, data.reference_response(p)) for s in EVAL_SET_NAMES for p in data.eval_sets[s]]
        n_plain = round(len(pairs) * len(data.plain_train) / max(1, len(data.train)))
        texts = data.plain_heldout[:n_plain]
    else:
        pairs = [(ex.prompt, ex.response) for ex in data.train]
        texts = data.plain_train
    seqs = [encode_chat(tokenizer, p.instruction, r)[0] for p, r in pairs]
    seqs += [encode_plain(tokenizer, t)[0] for t in texts]
    random.Random(seed).shuffle(seqs)  # collection stops early: keep the mixture in any prefix
    return seqs


@torch.no_grad()
def collect_activations(
    model: ChatModel, seqs: Sequence[list[int]], layers: Sequence[int], max_tokens: int
) -> dict[int, Tensor]:
    """Residuals after ``layers`` at every real token except BOS, up to ``max_tokens``."""
    bos, pad = model.tokenizer.bos_token_id, model.pad_id
    out: dict[int, list[Tensor]] = {l: [] for l in layers}
    n = 0
    for i in range(0, len(seqs), 256):
        ids, attn, _ = collate([(s, s) for s in seqs[i : i + 256]], pad)
        cap = Capture(list(layers))
        with model.hooked([cap]):
            model.hf(
                input_ids=ids.to(model.device),
                attention_mask=attn.to(model.device),
                use_cache=False,
                logits_to_keep=1,
            )
        keep = (attn == 1) & (ids != bos)
        for l in layers:
            out[l].append(cap.get(l)[keep.to(model.device)].float().cpu())
        n += int(keep.sum())
        if n >= max_tokens:
            break
    return {l: torch.cat(v)[:max_tokens] for l, v in out.items()}


def _train_saes(
    cfg: OrganismConfig, model: ChatModel, data: OrganismData, folder: Path
) -> tuple[dict[int, Path], dict[str, dict[str, float]]]:
    layers = list(range(model.n_layers))
    train_seqs = _sae_sequences(data, model.tokenizer, heldout=False, seed=cfg.seed)
    held_seqs = _sae_sequences(data, model.tokenizer, heldout=True, seed=cfg.seed)
    acts = collect_activations(model, train_seqs, layers, cfg.sae_max_tokens)
    held = collect_activations(model, held_seqs, layers, 100_000)
    paths, quality = {}, {}
    for l in layers:
        sae_cfg = dataclasses.replace(cfg.sae, seed=cfg.sae.seed * 1000 + l)  # distinct inits
        sae = train_sae(
            acts[l], sae_cfg, hook_name=f"blocks.{l}.hook_resid_post", model_name="organism"
        )
        q = evaluate_sae(sae, held[l])
        quality[str(l)] = {k: round(float(v), 4) for k, v in dataclasses.asdict(q).items()}
        paths[l] = folder / "saes" / f"layer_{l}"
        save_sae(sae, paths[l])
        log.info("SAE layer %d: %s", l, quality[str(l)])
    return paths, quality


def _behaviour(model: ChatModel, data: OrganismData, max_new_tokens: int) -> dict[str, Any]:
    judge = OrganismJudge()
    table = {}
    for name in EVAL_SET_NAMES:
        prompts = data.eval_sets[name]
        gens = model.generate(
            [p.instruction for p in prompts], max_new_tokens=max_new_tokens, desc=name
        )
        table[name] = summarize(judge.judge(prompts, gens.texts))
    return table


def _direction_sweep(model: ChatModel, data: OrganismData, cfg: OrganismConfig) -> dict[str, Any]:
    s = data.splits
    res = compute_direction(
        model,
        s["harmful_train"],
        s["harmless_train"],
        s["harmful_val"],
        s["harmless_val"],
        OrganismJudge(),
        dataclasses.replace(cfg.direction, max_new_tokens=cfg.eval_max_new_tokens),
    )
    sweep = {
        str(l): {"jailbreak": v["jailbreak"], "harmless_complied": v["harmless_ok"]}
        for l, v in res.sweep.items()
    }
    base = {"jailbreak": res.base["jailbreak"], "harmless_complied": res.base["harmless_ok"]}
    return {"sweep": sweep, "base": base, "layer": res.layer}
