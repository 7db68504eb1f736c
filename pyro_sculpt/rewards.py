"""Rewards, re-exported for ``ps.rewards.symmetric_shubert(...)``."""

from pyro_sculpt.gflownets.rewards import (
    Circle,
    DiagonalSigmoid,
    OriginalReward,
    Reward,
    SymmetricShubert,
    circle,
    diagonal_sigmoid,
    from_config,
    get,
    names,
    original,
    symmetric_shubert,
)

__all__ = [
    "Circle",
    "DiagonalSigmoid",
    "OriginalReward",
    "Reward",
    "SymmetricShubert",
    "circle",
    "diagonal_sigmoid",
    "from_config",
    "get",
    "names",
    "original",
    "symmetric_shubert",
]
