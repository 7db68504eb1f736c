"""The guided policy of a sculpted GFlowNet (Garipov et al. 2023, §4.1, eq. 12-13; docs/math.md §1.1)."""

from __future__ import annotations

import math
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


#: :math:`Q(y \\mid s_0)` at or below this is taken for zero by :func:`check_common_support`. The exact classifier
#: floors its probabilities at 1e-300; this leaves twenty orders of magnitude between the two, far below any
#: normaliser a float64 composition of grid distributions reaches.
MIN_EVIDENCE = 1e-280


def check_common_support(env, classifier: Classifier, obs: Observations, device=None) -> None:
    """Raise a :class:`ValueError` naming ``y`` when the observations are impossible: when the classifier's
    :math:`Q(y \\mid s_0)` at the initial state, the probability :math:`\\tilde p(y)` of the observations under the
    augmented model (exact with an exact classifier), is at most :data:`MIN_EVIDENCE` or NaN. The bases then share
    no support where the observations need it (e.g. the harmonic mean of bases with disjoint supports): the sculpted
    distribution is zero everywhere, and the guided policy would be meaningless. One classifier call on one row.
    """
    s0 = env.initial_state(device).unsqueeze(0)
    flags = torch.zeros(1, dtype=torch.bool, device=s0.device)
    with torch.no_grad():
        log_q = float(obs.select(classifier.log_joint(s0, flags, obs.detach()))[0])
    if not log_q > math.log(MIN_EVIDENCE):  # also true for NaN
        raise ValueError(
            f"y={obs.y} has probability {math.exp(log_q) if log_q == log_q else log_q:.3g} <= {MIN_EVIDENCE:g} under "
            "the classifier at the initial state: the bases share no support where these observations need it, so "
            "the sculpted distribution is zero everywhere (undefined)"
        )


def _classify_distinct_rows(env, classifier: Classifier, obs: Observations, rows, terminal) -> torch.Tensor:
    """``classifier.log_joint(rows, terminal, obs)`` in one call over the distinct (state, terminal) rows only:
    neighbouring particles share children, and a particle's stop row repeats another's. ``(R, m, ..., m)``."""
    if not env.is_enumerable or math.prod(rows.shape[:-1]) < 64:
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
    through the classifier in ONE batched call; invalid actions get probability zero. A classifier with a per-action
    head (``scores_children``, :class:`~pyro_sculpt.sculpting.gflownet.ChildObservationClassifier`) scores every
    child in one forward of the parents instead, and no child is built.

    :param base_log_probs: ``(..., m, A)`` the bases' policies at ``states``, if already computed.
    :param deduplicate: send each distinct (state, terminal flag) row through the classifier once.
    """
    env = bases[0].env
    n_act = env.n_actions
    batch = states.shape[:-1]
    flat = states.reshape(-1, states.shape[-1])
    if getattr(classifier, "scores_children", False):
        log_q_y, mask, log_q_cur, current = _children_by_head(env, classifier, obs, flat)
    else:
        log_q_y, mask, log_q_cur, current = _children_by_rows(env, classifier, obs, flat, deduplicate)
    log_q_y, mask = log_q_y.reshape(batch + (n_act,)), mask.reshape(batch + (n_act,))
    log_q_cur = log_q_cur.reshape(batch)
    current = current.reshape(batch + current.shape[1:])  # (..., m, ..., m) at the state
    n = obs.num_observations
    log_q1 = current if n == 1 else torch.logsumexp(current.flatten(-(n - 1)), -1)  # Q(y_1 = i | s)
    base_lp = base_log_probs
    if base_lp is None:
        base_lp = torch.stack([b.action_log_probs(states) for b in bases], -2)  # (..., m, A)
    mix = torch.logsumexp(base_lp + log_q1.unsqueeze(-1), -2)
    logits = (mix + log_q_y - log_q_cur.unsqueeze(-1)).masked_fill(~mask, float("-inf"))
    log_norm = torch.logsumexp(logits, -1)
    return GuidedStep(logits - log_norm.unsqueeze(-1), log_norm, base_lp, log_q_y, log_q_cur)


def _children_by_head(env, classifier, obs: Observations, flat: torch.Tensor):
    """``(log Q(y | s_a) (B, A), -inf on invalid actions; the valid actions (B, A); log Q(y | s) (B,);
    log Q(. | s) (B, m, ..., m))`` with a
    per-action head: the stop and current rows through the state network, every child through ONE forward of the
    parents (:class:`~pyro_sculpt.sculpting.gflownet.ChildObservationClassifier`); no child is built."""
    b, stop = flat.shape[0], env.stop_action
    mask = env.forward_mask(flat)
    rows = torch.cat([flat, flat], 0)  # every state as terminal (stop), then as current
    terminal = torch.arange(2 * b, device=flat.device) < b
    log_joint = classifier.log_joint(rows, terminal, obs)
    q_rows = obs.select(log_joint)  # (2B,)
    q_children = obs.select(classifier.children_log_joint(flat, obs))  # (B, A)
    log_q_y = q_children.masked_fill(~mask, float("-inf"))
    log_q_y[:, stop] = q_rows[:b]
    return log_q_y, mask, q_rows[b:], log_joint[b:]


def _children_by_rows(env, classifier, obs: Observations, flat: torch.Tensor, deduplicate: bool):
    """As :func:`_children_by_head`, by building the valid children and classifying them as states."""
    b, n_act, stop = flat.shape[0], env.n_actions, env.stop_action
    parent, action, kids = env.valid_children(flat)  # only the valid (state, action) pairs: (K,), (K,), (K, D)
    rows = torch.cat([kids, flat, flat], 0)  # children, then every state as terminal (stop), then as current
    terminal = torch.zeros(rows.shape[0], dtype=torch.bool, device=flat.device)
    terminal[len(kids) : len(kids) + b] = True
    if deduplicate:
        log_joint = _classify_distinct_rows(env, classifier, obs, rows, terminal)
    else:
        log_joint = classifier.log_joint(rows, terminal, obs)
    q_rows = obs.select(log_joint)  # (K + 2B,)
    log_q_y = torch.full((b, n_act), float("-inf"), dtype=q_rows.dtype, device=flat.device)
    log_q_y[parent, action] = q_rows[: len(kids)]
    log_q_y[:, stop] = q_rows[len(kids) : len(kids) + b]
    mask = torch.zeros((b, n_act), dtype=torch.bool, device=flat.device)
    mask[parent, action] = True
    mask[:, stop] = True
    return log_q_y, mask, q_rows[len(kids) + b :], log_joint[len(kids) + b :]
