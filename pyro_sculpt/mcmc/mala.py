"""The Metropolis-adjusted Langevin algorithm (MALA; docs/math.md §2), with one test per particle."""

from __future__ import annotations

import torch

from pyro_sculpt.mcmc.base import MCMCInfo, MCMCKernel, MCMCState, divergent, metropolis, select
from pyro_sculpt.mcmc.langevin import langevin_proposal


class MALA(MCMCKernel):
    """Metropolis-adjusted Langevin (Roberts & Tweedie 1996): the proposal :math:`x' \\sim \\mathcal N(x + \\tfrac h2
    \\nabla\\log\\pi(x), h I)` accepted with probability :math:`\\min(1, \\alpha)`, where :math:`\\alpha` has the
    proposal's density in both directions (:mod:`~pyro_sculpt.mcmc.langevin`). Each particle has its own test, so
    :math:`\\pi` is invariant for every chain; a rejected particle keeps its position and cached target values.

    :param log_prob_and_grad: the target, ``x (N, ...) -> (log pi (N,), grad (N, ...))``.
    :param step_size: :math:`h > 0` (the proposal's variance), a number or ``(N,)``.

    Example::

        kernel = ps.mcmc.MALA(ps.mcmc.log_density_target(log_prob), step_size=0.05)
        state = kernel.init(x)
        for _ in range(100):
            state, info = kernel.step(state)
        info.accept_prob.mean()
    """

    #: the asymptotically optimal rate in high dimension (Roberts & Rosenthal 1998)
    default_target_accept = 0.574

    def _step(self, state: MCMCState, step_size: torch.Tensor) -> tuple[MCMCState, MCMCInfo]:
        prop, log_p, grad, log_alpha = langevin_proposal(self, state, step_size)
        prob, acc = metropolis(log_alpha)
        new = MCMCState(
            select(acc, prop, state.x), torch.where(acc, log_p, state.log_prob), select(acc, grad, state.grad), None
        )
        return new, MCMCInfo(prob, acc, step_size, log_alpha, divergent(log_alpha, log_p))
