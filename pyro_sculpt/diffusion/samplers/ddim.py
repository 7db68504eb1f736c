"""DDIM (Song, Meng & Ermon 2021), for any noise schedule."""

from __future__ import annotations

import math
from typing import Optional

import torch

from pyro_sculpt.diffusion.likelihood import check_divergence, probability_flow_log_prob
from pyro_sculpt.diffusion.model import DiffusionModel
from pyro_sculpt.diffusion.samplers.base import ReverseDiffusionProcess, check_unclipped, ddim_coefficients
from pyro_sculpt.utils import check_positive_int


class DDIMSampler(ReverseDiffusionProcess):
    """DDIM (Song, Meng & Ermon 2021), for any schedule. From :math:`t` to :math:`s < t`, with
    :math:`\\hat x_0 = (x + \\sigma_t^2 \\hat s) / \\alpha_t` and :math:`\\hat\\epsilon = -\\sigma_t \\hat s`:

    .. math::

        x_s = \\alpha_s \\hat x_0 + \\sqrt{\\sigma_s^2 - c^2}\\, \\hat\\epsilon + c\\, z, \\qquad
        c = \\eta\\, \\frac{\\sigma_s}{\\sigma_t} \\sigma_{t|s}, \\quad
        \\sigma_{t|s}^2 = \\sigma_t^2 - \\frac{\\alpha_t^2}{\\alpha_s^2} \\sigma_s^2 .

    ``eta=0`` is deterministic (an exponential integrator of the probability-flow ODE); each step is then a
    :class:`~pyro.distributions.Delta` at the next state, and :meth:`terminal_log_prob` is the
    probability-flow ODE's log-density (:func:`~pyro_sculpt.diffusion.probability_flow_log_prob`). ``eta=1``
    is ancestral sampling.

    :param eta: in [0, 1].
    :param log_prob_steps: RK4 steps of :meth:`terminal_log_prob` (``eta=0`` only).
    :param divergence: how :meth:`terminal_log_prob` computes the divergence: ``"exact"``, ``"hutchinson"`` or
        ``None`` (exact for events of at most 16 entries); see
        :func:`~pyro_sculpt.diffusion.probability_flow_log_prob`.
    :param num_probes: Rademacher probes per divergence evaluation of ``"hutchinson"``.

    Example::

        sampler = DDIMSampler(oracle, num_steps=50)
        x = ps.ProcessDistribution(sampler).sample((1000,))
    """

    def __init__(
        self,
        model: DiffusionModel,
        num_steps: int = 100,
        *,
        eta: float = 0.0,
        log_prob_steps: int = 200,
        divergence: Optional[str] = None,
        num_probes: int = 1,
        **kwargs,
    ):
        eta = float(eta)
        if not 0.0 <= eta <= 1.0 or math.isnan(eta):
            raise ValueError(f"eta must lie in [0, 1], got {eta!r}")
        self.eta = eta
        self.log_prob_steps = check_positive_int("log_prob_steps", log_prob_steps)
        super().__init__(model, num_steps, **kwargs)
        self.divergence = check_divergence(divergence, self.event_shape, num_probes)
        self.num_probes = num_probes

    def _build(self) -> None:
        kind = "ode" if self.eta == 0.0 else "predictor"
        for k in range(self.num_steps):
            t, s = float(self.times[k]), float(self.times[k + 1])
            a, b, c = ddim_coefficients(self._sched(t), self._sched(s), self.eta)
            self._add_step(kind, t, a, b, c)

    def __repr__(self) -> str:
        return f"DDIMSampler(model={self.model!r}, num_steps={self.num_steps}, eta={self.eta})"

    @property
    def forward_noise(self) -> bool:
        """``eta == 1``: the ancestral noise (see :attr:`ReverseDiffusionProcess.forward_noise`)."""
        return self.eta == 1.0

    def terminal_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        if self.eta != 0.0:
            return super().terminal_log_prob(x)
        check_unclipped(self)
        return probability_flow_log_prob(
            self.model,
            x,
            t0=float(self.times[-1]),
            num_steps=self.log_prob_steps,
            divergence=self.divergence,
            num_probes=self.num_probes,
        )
