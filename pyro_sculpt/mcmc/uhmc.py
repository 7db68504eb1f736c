"""Underdamped (unadjusted) Hamiltonian Monte Carlo, U-HMC (docs/math.md §2)."""

from __future__ import annotations

from typing import Optional

import torch

from pyro_sculpt.mcmc.base import (
    LogProbAndGrad,
    MCMCInfo,
    MCMCState,
    StepSize,
    accept_probability,
    divergent,
    finite_proposal,
    select,
    warn_divergent,
)
from pyro_sculpt.mcmc.hmc import HMC


class UHMC(HMC):
    """Underdamped Langevin-style HMC without a Metropolis test: a partial momentum refresh :math:`p \\leftarrow
    \\gamma p + \\sqrt{1-\\gamma^2}\\,\\xi` followed by ``num_leapfrog`` leapfrog steps
    (:mod:`~pyro_sculpt.mcmc.hamiltonian`), always accepted; the momentum persists between steps. Biased by
    :math:`O(\\epsilon^2)`; :attr:`MCMCInfo.accept_prob` reports the probability HMC's test would have given, the
    diagnostic the step-size adapter uses. An energy error above 1000 is a divergence (:attr:`MCMCInfo.diverging`)
    and raises a :class:`~pyro_sculpt.mcmc.base.DivergenceWarning`.

    :param log_prob_and_grad: the target.
    :param step_size: :math:`\\epsilon > 0`, a number or ``(N,)``.
    :param num_leapfrog: leapfrog steps per step.
    :param persistence: :math:`\\gamma \\in [0, 1)`; :math:`\\gamma = e^{-\\lambda \\epsilon L}` for a friction
        :math:`\\lambda` of the underdamped Langevin diffusion.

    Example::

        kernel = ps.mcmc.UHMC(target, step_size=0.1, num_leapfrog=1, persistence=0.9)
        state, info = kernel.step(kernel.init(x))
    """

    exact = False
    uses_momentum = True
    default_target_accept = 0.9

    def __init__(
        self,
        log_prob_and_grad: LogProbAndGrad,
        step_size: StepSize,
        num_leapfrog: int = 1,
        persistence: float = 0.9,
        *,
        line_integral: Optional[int] = None,
    ):
        super().__init__(log_prob_and_grad, step_size, num_leapfrog, persistence, line_integral=line_integral)

    def _step(self, state: MCMCState, step_size: torch.Tensor) -> tuple[MCMCState, MCMCInfo]:
        p0, x, p, log_p, grad, log_alpha = self._trajectory(state, step_size)
        acc = finite_proposal(x, log_p, grad) & torch.isfinite(p.reshape(p.shape[0], -1)).all(-1)  # NaN: rejected
        new_log_p = None if log_p is None else torch.where(acc, log_p, state.log_prob)
        new = MCMCState(select(acc, x, state.x), new_log_p, select(acc, grad, state.grad), select(acc, p, -p0))
        diverging = divergent(log_alpha, log_p)
        warn_divergent(self, diverging, acc)
        return new, MCMCInfo(accept_probability(log_alpha), acc, step_size, log_alpha, diverging)
