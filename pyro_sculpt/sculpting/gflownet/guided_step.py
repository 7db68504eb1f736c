"""The guided policy of a sculpted GFlowNet (Garipov et al. 2023, §4.1, eq. 12-13; MATH.md §1.1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from pyro_sculpt.gflownets.policy_process import DiscretePolicyProcess
from pyro_sculpt.sculpting.gflownet.classifier import Classifier
from pyro_sculpt.sculpting.observations import Observations


@dataclass
class GuidedStep:
    """Everything one guided step computes, for samplers that need more than the policy (SMC).

    :ivar log_probs: ``(..., A)`` the guided policy, ``-inf`` on invalid actions.
    :ivar log_norm: ``(...)`` :math:`\\log \\sum_a \\tilde P_F(a \\mid s) Q(y \\mid s_a) / Q(y \\mid s)`.
    :ivar base_log_probs: ``(..., m, A)`` every base's policy.
    :ivar log_q_y: ``(..., A)`` :math:`\\log Q(y \\mid s_a)` (the stop action's child is the terminal :math:`s`).
    :ivar log_q_y_current: ``(...)`` :math:`\\log Q(y \\mid s)`.
    """

    log_probs: torch.Tensor
    log_norm: torch.Tensor
    base_log_probs: torch.Tensor
    log_q_y: torch.Tensor
    log_q_y_current: torch.Tensor


def _classify_distinct_rows(env, classifier: Classifier, obs: Observations, rows, terminal) -> torch.Tensor:
    """``classifier.log_joint(rows, terminal, obs)`` in one call over the distinct (state, terminal) rows only:
    neighbouring particles share children, and a particle's stop row repeats another's. ``(R, m, ..., m)``."""
    if not env.is_enumerable or rows.shape[:-1].numel() < 64:
        return classifier.log_joint(rows, terminal, obs)
    flat, flags = rows.reshape(-1, rows.shape[-1]), terminal.reshape(-1)
    ids = env.index(flat) * 2 + flags.long()
    uniq, inverse = torch.unique(ids, return_inverse=True)
    if len(uniq) > 0.75 * len(ids):
        return classifier.log_joint(rows, terminal, obs)
    first = torch.full((len(uniq),), len(ids), dtype=torch.long, device=ids.device)
    first.scatter_reduce_(0, inverse, torch.arange(len(ids), device=ids.device), reduce="amin")
    out = classifier.log_joint(flat[first], flags[first], obs)[inverse]
    return out.reshape(rows.shape[:-1] + out.shape[1:])


def guided_step(
    bases: Sequence[DiscretePolicyProcess],
    classifier: Classifier,
    obs: Observations,
    states: torch.Tensor,
    base_log_probs: Optional[torch.Tensor] = None,
    deduplicate: bool = True,
) -> GuidedStep:
    """The guided policy at a batch of states:

    .. math::

        \\log P_F(a \\mid s, y) = \\operatorname{logsumexp}_i\\big(\\log P_{i,F}(a \\mid s)
            + \\log Q(y_1 = i \\mid s)\\big)
            + \\log Q(y \\mid s_a) - \\log Q(y \\mid s) - \\log Z(s),

    where :math:`s_a` is the child reached by :math:`a` and, for the stop action, the terminal :math:`x = s`. The
    valid children of every state (:meth:`~pyro_sculpt.gflownets.DiscreteEnv.valid_children`: environments with many
    actions and few valid ones pay for the valid ones only), every stop (terminal) row and every current state go
    through the classifier in ONE batched call; invalid actions get probability zero.

    :param base_log_probs: ``(..., m, A)`` the bases' policies at ``states``, if already computed.
    :param deduplicate: send each distinct (state, terminal flag) row through the classifier once.
    """
    env = bases[0].env
    n_act, stop = env.n_actions, env.stop_action
    batch = states.shape[:-1]
    flat = states.reshape(-1, states.shape[-1])
    b = flat.shape[0]
    parent, action, kids = env.valid_children(flat)  # only the valid (state, action) pairs: (K,), (K,), (K, D)
    rows = torch.cat([kids, flat, flat], 0)  # children, then every state as terminal (stop), then as current
    terminal = torch.zeros(rows.shape[0], dtype=torch.bool, device=states.device)
    terminal[len(kids) : len(kids) + b] = True
    if deduplicate:
        log_joint = _classify_distinct_rows(env, classifier, obs, rows, terminal)
    else:
        log_joint = classifier.log_joint(rows, terminal, obs)
    q_rows = obs.select(log_joint)  # (K + 2B,)
    log_q_y = torch.full((b, n_act), float("-inf"), dtype=q_rows.dtype, device=states.device)
    log_q_y[parent, action] = q_rows[: len(kids)]
    log_q_y[:, stop] = q_rows[len(kids) : len(kids) + b]
    mask = torch.zeros((b, n_act), dtype=torch.bool, device=states.device)
    mask[parent, action] = True
    mask[:, stop] = True
    log_q_y, mask = log_q_y.reshape(batch + (n_act,)), mask.reshape(batch + (n_act,))
    log_q_cur = q_rows[len(kids) + b :].reshape(batch)
    n = obs.num_observations
    current = log_joint[len(kids) + b :].reshape(batch + log_joint.shape[1:])  # (..., m, ..., m) at the state
    n = obs.num_observations
    log_q1 = current if n == 1 else torch.logsumexp(current.flatten(-(n - 1)), -1)  # Q(y_1 = i | s)
    base_lp = base_log_probs
    if base_lp is None:
        base_lp = torch.stack([b.action_log_probs(states) for b in bases], -2)  # (..., m, A)
    mix = torch.logsumexp(base_lp + log_q1.unsqueeze(-1), -2)
    logits = (mix + log_q_y - log_q_cur.unsqueeze(-1)).masked_fill(~mask, float("-inf"))
    log_norm = torch.logsumexp(logits, -1)
    return GuidedStep(logits - log_norm.unsqueeze(-1), log_norm, base_lp, log_q_y, log_q_cur)
