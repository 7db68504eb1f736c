"""The HyperGrid environment (Bengio et al. 2021) and its rewards."""

from pyro_sculpt.gflownets.envs.hypergrid import rewards
from pyro_sculpt.gflownets.envs.hypergrid.env import HyperGrid

__all__ = ["HyperGrid", "rewards"]
