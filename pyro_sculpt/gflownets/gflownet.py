"""GFlowNets with an MLP forward policy (or an environment's own network) trained by trajectory balance."""

from __future__ import annotations

import copy
import math
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
from pyro_sculpt.train.checkpoint import Checkpointable, check_env, cpu_state_dict
from pyro_sculpt.train.loop import TrainState, fit_loop
from pyro_sculpt.utils import as_device, check_positive_int

CHECKPOINT_VERSION = 1


def _check_beta_range(beta_range) -> Optional[tuple[float, float]]:
    if beta_range is None:
        return None
    ok = isinstance(beta_range, (tuple, list)) and len(beta_range) == 2
    ok = ok and all(not isinstance(b, bool) and isinstance(b, (int, float)) and math.isfinite(b) for b in beta_range)
    if not ok or not 0 < beta_range[0] <= beta_range[1]:
        raise ValueError(f"beta_range must be (low, high) with 0 < low <= high, got {beta_range!r}")
    return float(beta_range[0]), float(beta_range[1])


class GFlowNet(Checkpointable, nn.Module, DiscretePolicyProcess):
    """A GFlowNet: a forward policy :math:`P_F(a \\mid s)` on a :class:`DiscreteEnv`, with the uniform backward policy.

    It is an :class:`~pyro_sculpt.processes.IterativeProcess` (run it in a Pyro program with
    :func:`pyro_sculpt.run`, one site per action) and :meth:`as_distribution` makes it a Pyro distribution over
    terminal states, with an exact ``log_prob`` on enumerable environments.

    :param env: the environment.
    :param reward: a reward ``reward(env, states) -> log R`` (a :class:`~pyro_sculpt.gflownets.Reward`, or any
        callable) or a registered reward name; needed by :meth:`fit`.
    :param policy: the policy network, mapping ``env.encode(states)`` to ``env.n_actions`` logits (or the states
        themselves when the network has ``reads_states = True``); default an :class:`MLP` with ``layers`` hidden
        layers of width ``hidden``; ``"env"``: the environment's own network, ``env.policy_network(hidden, layers,
        conditional)`` (a message-passing network over the tree for
        :class:`~pyro_sculpt.gflownets.envs.fragments.FragmentEnv`).
    :param device: where the networks live and trajectories are sampled.
    :param beta_range: ``(low, high)``, ``0 < low <= high``: train ONE GFlowNet for every target
        :math:`R(x)^\\beta` with :math:`\\beta` in this range (Bengio et al. 2021's reward-exponent conditioning).
        The policy then takes :math:`\\beta` (``policy(x, beta)``), :math:`\\log Z(\\beta)` is learned as a function,
        training draws :math:`\\beta` log-uniformly per trajectory, and the reward must be linear in :math:`\\beta`
        and accept ``beta=`` (the molecule rewards do): :math:`\\log R^\\beta = \\beta \\log R`. Sampling uses
        :attr:`sampling_beta` (the reward's own :math:`\\beta` clipped into the range, or :meth:`with_beta`).
    :raises ValueError: for a policy that does not map ``(batch, env.feature_dim)`` features to
        ``(batch, env.n_actions)`` logits, a ``beta_range`` that is not ``0 < low <= high`` or a policy that does
        not take ``beta`` with it.

    Checkpoints: :meth:`save` and ``GFlowNet.load(path, env=None, device=None)`` (:meth:`_from_checkpoint`).

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
        beta_range: Optional[tuple[float, float]] = None,
    ):
        super().__init__()
        if not isinstance(env, DiscreteEnv):
            raise TypeError(f"env must be a DiscreteEnv, got {type(env).__name__}")
        self.env = env
        self.reward = get_reward(reward) if isinstance(reward, str) else reward
        self.hidden, self.layers = hidden, layers
        self.beta_range = _check_beta_range(beta_range)
        conditional = self.beta_range is not None
        self.policy_kind = "custom" if isinstance(policy, nn.Module) else (policy or "mlp")
        if policy is None:
            if conditional:
                raise ValueError("beta_range needs a policy that takes beta: policy='env' or a conditional network")
            policy = MLP(env.feature_dim, env.n_actions, hidden, layers)
        elif policy == "env":
            make = getattr(env, "policy_network", None)
            if make is None:
                raise ValueError(f"policy='env' needs an environment with a policy_network method, not {env!r}")
            policy = make(hidden=hidden, layers=layers, conditional=conditional)
        elif not isinstance(policy, nn.Module):
            raise ValueError(f"policy must be None, 'env' or an nn.Module, got {policy!r}")
        if conditional and not getattr(policy, "conditional", False):
            raise ValueError("beta_range needs a policy that takes beta (a network with conditional=True)")
        self.policy = policy
        self.log_z = nn.Parameter(torch.zeros(()))
        if conditional:
            # log Z(beta) = log_z + log_z_slope * beta + a small network of (log beta, beta / 100)
            self.log_z_slope = nn.Parameter(torch.zeros(()))
            self.log_z_net = MLP(2, 1, 32, 1)
            low, high = self.beta_range
            own = getattr(self.reward, "beta", None)
            self.sampling_beta = float(min(max(own, low), high)) if own is not None else math.sqrt(low * high)
        else:
            self.sampling_beta = None
        self._beta_override: Optional[torch.Tensor] = None
        self.to(as_device(device))
        self._check_policy()
        self.history: list[dict] = []

    @property
    def conditional(self) -> bool:
        """Whether this GFlowNet is conditioned on the reward exponent (``beta_range`` given)."""
        return self.beta_range is not None

    def with_beta(self, beta: float) -> "GFlowNet":
        """The same networks sampling the target :math:`R(x)^\\beta` (a view: the parameters are shared).

        :raises ValueError: for a GFlowNet without ``beta_range``, or ``beta`` outside it.
        """
        if not self.conditional:
            raise ValueError("with_beta needs a GFlowNet trained with beta_range=(low, high)")
        low, high = self.beta_range
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not low <= beta <= high:
            raise ValueError(f"beta must lie in the trained beta_range [{low}, {high}], got {beta!r}")
        view = copy.copy(self)
        view.__dict__["sampling_beta"] = float(beta)
        view.__dict__.pop("_exact_cache", None)
        return view

    def log_z_at(self, beta: Optional[torch.Tensor] = None) -> torch.Tensor:
        """:math:`\\log Z`, or :math:`\\log Z(\\beta)` (shape of ``beta``) for a conditional GFlowNet."""
        if not self.conditional:
            return self.log_z
        if beta is None:
            beta = torch.tensor(self.sampling_beta, device=self.device)
        beta = beta.to(self.log_z.dtype)
        feats = torch.stack([beta.log(), beta / 100.0], -1)
        return self.log_z + self.log_z_slope * beta + self.log_z_net(feats).squeeze(-1)

    def _policy_logits(self, states: torch.Tensor) -> torch.Tensor:
        x = states if getattr(self.policy, "reads_states", False) else self.env.encode(states)
        if not self.conditional:
            return self.policy(x)
        beta = self._beta_override
        if beta is None:
            beta = torch.tensor(self.sampling_beta, device=states.device)
        else:
            beta = beta.reshape(beta.shape + (1,) * (states.dim() - 1 - beta.dim()))
        return self.policy(x, beta)

    def _check_policy(self) -> None:
        state = self.env.initial_state(self.device).unsqueeze(0)
        features = state if getattr(self.policy, "reads_states", False) else self.env.encode(state)
        try:
            with torch.no_grad():
                out = self._policy_logits(state)
        except (RuntimeError, ValueError, TypeError) as err:
            raise ValueError(
                f"policy must map (batch, env.feature_dim={self.env.feature_dim}) features to (batch, "
                f"env.n_actions={self.env.n_actions}) logits, but it fails on features of shape "
                f"{tuple(features.shape)}: {err}"
            ) from None
        if not isinstance(out, torch.Tensor) or out.shape != (1, self.env.n_actions):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"policy must map (batch, env.feature_dim={self.env.feature_dim}) features to (batch, env.n_actions="
                f"{self.env.n_actions}) logits, got output shape {shape} for a batch of 1"
            )

    def __repr__(self) -> str:
        return f"GFlowNet(env={self.env!r}, reward={self.reward!r})"

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return self.log_z.device

    def cache_key(self):
        return (parameters_key(self.policy), self.sampling_beta) if self.conditional else parameters_key(self.policy)

    def action_log_probs(self, states: torch.Tensor) -> torch.Tensor:
        return masked_log_softmax(self._policy_logits(states), self.env.forward_mask(states))

    def as_distribution(self) -> ProcessDistribution:
        """This GFlowNet's terminal distribution as a Pyro distribution."""
        return ProcessDistribution(self)

    def log_reward(self, states: torch.Tensor, beta: Optional[torch.Tensor] = None) -> torch.Tensor:
        """:math:`\\log R` of terminal states (:math:`\\beta \\log R` with ``beta`` broadcastable to the batch
        for a conditional GFlowNet; default :attr:`sampling_beta`)."""
        if self.reward is None:
            raise ValueError("this GFlowNet has no reward: pass reward=... to GFlowNet(...)")
        if not self.conditional:
            return check_log_reward(self.reward(self.env, states), states, "reward")
        if beta is None:
            beta = torch.tensor(self.sampling_beta, device=states.device)
        log_r1 = check_log_reward(self.reward(self.env, states, beta=1.0), states, "reward")
        return log_r1 * beta.to(log_r1.dtype)

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
        beta = self._beta_override
        log_r = self.log_reward(states[:, -1], beta)
        return ((self.log_z_at(beta) + log_pf - log_pb - log_r) ** 2).mean()

    def training_loss(
        self, batch_size: int = 16, exploration: float = 0.05, all_states: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """One step's trajectory balance loss on ``batch_size`` trajectories drawn from the current policy mixed with
        an :math:`\\epsilon`-uniform choice over valid actions (``exploration``).

        :param all_states: every state of an enumerable environment (``env.all_states()``): the policy is evaluated
            once on them and trajectories and the loss read it from that table (the same loss, fewer network rows
            when the batch visits more states than there are).
        """
        if self.conditional:
            # one beta per trajectory, log-uniform over the range (no shared table: the policy depends on beta)
            low, high = self.beta_range
            u = torch.rand(batch_size, device=self.device)
            self._beta_override = torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))
            try:
                states, actions, active = self.sample_trajectories(batch_size, exploration)
                return self.trajectory_balance_loss(states, actions, active)
            finally:
                self._beta_override = None
        table = self.action_log_probs(all_states) if all_states is not None else None
        states, actions, active = self.sample_trajectories(
            batch_size, exploration, table.detach() if table is not None else None
        )
        return self.trajectory_balance_loss(states, actions, active, table)

    def reset_parameters(self) -> None:
        """Re-initialise the parameters of the GFlowNet itself (:math:`\\log Z = 0`); the policy's layers have their
        own ``reset_parameters`` (:func:`~pyro_sculpt.train.reset_parameters_` calls them all)."""
        with torch.no_grad():
            self.log_z.zero_()
            if self.conditional:
                self.log_z_slope.zero_()

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
        """Train by trajectory balance (:meth:`training_loss`) with Adam, a separate learning rate for
        :math:`\\log Z`, in place (the loop is :func:`~pyro_sculpt.train.fit_loop`).

        A seed starts a fresh, reproducible run: the policy and :math:`\\log Z` are re-initialised from it, so that
        the trained weights do not depend on the generators' state when the GFlowNet was built. Without a seed,
        training continues from the current weights.

        :param steps: optimisation steps.
        :param batch_size: trajectories per step.
        :param lr: learning rate of the policy.
        :param lr_logz: learning rate of :math:`\\log Z`.
        :param exploration: :math:`\\epsilon` in [0, 1).
        :param seed: see above.
        :param progress_bar: show a progress bar.
        :param callback: called as ``callback(step, self)`` every ``callback_every`` steps and at the end.
        :param callback_every: see ``callback``.
        :param time_limit: stop after this many seconds.
        :param lr_final_factor: both learning rates follow a cosine decay from their value to this fraction of it
            at the last step (1.0, the default, keeps them constant). Decaying to ~0.05 makes the final checkpoint
            stable instead of wandering around the optimum.
        :returns: ``self``.
        :raises FloatingPointError: when the loss becomes non-finite (the message names the step).
        """
        check_positive_int("steps", steps)
        check_positive_int("batch_size", batch_size)
        if not (0.0 <= exploration < 1.0) or math.isnan(exploration):
            raise ValueError(f"exploration must lie in [0, 1), got {exploration!r}")
        if self.reward is None:
            raise ValueError("fit needs a reward: pass reward=... to GFlowNet(...)")
        env = self.env
        use_table = not self.conditional and env.is_enumerable and env.num_states <= batch_size * env.max_steps
        all_states = env.all_states(self.device) if use_table else None

        def loss(state: TrainState):
            value = self.training_loss(state.batch_size, exploration, all_states)  # this process's share
            return value, {"loss": value, "log_z": self.log_z_at()}

        policy_params = list(self.policy.parameters())
        log_z_params = [self.log_z]
        if self.conditional:
            policy_params += list(self.log_z_net.parameters())
            log_z_params.append(self.log_z_slope)
        return fit_loop(
            self,
            loss,
            param_groups=[
                {"params": policy_params, "lr": lr, "name": "lr"},
                {"params": log_z_params, "lr": lr_logz, "name": "lr_logz"},
            ],
            steps=steps,
            lr_final_factor=lr_final_factor,
            seed=seed,
            progress_bar=progress_bar,
            desc="GFlowNet TB",
            callback=callback,
            callback_every=callback_every,
            time_limit=time_limit,
            batch_size=batch_size,
        )

    # ----- checkpoints -----

    checkpoint_format = "GFlowNet"
    checkpoint_version = CHECKPOINT_VERSION

    def checkpoint_payload(self) -> dict:
        """The networks and their configuration (format version :data:`CHECKPOINT_VERSION`)."""
        return {
            "env": self.env.config(),
            "reward": self.reward.config() if isinstance(self.reward, Reward) else None,
            "hidden": self.hidden,
            "layers": self.layers,
            "policy": self.policy_kind,
            "beta_range": list(self.beta_range) if self.beta_range is not None else None,
            "sampling_beta": self.sampling_beta,
            "state_dict": cpu_state_dict(self),
            "history": self.history,
        }

    @classmethod
    def _from_checkpoint(
        cls,
        path: Union[str, Path],
        data: dict,
        env: Optional[DiscreteEnv] = None,
        device: Union[str, torch.device, None] = None,
    ) -> "GFlowNet":
        """``GFlowNet.load(path, env=None, device=None)``: load a checkpoint written by :meth:`save`.

        :param env: the environment; must match the checkpoint's (rebuilt from the checkpoint when omitted).
        :param device: where to put the loaded model.
        :raises ValueError: for a file that is not a GFlowNet checkpoint, another format version, or a checkpoint
            trained on another environment.
        """
        check_env(path, data["env"], env)
        reward = reward_from_config(data["reward"]) if data.get("reward") else None
        kind = data.get("policy", "mlp")
        if kind not in ("mlp", "env"):
            raise ValueError(
                f"{path}: the checkpoint's policy is a custom network; build the GFlowNet with it and load_state_dict"
            )
        beta_range = data.get("beta_range")
        gfn = cls(
            env or env_from_config(data["env"]),
            reward,
            policy=None if kind == "mlp" else "env",
            hidden=data["hidden"],
            layers=data["layers"],
            beta_range=tuple(beta_range) if beta_range is not None else None,
        )
        gfn.load_state_dict(data["state_dict"])
        if gfn.conditional and data.get("sampling_beta") is not None:
            gfn.sampling_beta = float(data["sampling_beta"])
        gfn.history = list(data.get("history", []))
        return gfn.to(as_device(device))
