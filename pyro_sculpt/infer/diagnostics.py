"""Diagnostics of weighted particles: effective sample size and Pareto :math:`\\hat k` (PSIS, via ArviZ)."""

from __future__ import annotations

import torch


def effective_sample_size(log_weights: torch.Tensor) -> float:
    """:math:`(\\sum_j w_j)^2 / \\sum_j w_j^2` of unnormalised log-weights.

    Example::

        ps.infer.effective_sample_size(torch.zeros(100))  # 100.0: equal weights
    """
    lw = log_weights.double()
    return float(torch.exp(2 * torch.logsumexp(lw, 0) - torch.logsumexp(2 * lw, 0)))


def pareto_k(log_weights: torch.Tensor) -> float:
    """Pareto :math:`\\hat k` of importance log-weights, by ArviZ's PSIS (``-inf`` when all weights are equal).

    Example::

        k = ps.infer.pareto_k(torch.randn(1000))  # below 0.7: the weights are reliable
    """
    import arviz as az
    import numpy as np

    lw = log_weights.detach().double().cpu().numpy()
    if lw.size == 0 or np.ptp(lw) == 0:
        return float("-inf")  # all weights equal: no tail at all
    with np.errstate(all="ignore"):
        _, k = az.psislw(lw.copy())
    return float(k)
