"""Layer 2: GFlowNets on discrete environments: the environment protocol and registry, policies, training by
trajectory balance, exact dynamic programming, and the environments (:mod:`pyro_sculpt.gflownets.envs`)."""

from pyro_sculpt.gflownets import backward, envs, exact
from pyro_sculpt.gflownets.env import DiscreteEnv
from pyro_sculpt.gflownets.gflownet import GFlowNet
from pyro_sculpt.gflownets.policy_process import DiscretePolicyProcess
from pyro_sculpt.gflownets.registry import (
    env_from_config,
    get_reward,
    register_env,
    register_reward,
    reward_from_config,
    reward_names,
)
from pyro_sculpt.gflownets.rewards import Reward, check_log_reward
from pyro_sculpt.gflownets.tabular import TabularGFlowNet

__all__ = [
    "DiscreteEnv",
    "DiscretePolicyProcess",
    "GFlowNet",
    "Reward",
    "TabularGFlowNet",
    "backward",
    "check_log_reward",
    "env_from_config",
    "envs",
    "exact",
    "get_reward",
    "register_env",
    "register_reward",
    "reward_from_config",
    "reward_names",
]
