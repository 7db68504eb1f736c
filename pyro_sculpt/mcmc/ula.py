"""The unadjusted Langevin algorithm (ULA; docs/math.md §2)."""

from __future__ import annotations

import torch

from pyro_sculpt.mcmc.base import (
    MCMCInfo,
    MCMCKernel,
    MCMCState,
    accept_probability,
    divergent,
    finite_proposal,
    select,
    warn_divergent,
)
from pyro_sculpt.mcmc.langevin import langevin_proposal


class ULA(MCMCKernel):
    """Unadjusted Langevin: every particle moves to :math:`x' \\sim \\mathcal N(x + \\tfrac h2 \\nabla\\log\\pi(x),
    h I)` (:mod:`~pyro_sculpt.mcmc.langevin`), without a test. Its stationary law is :math:`\\pi` only up to an
    :math:`O(h)` bias; :attr:`MCMCInfo.accept_prob` reports MALA's acceptance probability of the move, a measure of
    that bias that the step-size adapter can use. A move MALA would accept with probability below :math:`e^{-1000}`
    is divergent (:attr:`MCMCInfo.diverging`) and raises a :class:`~pyro_sculpt.mcmc.base.DivergenceWarning`.

    :param log_prob_and_grad: the target, ``x (N, ...) -> (log pi (N,), grad (N, ...))``.
    :param step_size: :math:`h > 0`, a number or ``(N,)``.

    Example::

        kernel = ps.mcmc.ULA(target, step_size=0.01)
        state = kernel.init(x)
        state, info = kernel.step(state)
    """

    exact = False
    default_target_accept = 0.9

    def _step(self, state: MCMCState, step_size: torch.Tensor) -> tuple[MCMCState, MCMCInfo]:
        prop, log_p, grad, log_alpha = langevin_proposal(self, state, step_size)
        accepted = finite_proposal(prop, log_p, grad)  # a NaN or infinite move is rejected alone (no silent NaN)
        diverging = divergent(log_alpha, log_p)
        warn_divergent(self, diverging, accepted)
        info = MCMCInfo(accept_probability(log_alpha), accepted, step_size, log_alpha, diverging)
        new_log_p = None if log_p is None else torch.where(accepted, log_p, state.log_prob)
        return MCMCState(select(accepted, prop, state.x), new_log_p, select(accepted, grad, state.grad), None), info
