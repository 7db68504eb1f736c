"""The reward protocol of GFlowNets: ``reward(env, states) -> log R``, checked once for every reward."""

from __future__ import annotations

import torch

from pyro_sculpt.gflownets.registry import get_reward, register_reward, reward_from_config, reward_names

__all__ = ["Reward", "check_log_reward", "get_reward", "register_reward", "reward_from_config", "reward_names"]


def check_log_reward(log_r, states: torch.Tensor, name: str = "reward") -> torch.Tensor:
    """Raise a :class:`ValueError` naming ``name`` unless ``log_r`` is a finite tensor of shape
    ``states.shape[:-1]`` (one log-reward per state: a ``(B, 1)`` result would broadcast silently to ``(B, B)``).

    Example::

        env = ps.HyperGrid(2, 8)
        states = env.all_states()
        log_r = check_log_reward(torch.zeros(env.num_states), states)  # raises on NaN or a wrong shape
    """
    batch = tuple(states.shape[:-1])
    if not isinstance(log_r, torch.Tensor) or tuple(log_r.shape) != batch:
        shape = tuple(log_r.shape) if isinstance(log_r, torch.Tensor) else type(log_r).__name__
        raise ValueError(f"{name} must return log-rewards of shape {batch} (one per state), got {shape}")
    if not torch.isfinite(log_r).all():
        raise ValueError(f"{name} returned non-finite log-rewards (NaN or inf)")
    return log_r


class Reward:
    """Base class of rewards: ``reward(env, states)`` returns :math:`\\log R(s)`, shape ``states.shape[:-1]``.

    Subclasses implement :meth:`log_reward` and, to be saved in checkpoints, :meth:`params`; they register with
    :func:`~pyro_sculpt.gflownets.register_reward`. The call checks the shape and finiteness of the result.

    Example::

        @ps.gflownets.register_reward("corner")
        class Corner(ps.gflownets.Reward):
            name = "corner"

            def log_reward(self, env, states):
                return -states.sum(-1).float()  # log R: the origin is most likely

        gfn = ps.GFlowNet(ps.HyperGrid(2, 8), Corner())
    """

    name: str = "reward"

    def __call__(self, env, states: torch.Tensor) -> torch.Tensor:
        return check_log_reward(self.log_reward(env, states), states, f"reward {self.name!r}")

    def log_reward(self, env, states: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """:math:`\\log R` of ``states`` of ``env``, shape ``states.shape[:-1]``."""
        raise NotImplementedError

    def params(self) -> dict:
        """The constructor's keyword arguments (JSON-serialisable), stored in checkpoints."""
        return {}

    def config(self) -> dict:
        return {"name": self.name, **self.params()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{self.name}({args})"
