"""Sculpted diffusion models (Garipov et al. 2023, §4.2; docs/math.md §1.3).

Two compositions of diffusion bases :math:`p_1, \\dots, p_m` (reverse-diffusion samplers on one data space):

* :class:`DiffusionMixtureProcess`, the mixture :math:`\\sum_i w_i p_i`, exact without a classifier: its first step
  draws the base :math:`k \\sim w` that generates the particle (a sample site of its own), and every later step is that
  base's step. All base scores are computed batched over the particles and the particle's one is selected.
* :class:`SculptedDiffusionModel`, the sculpted model :math:`\\tilde p(x \\mid y)`, a
  :class:`~pyro_sculpt.diffusion.DiffusionModel` whose score is the guided score

  .. math::

      s_{comp}(x, t) = \\sum_i Q(y_1 = i \\mid x, t)\\, s_i(x, t) + \\gamma\\, \\nabla_x \\log Q(y \\mid x, t),

  from one classifier forward and backward pass per evaluation. Any sampler of the bases runs it
  (:func:`sculpted_diffusion`), and the guidance handler :func:`~pyro_sculpt.sculpting.sculpt_guidance` rebuilds every
  step of a :class:`DiffusionMixtureProcess` from it.

With exact scores and an exact classifier (:class:`~pyro_sculpt.diffusion.GaussianMixtureClassifier`) and
:math:`\\gamma = 1`, :math:`s_{comp}` is the exact score of the noised sculpted density :math:`\\tilde p_t(x \\mid y)
\\propto \\tilde p_t(x)\\, Q(y \\mid x_t)`, so the samplers' only error is their discretisation.

The log-density of a deterministic sampler of the sculpted model (``DDIMSampler(eta=0)``,
:class:`~pyro_sculpt.diffusion.ProbabilityFlowSampler`) is that of the probability-flow ODE of the guided score
(:func:`~pyro_sculpt.diffusion.probability_flow_log_prob`), whose divergence differentiates the guided score in
:math:`x` through the classifier too (:func:`composed_score`); see :class:`SculptedDiffusionModel` for what it is
the density of.
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import torch

from pyro_sculpt.diffusion.model import DiffusionModel, check_points
from pyro_sculpt.diffusion.samplers import ReverseDiffusionProcess
from pyro_sculpt.diffusion.schedules import TimeLike
from pyro_sculpt.processes.distribution import ProcessDistribution
from pyro_sculpt.sculpting.diffusion.bases import (
    DiffusionBase,
    as_sampler,
    check_classifier_bases,
    check_diffusion_bases,
    check_same_space,
)
from pyro_sculpt.sculpting.diffusion.score import check_diffusion_classifier, classifier_log_prob, composed_score
from pyro_sculpt.sculpting.diffusion.twist import DiffusionClassifierTwist
from pyro_sculpt.sculpting.guidance import check_gamma
from pyro_sculpt.sculpting.observations import Observations
from pyro_sculpt.utils import DeviceLike, as_device


class SculptedDiffusionModel(DiffusionModel):
    """The sculpted diffusion model :math:`\\tilde p(x \\mid y_1, \\dots, y_n)` of bases :math:`p_1, \\dots, p_m`: a
    :class:`~pyro_sculpt.diffusion.DiffusionModel` whose score is the guided score (docs/math.md §1.3)

    .. math::

        s_{comp}(x, t) = \\sum_i Q(y_1 = i \\mid x, t)\\, s_i(x, t) + \\gamma\\, \\nabla_x \\log Q(y \\mid x, t)

    (:func:`composed_score`). Any sampler runs it (``sampler.with_model(model)``), and it can be a base of a new
    composition ("chaining").

    **Log-density.** A deterministic sampler's ``log_prob`` (``DDIMSampler(eta=0)``,
    :class:`~pyro_sculpt.diffusion.ProbabilityFlowSampler`) integrates the probability-flow ODE of
    :math:`s_{comp}` with its exact divergence (:func:`~pyro_sculpt.diffusion.probability_flow_log_prob`; the
    classifier's part :math:`\\sum_i s_i \\nabla_x Q(y_1 = i \\mid x, t)^\\top + \\gamma \\nabla^2_x \\log Q(y \\mid
    x, t)` of the Jacobian included). With :math:`\\gamma = 1`, exact base scores and the exact classifier this is
    the normalised log-density of the composition itself: every base noises its data with the same kernel
    :math:`k_t(x \\mid x_0)`, and :math:`y` depends on a trajectory only through its base and :math:`x_0`, so

    .. math::

        \\tilde p_t(x \\mid y) \\propto \\sum_i w_i\\, p_{i,t}(x)\\, Q(y \\mid x_t = x)
        = \\frac{1}{P(y)} \\int \\tilde p(x_0, y)\\, k_t(x \\mid x_0)\\, dx_0

    is the forward noising of the sculpted density :math:`\\tilde p(x_0 \\mid y)`, and the ODE of its score
    :math:`s_{comp}` transports :math:`\\tilde p_{t_1}(\\cdot \\mid y)` to :math:`\\tilde p_{t_0}(\\cdot \\mid y)`
    exactly (Song et al. 2021). The remaining errors are the Gaussian prior's mismatch at ``t_max`` (of order
    :math:`\\alpha_{t_{max}}`), the classifier's quadrature and the RK4 steps.

    With :math:`\\gamma \\ne 1`, :math:`s_{comp}` is at each :math:`t` the score of :math:`\\tilde p_t(x)\\, Q(y
    \\mid x_t = x)^\\gamma`, but these densities are not the forward noising of one density (a power does not
    commute with the noising), so ``log_prob`` is the normalised density of the guided ODE's output (what
    ``DDIMSampler(eta=0)`` samples as its steps shrink), not of :math:`\\tilde p(x)\\, Q(y \\mid x)^\\gamma` nor of what
    stochastic samplers of the same model draw. Likewise with learned scores or a learned classifier it is the
    density of the learned guided ODE; beyond the classifier's ``max_time`` that ODE follows the prior-weighted
    bases' scores :math:`\\sum_i w_i s_i` (:func:`guidance_terms`).

    :param bases: the base diffusion models (one event shape and one schedule), or samplers of them.
    :param classifier: a :class:`DiffusionObservationClassifier` or an exact
        :class:`~pyro_sculpt.diffusion.GaussianMixtureClassifier` of the bases.
    :param y: observed base indices (0-based), ``None`` for unobserved.
    :param alpha: prior :math:`(\\alpha, 1-\\alpha)` of :math:`y_{2..n}` (two bases), in (0, 1).
    :param weights: mixture weights (prior of :math:`y_1`), default uniform.
    :param gamma: guidance scale :math:`\\gamma \\ge 0` (1 is the theory).
    :param device: where the composed scores live (default the first base's device).

    Example::

        model = SculptedDiffusionModel([oracle1, oracle2], GaussianMixtureClassifier([oracle1, oracle2], 2), (0, 1))
        x = ps.ProcessDistribution(DDIMSampler(model, 100)).sample((4000,))     # the harmonic mean
    """

    def __init__(
        self,
        bases: Sequence[Any],
        classifier: Any,
        y: Sequence[Optional[int]],
        alpha: Optional[float] = None,
        weights: Optional[Sequence[float]] = None,
        *,
        gamma: float = 1.0,
        device: DeviceLike = None,
    ):
        bases = list(bases)
        if len(bases) < 2:
            raise ValueError(f"bases must hold at least two base models, got {len(bases)}")
        models = []
        for k, b in enumerate(bases):
            if isinstance(b, (ReverseDiffusionProcess, ProcessDistribution)):
                b = as_sampler(b, f"bases[{k}]").model
            if not isinstance(b, DiffusionModel):
                raise TypeError(f"bases[{k}] must be a DiffusionModel or a diffusion sampler, got {type(b).__name__}")
            models.append(b)
        check_same_space(models)
        self.bases = models
        self.schedule = models[0].schedule
        self.event_shape = models[0].event_shape
        self.obs = Observations.build(y, len(models), weights, alpha)
        check_diffusion_classifier(classifier, self.event_shape, self.schedule, self.obs)
        check_classifier_bases(classifier, models)
        self.classifier = classifier
        self.gamma = check_gamma(gamma)
        self._device = as_device(device) if device is not None else models[0].device

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        """The widest of the bases' dtypes (float32 and float64 bases compose in float64)."""
        return functools.reduce(torch.promote_types, (b.dtype for b in self.bases))

    def __repr__(self) -> str:
        return (
            f"SculptedDiffusionModel(y={self.obs.y}, alpha={self.obs.alpha}, gamma={self.gamma}, "
            f"{len(self.bases)} bases)"
        )

    def score(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """The guided score :math:`s_{comp}(x, t)`, shape of ``x`` (``batch_shape + event_shape``)."""
        check_points(x, self.event_shape)
        return composed_score(self.bases, self.classifier, self.obs, x, t, gamma=self.gamma)

    def log_q(self, x: torch.Tensor, t: Optional[TimeLike] = None) -> torch.Tensor:
        """:math:`\\log Q(y \\mid x, t)` of the observations (``t=None``: of a final sample), shape
        ``batch_shape``."""
        check_points(x, self.event_shape)
        return classifier_log_prob(self.classifier, self.obs, x, t)

    def twist(self, sampler: ReverseDiffusionProcess) -> DiffusionClassifierTwist:
        """The SMC twist of ``sampler`` driven by this model (see :func:`pyro_sculpt.infer.smc`): the guided step as
        proposal and the classifier as twist (:class:`~pyro_sculpt.sculpting.diffusion.twist.DiffusionClassifierTwist`).
        """
        return DiffusionClassifierTwist(sampler, self)


def sculpted_diffusion(
    bases: Sequence[DiffusionBase],
    classifier: Any,
    y: Sequence[Optional[int]],
    alpha: Optional[float] = None,
    weights: Optional[Sequence[float]] = None,
    *,
    gamma: float = 1.0,
) -> ReverseDiffusionProcess:
    """The sculpted process of diffusion samplers: the bases' sampler (one for all of them) driven by the
    :class:`SculptedDiffusionModel`. Its steps are built with
    :meth:`~pyro_sculpt.diffusion.ReverseDiffusionProcess.step_from_score` from the guided score; step 0 draws the
    initial noise.

    :param bases: diffusion samplers of the bases, built with the same sampler arguments.
    :returns: a :class:`~pyro_sculpt.diffusion.ReverseDiffusionProcess` (run it with :func:`pyro_sculpt.run`, or
        wrap it in :class:`~pyro_sculpt.ProcessDistribution`).

    Example::

        proc = sculpted_diffusion([AncestralSampler(m1, 200), AncestralSampler(m2, 200)], clf, y=(0, 0))
    """
    samplers = check_diffusion_bases(bases, same_sampler=True)
    model = SculptedDiffusionModel(samplers, classifier, y, alpha, weights, gamma=gamma, device=samplers[0].device)
    return samplers[0].with_model(model)
