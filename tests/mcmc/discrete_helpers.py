"""Exact products of tabular GFlowNets on a hypergrid and the L1 of chains against them, for the discrete kernels'
tests."""

import torch

import pyro_sculpt as ps
from tests.conftest import exact_bases


def product_setup(env, seed):
    """Two exact tabular GFlowNets, their terminal distributions' log-probabilities (exact dynamic programming) as
    callables on states, and the normalised product."""
    p1, p2 = exact_bases(env, 2, seed=seed)
    q1, q2 = p1.exact_terminal_distribution(), p2.exact_terminal_distribution()
    target = q1 * q2 / (q1 * q2).sum()

    def log_p(q):
        return lambda x: q.log()[env.index(x)]

    return p1, p2, log_p(q1), log_p(q2), target


def mean_l1_ratio(env, x, target, groups):
    """The L1 of ``groups`` equal groups of chains against ``target``, averaged, over the expected L1 of as many exact
    i.i.d. samples (the sampling floor)."""
    n = x.shape[0] // groups
    l1 = []
    for r in range(groups):
        counts = torch.bincount(env.index(x[r * n : (r + 1) * n]), minlength=env.num_states).double()
        l1.append(ps.metrics.l1_distance(counts / n, target))
    return sum(l1) / groups / ps.metrics.expected_l1_floor(target, n)
