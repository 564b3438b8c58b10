"""Stage 2 — the refusal direction (Arditi et al. 2024).

Difference in means of the last-prompt-token residual (harmful − harmless) after every
layer; the layer ``l*`` is chosen by a sweep that ablates each layer's direction at
every layer and position, keeping the layer with the highest jailbreak rate among
those that leave harmless behaviour intact (Arditi et al.).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from ..judges import Judge
from ..runtime.config import require
from ..runtime.errors import RefusalScopeError, check_finite
from ..runtime.files import load_tensors, read_json, save_tensors, write_json
from ..runtime.interventions import AblateDirection
from ..runtime.model import ChatModel
from ..runtime.types import Prompt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DirectionConfig:
    """How the refusal direction and its layer are chosen."""

    candidate_layers: tuple[int, ...] | None = None
    """Layers eligible as ``l*`` (None: every layer)."""
    n_sweep: int = 32
    """Harmful and harmless validation prompts generated per layer in the sweep."""
    max_new_tokens: int = 32
    """Tokens generated per prompt in the sweep."""
    harmless_tolerance: float = 0.1
    """A layer is eligible if ablation keeps the harmless OK rate within this of the
    unablated model's."""
    batch_size: int = 32
    """Prompts per forward batch."""

    def __post_init__(self) -> None:
        require(self.n_sweep > 0, "direction.n_sweep must be positive")
        require(0 <= self.harmless_tolerance <= 1, "harmless_tolerance must be in [0, 1]")


@dataclass
class DirectionResult:
    """Per-layer directions, the chosen layer and the sweep behind the choice."""

    r: Float[Tensor, "layer d_model"]
    """Difference in means after every layer (not normalised)."""
    layer: int
    """The chosen layer ``l*``."""
    sweep: dict[int, dict[str, float]]
    """layer -> {"jailbreak", "harmless_ok"} with that layer's direction ablated."""
    base: dict[str, float]
    """The same two rates without any intervention."""

    TENSORS = "direction.safetensors"
    SWEEP = "direction_sweep.json"

    @property
    def direction(self) -> Float[Tensor, " d_model"]:
        return self.r[self.layer]

    def save(self, folder: Path) -> None:
        save_tensors(folder / self.TENSORS, {"r": self.r, "layer": torch.tensor(self.layer)})
        sweep = {str(k): v for k, v in self.sweep.items()}
        write_json(folder / self.SWEEP, {"sweep": sweep, "base": self.base, "layer": self.layer})

    @classmethod
    def load(cls, folder: Path) -> DirectionResult:
        t = load_tensors(folder / cls.TENSORS)
        j = read_json(folder / cls.SWEEP)
        sweep = {int(k): v for k, v in j["sweep"].items()}
        return cls(r=t["r"], layer=int(t["layer"]), sweep=sweep, base=j["base"])


def diff_in_means(
    model: ChatModel, harmful: Sequence[str], harmless: Sequence[str], batch_size: int = 32
) -> Float[Tensor, "layer d_model"]:
    """``mean_harmful h_l[-1] − mean_harmless h_l[-1]`` for every layer ``l``."""
    if not harmful or not harmless:
        raise RefusalScopeError(
            "the refusal direction needs both harmful and harmless prompts; one side is empty "
            "(after filtering?)"
        )
    layers = list(range(model.n_layers))
    pos = model.capture(harmful, layers, batch_size=batch_size).acts.mean(0)
    neg = model.capture(harmless, layers, batch_size=batch_size).acts.mean(0)
    r = pos - neg
    if model.dtype in (torch.float16, torch.bfloat16):
        fix = (
            f"the model produced non-finite activations, most likely an overflow in "
            f"{str(model.dtype).removeprefix('torch.')}; load it with dtype float32 (or "
            "bfloat16 rather than float16)"
        )
    else:
        fix = "the model produced non-finite activations even in float32: check its weights"
    check_finite(
        {"the mean over harmful prompts": pos, "the mean over harmless prompts": neg, "r": r},
        f"the difference in means on {model.name}",
        fix,
        at=lambda i: f"layer {i[0]}, dimension {i[1]}",
    )
    return r


def check_direction_finite(direction: Tensor, stage: str) -> None:
    """Raise unless the refusal direction handed to ``stage`` is finite."""
    check_finite(
        {"the refusal direction": direction},
        stage,
        "the direction was computed from non-finite activations or its cached file is "
        "corrupt; recompute it (`refusalscope run --force direction`, model dtype float32)",
        at=lambda i: f"dimension {i[0]}",
    )


def behaviour_rates(
    model: ChatModel,
    harmful: Sequence[Prompt],
    harmless: Sequence[Prompt],
    judge: Judge,
    interventions: Sequence = (),
    max_new_tokens: int = 32,
    batch_size: int = 32,
) -> dict[str, float]:
    """Jailbreak rate on harmful prompts and OK (complied) rate on harmless ones."""
    out = {}
    for key, prompts in (("jailbreak", harmful), ("harmless_ok", harmless)):
        gens = model.generate(
            [p.instruction for p in prompts],
            interventions,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            desc=None,
        )
        verdicts = judge.judge(prompts, gens.texts)
        out[key] = sum(v == "complied" for v in verdicts) / len(verdicts)
    return out


def ablation_sweep(
    model: ChatModel,
    r: Tensor,
    harmful: Sequence[Prompt],
    harmless: Sequence[Prompt],
    judge: Judge,
    cfg: DirectionConfig,
) -> tuple[dict[int, dict[str, float]], dict[str, float]]:
    """Behaviour with each layer's direction ablated everywhere, and without."""
    harmful, harmless = list(harmful)[: cfg.n_sweep], list(harmless)[: cfg.n_sweep]
    kw = dict(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
    base = behaviour_rates(model, harmful, harmless, judge, **kw)
    layers = cfg.candidate_layers if cfg.candidate_layers is not None else range(model.n_layers)
    sweep = {}
    for layer in layers:
        model.check_site(layer)
        ablate = AblateDirection(r[layer])
        sweep[int(layer)] = behaviour_rates(model, harmful, harmless, judge, [ablate], **kw)
        log.info("layer %d ablated: %s", layer, sweep[int(layer)])
    return sweep, base


def select_layer(
    sweep: dict[int, dict[str, float]], base: dict[str, float], tolerance: float
) -> int:
    """Highest jailbreak among layers keeping harmless behaviour; ties -> better harmless."""
    eligible = [l for l, s in sweep.items() if s["harmless_ok"] >= base["harmless_ok"] - tolerance]
    if not eligible:
        log.warning("no layer keeps harmless behaviour within %.2f; choosing among all", tolerance)
        eligible = list(sweep)
    return max(eligible, key=lambda l: (sweep[l]["jailbreak"], sweep[l]["harmless_ok"], -l))


def compute_direction(
    model: ChatModel,
    harmful_train: Sequence[Prompt],
    harmless_train: Sequence[Prompt],
    harmful_val: Sequence[Prompt],
    harmless_val: Sequence[Prompt],
    judge: Judge,
    cfg: DirectionConfig,
) -> DirectionResult:
    """Directions from the train split, layer chosen on the validation split."""
    r = diff_in_means(
        model,
        [p.instruction for p in harmful_train],
        [p.instruction for p in harmless_train],
        cfg.batch_size,
    )
    sweep, base = ablation_sweep(model, r, harmful_val, harmless_val, judge, cfg)
    layer = select_layer(sweep, base, cfg.harmless_tolerance)
    return DirectionResult(r=r, layer=layer, sweep=sweep, base=base)


__all__ = [
    "DirectionConfig",
    "DirectionResult",
    "ablation_sweep",
    "behaviour_rates",
    "check_direction_finite",
    "compute_direction",
    "diff_in_means",
    "select_layer",
]
