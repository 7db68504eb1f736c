"""Exact dynamic programming over the state graph of an enumerable environment.

For a forward policy :math:`P_F` on a DAG, the probability that a trajectory visits :math:`s` obeys

.. math::

    u(s_0) = 1, \\qquad u(s') = \\sum_{s \\in \\mathrm{Pa}(s')} u(s) P_F(s' \\mid s), \\qquad
    P_T(x) = u(x) P_F(\\mathrm{stop} \\mid x),

computed level by level in topological order, every level in one vectorised ``index_add_`` (Malkin et al. 2022).
Expectations of a terminal function :math:`g` given the current state run the other way:
:math:`V(s) = P_F(\\mathrm{stop} \\mid s) g(s) + \\sum_{s'} P_F(s' \\mid s) V(s')`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pyro_sculpt.gflownets.env import DiscreteEnv
from pyro_sculpt.gflownets.rewards import check_log_reward


@dataclass
class StateGraph:
    """The edges of an enumerable environment, grouped by the level of their source state."""

    states: torch.Tensor  # (N, D)
    src: torch.Tensor  # (E,) source index, sorted by level
    action: torch.Tensor  # (E,)
    dst: torch.Tensor  # (E,)
    bounds: list[int]  # edges of source level l are src[bounds[l]:bounds[l+1]]
    init_index: int


def state_graph(env: DiscreteEnv, device: torch.device | str | None = None) -> StateGraph:
    """Build (and cache on the environment) the :class:`StateGraph` of ``env``."""
    if not env.is_enumerable:
        raise ValueError(f"env must be enumerable for exact dynamic programming, got {env!r}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    cache = env.__dict__.setdefault("_state_graph_cache", {})
    if device in cache:
        return cache[device]
    states = env.all_states(device)
    src, action, kids = env.valid_children(states)
    dst = env.index(kids)
    level = env.levels(states)[src]
    order = torch.argsort(level, stable=True)
    src, action, dst, level = src[order], action[order], dst[order], level[order]
    n_levels = int(env.levels(states).max()) + 1
    counts = torch.bincount(level, minlength=n_levels).tolist()
    bounds = [0]
    for c in counts:
        bounds.append(bounds[-1] + c)
    init = int(env.index(env.initial_state(device)))
    graph = StateGraph(states, src, action, dst, bounds, init)
    cache[device] = graph
    return graph


def state_flows(env: DiscreteEnv, log_pf: torch.Tensor) -> torch.Tensor:
    """Probability :math:`u(s)` that a trajectory of the policy visits each state.

    :param log_pf: ``(num_states, n_actions)`` log-probabilities of the policy at every state of
        :meth:`~DiscreteEnv.all_states` (``-inf`` for invalid actions).
    :returns: ``(num_states,)`` in float64.
    """
    g = state_graph(env, log_pf.device)
    _check_table(env, log_pf, g)
    p = _probs(log_pf)
    w = p[g.src, g.action]
    u = torch.zeros(log_pf.shape[0], dtype=torch.float64, device=log_pf.device)
    u[g.init_index] = 1.0
    for lo, hi in zip(g.bounds[:-1], g.bounds[1:]):
        if hi > lo:
            u.index_add_(0, g.dst[lo:hi], u[g.src[lo:hi]] * w[lo:hi])
    return u


def terminal_distribution(env: DiscreteEnv, log_pf: torch.Tensor) -> torch.Tensor:
    """Exact terminal distribution :math:`P_T(x) = u(x) P_F(\\mathrm{stop} \\mid x)` over all states (float64)."""
    u = state_flows(env, log_pf)
    return u * _probs(log_pf)[:, env.stop_action]


def backward_values(env: DiscreteEnv, log_pf: torch.Tensor, g_terminal: torch.Tensor) -> torch.Tensor:
    """:math:`V(s) = \\mathbb E[g(x) \\mid s]` for the policy's trajectories continuing from each state.

    :param g_terminal: ``(num_states, K)`` values of K terminal functions.
    :returns: ``(num_states, K)`` float64.
    """
    graph = state_graph(env, log_pf.device)
    _check_table(env, log_pf, graph)
    p = _probs(log_pf)
    v = p[:, env.stop_action, None] * g_terminal.double()
    w = p[graph.src, graph.action].unsqueeze(-1)
    acc = v.clone()
    for lo, hi in reversed(list(zip(graph.bounds[:-1], graph.bounds[1:]))):
        if hi > lo:
            # children of level-l states are at level l + 1, already final
            acc.index_add_(0, graph.src[lo:hi], w[lo:hi] * acc[graph.dst[lo:hi]])
    return acc


def flow_policy(env: DiscreteEnv, log_reward: torch.Tensor) -> torch.Tensor:
    r"""The forward policy of a perfectly trained GFlowNet with the uniform backward policy.

    The state flows :math:`F(s) = R(s) + \sum_{s' \in \mathrm{Ch}(s)} F(s') / |\mathrm{Pa}(s')|` are computed
    from the last level back, and :math:`P_F(s' \mid s) = F(s') / (|\mathrm{Pa}(s')| F(s))`,
    :math:`P_F(\mathrm{stop} \mid s) = R(s) / F(s)`. Its terminal distribution is exactly :math:`R / Z`.

    :param log_reward: ``(num_states,)`` :math:`\log R` at :meth:`~DiscreteEnv.all_states`.
    :returns: ``(num_states, n_actions)`` float64 log-probabilities (``-inf`` on invalid actions).
    """
    graph = state_graph(env, log_reward.device)
    n = graph.states.shape[0]
    if tuple(log_reward.shape) != (n,):
        raise ValueError(f"log_reward must have shape ({n},), got {tuple(log_reward.shape)}")
    log_r = log_reward.detach().double()
    # a state where the environment forbids the stop (e.g. the empty molecule) is never terminal: R = 0 there
    can_stop = env.forward_mask(graph.states)[:, env.stop_action]
    log_r = log_r.masked_fill(~can_stop, float("-inf"))
    # in log space: rewards spanning more than float64's ~709 nats would underflow to flows 0 and rows 0 / 0
    log_inv_parents = -env.num_parents(graph.states).double().clamp(min=1).log()
    log_flow = log_r.clone()
    for lo, hi in reversed(list(zip(graph.bounds[:-1], graph.bounds[1:]))):
        if hi > lo:
            src, dst = graph.src[lo:hi], graph.dst[lo:hi]
            log_flow = _log_add_at(log_flow, src, log_flow[dst] + log_inv_parents[dst])
    out = torch.full((n, env.n_actions), float("-inf"), dtype=torch.float64, device=log_r.device)
    out[graph.src, graph.action] = log_flow[graph.dst] + log_inv_parents[graph.dst] - log_flow[graph.src]
    out[:, env.stop_action] = log_r - log_flow
    return out


def _log_add_at(log_x: torch.Tensor, index: torch.Tensor, log_v: torch.Tensor) -> torch.Tensor:
    """:math:`\\log(e^{x_j} + \\sum_{k: index_k = j} e^{v_k})` for every :math:`j`, stably."""
    top = log_x.scatter_reduce(0, index, log_v, "amax", include_self=True)
    shift = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    total = (log_x - shift).exp().index_add(0, index, (log_v - shift[index]).exp())
    return shift + total.log()


def _probs(log_pf: torch.Tensor) -> torch.Tensor:
    # renormalised in float64, so that each row sums to one to double precision
    return torch.softmax(log_pf.detach().double(), dim=-1)


def _check_table(env: DiscreteEnv, log_pf: torch.Tensor, graph: StateGraph) -> None:
    expected = (graph.states.shape[0], env.n_actions)
    if tuple(log_pf.shape) != expected:
        raise ValueError(f"log_pf must have shape {expected} (all states x actions), got {tuple(log_pf.shape)}")


def reward_distribution(env: DiscreteEnv, reward) -> torch.Tensor:
    """The normalised target :math:`R(x) / Z` over all states (float64).

    :param reward: a reward ``reward(env, states) -> log R``.
    :raises ValueError: if the reward does not return one finite log-reward per state
        (:func:`~pyro_sculpt.gflownets.check_log_reward`).
    """
    states = env.all_states()
    log_r = check_log_reward(reward(env, states), states, "reward").double()
    can_stop = env.forward_mask(states)[:, env.stop_action]  # states that cannot be terminal get no mass
    return torch.softmax(log_r.masked_fill(~can_stop, float("-inf")), 0)
