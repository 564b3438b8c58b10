"""refusalscope: find, test and explain the SAE features through which a chat LLM refuses.

The public API (``from refusalscope import ...``)::

    ChatModel, SAESet                       # any HF chat model; SAEs through sae_lens
    AblateDirection, AddDirection,          # interventions, applied with
    ScaleFeatures, SetFeatures              #   ChatModel.generate / ChatModel.hooked
    RunConfig, run, RunResult               # the whole method, each stage cached
    load_run                                # a `refusalscope run` output folder, typed

Packages, in import order (each imports only from the ones before it):
``runtime`` (model, hooks, interventions, SAEs, cache, config and file I/O) →
``data``, ``judges`` → ``stages`` (prompts → direction → candidates → attribution →
features) → ``evaluation`` (sweep, jailbreak, capability, induction, stats) → ``report``
→ ``pipeline`` (run config, orchestration, outputs; the only user of ``organism``, the
embedded model organism) → ``cli``. ``testing`` holds the slow reference
implementations the fast ones are tested against.

Names are imported on first use, so ``import refusalscope`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "ChatModel": "refusalscope.runtime.model",
    "SAESet": "refusalscope.runtime.saes",
    "AblateDirection": "refusalscope.runtime.interventions",
    "AddDirection": "refusalscope.runtime.interventions",
    "ScaleFeatures": "refusalscope.runtime.interventions",
    "SetFeatures": "refusalscope.runtime.interventions",
    "RefusalScopeError": "refusalscope.runtime.errors",
    "RunConfig": "refusalscope.pipeline.config",
    "RunResult": "refusalscope.pipeline.run",
    "run": "refusalscope.pipeline.run",
    "load_run": "refusalscope.pipeline.outputs",
}
__all__ = [
    "AblateDirection",
    "AddDirection",
    "ChatModel",
    "RefusalScopeError",
    "RunConfig",
    "RunResult",
    "SAESet",
    "ScaleFeatures",
    "SetFeatures",
    "__version__",
    "load_run",
    "run",
]

if TYPE_CHECKING:
    from .pipeline.config import RunConfig
    from .pipeline.outputs import load_run
    from .pipeline.run import RunResult, run
    from .runtime.errors import RefusalScopeError
    from .runtime.interventions import AblateDirection, AddDirection, ScaleFeatures, SetFeatures
    from .runtime.model import ChatModel
    from .runtime.saes import SAESet


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'refusalscope' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
