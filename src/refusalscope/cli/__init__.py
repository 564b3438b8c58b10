"""The ``refusalscope`` command line: a thin layer over the Python API."""

from __future__ import annotations

from . import commands, models  # noqa: F401  (each module registers its commands on ``app``)
from .common import app

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
