"""Ancestral sampling (DDPM, Ho et al. 2020)."""

from __future__ import annotations

from pyro_sculpt.diffusion.model import DiffusionModel
from pyro_sculpt.diffusion.samplers.ddim import DDIMSampler


class AncestralSampler(DDIMSampler):
    """Ancestral sampling (DDPM, Ho et al. 2020; SMLD's ancestral sampler for VE schedules): each step draws
    from the Gaussian posterior :math:`q(x_s \\mid x_t, \\hat x_0)` of the forward process,

    .. math::

        x_s \\sim \\mathcal N\\Big(\\frac{x_t + \\sigma_{t|s}^2\\, \\hat s(x_t, t)}{\\alpha_{t|s}},\\
        \\frac{\\sigma_{t|s}^2 \\sigma_s^2}{\\sigma_t^2} I\\Big), \\qquad
        \\alpha_{t|s} = \\alpha_t / \\alpha_s, \\quad
        \\sigma_{t|s}^2 = \\sigma_t^2 - \\alpha_{t|s}^2 \\sigma_s^2

    (for DDPM: mean :math:`(x + \\beta_n \\hat s)/\\sqrt{1 - \\beta_n}`, variance :math:`\\tilde\\beta_n`).

    Even with exact scores the error is first order in the step size (:math:`\\hat x_0` replaces the posterior
    of :math:`x_0`): on a 2D Gaussian of variance about 0.5, with the linear VP schedule and uniform times,
    the sample variance comes out 16 % low at 50 steps, 5 % at 200 and 1.4 % at 1000.

    Example::

        x = ps.run("x", AncestralSampler(oracle, num_steps=500), num_particles=4000)
    """

    def __init__(self, model: DiffusionModel, num_steps: int = 500, **kwargs):
        super().__init__(model, num_steps, eta=1.0, **kwargs)

    def __repr__(self) -> str:
        return f"AncestralSampler(model={self.model!r}, num_steps={self.num_steps})"
