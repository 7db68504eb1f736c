"""Diagnostics of weighted particles: effective sample size and Pareto :math:`\\hat k` (PSIS, via ArviZ)."""

from __future__ import annotations

import math

import torch


def effective_sample_size(log_weights: torch.Tensor) -> float:
    """:math:`(\\sum_j w_j)^2 / \\sum_j w_j^2` of unnormalised log-weights.

    Example::

        ps.infer.effective_sample_size(torch.zeros(100))  # 100.0: equal weights
    """
    lw = log_weights.double()
    return float(torch.exp(2 * torch.logsumexp(lw, 0) - torch.logsumexp(2 * lw, 0)))


def pareto_k(log_weights: torch.Tensor) -> float:
    """Pareto :math:`\\hat k` of importance log-weights, by ArviZ's PSIS (``-inf`` when all non-zero weights are
    equal; zero weights are left out of the fit).

    Tied weights (a discrete space, where particles that share a state share a weight) defeat the generalised Pareto
    fit of the largest weights: with a few distinct values among them ArviZ reports :math:`\\hat k` of 3 to
    :math:`\\infty` for weights whose largest is 1.2-1.5 times their mean. When the tail PSIS fits (the largest
    :math:`\\min(S/5, 3\\sqrt S) + 1` of :math:`S`) has ties, each group of equal log-weights is spread evenly over the
    gap down to the next smaller distinct value (the empirical distribution made continuous, as for a Q-Q plot of
    discrete data) before the fit: bounded tied weights then get :math:`\\hat k \\le 0`, a few dominant weights
    still a large one (four weights :math:`e^{25}` times the other 9,996: 0.81).

    Example::

        k = ps.infer.pareto_k(torch.randn(1000))  # below 0.7: the weights are reliable
    """
    import arviz as az
    import numpy as np

    lw = log_weights.detach().double().cpu().numpy()
    lw = lw[lw > -np.inf]  # weights zero (particles where the target has no mass) are not in the tail
    if lw.size == 0 or np.ptp(lw) == 0:
        return float("-inf")  # all weights equal: no tail at all
    tail = np.sort(lw)[-(int(min(0.2 * lw.size, 3 * np.sqrt(lw.size))) + 1) :]
    if np.unique(tail).size < tail.size:
        lw = _spread_ties(lw)
    with np.errstate(all="ignore"):
        _, k = az.psislw(lw.copy())
    return float(k)


def _spread_ties(values):
    """``values`` (a NumPy array) with each group of equal values spread evenly over the interval from the next
    smaller distinct value to the group's value (the smallest group over the gap above it), in a stable order."""
    import numpy as np

    distinct, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    first_gap = distinct[1] - distinct[0] if distinct.size > 1 else 0.0
    lower = np.concatenate([[distinct[0] - first_gap], distinct[:-1]])
    rank = np.empty(values.size)
    rank[np.argsort(values, kind="stable")] = np.arange(values.size)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    frac = (rank - starts[inverse] + 0.5) / counts[inverse]
    return lower[inverse] + (distinct[inverse] - lower[inverse]) * frac


def count_invalid_increments(increments: torch.Tensor) -> int:
    """The number of NaN or :math:`+\\infty` incremental log-weights: a twist gives a particle of weight zero
    :math:`-\\infty`, and anything else that is not finite is a bug of the twist or of its models."""
    return int((torch.isnan(increments) | (increments == math.inf)).sum())


def invalid_increments_error(count: int, step: int, where: str = "") -> FloatingPointError:
    """The error of :func:`count_invalid_increments`' particles (``where``: e.g. " on 2 processes")."""
    return FloatingPointError(
        f"SMC: step {step} gave {count} particle(s){where} a NaN or +inf incremental log-weight (a weight of zero "
        "is -inf; NaN or +inf comes from the twist's densities or scores at those particles)"
    )
