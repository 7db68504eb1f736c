"""An observation classifier with a per-action head: :math:`Q(y \\mid s_a)` of every child :math:`s_a` of a state
from ONE forward of the parent (Garipov et al. 2023, §4.1, §4.3; docs/math.md §1.2; docs/molecules.md).

The guided step needs :math:`Q(y \\mid s_a)` at every valid child of every particle. A state classifier must build and
encode every child (hundreds per fragment tree); this one reads the parent and answers for all ``n_actions`` at once,
so the guided step costs one forward mask and two network calls per step.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from pyro_sculpt.gflownets.env import DiscreteEnv
from pyro_sculpt.nn import MLP
from pyro_sculpt.sculpting.gflownet.classifier import ObservationClassifier
from pyro_sculpt.sculpting.observations import Observations, reweight_first


class _MLPChildNetwork(nn.Module):
    """The default per-action head of environments without their own network: an MLP on ``env.encode(parent)``
    with ``n_actions * outputs`` outputs."""

    def __init__(self, env: DiscreteEnv, outputs: int, hidden: int, layers: int):
        super().__init__()
        self.env, self.outputs = env, outputs
        self.mlp = MLP(env.feature_dim, env.n_actions * outputs, hidden, layers)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        out = self.mlp(self.env.encode(states))
        return out.reshape(states.shape[:-1] + (self.env.n_actions, self.outputs))


def default_child_network(env: DiscreteEnv, outputs: int, hidden: int, layers: int) -> nn.Module:
    """The environment's own network with ``outputs`` values per action when it has one (the fragment trees'
    message-passing :class:`~pyro_sculpt.gflownets.envs.fragments.policy.FragmentTreePolicy`), else an MLP on
    ``env.encode``. Either maps parents ``(B, state_dim)`` to ``(B, n_actions, outputs)``."""
    try:
        return env.policy_network(hidden, layers, outputs=outputs)
    except (NotImplementedError, TypeError, AttributeError):
        return _MLPChildNetwork(env, outputs, hidden, layers)


class ChildObservationClassifier(ObservationClassifier):
    """A learned observation classifier that also scores every child of a state in one forward of the parent.

    Two networks: the state network of :class:`ObservationClassifier` (terminal logits and :math:`Q(y \\mid s)` at a
    state, used for the stop action and the current state), and a per-action head
    :math:`h(s)_a \\approx \\log Q(y \\mid s_a)`, ``(B, n_actions, m^n)`` normalised over :math:`y`, where :math:`s_a`
    is the child reached from :math:`s` by action :math:`a` (entries of invalid actions and of the stop are
    ignored). The guided step (:func:`~pyro_sculpt.sculpting.gflownet.guided_step`) uses the head instead of building
    and classifying the children.

    Training (:meth:`fit`, the shared loop) adds to the loss of :class:`ObservationClassifier` the non-terminal loss
    of docs/math.md §1.2 applied to every visited child through its parent's head: for a trajectory of base
    :math:`k` ending in :math:`x` and each of its transitions :math:`s \\to s'` by action :math:`a`,

    .. math::

        L_C = -\\sum_{(s, a) \\in \\tau} \\sum_y W(s'; y) \\log h(s)_{a, y}, \\qquad
        W = \\mathbb 1[y_1 = k] \\prod_{j \\ge 2} \\bar Q(y_j \\mid x),

    the same weights as :math:`L_N` at :math:`s'`, so the head is trained to match :math:`Q(y \\mid s')`.

    :param env: the environment.
    :param num_models: :math:`m`.
    :param num_observations: :math:`n`.
    :param hidden: width of both networks.
    :param layers: hidden layers (message-passing rounds for fragment trees) of both networks.
    :param network: the state network (see :class:`ObservationClassifier`).
    :param child_network: maps parents ``(B, state_dim)`` to ``(B, n_actions, m^n)``; default
        :func:`default_child_network`.
    :param device: where the networks live.

    Example::

        clf = ChildObservationClassifier.for_bases([p1, p2], num_observations=2, hidden=32).fit(steps=500)
        hm = harmonic_mean(p1, p2, clf)  # the guided step scores the children with the per-action head
    """

    #: the guided step asks :meth:`children_log_joint` instead of classifying built children
    scores_children = True
    checkpoint_format = "ChildObservationClassifier"

    def __init__(
        self,
        env: DiscreteEnv,
        num_models: int = 2,
        num_observations: int = 2,
        *,
        hidden: int = 64,
        layers: int = 2,
        network: Optional[nn.Module] = None,
        child_network: Optional[nn.Module] = None,
        device=None,
    ):
        super().__init__(env, num_models, num_observations, hidden=hidden, layers=layers, network=network)
        k = num_models**num_observations
        self.custom_child_network = child_network is not None
        self.child_net = child_network if child_network is not None else default_child_network(env, k, hidden, layers)
        if device is not None:
            self.to(device)
        expected = f"child_network must map (B, {env.state_dim}) parents to (B, n_actions={env.n_actions}, m^n={k})"
        try:
            with torch.no_grad():
                probe = self.child_net(env.initial_state(self.device).unsqueeze(0))
        except (RuntimeError, TypeError, ValueError) as err:
            raise ValueError(f"{expected}; it failed on the initial state: {err}") from None
        if tuple(probe.shape) != (1, env.n_actions, k):
            raise ValueError(f"{expected}, got {tuple(probe.shape)}")

    def children_log_joint(self, states: torch.Tensor, obs: Observations) -> torch.Tensor:
        """:math:`\\log Q(y_1, \\dots, y_n \\mid s_a)` at the child of every action of every state, under the priors
        of ``obs``, from ONE forward of the parents. ``(B, n_actions, m, ..., m)``; entries of actions that are not
        valid (and of the stop) mean nothing.

        :param states: ``(B, state_dim)`` non-terminal states.
        """
        m, n = self.num_models, self.num_observations
        out = torch.log_softmax(self.child_net(states), -1)
        nt = out.reshape(out.shape[:-1] + (m,) * n)
        log_priors = obs.log_priors(states.device, nt.dtype)
        uniform = torch.full((m,), -math.log(m), dtype=nt.dtype, device=nt.device)
        return reweight_first(nt, n, log_priors[0], uniform)

    def child_loss(self, states, actions, active, weights, stop: int, norm) -> torch.Tensor:
        """:math:`L_C` (class docstring) over a padded batch of trajectories: ``states`` ``(B, T+1, D)``,
        ``actions`` and ``active`` ``(B, T)``, ``weights`` ``(B, m^n)``; divided by ``norm``."""
        moved = active & (actions != stop)  # transitions s_t -> s_{t+1} to a non-terminal child
        parents = states[:, :-1][moved]
        logits = torch.log_softmax(self.child_net(parents), -1)  # (P, A, m^n)
        picked = logits[torch.arange(len(parents), device=logits.device), actions[moved]]
        w = weights.unsqueeze(1).expand(-1, actions.shape[1], -1)[moved]
        return -(w * picked).sum() / norm

    def checkpoint_payload(self) -> dict:
        payload = super().checkpoint_payload()
        payload["custom_child_network"] = self.custom_child_network
        return payload

    @classmethod
    def _constructor_options(cls, path, data: dict, child_network: Optional[nn.Module] = None) -> dict:
        """``ChildObservationClassifier.load(path, env=None, device=None, *, network=None, child_network=None)``:
        as :meth:`ObservationClassifier.load`, plus the child network.

        :raises ValueError: for a checkpoint saved with a custom ``child_network`` when none is given.
        """
        if data.get("custom_child_network", False) and child_network is None:
            raise ValueError(f"checkpoint {path} was saved with a custom child network: pass child_network=...")
        return {"child_network": child_network}
