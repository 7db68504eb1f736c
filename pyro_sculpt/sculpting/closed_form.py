"""Closed forms of the compositions on enumerable spaces (Garipov et al. 2023, §3; MATH.md §1)."""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from pyro_sculpt.sculpting.observations import Observations


def composition_distribution(
    base_probs: torch.Tensor,
    y: Sequence[Optional[int]],
    alpha: Optional[float] = None,
    weights: Optional[Sequence[float]] = None,
) -> torch.Tensor:
    """The exact sculpted distribution from the bases' terminal distributions:

    .. math::

        \\tilde p(x \\mid y) \\propto \\sum_i w_i p_i(x) \\prod_{k \\text{ observed}}
        \\frac{\\pi_{k, y_k} p_{y_k}(x)}{\\sum_j \\pi_{k,j} p_j(x)}.

    :param base_probs: ``(m, num_states)`` terminal distributions of the bases.
    :param y: observed base indices (0-based) or ``None``.
    :returns: ``(num_states,)`` float64.
    """
    p = torch.as_tensor(base_probs, dtype=torch.float64)
    if p.dim() != 2:
        raise ValueError(f"base_probs must have shape (m, num_states), got {tuple(p.shape)}")
    obs = Observations.build(y, p.shape[0], weights, alpha)
    pri = obs.log_priors(dtype=torch.float64).exp()  # (n, m)
    w = pri[0]
    out = (w.unsqueeze(-1) * p).sum(0)
    for k, yk in enumerate(obs.y):
        if yk is not None:
            denom = (pri[k].unsqueeze(-1) * p).sum(0)
            out = out * torch.where(denom > 0, pri[k, yk] * p[yk] / denom.clamp(min=1e-300), torch.zeros_like(denom))
    return out / out.sum()
