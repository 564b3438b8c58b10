"""What ChatModel needs to know about transformers models: device and dtype choice,
weight checks, where the decoder layers are, and generation-config handling."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import nn

from .errors import RefusalScopeError, check_finite

log = logging.getLogger(__name__)

DType = Literal["float32", "bfloat16", "float16"]
"""The floating-point dtypes a model or SAE can be loaded in."""

# Where decoder layers live in the architectures we know; anything else falls back to
# the first ModuleList whose length is the configured depth.
_LAYER_PATHS = (
    "model.layers",  # Llama, Mistral, Qwen2, Gemma, Gemma-2, Phi-3
    "model.language_model.layers",  # Gemma-3 and other multimodal wrappers
    "transformer.h",  # GPT-2, Falcon
    "gpt_neox.layers",
    "model.decoder.layers",  # OPT
)


def pick_device_dtype(device: str | None, dtype: str | None) -> tuple[torch.device, torch.dtype]:
    """Decide device and dtype once, and log why."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        log.info("device=%s (auto: %s)", device, "CUDA available" if device == "cuda" else "no GPU")
    if dtype is None:
        bf16 = device.startswith("cuda") and torch.cuda.is_bf16_supported()
        dtype = "bfloat16" if bf16 else "float32"
        log.info("dtype=%s (auto: %s)", dtype, "bf16-capable GPU" if bf16 else "float32 off-GPU")
    return torch.device(device), check_dtype(dtype)


def check_dtype(name: str, what: str = "dtype") -> torch.dtype:
    """The torch dtype called ``name``; a ``RefusalScopeError`` for anything else."""
    torch_dtype = getattr(torch, str(name), None)
    if not isinstance(torch_dtype, torch.dtype) or not torch_dtype.is_floating_point:
        raise RefusalScopeError(f"unknown {what} {name!r}; use float32, bfloat16 or float16")
    return torch_dtype


def check_weights(model: nn.Module, source: str, dtype: torch.dtype) -> None:
    """Stop at load on a NaN/inf weight: the model would still run, into garbage."""
    fix = (
        f"the weights in {source} are corrupt or came from a diverged training run; "
        "re-download or re-save them"
    )
    if dtype == torch.float16:
        fix += " (if they are fine in float32, they overflow float16: load with dtype bfloat16)"
    check_finite(dict(model.named_parameters()), f"model {source}", fix)


@contextmanager
def only_generation_config(hf: nn.Module, gen_cfg: Any) -> Iterator[None]:
    """Make ``gen_cfg`` the model's generation config for one call: transformers < 5 fills
    every default-valued field of an explicit config (``do_sample=False`` too) from the
    checkpoint's ``generation_config.json``, so one shipping ``do_sample=True`` would sample."""
    saved = getattr(hf, "generation_config", None)
    hf.generation_config = gen_cfg
    try:
        yield
    finally:
        hf.generation_config = saved


def looks_local(name: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else is meant as a folder."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def find_decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a causal LM, found generically."""
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    n = getattr(cfg, "num_hidden_layers", None)
    for path in _LAYER_PATHS:
        mod: nn.Module | None = model
        for attr in path.split("."):
            mod = getattr(mod, attr, None)
        if isinstance(mod, nn.ModuleList) and (n is None or len(mod) == n):
            return mod
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and n is not None and len(mod) == n:
            log.warning("decoder layers guessed at %r (no known attribute path)", name)
            return mod
    raise RefusalScopeError(
        f"cannot locate the decoder layers of {type(model).__name__}: none of "
        f"{', '.join(_LAYER_PATHS)} is a ModuleList of num_hidden_layers={n}. "
        "Add the attribute path to refusalscope.runtime.hf._LAYER_PATHS."
    )
