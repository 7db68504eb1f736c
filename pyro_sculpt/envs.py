"""Environments, re-exported for ``ps.envs.HyperGrid``."""

from pyro_sculpt.gflownets.env import DiscreteEnv
from pyro_sculpt.gflownets.hypergrid import HyperGrid

__all__ = ["DiscreteEnv", "HyperGrid"]
