"""GFlowNets with an MLP forward policy trained by trajectory balance."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Optional, Union

import torch
from torch import nn

from pyro_sculpt.gflownets.env import DiscreteEnv
from pyro_sculpt.gflownets.policy_process import DiscretePolicyProcess, masked_log_softmax, parameters_key
from pyro_sculpt.gflownets.registry import env_from_config, get_reward, reward_from_config
from pyro_sculpt.gflownets.rewards import Reward, check_log_reward
from pyro_sculpt.nn.mlp import MLP
from pyro_sculpt.processes.distribution import ProcessDistribution
from pyro_sculpt.train.checkpoint import check_env, load_checkpoint, save_checkpoint
from pyro_sculpt.train.optim import cosine_decay, step_scheduler
from pyro_sculpt.utils import as_device, check_positive_int, progress, set_seed

CHECKPOINT_VERSION = 1


class GFlowNet(nn.Module, DiscretePolicyProcess):
    """A GFlowNet: a forward policy :math:`P_F(a \\mid s)` on a :class:`DiscreteEnv`, with the uniform backward policy.

    It is an :class:`~pyro_sculpt.processes.IterativeProcess` (run it in a Pyro program with
    :func:`pyro_sculpt.run`, one site per action) and :meth:`as_distribution` makes it a Pyro distribution over
    terminal states, with an exact ``log_prob`` on enumerable environments.

    :param env: the environment.
    :param reward: a reward ``reward(env, states) -> log R`` (a :class:`~pyro_sculpt.gflownets.Reward`, or any
        callable) or a registered reward name; needed by :meth:`fit`.
    :param policy: the policy network, mapping ``env.encode(states)`` to ``env.n_actions`` logits; default an
        :class:`MLP` with ``layers`` hidden layers of width ``hidden``.
    :param device: where the networks live and trajectories are sampled.

    Example::

        env = HyperGrid(ndim=2, height=8)
        gfn = GFlowNet(env, reward="original").fit(steps=2000, batch_size=64)
        x = gfn.as_distribution().sample((1000,))
    """

    def __init__(
        self,
        env: DiscreteEnv,
        reward: Union[Reward, str, Callable, None] = None,
        *,
        policy: Optional[nn.Module] = None,
        hidden: int = 256,
        layers: int = 2,
        device: Union[str, torch.device, None] = None,
    ):
        super().__init__()
        if not isinstance(env, DiscreteEnv):
            raise TypeError(f"env must be a DiscreteEnv, got {type(env).__name__}")
        self.env = env
        self.reward = get_reward(reward) if isinstance(reward, str) else reward
        self.hidden, self.layers = hidden, layers
        if policy is None:
            policy = MLP(env.feature_dim, env.n_actions, hidden, layers)
        self.policy = policy
        self.log_z = nn.Parameter(torch.zeros(()))
        self.to(as_device(device))
        self._check_policy()
        self.history: list[dict] = []

    def _check_policy(self) -> None:
        with torch.no_grad():
            out = self.policy(self.env.encode(self.env.initial_state(self.device)).unsqueeze(0))
        if out.shape != (1, self.env.n_actions):
            raise ValueError(
                f"policy must map (batch, {self.env.feature_dim}) features to (batch, env.n_actions="
                f"{self.env.n_actions}) logits, got output shape {tuple(out.shape)} for a batch of 1"
            )

    def __repr__(self) -> str:
        return f"GFlowNet(env={self.env!r}, reward={self.reward!r})"

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return self.log_z.device

    def cache_key(self):
        return parameters_key(self.policy)

    def action_log_probs(self, states: torch.Tensor) -> torch.Tensor:
        logits = self.policy(self.env.encode(states))
        return masked_log_softmax(logits, self.env.forward_mask(states))

    def as_distribution(self) -> ProcessDistribution:
        """This GFlowNet's terminal distribution as a Pyro distribution."""
        return ProcessDistribution(self)

    def log_reward(self, states: torch.Tensor) -> torch.Tensor:
        """:math:`\\log R` of terminal states."""
        if self.reward is None:
            raise ValueError("this GFlowNet has no reward: pass reward=... to GFlowNet(...)")
        return check_log_reward(self.reward(self.env, states), states, "reward")

    # ----- training -----

    def trajectory_balance_loss(self, states, actions, active, log_pf_table=None) -> torch.Tensor:
        """Trajectory balance (Malkin et al. 2022), averaged over the batch:

        .. math::

            \\Big(\\log Z + \\sum_t \\log P_F(s_{t+1} \\mid s_t) - \\sum_t \\log P_B(s_t \\mid s_{t+1})
            - \\log R(x)\\Big)^2
        """
        env = self.env
        prev = states[:, :-1]
        if log_pf_table is not None:
            lp = log_pf_table[env.index(prev)]
        else:
            lp = self.action_log_probs(prev)
        log_pf = lp.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        log_pf = torch.where(active, log_pf, torch.zeros_like(log_pf)).sum(-1)
        moved = active & (actions != env.stop_action)
        log_pb = env.log_backward(states[:, 1:]).to(log_pf.dtype)
        log_pb = torch.where(moved, log_pb, torch.zeros_like(log_pb)).sum(-1)
        log_r = self.log_reward(states[:, -1])
        return ((self.log_z + log_pf - log_pb - log_r) ** 2).mean()

    def fit(
        self,
        steps: int = 20_000,
        batch_size: int = 16,
        lr: float = 1e-3,
        lr_logz: float = 0.1,
        exploration: float = 0.05,
        *,
        seed: Optional[int] = None,
        progress_bar: bool = True,
        callback: Optional[Callable[[int, "GFlowNet"], None]] = None,
        callback_every: int = 1000,
        time_limit: Optional[float] = None,
        lr_final_factor: float = 1.0,
    ) -> "GFlowNet":
        """Train by trajectory balance with Adam (a separate learning rate for :math:`\\log Z`).

        Trajectories come from the current policy mixed with an :math:`\\epsilon`-uniform choice over valid actions.
        On an enumerable environment small enough, the policy is evaluated once per step on every state and
        trajectories read it from that table: the same loss, far fewer network rows.

        :param steps: optimisation steps.
        :param batch_size: trajectories per step.
        :param lr: learning rate of the policy.
        :param lr_logz: learning rate of :math:`\\log Z`.
        :param exploration: :math:`\\epsilon` in [0, 1).
        :param seed: seed of the global generators (reproducible runs).
        :param progress_bar: show a progress bar.
        :param callback: called as ``callback(step, self)`` every ``callback_every`` steps and at the end.
        :param time_limit: stop after this many seconds.
        :param lr_final_factor: both learning rates follow a cosine decay from their value to this fraction of it
            at the last step (1.0, the default, keeps them constant). Decaying to ~0.05 makes the final checkpoint
            stable instead of wandering around the optimum.
        :returns: ``self``.
        """
        check_positive_int("steps", steps)
        check_positive_int("batch_size", batch_size)
        if not (0.0 <= exploration < 1.0) or math.isnan(exploration):
            raise ValueError(f"exploration must lie in [0, 1), got {exploration!r}")
        if self.reward is None:
            raise ValueError("fit needs a reward: pass reward=... to GFlowNet(...)")
        if lr <= 0 or lr_logz <= 0:
            raise ValueError(f"lr and lr_logz must be > 0, got lr={lr}, lr_logz={lr_logz}")
        set_seed(seed)
        opt = torch.optim.Adam(
            [{"params": self.policy.parameters(), "lr": lr}, {"params": [self.log_z], "lr": lr_logz}]
        )
        sched = cosine_decay(opt, steps, lr_final_factor)
        env = self.env
        use_table = env.is_enumerable and env.num_states <= batch_size * env.max_steps
        all_states = env.all_states(self.device) if use_table else None
        start = time.perf_counter()
        for step in progress(range(1, steps + 1), enabled=progress_bar, total=steps, desc="GFlowNet TB"):
            table = self.action_log_probs(all_states) if use_table else None
            states, actions, active = self.sample_trajectories(
                batch_size, exploration, table.detach() if use_table else None
            )
            loss = self.trajectory_balance_loss(states, actions, active, table)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step_scheduler(sched)
            if step % 100 == 0 or step == steps:
                self.history.append(
                    {
                        "step": step,
                        "loss": float(loss.detach()),
                        "log_z": float(self.log_z.detach()),
                        "time": time.perf_counter() - start,
                    }
                )
            if callback is not None and (step % callback_every == 0 or step == steps):
                callback(step, self)
            if time_limit is not None and time.perf_counter() - start > time_limit:
                break
        return self

    # ----- checkpoints -----

    def save(self, path: Union[str, Path]) -> None:
        """Save the networks and their configuration (format version :data:`CHECKPOINT_VERSION`)."""
        save_checkpoint(
            path,
            "GFlowNet",
            CHECKPOINT_VERSION,
            {
                "env": self.env.config(),
                "reward": self.reward.config() if isinstance(self.reward, Reward) else None,
                "hidden": self.hidden,
                "layers": self.layers,
                "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
                "history": self.history,
            },
        )

    @classmethod
    def load(
        cls,
        path: Union[str, Path],
        env: Optional[DiscreteEnv] = None,
        device: Union[str, torch.device, None] = None,
    ) -> "GFlowNet":
        """Load a checkpoint written by :meth:`save`.

        :param env: the environment; must match the checkpoint's (rebuilt from the checkpoint when omitted).
        :raises ValueError: for a file that is not a GFlowNet checkpoint, another format version, or a checkpoint
            trained on another environment.
        """
        data = load_checkpoint(path, "GFlowNet", CHECKPOINT_VERSION)
        check_env(path, data["env"], env)
        reward = reward_from_config(data["reward"]) if data.get("reward") else None
        gfn = cls(env or env_from_config(data["env"]), reward, hidden=data["hidden"], layers=data["layers"])
        gfn.load_state_dict(data["state_dict"])
        gfn.history = list(data.get("history", []))
        return gfn.to(as_device(device))
