"""The leapfrog integrator and the partial momentum refresh shared by U-HMC and HMC (docs/math.md §2).

Hamiltonian :math:`H(x, p) = -\\log\\pi(x) + |p|^2 / 2` (identity mass). One leapfrog step of size :math:`\\epsilon`:

.. math::

    p_{1/2} = p + \\tfrac\\epsilon2 \\nabla\\log\\pi(x), \\qquad x' = x + \\epsilon\\, p_{1/2}, \\qquad
    p' = p_{1/2} + \\tfrac\\epsilon2 \\nabla\\log\\pi(x').

Every update makes a new tensor: nothing is modified in place, so the kinetic term of :math:`H` is computed from the
momentum it belongs to (the released reference code's in-place update cancelled it; docs/math.md §2). The map is
volume-preserving and reversible: integrating from :math:`(x', -p')` returns to :math:`(x, -p)`.
"""

from __future__ import annotations

import math
from typing import Callable, Union

import torch
from torch import Tensor

from pyro_sculpt.mcmc.base import LogProbAndGrad, StepSize, check_step_size, per_particle, sq_norm, standard_normal
from pyro_sculpt.utils import check_positive_int


def leapfrog(
    evaluate: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    x: torch.Tensor,
    p: torch.Tensor,
    grad: torch.Tensor,
    step_size: Union[float, torch.Tensor],
    num_steps: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``num_steps`` leapfrog steps of every particle: ``(x', p', log pi(x'), grad(x'))``.

    :param evaluate: the target, ``x -> (log pi (N,), grad)``.
    :param x: positions ``(N, ...)``; :param p: momenta (same shape); :param grad: :math:`\\nabla\\log\\pi(x)`.
    :param step_size: :math:`\\epsilon`, a number or a tensor ``()`` or ``(N,)``, finite and > 0.
    :param num_steps: leapfrog steps, an int >= 1.
    :raises ValueError: naming the argument, for a step size that is not finite and positive or ``num_steps < 1``.

    Example::

        x1, p1, log_prob, grad = ps.mcmc.leapfrog(target, x, p, grad, step_size=0.1, num_steps=10)
    """
    check_positive_int("num_steps", num_steps)
    return leapfrog_unchecked(evaluate, x, p, grad, check_step_size(step_size, x.shape[0]), num_steps)


def leapfrog_unchecked(
    evaluate: LogProbAndGrad, x: Tensor, p: Tensor, grad: Tensor, step_size: StepSize, num_steps: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`leapfrog` for callers that have checked ``step_size`` and ``num_steps`` already (the kernels: their
    ``step`` checks the step size once, and a second check would cost one more device sync per step)."""
    eps = per_particle(step_size, x)
    half = 0.5 * eps
    log_p = grad.new_empty(0)
    for _ in range(num_steps):
        p_half = p + half * grad
        x = x + eps * p_half
        log_p, grad = evaluate(x)
        p = p_half + half * grad
    return x, p, log_p, grad


def kinetic(p: torch.Tensor) -> torch.Tensor:
    """:math:`|p|^2 / 2` per particle, ``(N,)`` float64."""
    return 0.5 * sq_norm(p)


def refresh(p: torch.Tensor, persistence: float) -> torch.Tensor:
    """Partial momentum refresh :math:`\\gamma p + \\sqrt{1 - \\gamma^2}\\, \\xi` (:math:`\\gamma = 0`: a fresh
    :math:`\\mathcal N(0, I)` momentum); leaves :math:`\\mathcal N(0, I)` invariant."""
    xi = standard_normal(p, "momentum")
    if persistence == 0.0:
        return xi
    return persistence * p + math.sqrt(1.0 - persistence**2) * xi


def check_hamiltonian_options(num_leapfrog: int, persistence: float) -> tuple[int, float]:
    if isinstance(num_leapfrog, bool) or not isinstance(num_leapfrog, int) or num_leapfrog < 1:
        raise ValueError(f"num_leapfrog must be an integer >= 1, got {num_leapfrog!r}")
    try:
        g = float(persistence)
    except (TypeError, ValueError):
        raise ValueError(f"persistence must be a number in [0, 1), got {persistence!r}") from None
    if not 0.0 <= g < 1.0:
        raise ValueError(f"persistence must lie in [0, 1), got {persistence!r}")
    return num_leapfrog, g
