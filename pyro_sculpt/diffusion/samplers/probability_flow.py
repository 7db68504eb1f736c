"""Euler discretisation of the probability-flow ODE (Song et al. 2021)."""

from __future__ import annotations

from typing import Optional

import torch

from pyro_sculpt.diffusion.likelihood import check_divergence, probability_flow_log_prob
from pyro_sculpt.diffusion.model import DiffusionModel
from pyro_sculpt.diffusion.samplers.base import ReverseDiffusionProcess, check_unclipped, euler_coefficients
from pyro_sculpt.utils import check_positive_int


class ProbabilityFlowSampler(ReverseDiffusionProcess):
    """Euler discretisation of the probability-flow ODE (Song et al. 2021)
    :math:`dx/dt = f(t)\\, x - \\tfrac12 g^2(t)\\, s(x, t)`:
    :math:`x' = (1 - f\\Delta) x + \\tfrac12 g^2 \\Delta\\, s(x, t)`.

    Each step is deterministic: its distribution is a :class:`~pyro.distributions.Delta` at the next state
    (log-density 0 at the sampled value), so a trace's log-probability is that of the initial noise.
    :meth:`terminal_log_prob` is the ODE's log-density from
    :func:`~pyro_sculpt.diffusion.probability_flow_log_prob` (RK4 with ``log_prob_steps`` steps; the divergence
    exact for events of at most 16 entries and Hutchinson's estimate beyond, unless ``divergence`` says otherwise).

    :param log_prob_steps: RK4 steps of :meth:`terminal_log_prob`.
    :param divergence: ``"exact"``, ``"hutchinson"`` or ``None`` (automatic).
    :param num_probes: Rademacher probes per divergence evaluation of ``"hutchinson"``.

    Example::

        d = ps.ProcessDistribution(ProbabilityFlowSampler(oracle, num_steps=200))
        x = d.sample((100,)); d.log_prob(x)
    """

    def __init__(
        self,
        model: DiffusionModel,
        num_steps: int = 200,
        *,
        log_prob_steps: int = 200,
        divergence: Optional[str] = None,
        num_probes: int = 1,
        **kwargs,
    ):
        self.log_prob_steps = check_positive_int("log_prob_steps", log_prob_steps)
        super().__init__(model, num_steps, **kwargs)
        self.divergence = check_divergence(divergence, self.event_shape, num_probes)
        self.num_probes = num_probes

    def _build(self) -> None:
        for k in range(self.num_steps):
            t, s = float(self.times[k]), float(self.times[k + 1])
            self._add_step("ode", t, *euler_coefficients(self.schedule, t, t - s, 0.0))

    def terminal_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        check_unclipped(self)
        return probability_flow_log_prob(
            self.model,
            x,
            t0=float(self.times[-1]),
            num_steps=self.log_prob_steps,
            divergence=self.divergence,
            num_probes=self.num_probes,
        )
