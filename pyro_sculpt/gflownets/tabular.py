"""GFlowNets whose policy is a table over the states of an enumerable environment."""

from __future__ import annotations

import torch
from torch import nn

from pyro_sculpt.gflownets import exact
from pyro_sculpt.gflownets.env import DiscreteEnv
from pyro_sculpt.gflownets.policy_process import DiscretePolicyProcess, parameters_key
from pyro_sculpt.gflownets.rewards import check_log_reward
from pyro_sculpt.processes.distribution import ProcessDistribution


class TabularGFlowNet(nn.Module, DiscretePolicyProcess):
    """A forward policy stored as a ``(num_states, n_actions)`` table of log-probabilities.

    :meth:`from_reward` builds the policy of a perfectly trained GFlowNet (:func:`~pyro_sculpt.gflownets.exact.
    flow_policy`): an oracle base whose terminal distribution is exactly :math:`R/Z` and which satisfies the uniform
    backward policy exactly, so that sculpting with an exact classifier is exact.

    :param env: an enumerable environment.
    :param log_probs: the table; each row is renormalised over the valid actions.

    Example::

        env = ps.HyperGrid(2, 8)
        p1 = TabularGFlowNet.from_reward(env, ps.rewards.original())  # the exact flow of the reward
        x = ps.ProcessDistribution(p1).sample((1000,))
    """

    def __init__(self, env: DiscreteEnv, log_probs: torch.Tensor):
        super().__init__()
        if not env.is_enumerable:
            raise ValueError(f"env must be enumerable for a tabular policy, got {env!r}")
        expected = (env.num_states, env.n_actions)
        if tuple(log_probs.shape) != expected:
            raise ValueError(f"log_probs must have shape {expected}, got {tuple(log_probs.shape)}")
        self.env = env
        if bool(torch.isnan(log_probs).any()):
            row = int(torch.nonzero(torch.isnan(log_probs).any(-1))[0])
            raise ValueError(f"log_probs has NaN entries (first in row {row}, state {env.all_states()[row].tolist()})")
        mask = env.forward_mask(env.all_states(log_probs.device))
        masked = log_probs.masked_fill(~mask, float("-inf"))
        empty = ~(masked > float("-inf")).any(-1)
        if bool(empty.any()):
            row = int(torch.nonzero(empty)[0])
            raise ValueError(
                f"log_probs row {row} (state {env.all_states()[row].tolist()}) gives every action the environment "
                "allows there probability zero: each row needs a finite log-probability on a valid action"
            )
        table = torch.log_softmax(masked, -1)
        self.register_buffer("table", table.to(torch.get_default_dtype()))

    @classmethod
    def from_reward(cls, env: DiscreteEnv, reward) -> "TabularGFlowNet":
        """The exact GFlowNet of ``reward`` (a reward callable or a ``(num_states,)`` tensor of log-rewards).

        :raises ValueError: if the log-rewards are not one finite value per state of ``env.all_states()``.
        """
        if not isinstance(env, DiscreteEnv) or not env.is_enumerable:
            raise ValueError(
                "env must be an enumerable DiscreteEnv (is_enumerable True, with num_states, all_states, index and "
                f"levels), got {env!r}"
            )
        states = env.all_states()
        log_r = reward if isinstance(reward, torch.Tensor) else reward(env, states)
        check_log_reward(log_r, states, "reward")
        return cls(env, exact.flow_policy(env, log_r))

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return self.table.device

    def cache_key(self):
        return parameters_key(self)

    def action_log_probs(self, states: torch.Tensor) -> torch.Tensor:
        return self.table[self.env.index(states)]

    def as_distribution(self) -> ProcessDistribution:
        return ProcessDistribution(self)

    def __repr__(self) -> str:
        return f"TabularGFlowNet(env={self.env!r})"
