"""Abliteration: the refusal direction projected out of the weights (Arditi et al. 2024).

Every matrix that writes to the residual stream is projected onto ``r̂⊥``: the token
embeddings (``E <- E - (E r̂) r̂ᵀ``) and each layer's attention and MLP output projections
(``W <- W - r̂ r̂ᵀ W``, biases alike), so the residual stream is ``⊥ r̂`` everywhere. That is
Arditi et al.'s directional ablation, ``AblateDirection(r, resid_mid=True)``: ``r̂`` removed
before every layer and between its attention and MLP (the default edits only the embedding
and each layer's output, so an MLP still reads its own attention write along ``r̂``).

Post-sublayer norms (Gemma-2/3, OLMo-2) write ``y = D z / rms(z)`` (``D = diag(scale)``,
``1 + w`` on Gemma). There the projection is ``D⁻¹ P D W`` (``P = I - r̂ r̂ᵀ``): ``D z' = P D z``,
so ``y'`` is exactly ``⊥ r̂`` and parallel to the ablated ``P y``, but scaled by
``rms(z) / rms(z')`` per token. No weight edit reproduces an activation-dependent scale, so
these models differ from hook ablation. (andyrdt/refusal_direction's Gemma-2 path applies
plain ``P``, which the post-norm's scale undoes.) Image-token embeddings are not covered.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor, nn

from ..runtime.cache import versions
from ..runtime.config import from_dict
from ..runtime.errors import RefusalScopeError
from ..runtime.files import MARKER, is_temp, read_json, sha256_file, temp_path
from ..runtime.hf import find_decoder_layers
from ..runtime.hooks import check_direction
from ..runtime.model import ChatModel
from ..stages.direction import DirectionResult

log = logging.getLogger(__name__)

CARD = "README.md"
_EMBED_CHUNK = 16384  # rows at a time: a 256k-token vocabulary in float32 is gigabytes


# ------------------------------------------------------------- architectures
@dataclass(frozen=True)
class ResidualWriters:
    """Where one architecture's decoder layer writes to the residual stream."""

    attn_out: str = "self_attn.o_proj"
    """The attention output projection, relative to a decoder layer."""
    mlp_out: str = "mlp.down_proj"
    """The MLP output projection, relative to a decoder layer."""
    attn_post_norm: str | None = None
    """The norm applied to the attention output before the residual add, if any."""
    mlp_post_norm: str | None = None
    """The norm applied to the MLP output before the residual add, if any."""
    norm_offset: float = 0.0
    """The post-norms multiply by ``norm_offset + weight`` (1 for Gemma's ``1 + w``)."""

    @property
    def post_norms(self) -> bool:
        return self.attn_post_norm is not None or self.mlp_post_norm is not None

    def sublayers(self) -> tuple[tuple[str, str | None], ...]:
        return ((self.attn_out, self.attn_post_norm), (self.mlp_out, self.mlp_post_norm))


_PRE_NORM = ResidualWriters()
_POST = dict(attn_post_norm="post_attention_layernorm", mlp_post_norm="post_feedforward_layernorm")

WRITERS: dict[str, ResidualWriters] = {
    "llama": _PRE_NORM,
    "mistral": _PRE_NORM,
    "qwen2": _PRE_NORM,
    "qwen3": _PRE_NORM,
    "gemma": _PRE_NORM,
    "gemma2": ResidualWriters(**_POST, norm_offset=1.0),
    "gemma3_text": ResidualWriters(**_POST, norm_offset=1.0),
    "olmo2": ResidualWriters(**_POST, norm_offset=0.0),
}
"""Residual-stream writers by the (text) config's ``model_type``."""


def writers_for(hf_model: nn.Module) -> ResidualWriters:
    """The table entry of ``hf_model``'s architecture; an error naming the known ones."""
    cfg = hf_model.config
    model_type = getattr(getattr(cfg, "text_config", None) or cfg, "model_type", None)
    if model_type not in WRITERS:
        raise RefusalScopeError(
            f"abliteration does not know where {type(hf_model).__name__} (model_type "
            f"{model_type!r}) writes to the residual stream; known: {', '.join(WRITERS)}. "
            "Add an entry to refusalscope.export.abliterate.WRITERS"
        )
    return WRITERS[model_type]


def _submodule(layer: nn.Module, path: str, i: int) -> nn.Module:
    try:
        return layer.get_submodule(path)
    except AttributeError as e:
        raise RefusalScopeError(
            f"decoder layer {i} has no {path!r}: this transformers version lays the model out "
            "differently; fix its entry in refusalscope.export.abliterate.WRITERS"
        ) from e


# ------------------------------------------------------------------- the edit
@torch.no_grad()
def orthogonalize(hf_model: nn.Module, r: Float[Tensor, " d_model"]) -> None:
    """Project ``r`` out of every residual-stream writer of ``hf_model``, in place.

    The arithmetic is float32; results are cast back to each weight's dtype. Tied input
    and output embeddings are untied first: the unembedding must keep the original matrix.
    """
    writers = writers_for(hf_model)
    emb = hf_model.get_input_embeddings()
    check_direction(r, emb.weight.shape[1], "the refusal direction")
    length = float(r.float().norm())
    if not 0 < length < float("inf"):  # NaN fails too
        raise RefusalScopeError(f"the refusal direction has norm {length}; recompute it")
    _untie_embeddings(hf_model)
    r_hat = r.detach().float().to(emb.weight.device)
    r_hat = r_hat / r_hat.norm()
    for start in range(0, emb.weight.shape[0], _EMBED_CHUNK):
        rows = emb.weight.data[start : start + _EMBED_CHUNK]
        rows.copy_(rows.float() - torch.outer(rows.float() @ r_hat, r_hat))
    for i, layer in enumerate(find_decoder_layers(hf_model)):
        for out_path, norm_path in writers.sublayers():
            norm = _submodule(layer, norm_path, i) if norm_path else None
            scale = None if norm is None else writers.norm_offset + norm.weight.float()
            u, v = _projector(r_hat, scale)
            _project_output(_submodule(layer, out_path, i), u, v)


def _projector(r_hat: Tensor, scale: Tensor | None) -> tuple[Tensor, Tensor]:
    """``(u, v)`` with ``I - u vᵀ`` the projection applied to a sublayer's output ``z``.

    No post-norm: ``u = v = r̂``. A post-norm writes ``D z / rms(z)``, which is ``⊥ r̂``
    iff ``z ⊥ v = D r̂``; ``u = D⁻¹ r̂`` makes it ``D⁻¹ P D``, so the written vector keeps
    the ablated direction. Coordinates the norm zeroes (scale 0) are never written: the
    pseudo-inverse skips them and ``u`` is rescaled so that ``vᵀu = 1`` still holds.
    """
    if scale is None:
        return r_hat, r_hat
    scale = scale.to(r_hat.device)
    v = scale * r_hat
    u = torch.where(scale != 0, r_hat / scale, torch.zeros_like(r_hat))
    overlap = v @ u
    if overlap == 0:  # r̂ lies on coordinates the norm zeroes: nothing to remove
        return torch.zeros_like(r_hat), v
    return u / overlap, v


def _project_output(linear: nn.Module, u: Tensor, v: Tensor) -> None:
    """``W <- W - u (vᵀ W)`` and ``b <- b - u (vᵀ b)`` for a ``[d_model, d_in]`` linear."""
    for p in (linear.weight, getattr(linear, "bias", None)):
        if p is not None:
            x, u, v = p.data.float(), u.to(p.device), v.to(p.device)  # sharded models
            p.data.copy_(x - (torch.outer(u, v @ x) if x.ndim == 2 else u * (v @ x)))


def tied_embeddings(hf_model: nn.Module) -> bool:
    """Whether the input and output embeddings share one matrix."""
    out = hf_model.get_output_embeddings()
    emb = hf_model.get_input_embeddings()
    return out is not None and out.weight.data_ptr() == emb.weight.data_ptr()


def _untie_embeddings(hf_model: nn.Module) -> None:
    """Give the unembedding its own copy of a shared embedding matrix, and say so in the
    config (else loading would tie them again, or warn that they differ)."""
    if tied_embeddings(hf_model):
        out, emb = hf_model.get_output_embeddings(), hf_model.get_input_embeddings()
        out.weight = nn.Parameter(emb.weight.detach().clone(), emb.weight.requires_grad)
        log.info("untied the input and output embeddings before projecting the embeddings")
    for cfg in (hf_model.config, getattr(hf_model.config, "text_config", None)):
        if getattr(cfg, "tie_word_embeddings", False):
            cfg.tie_word_embeddings = False
    # transformers >= 5 keeps the tying plan computed at init: refresh it from the config
    for mod in hf_model.modules():
        if hasattr(mod, "all_tied_weights_keys"):
            mod.all_tied_weights_keys = mod.get_expanded_tied_weights_keys(all_submodels=True)


# ------------------------------------------------------------------ the export
@dataclass(frozen=True)
class RunDirection:
    """What an export needs from a run's output folder."""

    direction: Float[Tensor, " d_model"]
    """The refusal direction at ``layer`` (not normalised)."""
    layer: int
    """The chosen layer ``l*``."""
    model_source: str
    """What ``ChatModel.load`` gets: a hub id or a folder."""
    model_name: str
    """The model as a reader names it (never a machine path)."""
    run_name: str
    """The run folder's name."""
    results_sha256: str
    """SHA-256 of the run's results.json."""
    summary: dict
    """The run's results.json."""


def read_run_direction(run_dir: str | Path) -> RunDirection:
    """The refusal direction, its layer and the model of a ``refusalscope run`` output."""
    # The pipeline (and the organism it may rebuild) is imported only to read a run.
    from ..pipeline.organism import OrganismConfig, build_organism
    from ..pipeline.outputs import KIND, RESULTS

    run_dir = Path(run_dir).expanduser()
    try:
        marker = read_json(run_dir / MARKER)
    except (OSError, ValueError):
        marker = None
    if not isinstance(marker, dict) or marker.get("kind") != KIND:
        raise RefusalScopeError(
            f"{run_dir} is not a refusalscope run output (no {MARKER} of a run); give the "
            "--out folder of `refusalscope run`"
        )
    needed = (RESULTS, DirectionResult.TENSORS, DirectionResult.SWEEP)
    if missing := [f for f in needed if not (run_dir / f).is_file()]:
        raise RefusalScopeError(
            f"{run_dir} lacks {', '.join(missing)} (incomplete?); rerun `refusalscope run` "
            "with this --out"
        )
    summary = read_json(run_dir / RESULTS)
    found = DirectionResult.load(run_dir)
    config = summary.get("config", {})
    path = config.get("model", {}).get("path")
    if path is None:  # the embedded organism: found in (or rebuilt into) the cache
        path = build_organism(from_dict(OrganismConfig, config["organism"], "organism")).model_path
    source = str(path)
    return RunDirection(
        direction=found.direction,
        layer=found.layer,
        model_source=source,
        model_name=str(summary.get("model", {}).get("name", Path(source).name)),
        run_name=run_dir.resolve().name,
        results_sha256=sha256_file(run_dir / RESULTS),
        summary=summary,
    )


def export_abliterated(run_dir: str | Path, out_dir: str | Path, *, device: str = "cpu") -> Path:
    """Write the run's model with its refusal direction orthogonalised out to ``out_dir``.

    ``out_dir`` must be new or empty; it appears whole (weights as safetensors, tokenizer
    and ``README.md`` model card) or not at all. The model keeps its checkpoint's dtype;
    ``device`` only holds it during the projection (a few matrix products).
    """
    out = Path(out_dir).expanduser()
    _check_out(out)
    run = read_run_direction(run_dir)
    model = ChatModel.load(run.model_source, device=device, dtype=_checkpoint_dtype(run))
    expected = run.summary.get("model", {}).get("d_model")
    if expected is not None and expected != model.d_model:
        raise RefusalScopeError(
            f"the run's model had d_model={expected} but {run.model_name} loads with "
            f"{model.d_model}: the model changed since the run; rerun `refusalscope run`"
        )
    tied = tied_embeddings(model.hf)
    orthogonalize(model.hf, run.direction)
    card = model_card(run, writers_for(model.hf), tied=tied, dtype=model.dtype)
    _write_checkpoint(model, out, card)
    log.info("wrote the abliterated %s to %s", run.model_name, out)
    return out


def _checkpoint_dtype(run: RunDirection) -> str:
    """The dtype the checkpoint is stored in (float32 when it does not say)."""
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(run.model_source)
    except (OSError, ValueError):
        return "float32"  # ChatModel.load then names the problem
    stored = [
        getattr(c, "dtype", None) or getattr(c, "torch_dtype", None)
        for c in (cfg, cfg.get_text_config())
    ]
    names = [str(dt).removeprefix("torch.") for dt in stored]
    return next((n for n in names if n in ("float32", "bfloat16", "float16")), "float32")


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise RefusalScopeError(f"--out {out} is a file; give a new or empty folder")
    if out.is_dir() and any(not is_temp(p.name) for p in out.iterdir()):
        raise RefusalScopeError(
            f"--out {out} is not empty; refusalscope never overwrites a folder: give a new one"
        )


def _write_checkpoint(model: ChatModel, out: Path, card: str) -> None:
    """Save into a temp sibling, then rename it into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(out)
    try:
        tmp.mkdir()
        model.hf.save_pretrained(tmp)
        model.tokenizer.save_pretrained(tmp)
        (tmp / CARD).write_text(card, encoding="utf-8")
        _check_out(out)  # again: something may have appeared while saving
        tmp.rename(out)  # replaces a missing or empty folder only
    except OSError as e:
        raise RefusalScopeError(
            f"could not write the checkpoint to {out}: {e.strerror or e} (nothing was left "
            "there); free some space or choose another --out"
        ) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------ the card
_CARD = """\
---
tags: [abliterated, refusal-direction, refusalscope]{base_model}
---

# {name} — abliterated

> **Content warning.** This model's refusal behaviour has been removed: it follows harmful \
instructions that the original model refuses, and its outputs can be offensive, dangerous or \
illegal to act on. It is a research artifact for studying refusal; do not deploy it.

## What was done

Weight orthogonalisation of the refusal direction (Arditi et al. 2024, *Refusal in Language \
Models Is Mediated by a Single Direction*, arXiv:2406.11717). With `r̂` the unit refusal \
direction, every matrix that writes to the residual stream was projected onto `r̂⊥`: the token \
embeddings (`E ← E − (E r̂) r̂ᵀ`) and, in every decoder layer, the attention and MLP output \
projections, weights and biases (`W ← W − r̂ r̂ᵀ W`), in float32, stored in {dtype}. This \
equals removing `r̂` before every decoder layer and between its attention and MLP blocks \
(Arditi et al.'s directional ablation; refusalscope's `AblateDirection(r, resid_mid=True)`). \
The run's own rates below come from its default hook, which edits only the embedding output \
and each layer's output, so there each MLP still reads its own layer's attention write along \
`r̂`.
{caveats}
## Provenance

| | |
|---|---|
| source model | {name} |
| refusal direction | difference in means after layer l* = {layer} |
| run folder | `{run}` |
| results.json SHA-256 | `{sha}` |
| refusalscope | {version} (git {git}) |
| date | {date} (UTC) |
{rates}"""
_TIED = """
The input and output embeddings were tied; they were untied first, so the unembedding keeps \
the original matrix (`tie_word_embeddings: false`).
"""
_POST_NORM = """
**Post-sublayer norms.** This architecture normalises each attention and MLP output (RMSNorm \
times a learned scale `D`) before adding it to the residual stream, so those projections are \
`D⁻¹ (I − r̂ r̂ᵀ) D W`: every write is exactly orthogonal to `r̂` and parallel to the \
hook-ablated write, but the norm rescales it by a per-token factor (`rms(z) / rms(z')`) that \
no weight edit can undo. Generations therefore differ from hook-based directional ablation.
"""
_RATES = """
## In the run (hook ablation of this direction, validation prompts)

Jailbreak rate {jailbreak:.2f} (unablated {jb0:.2f}); harmless prompts answered \
{harmless_ok:.2f} (unablated {ok0:.2f}).
"""


def model_card(
    run: RunDirection,
    writers: ResidualWriters,
    *,
    tied: bool,
    dtype: torch.dtype,
    date: datetime | None = None,
) -> str:
    """The README.md of an exported checkpoint: what was done, from what, and caveats."""
    v = versions()
    path = run.summary.get("config", {}).get("model", {}).get("path")
    hub = path is not None and not Path(run.model_source).exists()
    section = run.summary.get("direction", {})
    ablated, base = section.get("sweep", {}).get(str(run.layer)), section.get("base")
    return _CARD.format(
        base_model=f"\nbase_model: {path}" if hub else "",
        name=run.model_name,
        dtype=str(dtype).removeprefix("torch."),
        caveats=(_TIED if tied else "") + (_POST_NORM if writers.post_norms else ""),
        layer=run.layer,
        run=run.run_name,
        sha=run.results_sha256,
        version=v.get("refusalscope"),
        git=v.get("git_hash") or "unknown",
        date=(date or datetime.now(timezone.utc)).strftime("%Y-%m-%d"),
        rates=_RATES.format(**ablated, jb0=base["jailbreak"], ok0=base["harmless_ok"])
        if ablated and base
        else "",
    )
