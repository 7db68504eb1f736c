"""The guided score of sculpted diffusion models (Garipov et al. 2023, §4.2; docs/math.md §1.3):

.. math::

    s_{comp}(x, t) = \\sum_i Q(y_1 = i \\mid x, t)\\, s_i(x, t) + \\gamma\\, \\nabla_x \\log Q(y \\mid x, t),

from one classifier forward and backward pass, batched over particles; differentiable in :math:`x` through the
classifier when :math:`x` requires grad (the divergence of the probability-flow likelihood).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from pyro_sculpt.diffusion.model import DiffusionModel, EventShapeLike, as_event_shape, batch_shape_of, per_batch
from pyro_sculpt.diffusion.schedules import TimeLike
from pyro_sculpt.sculpting.diffusion.classifier import DiffusionObservationClassifier
from pyro_sculpt.sculpting.diffusion.exact_classifier import GaussianMixtureClassifier
from pyro_sculpt.sculpting.observations import Observations

#: the classifier types that guide diffusion bases
DIFFUSION_CLASSIFIERS = (DiffusionObservationClassifier, GaussianMixtureClassifier)


def is_diffusion_classifier(classifier: Any) -> bool:
    """Whether ``classifier`` is a time-conditioned observation classifier of diffusion bases."""
    return isinstance(classifier, DIFFUSION_CLASSIFIERS)


def check_diffusion_classifier(classifier: Any, event_shape: EventShapeLike, schedule, obs: Observations) -> None:
    """Raise a clear error unless ``classifier`` guides ``obs.num_models`` diffusion bases of event shape
    ``event_shape`` (an int ``D``: vectors of data dimension ``D``) and noise schedule ``schedule`` for the
    observations ``obs``.

    :raises TypeError: if ``classifier`` is not a diffusion observation classifier.
    :raises ValueError: for another event shape (data dimension), number of bases, number of observations or schedule,
        or an ``alpha`` the classifier cannot answer.
    """
    if not is_diffusion_classifier(classifier):
        raise TypeError(
            "classifier must be a diffusion observation classifier (DiffusionObservationClassifier or "
            f"GaussianMixtureClassifier), got {type(classifier).__name__}"
        )
    event_shape = as_event_shape(event_shape)
    if classifier.event_shape != event_shape:
        if len(classifier.event_shape) == len(event_shape) == 1:
            msg = f"data dimension {classifier.dim}, but the bases have dimension {event_shape[0]}"
        else:
            msg = f"event shape {tuple(classifier.event_shape)}, but the bases have event shape {tuple(event_shape)}"
        raise ValueError(f"classifier is for {msg}")
    if classifier.num_models != obs.num_models:
        raise ValueError(
            f"classifier was trained for {classifier.num_models} base models, but {obs.num_models} bases were given"
        )
    if classifier.num_observations != obs.num_observations:
        raise ValueError(
            f"classifier was trained for {classifier.num_observations} observations, but y has "
            f"{obs.num_observations} entries (use None for an unobserved one)"
        )
    clf_schedule = getattr(classifier, "schedule", None)
    if clf_schedule is not None and clf_schedule != schedule:
        raise ValueError(f"classifier is for schedule {clf_schedule!r}, but the bases use {schedule!r}")
    if isinstance(classifier, DiffusionObservationClassifier):
        classifier.check_observations(obs)


def guidance_terms(
    classifier: Any,
    obs: Observations,
    x: torch.Tensor,
    t: TimeLike,
    *,
    need_grad: bool = True,
    create_graph: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """The classifier's part of the guided score at ``x`` (``batch_shape + event_shape``, the classifier's event
    shape) and diffusion time ``t``, from one forward and (if ``need_grad`` and some :math:`y_k` is observed) one
    backward pass.

    A learned classifier trained on states up to ``classifier.max_time`` is not used at later (noisier) times: there
    :math:`Q(y_1 \\mid x, t)` is the prior :math:`w` and :math:`Q(y \\mid x, t)` a constant in :math:`x` (reported as
    0, gradient 0), the limit the classifier tends to as the noise grows.

    :param need_grad: compute :math:`\\nabla_x \\log Q(y \\mid x, t)` (skipped when no :math:`y_k` is observed).
    :param create_graph: return the terms as differentiable functions of ``x`` (which must require grad), the
        gradient included (a double-backward graph): what the divergence of the guided score needs
        (:func:`~pyro_sculpt.diffusion.probability_flow_log_prob`). Both classifiers are twice differentiable in
        ``x``. Beyond ``max_time`` the terms are constants, so their derivatives are zero there. Costs a
        larger graph; samplers leave it off.
    :returns: ``(log_q1, log_q_y, grad)``: :math:`\\log Q(y_1 = i \\mid x, t)` ``batch_shape + (m,)``, :math:`\\log Q(y
        \\mid x, t)` ``batch_shape`` and :math:`\\nabla_x \\log Q(y \\mid x, t)` of ``x``'s shape (``None`` when not
        needed), detached
        unless ``create_graph``. Works under :func:`torch.no_grad` (``create_graph`` needs grad mode).
    :raises ValueError: if ``create_graph`` is set but ``x`` does not require grad or grad mode is off.

    Example::

        obs = Observations.build((0, 1), 2)
        log_q1, log_q_y, grad = guidance_terms(clf, obs, x, 0.3)
    """
    if create_graph and not (x.requires_grad and torch.is_grad_enabled()):
        raise ValueError(
            "create_graph=True returns the guidance terms as functions of x: x must require grad and grad mode be "
            f"enabled, got x.requires_grad={x.requires_grad}, grad enabled={torch.is_grad_enabled()}"
        )
    observed = any(v is not None for v in obs.y)
    need_grad = need_grad and observed
    event_shape = classifier.event_shape
    batch = batch_shape_of(x, event_shape)
    beyond = None
    max_time = getattr(classifier, "max_time", None)
    if max_time is not None and t is not None:
        beyond = torch.as_tensor(t, device=x.device) > max_time
        if beyond.dim() == 0 or bool(beyond.all()):
            beyond = beyond.expand(batch)
        if bool(beyond.all()):  # nothing to evaluate: the prior, and no guidance term
            log_w = obs.weights.detach().to(dtype=x.dtype, device=x.device).log()
            zeros = torch.zeros(batch, dtype=x.dtype, device=x.device)
            return log_w.expand(batch + log_w.shape), zeros, torch.zeros_like(x) if need_grad else None
    if create_graph:
        log_q1, log_q_y, grad = _differentiable_terms(classifier, obs, x, t, need_grad)
    else:
        with torch.enable_grad() if need_grad else torch.no_grad():
            xg = x.detach().requires_grad_(need_grad)
            if isinstance(classifier, GaussianMixtureClassifier):
                # closed-form first marginal; the quadrature only for Q(y | x_t) and only for the observed y_1
                with torch.no_grad():
                    log_q1 = classifier.log_prob_first(x.detach(), t, weights=obs.weights.detach())
                if observed:
                    log_q_y = classifier.log_prob(obs.y, xg, t, **_exact_priors(obs))
                else:
                    log_q_y = torch.zeros(batch, dtype=x.dtype, device=x.device)
            else:
                log_q1, log_q_y = classifier.guidance_log_probs(xg, t, obs)
            grad = torch.autograd.grad(log_q_y.sum(), xg)[0] if need_grad else None
        log_q1, log_q_y = log_q1.detach(), log_q_y.detach()
    if beyond is not None and bool(beyond.any()):  # per-particle times, some beyond max_time
        b = beyond.expand(log_q_y.shape)
        log_w = obs.weights.detach().to(dtype=log_q1.dtype, device=x.device).log()
        log_q1 = torch.where(b.unsqueeze(-1), log_w, log_q1)
        log_q_y = torch.where(b, torch.zeros_like(log_q_y), log_q_y)
        if grad is not None:
            grad = torch.where(per_batch(b, event_shape), torch.zeros_like(grad), grad)
    return log_q1, log_q_y, grad


def _differentiable_terms(
    classifier: Any, obs: Observations, x: torch.Tensor, t: TimeLike, need_grad: bool
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """:func:`guidance_terms` as functions of ``x`` (no detaching; the gradient with ``create_graph=True``)."""
    if isinstance(classifier, GaussianMixtureClassifier):
        log_q1 = classifier.log_prob_first(x, t, weights=obs.weights.detach())
        if any(v is not None for v in obs.y):
            log_q_y = classifier.log_prob(obs.y, x, t, **_exact_priors(obs))
        else:
            log_q_y = torch.zeros(batch_shape_of(x, classifier.event_shape), dtype=x.dtype, device=x.device)
    else:
        log_q1, log_q_y = classifier.guidance_log_probs(x, t, obs)
    grad = torch.autograd.grad(log_q_y.sum(), x, create_graph=True)[0] if need_grad else None
    return log_q1, log_q_y, grad


def composed_score(
    bases: Sequence[DiffusionModel],
    classifier: Any,
    obs: Observations,
    x: torch.Tensor,
    t: TimeLike,
    *,
    gamma: float = 1.0,
    base_scores: Optional[torch.Tensor] = None,
    create_graph: Optional[bool] = None,
) -> torch.Tensor:
    """The guided score :math:`\\sum_i Q(y_1 = i \\mid x, t)\\, s_i(x, t) + \\gamma \\nabla_x \\log Q(y \\mid x, t)`
    at ``x`` (``batch_shape + event_shape``), batched over particles.

    Under :func:`torch.no_grad` (the samplers) the classifier's terms are detached constants: one classifier forward
    and backward pass per call. When ``x`` requires grad in grad mode (the probability-flow likelihood, whose
    divergence differentiates the score), the score is a differentiable function of ``x`` whole: its Jacobian
    holds the classifier's part :math:`\\sum_i s_i \\nabla_x Q(y_1 = i \\mid x, t)^\\top + \\gamma \\nabla_x^2 \\log
    Q(y \\mid x, t)` too (:func:`guidance_terms` with ``create_graph``).

    :param bases: the base models (their :meth:`~pyro_sculpt.diffusion.DiffusionModel.score`).
    :param classifier: a diffusion observation classifier of the bases.
    :param obs: the observations and their priors.
    :param gamma: the guidance scale.
    :param base_scores: ``batch_shape + (m,) + event_shape`` the bases' scores at ``x``, if already computed (as
        functions of ``x`` when the score must be differentiable).
    :param create_graph: whether the score is differentiable in ``x`` through the classifier; default: when ``x``
        requires grad and grad mode is on.

    Example::

        s = composed_score([oracle1, oracle2], clf, Observations.build((0, 0), 2), x, 0.3, gamma=2.0)
    """
    if create_graph is None:
        create_graph = x.requires_grad and torch.is_grad_enabled()
    log_q1, _, grad = guidance_terms(classifier, obs, x, t, need_grad=gamma != 0.0, create_graph=create_graph)
    event_shape = classifier.event_shape
    axis = -1 - len(event_shape)  # the bases' axis, before the event
    if base_scores is None:
        base_scores = torch.stack([b.score(x, t) for b in bases], axis)  # a loop over bases, batched over particles
    score = (per_batch(log_q1.exp().to(base_scores.dtype), event_shape) * base_scores).sum(axis)
    if grad is not None:
        score = score + gamma * grad.to(score.dtype)
    return score


def _exact_priors(obs: Observations) -> dict:
    """The priors of ``obs`` as keywords of :class:`~pyro_sculpt.diffusion.GaussianMixtureClassifier` (whose default
    prior of :math:`y_{2..n}` is the mixture weights; :class:`Observations` uses ``alpha`` or uniform)."""
    kw: dict = {"weights": obs.weights.detach()}
    if obs.num_observations > 1:
        kw["alpha"] = obs.log_priors(dtype=torch.float64)[1].exp().detach()
    return kw


def classifier_log_prob(classifier: Any, obs: Observations, x: torch.Tensor, t: Optional[TimeLike]) -> torch.Tensor:
    """:math:`\\log Q(y \\mid x, t)` of the observations ``obs`` under their priors, for either kind of diffusion
    classifier (``t=None``: of a final sample)."""
    if isinstance(classifier, GaussianMixtureClassifier):
        return classifier.log_prob(obs.y, x, t, **_exact_priors(obs))
    return classifier.log_prob(obs, x, t)
