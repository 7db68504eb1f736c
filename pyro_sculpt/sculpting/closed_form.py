"""Closed forms of the compositions on enumerable spaces (Garipov et al. 2023, §3; docs/math.md §1)."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from pyro_sculpt.sculpting.observations import Observations, PriorLike


def composition_distribution(
    base_probs: torch.Tensor,
    y: Sequence[Optional[int]],
    alpha: Optional[Union[float, torch.Tensor]] = None,
    weights: Optional[PriorLike] = None,
) -> torch.Tensor:
    """The exact sculpted distribution from the bases' terminal distributions:

    .. math::

        \\tilde p(x \\mid y) \\propto \\sum_i w_i p_i(x) \\prod_{k \\text{ observed}}
        \\frac{\\pi_{k, y_k} p_{y_k}(x)}{\\sum_j \\pi_{k,j} p_j(x)}.

    It is differentiable in tensor ``weights`` and ``alpha`` (and in ``base_probs``): with an exact classifier and
    bases that share the uniform backward policy it is the terminal distribution of the sculpted process, so it is
    the way to learn the composition parameters from observed samples of a composition.

    :param base_probs: ``(m, num_states)`` terminal distributions of the bases.
    :param y: observed base indices (0-based) or ``None``.
    :param alpha: prior :math:`(\\alpha, 1-\\alpha)` of :math:`y_{2..n}` (two bases), a number or a 0-d tensor.
    :param weights: mixture weights, numbers or a tensor.
    :returns: ``(num_states,)`` float64.
    :raises ValueError: for negative or non-finite ``base_probs``; naming ``y`` when the normaliser
        :math:`\\tilde p(y) = \\sum_x \\sum_i w_i p_i(x) \\prod_k \\tilde p(y_k \\mid x)` is zero in float64: the bases
        share no support where the observations need it (e.g. the harmonic mean of bases with disjoint supports), and
        the composition is undefined.

    Example::

        p = torch.stack([b.exact_terminal_distribution() for b in (p1, p2)])
        a = torch.tensor(0.3, requires_grad=True)
        target = composition_distribution(p, (0, 0), alpha=a)     # the contrast, differentiable in a
    """
    p = torch.as_tensor(base_probs)
    p = p.to(torch.float64) if p.dtype != torch.float64 else p
    if p.dim() != 2:
        raise ValueError(f"base_probs must have shape (m, num_states), got {tuple(p.shape)}")
    if not bool(torch.isfinite(p.detach()).all()) or bool((p.detach() < 0).any()):
        raise ValueError("base_probs must be finite and >= 0 (terminal distributions of the bases)")
    obs = Observations.build(y, p.shape[0], weights, alpha)
    pri = obs.log_priors(p.device, torch.float64).exp()  # (n, m)
    w = pri[0]
    out = (w.unsqueeze(-1) * p).sum(0)
    for k, yk in enumerate(obs.y):
        if yk is not None:
            denom = (pri[k].unsqueeze(-1) * p).sum(0)
            safe = torch.where(denom > 0, denom, torch.ones_like(denom))  # no 0/0 in the values nor the gradient
            out = out * torch.where(denom > 0, pri[k, yk] * p[yk] / safe, torch.zeros_like(denom))
    total = out.sum()
    if not bool(total.detach() > 0):
        raise ValueError(
            f"y={obs.y} has probability {float(total.detach()):.3g} under the augmented model: the bases share no "
            "support where these observations need it, so the composition is zero everywhere (undefined)"
        )
    return out / total
