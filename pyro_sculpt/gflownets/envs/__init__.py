"""GFlowNet environments, one folder each; every environment class registers itself
(:func:`~pyro_sculpt.gflownets.register_env`) so that checkpoints can rebuild it."""

from pyro_sculpt.gflownets.envs.fragments import FragmentEnv
from pyro_sculpt.gflownets.envs.hypergrid import HyperGrid

__all__ = ["FragmentEnv", "HyperGrid"]
