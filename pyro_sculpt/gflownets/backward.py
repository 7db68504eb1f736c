"""Backward trajectories, and importance estimates of a GFlowNet's terminal probabilities where no dynamic programme
exists (docs/math.md §4).

A forward policy :math:`P_F` reaches :math:`x` by many trajectories; its terminal probability is their sum,
:math:`p_T(x) = \\sum_{\\tau \\to x} P_F(\\tau)`, which dynamic programming gives on enumerable environments only. For
any backward policy :math:`P_B` with the same edges (here the environment's uniform one),

.. math::

    p_T(x) = \\mathbb{E}_{\\tau \\sim P_B(\\cdot \\mid x)}\\left[\\frac{P_F(\\tau)}{P_B(\\tau \\mid x)}\\right],

so the mean of :math:`K` such ratios over trajectories sampled backward from :math:`x` is an unbiased estimate of
:math:`p_T(x)`, whatever the training of :math:`P_F` (Zhang et al. 2022, "Generative flow networks for discrete
probabilistic modeling", §5, evaluate likelihoods this way). Its variance is zero for a policy that satisfies detailed
balance with :math:`P_B` exactly, and grows with the policy's departure from it. The logarithm of the estimate is
biased low by about half its relative variance over :math:`K` (Jensen).

Unbiasedness is what pseudo-marginal Metropolis-Hastings needs (Andrieu & Roberts 2009): moves whose acceptance
ratio uses such estimates, kept with the state, still leave the exact target invariant
(:class:`~pyro_sculpt.mcmc.IndependenceRejuvenation` with ``num_backward``).
"""

from __future__ import annotations

import math

import torch

from pyro_sculpt.gflownets.env import DiscreteEnv
from pyro_sculpt.gflownets.policy_process import per_unique_state
from pyro_sculpt.utils import check_positive_int


def sample_backward(env: DiscreteEnv, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One trajectory per state of ``x`` ``(B, state_dim)``, sampled backward to the initial state by the
    environment's uniform backward policy (:meth:`~pyro_sculpt.gflownets.DiscreteEnv.parents`).

    :returns: ``(parents, actions, active, log_pb)``: ``parents[:, k]`` ``(B, T, state_dim)`` is the state ``k + 1``
        steps before ``x`` and ``actions[:, k]`` the action that leads from it towards ``x`` (valid where ``active``,
        ``(B, T)``); ``log_pb`` ``(B,)`` float64 is :math:`\\log P_B(\\tau \\mid x)`.
    :raises ValueError: if a state other than the initial one has no parent (not a state the environment reaches).
    """
    b = x.shape[0]
    s0 = env.initial_state(x.device)
    cur = x.clone()
    log_pb = torch.zeros(b, dtype=torch.float64, device=x.device)
    parents, actions, active = [], [], []
    for _ in range(env.max_steps):
        live = ~(cur == s0).all(-1)
        if not bool(live.any()):
            break
        rows = torch.nonzero(live).flatten()
        index, par, act = env.parents(cur[rows])
        counts = torch.bincount(index, minlength=len(rows))
        if bool((counts == 0).any()):
            bad = int(rows[torch.nonzero(counts == 0)[0, 0]])
            raise ValueError(f"x: the state {cur[bad].tolist()} (reached backward from x[{bad}]) has no parent")
        start = torch.cumsum(counts, 0) - counts
        pick = start + (torch.rand(len(rows), device=x.device) * counts).long().clamp(max=counts - 1)
        new = cur.clone()
        new[rows] = par[pick]
        step_action = torch.full((b,), env.stop_action, dtype=torch.long, device=x.device)
        step_action[rows] = act[pick]
        log_pb[rows] -= counts.double().log()
        parents.append(new)
        actions.append(step_action)
        active.append(live)
        cur = new
    else:
        if bool((~(cur == s0).all(-1)).any()):
            raise ValueError(f"x: a state is more than max_steps={env.max_steps} steps from the initial state")
    if not parents:
        empty = torch.zeros((b, 0), dtype=torch.long, device=x.device)
        return x.new_zeros((b, 0, x.shape[-1])), empty, empty.bool(), log_pb
    return torch.stack(parents, 1), torch.stack(actions, 1), torch.stack(active, 1), log_pb


def estimate_terminal_log_prob(
    process, x: torch.Tensor, num_trajectories: int = 16, chunk_size: int = 2048
) -> torch.Tensor:
    """:math:`\\log \\frac1K \\sum_k P_F(\\tau_k) / P_B(\\tau_k \\mid x)` over ``num_trajectories`` trajectories
    sampled backward from each state of ``x`` (the module docstring): the exponential is an unbiased estimate of the
    process's terminal probability :math:`p_T(x)`.

    :param process: a :class:`~pyro_sculpt.gflownets.policy_process.DiscretePolicyProcess` (a GFlowNet, a tabular
        policy) on an environment that lists parents.
    :param x: terminal states ``(..., state_dim)``.
    :param num_trajectories: :math:`K`, trajectories per state (>= 1).
    :param chunk_size: trajectories sampled at a time: bounds the memory; it changes which random numbers each
        trajectory draws, not the estimate's distribution.
    :returns: ``(...)`` float64; :math:`-\\infty` where the process cannot stop at ``x``.

    Example::

        gfn = ps.GFlowNet(ps.HyperGrid(2, 8), ps.rewards.original())
        x = gfn.as_distribution().sample((100,))
        est = estimate_terminal_log_prob(gfn, x, num_trajectories=64)
        (est - gfn.terminal_log_prob(x)).abs().mean()  # small; exactly 0 for a policy in detailed balance
    """
    k = check_positive_int("num_trajectories", num_trajectories, 1)
    chunk_size = check_positive_int("chunk_size", chunk_size, 1)
    env = process.env
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a tensor of states (..., {env.state_dim}), got {type(x).__name__}")
    env.validate_states(x, "x")
    shape = x.shape[:-1]
    flat = x.reshape(-1, env.state_dim).repeat_interleave(k, 0)
    with torch.no_grad():
        log_w = torch.cat([_log_ratios(process, flat[i : i + chunk_size]) for i in range(0, len(flat), chunk_size)])
    return (torch.logsumexp(log_w.reshape(-1, k), -1) - math.log(k)).reshape(shape)


def _log_ratios(process, x: torch.Tensor) -> torch.Tensor:
    """:math:`\\log P_F(\\tau) - \\log P_B(\\tau \\mid x)` of one backward trajectory from each state of ``x``."""
    env = process.env
    parents, actions, active, log_pb = sample_backward(env, x)
    log_pf = per_unique_state(env, process.action_log_probs, x, process.deduplicate)[:, env.stop_action].double()
    for t in range(parents.shape[1]):
        rows = torch.nonzero(active[:, t]).flatten()
        lp = per_unique_state(env, process.action_log_probs, parents[rows, t], process.deduplicate)
        log_pf[rows] += lp.gather(-1, actions[rows, t].unsqueeze(-1)).squeeze(-1).double()
    return log_pf - log_pb
