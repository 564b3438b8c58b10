"""Exports of a run's findings as ordinary Hugging Face checkpoints."""

from .abliterate import (
    WRITERS,
    ResidualWriters,
    export_abliterated,
    orthogonalize,
    read_run_direction,
    writers_for,
)

__all__ = [
    "WRITERS",
    "ResidualWriters",
    "export_abliterated",
    "orthogonalize",
    "read_run_direction",
    "writers_for",
]
