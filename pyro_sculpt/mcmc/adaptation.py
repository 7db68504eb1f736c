"""Step sizes adapted towards a target acceptance rate (stochastic approximation; Robbins & Monro 1951; Andrieu &
Thoms 2008, §5).

After every kernel step with acceptance probabilities :math:`\\alpha`, the log step size moves towards the target
rate :math:`\\alpha^*`:

.. math::

    \\log h_{k+1} = \\log h_k + \\frac{r}{(k + 1)^{\\kappa}} (\\bar\\alpha_k - \\alpha^*),

where :math:`\\bar\\alpha_k` is the mean over particles (one step size for all: *per level* when the target changes
with a noise level) or each particle's own :math:`\\alpha` (*per particle*). The acceptance probability falls as the
step grows, so the recursion has its fixed point where the rate is :math:`\\alpha^*`. With :math:`\\kappa = 0` (the
default) the gain is constant and the step size follows a target that moves (the levels of a diffusion SMC); with
:math:`\\kappa \\in (1/2, 1]` the gains decay and the step size converges on a fixed target. A chain whose step
size keeps adapting is not exactly Markov; freeze the step size (stop calling :meth:`update`) for exact invariance.

Before freezing on a fixed target, let the step size settle with decaying gains (a second adapter started from the
first one's :attr:`~StepSizeAdapter.step_size` with ``decay=0.75``). With constant gain the linearised recursion
multiplies the distance to the fixed point by :math:`1 - r\\,|d\\alpha / d\\log h|`; where the acceptance is steep
(:math:`r\\,|d\\alpha / d\\log h| > 2`, e.g. HMC with few leapfrog steps just past a resonance of its narrowest
coordinate) the step size hovers in a two-cycle whose *mean* acceptance is the target, and a step frozen between the
cycle's two values is not on it.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from pyro_sculpt.mcmc.base import MCMCInfo, StepSize, check_step_size


class StepSizeAdapter:
    """Robbins-Monro adaptation of a step size towards a target acceptance rate (see the module docstring).

    :param step_size: the initial step size, a number (one for all particles) or ``(N,)``.
    :param target_accept: :math:`\\alpha^* \\in (0, 1)`.
    :param per_particle: adapt one step size per particle from its own acceptance probability (an initial number is
        expanded at the first update); else one step size from the mean over particles.
    :param rate: the gain :math:`r > 0`.
    :param decay: :math:`\\kappa \\ge 0`.
    :param max_step_size: an upper bound (e.g. for kernels whose acceptance does not fall below the target for any
        step, such as MALA on a Gaussian in one dimension); ``None`` for none.

    Example::

        kernel = ps.mcmc.MALA(target, step_size=0.1)
        adapter = ps.mcmc.StepSizeAdapter(0.1, target_accept=0.574)
        state = kernel.init(x)
        for _ in range(200):
            state, info = kernel.step(state, step_size=adapter.step_size)
            adapter.update(info)
    """

    def __init__(
        self,
        step_size: StepSize,
        target_accept: float,
        *,
        per_particle: bool = False,
        rate: float = 0.5,
        decay: float = 0.0,
        max_step_size: Optional[float] = None,
    ):
        self.log_step = check_step_size(step_size).log()
        self.target_accept = check_target_accept(target_accept)
        if not (isinstance(rate, (int, float)) and not isinstance(rate, bool) and math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a finite number > 0, got {rate!r}")
        if not (isinstance(decay, (int, float)) and not isinstance(decay, bool) and 0 <= decay <= 1):
            raise ValueError(f"decay must lie in [0, 1], got {decay!r}")
        self.log_max = None
        if max_step_size is not None:
            self.log_max = float(check_step_size(max_step_size, name="max_step_size").log())
        self.per_particle = bool(per_particle)
        self.rate, self.decay = float(rate), float(decay)
        self.num_updates = 0

    @property
    def step_size(self) -> torch.Tensor:
        """The current step size, ``()`` or ``(N,)`` float64."""
        return self.log_step.exp()

    def update(self, info: MCMCInfo) -> torch.Tensor:
        """Move the step size after a step whose :class:`~pyro_sculpt.mcmc.base.MCMCInfo` is ``info``; returns the new
        step size."""
        alpha = info.accept_prob.detach().double().to(self.log_step.device)
        gain = self.rate / (self.num_updates + 1) ** self.decay
        if self.per_particle:
            if self.log_step.dim() == 1 and self.log_step.shape != alpha.shape:
                raise ValueError(
                    f"info has {alpha.shape[0]} particles but the adapter has {self.log_step.shape[0]} step sizes"
                )
            self.log_step = self.log_step + gain * (alpha - self.target_accept)
        else:
            self.log_step = self.log_step + gain * (float(alpha.mean()) - self.target_accept)
        if self.log_max is not None:
            self.log_step = self.log_step.clamp(max=self.log_max)
        self.num_updates += 1
        return self.step_size

    def index(self, idx: torch.Tensor) -> None:
        """Follow a resampling of the particles (per-particle step sizes move with their particles)."""
        if self.log_step.dim() == 1:
            self.log_step = self.log_step[idx.to(self.log_step.device)]


def check_target_accept(value, name: str = "target_accept") -> float:
    """``value`` as a float in (0, 1), else a :class:`ValueError` naming ``name``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}") from None
    if isinstance(value, bool) or not 0.0 < v < 1.0:
        raise ValueError(f"{name} must lie in (0, 1), got {value!r}")
    return v
