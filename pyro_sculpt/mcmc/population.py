"""Independence Metropolis-Hastings on a population whose proposal is refitted to the population itself (docs/mcmc.md,
"Independence moves from the particles").

A fixed proposal fitted once to a population far from the target :math:`\\pi` (the final particles of an SMC sampler
whose weights came from biased density estimates) covers the regions the population lacks thinly; an independence
chain leaves such a region at the rate :math:`q / \\pi` there, so the population drifts to :math:`\\pi` slowly and
the acceptance rate falls as the chains collect at the points where :math:`\\pi / q` is largest. Refitting the
proposal to the current population tracks the population as it moves, but a proposal that depends on a chain's own
state breaks that chain's detailed balance. Splitting the population removes the dependence: every step draws a
random split of the :math:`N` chains into halves :math:`A` and :math:`B` and

1. fits a :class:`~pyro_sculpt.mcmc.GaussianKDE` :math:`q_B` to the states of :math:`B` and updates every chain of
   :math:`A` by one independence Metropolis-Hastings step with proposal :math:`q_B`;
2. fits :math:`q_A` to the (updated) states of :math:`A` and updates :math:`B` the same way.

Each half-step is a Metropolis-Hastings kernel on :math:`x_A` given :math:`x_B` (its proposal is a function of
:math:`x_B` only) that leaves :math:`\\pi(x_A)` invariant, so it leaves the product :math:`\\pi^{\\otimes N}` of the
population invariant (a Metropolis-within-Gibbs update), and so does their composition and the random choice of the
split, which ignores the states. Every step evaluates :math:`\\log\\pi` at :math:`N` proposals, like one step of
:class:`~pyro_sculpt.mcmc.IndependenceMH`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

import torch

from pyro_sculpt.mcmc.base import MCMCInfo, check_start, metropolis, per_chain, run_steps, select
from pyro_sculpt.mcmc.independence import LogDensity
from pyro_sculpt.mcmc.kde import GaussianKDE
from pyro_sculpt.utils import check_number, check_positive_int


@dataclass(frozen=True)
class PopulationState:
    """The population of a :class:`PopulationIndependenceMH` kernel.

    :ivar x: ``(N,) + event_shape`` current states.
    :ivar log_prob: ``(N,)`` float64 :math:`\\log\\pi(x)` (up to a constant), kept so that no state is evaluated twice.

    Example::

        state = ps.mcmc.PopulationIndependenceMH(target_log_prob).init(particles)   # particles (N, 2)
        state.x.shape, state.log_prob.shape   # (N, 2), (N,)
    """

    x: torch.Tensor
    log_prob: torch.Tensor

    @property
    def num_particles(self) -> int:
        return int(self.x.shape[0])


class PopulationIndependenceMH:
    """Independence Metropolis-Hastings over a population of ``N >= 4`` chains, each half proposing from a Gaussian
    kernel density estimate of the other half (see the module docstring).

    :param log_prob: :math:`\\log\\pi` up to a constant, ``x (N, ...) -> (N,)``; ``-inf`` outside the support (never
        accepted), NaN reads as a rejection of that proposal.
    :param num_centres: kernels of each half's :class:`~pyro_sculpt.mcmc.GaussianKDE`.
    :param bandwidth: factor on Scott's bandwidth of each estimate.

    Example::

        kernel = ps.mcmc.PopulationIndependenceMH(target_log_prob, num_centres=1000, bandwidth=0.5)
        state = kernel.init(particles)            # (N, 2) states, e.g. an SMC sampler's resampled particles
        for _ in range(20):
            state, info = kernel.step(state)      # info.accept_prob: one per chain
    """

    def __init__(self, log_prob: LogDensity, num_centres: int = 1000, bandwidth: float = 1.0):
        if not callable(log_prob):
            raise TypeError(f"log_prob must be callable x (N, ...) -> (N,), got {type(log_prob).__name__}")
        self.log_prob = log_prob
        self.num_centres = check_positive_int("num_centres", num_centres)
        check_number("bandwidth", bandwidth, 0.0, strict=True)
        self.bandwidth = float(bandwidth)

    def __repr__(self) -> str:
        return f"PopulationIndependenceMH(num_centres={self.num_centres}, bandwidth={self.bandwidth})"

    def evaluate(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\log\\pi` at ``x``, checked: ``(N,)`` float64."""
        return per_chain(self.log_prob, x, "log_prob")

    def init(self, x: torch.Tensor) -> PopulationState:
        """The population at ``x`` ``(N,) + event_shape``, ``N >= 4`` finite states.

        :raises ValueError: if ``log_prob`` is NaN or :math:`+\\infty` at a state (naming the chain).
        """
        if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] < 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"x must be a tensor (N, ...) of N >= 4 states (each half of the population carries the other's "
                f"proposal), got {shape}"
            )
        x = x.detach()
        lp = self.evaluate(x)
        check_start(lp, "log_prob")
        return PopulationState(x, lp)

    def step(self, state: PopulationState) -> tuple[PopulationState, MCMCInfo]:
        """One step: a random split, then each half updated against the other half's estimate; ``(new_state,
        info)`` with one acceptance probability per chain (``info.step_size`` is NaN)."""
        if not isinstance(state, PopulationState):
            raise TypeError(f"state must be a PopulationState (from kernel.init(x)), got {type(state).__name__}")
        n = state.num_particles
        x, lp = state.x.clone(), state.log_prob.clone()
        prob = torch.zeros(n, dtype=torch.float64, device=lp.device)
        accepted = torch.zeros(n, dtype=torch.bool, device=lp.device)
        log_alpha = torch.zeros(n, dtype=torch.float64, device=lp.device)
        perm = torch.randperm(n, device=x.device)
        halves = (perm[: n // 2], perm[n // 2 :])
        for upd, fit in (halves, halves[::-1]):
            kde = GaussianKDE(x[fit], self.num_centres, self.bandwidth)
            prop = kde.sample(upd.numel()).to(x)
            lp_prop = self.evaluate(prop)
            la = (lp_prop - kde.log_prob(prop).to(lp_prop)) - (lp[upd] - kde.log_prob(x[upd]).to(lp))
            p, acc = metropolis(la)
            x[upd] = select(acc.to(x.device), prop, x[upd])
            lp[upd] = torch.where(acc.to(lp.device), lp_prop.to(lp), lp[upd])
            prob[upd], accepted[upd], log_alpha[upd] = p.to(prob), acc.to(accepted.device), la.to(log_alpha)
        nan = torch.full((), math.nan, dtype=torch.float64)
        return PopulationState(x, lp), MCMCInfo(prob, accepted, nan, log_alpha)

    def run(self, x: Union[torch.Tensor, PopulationState], num_steps: int) -> tuple[PopulationState, list]:
        """``num_steps`` steps from ``x`` (states or a state): ``(state, accept_rates)``, the mean acceptance
        probability of every step."""
        num_steps = check_positive_int("num_steps", num_steps, minimum=0)
        return run_steps(self.step, x if isinstance(x, PopulationState) else self.init(x), num_steps)
