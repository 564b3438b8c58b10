"""Judges by name: did a response refuse, comply, or break down?

``substring`` (refusal phrases, any chat model) is built in; other judges — the
organism's exact judge, model-based classifiers — are added with ``register_judge``.
"""

from __future__ import annotations

from collections.abc import Callable

from ..runtime.errors import RefusalScopeError
from .base import VERDICTS, Judge, Verdict, summarize
from .substring import SubstringJudge

__all__ = [
    "VERDICTS",
    "Judge",
    "SubstringJudge",
    "Verdict",
    "check_judge_name",
    "get_judge",
    "judge_names",
    "register_judge",
    "summarize",
]

_JUDGES: dict[str, Callable[[], Judge]] = {"substring": SubstringJudge}


def register_judge(name: str, factory: Callable[[], Judge]) -> None:
    """Make ``factory()`` available as judge ``name`` (in configs: ``judge = "name"``)."""
    _JUDGES[name] = factory


def judge_names() -> list[str]:
    return list(_JUDGES)


def check_judge_name(name: str) -> None:
    """Raise ``RefusalScopeError`` unless ``name`` is a registered judge."""
    if name not in _JUDGES:
        raise RefusalScopeError(f"unknown judge {name!r}; choose one of {', '.join(_JUDGES)}")


def get_judge(name: str) -> Judge:
    """A new judge by registered name."""
    check_judge_name(name)
    return _JUDGES[name]()
