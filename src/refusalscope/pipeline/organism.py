"""The default run's model: the embedded organism, built on first use.

This is where the library reaches into ``refusalscope.organism`` (a client of the
library, not part of it): the organism's build, its data and its exact judge, which is
registered here as judge ``organism``.
"""

from __future__ import annotations

from ..judges import register_judge
from ..organism.build import Organism, OrganismConfig, build_organism, load_organism
from ..organism.data import OrganismData
from ..organism.judge import OrganismJudge

register_judge("organism", OrganismJudge)

__all__ = [
    "Organism",
    "OrganismConfig",
    "OrganismData",
    "OrganismJudge",
    "build_organism",
    "load_organism",
]
