"""The Langevin proposal shared by ULA and MALA (docs/math.md §2).

With step size :math:`h` (the proposal's variance), the proposal from :math:`x` is

.. math::

    x' \\sim \\mathcal N\\big(x + \\tfrac h2 \\nabla \\log \\pi(x),\\ h I\\big),

the Euler-Maruyama step of the Langevin diffusion :math:`dx = \\tfrac12 \\nabla \\log\\pi\\, dt + dW` over time
:math:`h` (docs/math.md writes it with :math:`\\eta = h/2`: :math:`x + \\eta \\nabla l + \\sqrt{2\\eta}\\,\\xi`). Its
log-density, both ways, gives the Metropolis ratio of MALA (Roberts & Tweedie 1996):

.. math::

    \\log\\alpha = \\log\\pi(x') - \\log\\pi(x) + \\log q(x \\mid x') - \\log q(x' \\mid x), \\qquad
    \\log q(b \\mid a) = -\\frac{|b - a - \\tfrac h2 \\nabla\\log\\pi(a)|^2}{2h} + \\text{const}.
"""

from __future__ import annotations

import torch

from pyro_sculpt.mcmc.base import MCMCState, per_particle, sq_norm, standard_normal


def proposal_log_density(to: torch.Tensor, frm: torch.Tensor, grad_frm: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """:math:`\\log q(to \\mid frm)` up to the constant shared by both directions, ``(N,)`` float64 (``h`` is ``()``
    or ``(N,)`` float64)."""
    hb = per_particle(h, frm)
    return -sq_norm(to - frm - 0.5 * hb * grad_frm) / (2.0 * h)


def langevin_proposal(kernel, state: MCMCState, h: torch.Tensor):
    """Draw the Langevin proposal of every particle and evaluate the target there: ``(x', log pi(x'), grad', log
    alpha)`` with MALA's :math:`\\log\\alpha` (float64)."""
    x, g = state.x, state.grad
    hb = per_particle(h, x)
    prop = x + 0.5 * hb * g + hb.sqrt() * standard_normal(x, "proposal")
    log_p, grad = kernel.evaluate(prop)
    delta = kernel.log_target_ratio(x, prop, state.log_prob, log_p, g, grad)
    if kernel.line_integral is not None:
        log_p = state.log_prob + delta  # the running estimate of l(x') - l(x_0)
    log_alpha = delta + proposal_log_density(x, prop, grad, h) - proposal_log_density(prop, x, g, h)
    return prop, log_p, grad, log_alpha
