"""The classifier twist of a sculpted diffusion model for SMC: twisted diffusion sampling (Wu et al., NeurIPS 2023)
for the sculpting operators (docs/math.md §1.3, §1.5).

The target is the sculpted reverse chain: the mixture transition
:math:`\\tilde P(x' \\mid x) = \\sum_i Q(y_1 = i \\mid x, t)\\, \\mathcal N(x';\\ a x + b\\, s_i(x, t),\\ c^2 I)`
(each base's step, weighted by the classifier's posterior of the base), tilted at the end by the terminal classifier
:math:`Q(y \\mid x_0)`, so that its terminal marginal is :math:`\\tilde p(x_0 \\mid y)`. The proposal is the guided step
:math:`M(x' \\mid x) = \\mathcal N(x';\\ a x + b\\, s_{comp}(x, t),\\ c^2 I)` and the twist
:math:`\\psi_t(x) = Q(y \\mid x, t)`:

.. math::

    \\log \\omega_t = \\log \\tilde P(x' \\mid x) + \\log \\psi_{t+1}(x') - \\log \\psi_t(x) - \\log M(x' \\mid x),

with :math:`\\psi` after the last step the terminal head :math:`Q(y \\mid x_0)` and, for the initial noise,
:math:`\\log \\omega_0 = \\log \\psi_1(x_T)` (the mixture of the noised bases is the samplers'
prior at :math:`t_{max}`).
Whatever the classifier, the weighted particles target the composition that the classifier's terminal head and
posteriors define; with the exact classifier of Gaussian-mixture oracles, the exact composition up to the
sampler's discretisation. The guidance scale :math:`\\gamma` changes the proposal only: the weights correct it.
"""

from __future__ import annotations

import math

import torch

from pyro_sculpt.diffusion.model import per_batch, sum_event
from pyro_sculpt.infer.twist import Twist
from pyro_sculpt.sculpting.diffusion.score import classifier_log_prob, guidance_terms


def _gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: float, event_shape: torch.Size) -> torch.Tensor:
    """:math:`\\log \\mathcal N(x; \\mu, \\sigma^2 I)` summed over the event dimensions ``event_shape``."""
    d = event_shape.numel()
    sq = sum_event((x - mean) ** 2, event_shape)
    return -0.5 * sq / std**2 - d * math.log(std) - 0.5 * d * math.log(2 * math.pi)


class DiffusionClassifierTwist(Twist):
    """SMC particles of a sculpted diffusion sampler: guided proposal, classifier twist.

    :param sampler: the sculpted sampler (a :class:`~pyro_sculpt.diffusion.ReverseDiffusionProcess` whose model is a
        :class:`~pyro_sculpt.sculpting.SculptedDiffusionModel`, e.g. ``ps.harmonic_mean(s1, s2, clf).process``); its
        steps after the initial noise must be stochastic (Gaussian): an ODE sampler has no transition density.
    """

    def __init__(self, sampler, model):
        for t in range(1, sampler.max_steps):
            if sampler.step_coefficients(t)[2] == 0.0:
                raise ValueError(
                    f"twisted SMC needs a stochastic sampler, but step {t} of {sampler!r} is deterministic (an ODE "
                    "step has no transition density): compose AncestralSampler, EulerMaruyamaSampler, "
                    "DDIMSampler(eta > 0) or PredictorCorrectorSampler bases"
                )
        self.sampler, self.model = sampler, model
        self.max_steps = sampler.max_steps

    def _twist_at(self, x: torch.Tensor, t: int) -> dict:
        """The classifier's terms at the input of step ``t`` (``t = max_steps``: the terminal head)."""
        m = self.model
        if t >= self.max_steps:
            log_q_y = classifier_log_prob(m.classifier, m.obs, x, None).detach()
            return {"log_q_y": log_q_y}
        log_q1, log_q_y, grad = guidance_terms(m.classifier, m.obs, x, self.sampler.score_time(t), need_grad=True)
        if grad is None:  # nothing observed: no guidance term
            grad = torch.zeros_like(x)
        return {"log_q1": log_q1, "log_q_y": log_q_y, "grad": grad}

    def init(self, num_particles: int):
        x = torch.zeros(
            (num_particles,) + tuple(self.sampler.event_shape), device=self.sampler.device, dtype=self.sampler.dtype
        )
        return {"x": x}

    def step(self, particles, t: int):
        x = particles["x"]
        n = x.shape[0]
        if t == 0:
            x = self.sampler.prior(torch.Size([n])).sample()
            terms = self._twist_at(x, 1)
            return {"x": x, **terms}, terms["log_q_y"].double(), torch.zeros(n, dtype=torch.bool, device=x.device)
        a, b, c = self.sampler.step_coefficients(t)
        tau = self.sampler.score_time(t)
        m = self.model
        event = self.sampler.event_shape
        axis = -1 - len(event)  # the bases' axis, before the event
        base_scores = torch.stack([base.score(x, tau) for base in m.bases], axis)  # (N, m) + event
        post = per_batch(particles["log_q1"].exp().to(base_scores.dtype), event)
        guided = (post * base_scores).sum(axis) + m.gamma * particles["grad"].to(base_scores.dtype)
        mean = a * x + b * guided
        new = mean + c * torch.randn_like(mean)
        log_m = _gaussian_log_prob(new, mean, c, event)
        base_means = a * x.unsqueeze(axis) + b * base_scores  # (N, m) + event
        log_mix = torch.logsumexp(
            particles["log_q1"] + _gaussian_log_prob(new.unsqueeze(axis), base_means, c, event), -1
        )
        terms = self._twist_at(new, t + 1)
        inc = (log_mix + terms["log_q_y"] - particles["log_q_y"] - log_m).double()
        done = torch.full((n,), t + 1 >= self.max_steps, dtype=torch.bool, device=x.device)
        if not bool(torch.isfinite(inc).all()):
            raise FloatingPointError(f"twisted SMC: non-finite incremental weight at step {t} of {self.sampler!r}")
        return {"x": new, **terms}, inc, done

    def terminal(self, particles) -> torch.Tensor:
        return particles["x"]
