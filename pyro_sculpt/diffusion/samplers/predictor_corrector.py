"""Predictor-corrector sampling (Song et al. 2021)."""

from __future__ import annotations

import math

from pyro_sculpt.diffusion.model import DiffusionModel
from pyro_sculpt.diffusion.samplers.base import ReverseDiffusionProcess, ddim_coefficients, euler_coefficients
from pyro_sculpt.utils import check_positive_int


class PredictorCorrectorSampler(ReverseDiffusionProcess):
    """Predictor-corrector sampling (Song et al. 2021): after each predictor step to level :math:`s`,
    ``corrector_steps`` steps of unadjusted Langevin dynamics targeting :math:`p_s`,

    .. math::

        x' = x + \\epsilon_s\\, s(x, s) + \\sqrt{2 \\epsilon_s}\\, z, \\qquad
        \\epsilon_s = 2\\, (r\\, \\sigma_s)^2,

    each its own sample site (so every site uses one score, and guidance tilts correctors too). The step size
    is Song et al.'s signal-to-noise rule :math:`2 (r \\lVert z \\rVert / \\lVert s \\rVert)^2` with the norms
    replaced by their values for isotropic noise of scale :math:`\\sigma_s` (:math:`\\lVert s \\rVert \\approx
    \\sqrt D/\\sigma_s`), which keeps every corrector step Gaussian given :math:`x`.

    :param predictor: ``"ancestral"`` or ``"euler_maruyama"``.
    :param corrector_steps: Langevin steps per level (>= 1).
    :param snr: :math:`r > 0`.

    Example::

        sampler = PredictorCorrectorSampler(oracle, num_steps=200, corrector_steps=1, snr=0.1)
    """

    def __init__(
        self,
        model: DiffusionModel,
        num_steps: int = 200,
        *,
        predictor: str = "ancestral",
        corrector_steps: int = 1,
        snr: float = 0.1,
        **kwargs,
    ):
        if predictor not in ("ancestral", "euler_maruyama"):
            raise ValueError(f"predictor must be 'ancestral' or 'euler_maruyama', got {predictor!r}")
        self.predictor = predictor
        self.corrector_steps = check_positive_int("corrector_steps", corrector_steps)
        snr = float(snr)
        if not snr > 0 or not math.isfinite(snr):
            raise ValueError(f"snr must be a finite number > 0, got {snr!r}")
        self.snr = snr
        super().__init__(model, num_steps, **kwargs)

    #: its predictor steps add the forward diffusion's noise (:attr:`ReverseDiffusionProcess.forward_noise`; the
    #: corrector steps need the second-order term whatever it says)
    forward_noise = True

    def _build(self) -> None:
        for k in range(self.num_steps):
            t, s = float(self.times[k]), float(self.times[k + 1])
            if self.predictor == "ancestral":
                coefs = ddim_coefficients(self._sched(t), self._sched(s), 1.0)
            else:
                coefs = euler_coefficients(self.schedule, t, t - s, 1.0)
            self._add_step("predictor", t, *coefs)
            eps = 2.0 * (self.snr**2) * self._sched(s)[1]
            for _ in range(self.corrector_steps):
                self._add_step("corrector", s, 1.0, eps, math.sqrt(2.0 * eps))

    def __repr__(self) -> str:
        return (
            f"PredictorCorrectorSampler(model={self.model!r}, num_steps={self.num_steps}, "
            f"predictor={self.predictor!r}, corrector_steps={self.corrector_steps}, snr={self.snr})"
        )
