"""Model presets: a chat model, the pretrained SAEs to attach and the authors' defaults,
resolved against sae_lens's pretrained-SAE registry without downloading anything.

A preset names its SAEs by release, id template, width and variant; the ids are looked
up per layer in the installed registry (``saes_map``), never typed by hand, so a layer
the release lacks fails at resolution. ``preset_models.json`` holds the presets and each
model's architecture facts (from its published ``config.json``; configs and weights
cannot be fetched offline).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

from ..runtime.config import require, to_dict
from ..runtime.errors import RefusalScopeError
from ..runtime.hf import DType, check_dtype
from ..runtime.saes import hook_layer

PRESET_KEY = "preset"
"""Key of ``preset_run_config``'s dict for what RunConfig has no field for (datasets, judges)."""
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def width_latents(width: str) -> int:
    """``16k`` → 16384, ``65k`` → 65536, ``1m`` → 1048576: releases name powers of two
    by their rounded size."""
    m = re.fullmatch(r"(\d+)([km])", str(width).strip().lower())
    if not m:
        raise RefusalScopeError(f"SAE width {width!r} is not like 16k, 65k or 1m")
    approx = int(m[1]) * (1000 if m[2] == "k" else 1_000_000)
    n = 1 << round(math.log2(approx))
    require(abs(n - approx) < 0.05 * n, f"SAE width {width!r} is not a rounded power of two")
    return n


@dataclass(frozen=True)
class Preset:
    """A chat model, the SAEs to attach to it and the defaults to run it with."""

    name: str
    """What the CLI calls it (``--preset gemma-2-2b-it``)."""
    model: str
    """Hugging Face hub id of the chat model (a key of ``preset_models.json``)."""
    release: str
    """sae_lens release holding the SAEs."""
    sae_id: str
    """Template of the release's SAE ids, with ``{layer}``, ``{width}`` and ``{variant}``."""
    width: str
    """SAE width as the release writes it: ``16k``, ``65k``, ``1m`` …"""
    variant: str
    """The L0/variant part of the id: ``canonical``, ``medium``, ``big``, ``8x`` …"""
    layers: tuple[int, ...] | Literal["all", "available"] = "all"
    """``all``: every model layer (a missing SAE is an error); ``available``: the layers
    the release has for this width and variant; or the layers themselves."""
    dtype: DType = "bfloat16"
    """Model dtype (the published checkpoints are bfloat16)."""
    sae_dtype: DType = "bfloat16"
    """SAE parameter dtype: the model's (26 layers of 65k SAEs are 31 GB in float32)."""
    system_role: bool = True
    """Whether the chat template takes a system message (``model.system_prompt``)."""
    chat_notes: str = ""
    """What the chat template does that matters for prompts and positions."""
    direction_layer: int | None = None
    """The authors' ``l*``; None where none is published (the sweep decides)."""
    refusal_token: str | None = None
    """The authors' refusal token; None: detected from the model's own refusals."""
    clamp_c: float | None = None
    """The authors' jailbreak clamp scale ``c``."""
    k_star: int | None = None
    """The authors' ``K*``."""
    induction_values: tuple[float, ...] | None = None
    """The values the authors set F* to for refusal induction."""
    prompt_splits: tuple[tuple[str, str], ...] = ()
    """(split, dataset ref) pairs; split names as in ``prompts.files``."""
    jailbreak_sets: tuple[str, ...] = ()
    """Dataset refs the jailbreak rate is reported on."""
    judges: tuple[str, ...] = ()
    """Judge names, the main one first."""
    notes: str = ""
    """Anything else to know before loading it."""

    def __post_init__(self) -> None:
        require("{layer}" in self.sae_id, f"preset {self.name}: sae_id needs a {{layer}} field")
        width_latents(self.width)
        check_dtype(self.dtype, "preset dtype")
        check_dtype(self.sae_dtype, "preset sae_dtype")
        ok = self.layers in ("all", "available") or (
            bool(self.layers) and all(type(x) is int and x >= 0 for x in self.layers)
        )
        require(ok, f"preset {self.name}: layers is 'all', 'available' or layer indices")


@cache
def _package_data() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("preset_models.json").read_text("utf-8")
    return json.loads(text)


def _tuples(fields: Mapping[str, Any]) -> dict[str, Any]:
    """JSON lists and tables as the tuples a frozen ``Preset`` keeps."""
    return {
        k: tuple(v.items()) if isinstance(v, Mapping) else tuple(v) if isinstance(v, list) else v
        for k, v in fields.items()
    }


@cache
def _presets() -> dict[str, Preset]:
    """The presets of ``preset_models.json``: each row over the shared ``defaults`` (data
    sets, judges) and its model's chat-template facts."""
    data, out = _package_data(), {}
    for name, row in data["presets"].items():
        chat = data["models"][row["model"]]["chat_template"]
        fields = {"system_role": chat["system_role"], "chat_notes": chat["notes"]}
        fields.update(data["defaults"], **row)
        out[name] = Preset(name=name, **_tuples(fields))
    return out


def preset_names() -> list[str]:
    return list(_presets())


def get_preset(name: str) -> Preset:
    """The preset called ``name``; a ``RefusalScopeError`` listing them all otherwise."""
    if name not in _presets():
        raise RefusalScopeError(f"unknown preset {name!r}; choose one of {', '.join(_presets())}")
    return _presets()[name]


def model_facts(model_id: str) -> dict[str, Any]:
    """A model's ``preset_models.json`` entry: ``architectures``, ``torch_dtype``,
    ``chat_template``, ``text`` (the language model's config), ``vision`` (multimodal)."""
    entries = _package_data()["models"]
    if model_id not in entries:
        raise RefusalScopeError(
            f"no architecture facts for {model_id!r}; add its config.json values to "
            f"preset_models.json (known: {', '.join(entries)})"
        )
    return entries[model_id]


# Text model_type -> (RMSNorms per decoder layer, q/k RMSNorms over head_dim).
_LAYOUTS = {"llama": (2, False), "gemma2": (4, False), "gemma3_text": (4, True)}


def count_parameters(facts: Mapping[str, Any]) -> int:
    """Parameters of a checkpoint from its shapes (``model_facts``' form): the decoder,
    plus SigLIP and the Gemma 3 projector when there is a vision tower."""
    t = facts["text"]
    if t["model_type"] not in _LAYOUTS:
        raise RefusalScopeError(f"no parameter layout for model_type {t['model_type']!r}")
    norms, qk_norm = _LAYOUTS[t["model_type"]]
    d, hd = t["hidden_size"], t["head_dim"]
    attn = d * hd * 2 * (t["num_attention_heads"] + t["num_key_value_heads"])  # q,o + k,v
    layer = attn + 3 * d * t["intermediate_size"] + norms * d + (2 * hd if qk_norm else 0)
    embed = t["vocab_size"] * d * (1 if t["tie_word_embeddings"] else 2)
    n = t["num_hidden_layers"] * layer + embed + d  # + the final norm
    v = facts.get("vision")
    if v:  # SigLIP without its pooling head (vision_use_head=False), then the projector
        dv, inter = v["hidden_size"], v["intermediate_size"]
        patches = (v["image_size"] // v["patch_size"]) ** 2
        embed = v["num_channels"] * v["patch_size"] ** 2 * dv + dv + patches * dv
        block = 4 * (dv * dv + dv) + 4 * dv + 2 * dv * inter + inter + dv  # attn, 2 LN, MLP
        n += embed + v["num_hidden_layers"] * block + 2 * dv + dv * d + dv
    return n


# sae_lens loaders that build an SAE's config offline (GemmaScope 1: d_in per model and
# d_sae from the folder name): an independent check of d_in, d_sae and the hook.
_OFFLINE_CONFIGS = {"gemma_2": "get_gemma_2_config_from_hf"}


@dataclass(frozen=True)
class ResolvedSAE:
    """One layer's SAE as the registry and the model facts describe it."""

    layer: int
    sae_id: str
    path: str
    """Folder inside the release's HF repo (``saes_map``)."""
    neuronpedia_id: str | None
    d_in: int
    d_sae: int
    l0: float | None
    """Expected L0 from the registry (or the ``average_l0_N`` of the path)."""
    parameters: int

    def bytes(self, dtype: str) -> int:
        return self.parameters * DTYPE_BYTES[dtype]


@dataclass(frozen=True)
class ResolvedPreset:
    """A preset with its SAE ids, shapes and sizes filled in (nothing downloaded)."""

    preset: Preset
    facts: Mapping[str, Any]
    """The model's ``model_facts``."""
    parameters: int
    repo_id: str
    """HF repo of the SAE release."""
    sae_model: str
    """The model the registry says the SAEs were trained on."""
    saes: tuple[ResolvedSAE, ...]

    @property
    def ids(self) -> dict[int, str]:
        return {s.layer: s.sae_id for s in self.saes}

    @property
    def model_bytes(self) -> int:
        return self.parameters * DTYPE_BYTES[self.preset.dtype]

    def sae_bytes(self, dtype: str) -> int:
        return sum(s.bytes(dtype) for s in self.saes)


def resolve_preset(name: str, overrides: Mapping[str, Any] | None = None) -> ResolvedPreset:
    """The preset, with ``overrides`` of its fields, resolved against the installed
    registry and ``preset_models.json``; raises on any SAE the release lacks."""
    p = _with_overrides(get_preset(name), overrides or {})
    facts = model_facts(p.model)
    entry = _registry_entry(p.release)
    layers = _select_layers(p, entry.saes_map, facts["text"]["num_hidden_layers"])
    saes = tuple(_resolve_sae(p, entry, facts["text"]["hidden_size"], x) for x in layers)
    return ResolvedPreset(p, facts, count_parameters(facts), entry.repo_id, entry.model, saes)


def _with_overrides(preset: Preset, overrides: Mapping[str, Any]) -> Preset:
    fields = [f.name for f in dataclasses.fields(Preset) if f.name != "name"]
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise RefusalScopeError(f"unknown preset field(s) {unknown}; known: {', '.join(fields)}")
    return dataclasses.replace(preset, **_tuples(overrides))


def _registry_entry(release: str):
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    if release not in directory:
        raise RefusalScopeError(
            f"the installed sae-lens has no SAE release {release!r}; upgrade sae-lens or "
            "pick a release from its pretrained_saes.yaml"
        )
    return directory[release]


def _template(p: Preset) -> str:
    return p.sae_id.replace("{width}", p.width).replace("{variant}", p.variant)


def _select_layers(p: Preset, saes_map: Mapping[str, str], n_layers: int) -> list[int]:
    pattern = re.compile(re.escape(_template(p)).replace(re.escape("{layer}"), r"(\d+)"))
    have = sorted(int(m[1]) for k in saes_map if (m := pattern.fullmatch(k)))
    where = f"release {p.release} (ids like {_template(p)!r})"
    if p.layers == "available" and not have:
        raise RefusalScopeError(
            f"{where} has no SAE of width {p.width}, variant {p.variant}; its ids look like "
            f"{', '.join(list(saes_map)[:3])}"
        )
    want = {"all": list(range(n_layers)), "available": have}.get(p.layers) or sorted(p.layers)
    missing = [x for x in want if x not in have or x >= n_layers]
    if missing:
        raise RefusalScopeError(
            f"{where} has no SAE for layer(s) {missing} of {p.model} (layers 0..{n_layers - 1});"
            f" it has layers {have or 'none'} for width {p.width}, variant {p.variant}: use "
            "layers='available', those layers, or another width/variant"
        )
    return want


def _resolve_sae(p: Preset, entry, hidden_size: int, layer: int) -> ResolvedSAE:
    sae_id = _template(p).replace("{layer}", str(layer))
    path, where = entry.saes_map[sae_id], f"SAE {entry.release}:{sae_id}"
    d_in = int((entry.config_overrides or {}).get("d_in", hidden_size))
    d_sae = sae_width_from_id(sae_id, path, d_in)
    np_id = (entry.neuronpedia_id or {}).get(sae_id)
    np_width = re.search(r"-(\d+[km])$", np_id or "")
    if d_sae != width_latents(p.width) or (np_width and width_latents(np_width[1]) != d_sae):
        raise RefusalScopeError(
            f"{where} has {d_sae} latents by its name, but the preset says width {p.width} "
            f"(Neuronpedia id {np_id})"
        )
    loader = _OFFLINE_CONFIGS.get(entry.conversion_func)
    if loader is not None:
        from sae_lens.loading import pretrained_sae_loaders

        cfg = getattr(pretrained_sae_loaders, loader)(entry.repo_id, path, device=None)
        theirs = (cfg["d_in"], cfg["d_sae"], hook_layer(cfg.get("hook_name")))
        if theirs != (d_in, d_sae, layer):
            raise RefusalScopeError(
                f"{where}: sae_lens says (d_in, d_sae, layer) = {theirs}, the preset "
                f"{(d_in, d_sae, layer)} (d_in: the model's hidden size in "
                "preset_models.json): wrong release for this model, or a wrong fact"
            )
    # JumpReLU (every preset release): W_enc, W_dec, b_enc, threshold, b_dec
    params = d_sae * (2 * d_in + 2) + d_in
    return ResolvedSAE(layer, sae_id, path, np_id, d_in, d_sae, _l0(entry, sae_id, path), params)


def _l0(entry, sae_id: str, path: str) -> float | None:
    value = (entry.expected_l0 or {}).get(sae_id)
    if value:  # canonical GemmaScope entries store 0.0; their folder names the L0
        return float(value)
    m = re.search(r"average_l0_(\d+)", path)
    return float(m[1]) if m else None


def sae_width_from_id(sae_id: str, path: str, d_in: int) -> int:
    """d_sae from an SAE's id or HF path: ``width_65k`` or an expansion factor (``_8x``)."""
    m = re.search(r"width_(\d+[km])", f"{sae_id} {path}")
    if m:
        return width_latents(m[1])
    m = re.search(r"(\d+)x\b", sae_id)  # Llama Scope names the expansion: l15r_8x
    if m:
        return int(m[1]) * d_in
    raise RefusalScopeError(f"cannot tell the width of SAE {sae_id!r} ({path}) from its name")


def preset_run_config(
    name: str, overrides: Mapping[str, Any] | None = None, pin_layer: bool = False
) -> dict[str, Any]:
    """A raw RunConfig dict for the preset; ``pin_layer`` fixes ``l*`` to the authors'.

    Dataset refs and judge names go under ``PRESET_KEY`` (RunConfig has no field for
    them); drop that key before ``from_dict(RunConfig, …)``."""
    r = resolve_preset(name, overrides)
    p = r.preset
    raw: dict[str, Any] = {
        "model": {"path": p.model, "dtype": p.dtype},
        "saes": {"release": p.release, "ids": r.ids, "dtype": p.sae_dtype},
    }
    if p.refusal_token is not None:
        raw["attribution"] = {"refusal_token": p.refusal_token}
    evaluation = {"c": p.clamp_c, "k_star": p.k_star, "induction_values": p.induction_values}
    if evaluation := {k: v for k, v in evaluation.items() if v is not None}:
        raw["evaluation"] = to_dict(evaluation)  # tuples as lists, like a config file
    if pin_layer:
        if p.direction_layer is None:
            raise RefusalScopeError(f"preset {name} has no published l* to pin; let the sweep pick")
        raw["direction"] = {"candidate_layers": [p.direction_layer]}
    raw[PRESET_KEY] = {
        "name": p.name,
        "prompt_splits": dict(p.prompt_splits),
        "jailbreak_sets": list(p.jailbreak_sets),
        "judges": list(p.judges),
    }
    return raw


def gb(n: float) -> str:
    """Bytes as decimal gigabytes, ``5.23 GB``."""
    return f"{n / 1e9:.2f} GB"


def describe_preset(r: ResolvedPreset) -> str:
    """What ``--dry-run`` prints: what would be loaded, from where, and how big it is."""
    p, t, s0, layers = r.preset, r.facts["text"], r.saes[0], list(r.ids)
    vision = " (vision tower included)" if r.facts.get("vision") else ""
    span = f"{layers[0]}-{layers[-1]}" if len(layers) == layers[-1] - layers[0] + 1 else layers
    lines = [
        f"preset {p.name}: {p.model} ({', '.join(r.facts['architectures'])}, "
        f"{t['num_hidden_layers']} layers, d_model {t['hidden_size']})",
        f"  model: {r.parameters / 1e9:.2f} B parameters, {gb(r.model_bytes)} in {p.dtype}{vision}",
        f"  chat template: {p.chat_notes}",
        f"  SAEs: {p.release} (HF {r.repo_id}), trained on {r.sae_model}; width {p.width} "
        f"(d_sae {s0.d_sae}), variant {p.variant}, {len(layers)} layers: {span}",
        f"  SAE size: {gb(s0.bytes(p.sae_dtype))} per layer in {p.sae_dtype}; all layers "
        f"{gb(r.sae_bytes('float32'))} in float32, {gb(r.sae_bytes(p.dtype))} in {p.dtype}",
        f"  to load: {gb(r.model_bytes + r.sae_bytes(p.sae_dtype))} (model in {p.dtype} + "
        f"SAEs in {p.sae_dtype})",
    ]
    for s in r.saes:
        l0 = f", L0 {s.l0:g}" if s.l0 else ""
        np_id = f", neuronpedia {s.neuronpedia_id}" if s.neuronpedia_id else ""
        lines.append(f"    layer {s.layer}: {s.sae_id} -> {s.path} (d_in {s.d_in}{l0}{np_id})")
    defaults = {"l*": p.direction_layer, "refusal token": p.refusal_token and repr(p.refusal_token),
                "c": p.clamp_c, "K*": p.k_star, "induction values": p.induction_values}  # fmt: skip
    known = ", ".join(f"{k} = {v}" for k, v in defaults.items() if v is not None)
    lines += [
        f"  authors' defaults: {known or 'none published'}",
        "  prompts: " + ", ".join(f"{k} <- {v}" for k, v in p.prompt_splits),
        f"  jailbreak sets: {', '.join(p.jailbreak_sets)}; judges: {', '.join(p.judges)}",
        f"  note: {p.notes}" if p.notes else "",
    ]
    return "\n".join(line for line in lines if line)
