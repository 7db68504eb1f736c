"""Euler-Maruyama discretisation of the reverse-time SDE (Song et al. 2021)."""

from __future__ import annotations

from pyro_sculpt.diffusion.samplers.base import ReverseDiffusionProcess, euler_coefficients


class EulerMaruyamaSampler(ReverseDiffusionProcess):
    """Euler-Maruyama discretisation of the reverse-time SDE (Song et al. 2021)
    :math:`dx = [f(t) x - g^2(t)\\, s(x, t)]\\, dt + g(t)\\, d\\bar w`: from :math:`t` to :math:`t - \\Delta`,

    .. math::

        x' = (1 - f(t)\\Delta)\\, x + g^2(t)\\Delta\\, s(x, t) + g(t)\\sqrt{\\Delta}\\, z .

    The coefficients are evaluated at the step's start, so stiff schedules (the cosine VP near :math:`t = 1`)
    need many steps; :class:`AncestralSampler` integrates the linear part exactly.

    Example::

        x = ps.ProcessDistribution(EulerMaruyamaSampler(oracle, num_steps=1000)).sample((2000,))
    """

    #: its noise is the reverse SDE's (:attr:`ReverseDiffusionProcess.forward_noise`)
    forward_noise = True

    def _build(self) -> None:
        for k in range(self.num_steps):
            t, s = float(self.times[k]), float(self.times[k + 1])
            self._add_step("predictor", t, *euler_coefficients(self.schedule, t, t - s, 1.0))
