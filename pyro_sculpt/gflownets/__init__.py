"""Layer 2: GFlowNets on discrete environments."""

from pyro_sculpt.gflownets import exact, rewards
from pyro_sculpt.gflownets.env import DiscreteEnv
from pyro_sculpt.gflownets.gflownet import GFlowNet
from pyro_sculpt.gflownets.hypergrid import HyperGrid
from pyro_sculpt.gflownets.networks import MLP
from pyro_sculpt.gflownets.policy_process import DiscretePolicyProcess
from pyro_sculpt.gflownets.tabular import TabularGFlowNet

__all__ = [
    "DiscreteEnv",
    "DiscretePolicyProcess",
    "GFlowNet",
    "HyperGrid",
    "MLP",
    "TabularGFlowNet",
    "exact",
    "rewards",
]
