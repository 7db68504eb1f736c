"""Hamiltonian Monte Carlo with a per-particle Metropolis test (docs/math.md §2)."""

from __future__ import annotations

from typing import Optional

import torch

from pyro_sculpt.mcmc.base import (
    LogProbAndGrad,
    MCMCInfo,
    MCMCKernel,
    MCMCState,
    StepSize,
    divergent,
    metropolis,
    select,
)
from pyro_sculpt.mcmc.hamiltonian import check_hamiltonian_options, kinetic, leapfrog_unchecked, refresh


class HMC(MCMCKernel):
    """Hamiltonian Monte Carlo (Duane et al. 1987; Neal 2011) batched over particles, with generalised (partial)
    momentum refresh (Horowitz 1991).

    Each step refreshes the momentum, :math:`p \\leftarrow \\gamma p + \\sqrt{1-\\gamma^2}\\,\\xi`, integrates
    ``num_leapfrog`` leapfrog steps to :math:`(x', p')` (:mod:`~pyro_sculpt.mcmc.hamiltonian`) and accepts, per
    particle, with probability :math:`\\min(1, e^{H(x, p) - H(x', p')})`, :math:`H = -\\log\\pi + |p|^2/2`. A rejected
    particle keeps :math:`x` with its momentum flipped, :math:`-p`: with :math:`\\gamma > 0` this is what makes the
    kernel leave :math:`\\pi(x)\\mathcal N(p; 0, I)` invariant; with :math:`\\gamma = 0` (default, plain HMC) the flip
    is immaterial.

    :param log_prob_and_grad: the target.
    :param step_size: :math:`\\epsilon > 0`, a number or ``(N,)``.
    :param num_leapfrog: leapfrog steps per proposal.
    :param persistence: :math:`\\gamma \\in [0, 1)`.
    :param line_integral: ``None``, or trapezoid points :math:`K \\ge 2` of the score line integral along the
        straight segment from :math:`x` to the trajectory's end (:class:`~pyro_sculpt.mcmc.base.MCMCKernel`).

    Example::

        kernel = ps.mcmc.HMC(target, step_size=0.1, num_leapfrog=5)
        state = kernel.init(x)
        state, info = kernel.step(state)
        info.accepted.float().mean()
    """

    uses_momentum = True
    default_target_accept = 0.65

    def __init__(
        self,
        log_prob_and_grad: LogProbAndGrad,
        step_size: StepSize,
        num_leapfrog: int = 5,
        persistence: float = 0.0,
        *,
        line_integral: Optional[int] = None,
    ):
        super().__init__(log_prob_and_grad, step_size, line_integral=line_integral)
        self.num_leapfrog, self.persistence = check_hamiltonian_options(num_leapfrog, persistence)

    def _trajectory(self, state: MCMCState, step_size: torch.Tensor):
        """Refresh the momentum and integrate: ``(p0, x, p, log_p, grad, log_alpha)`` with ``log_alpha`` the log
        Metropolis ratio of the Hamiltonian."""
        p0 = refresh(state.momentum, self.persistence)
        x, p, log_p, grad = leapfrog_unchecked(self.evaluate, state.x, p0, state.grad, step_size, self.num_leapfrog)
        delta = self.log_target_ratio(state.x, x, state.log_prob, log_p, state.grad, grad)
        if self.line_integral is not None:
            log_p = state.log_prob + delta  # the running estimate of l(x') - l(x_0)
        return p0, x, p, log_p, grad, delta - kinetic(p) + kinetic(p0)

    def _step(self, state: MCMCState, step_size: torch.Tensor) -> tuple[MCMCState, MCMCInfo]:
        p0, x, p, log_p, grad, log_alpha = self._trajectory(state, step_size)
        prob, acc = metropolis(log_alpha)
        new = MCMCState(
            select(acc, x, state.x),
            torch.where(acc, log_p, state.log_prob),
            select(acc, grad, state.grad),
            select(acc, p, -p0),
        )
        return new, MCMCInfo(prob, acc, step_size, log_alpha, divergent(log_alpha, log_p))
