"""Compositional sculpting of diffusion models (Garipov et al. 2023, §4.2; MATH.md §1.3).

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
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import torch
from pyro.distributions import Categorical, TorchDistribution
from torch.distributions import constraints

from pyro_sculpt.diffusion.exact_classifier import GaussianMixtureClassifier
from pyro_sculpt.diffusion.model import DeviceLike, DiffusionModel, check_points
from pyro_sculpt.diffusion.samplers import NonFiniteScoreError, ReverseDiffusionProcess
from pyro_sculpt.diffusion.schedules import TimeLike
from pyro_sculpt.processes.distribution import ProcessDistribution
from pyro_sculpt.processes.process import IterativeProcess
from pyro_sculpt.sculpting.diffusion_classifier import (
    DiffusionBase,
    DiffusionObservationClassifier,
    as_sampler,
    check_diffusion_bases,
)
from pyro_sculpt.sculpting.observations import Observations, terminal_log_joint
from pyro_sculpt.utils import as_device

#: the classifier types that guide diffusion bases
DIFFUSION_CLASSIFIERS = (DiffusionObservationClassifier, GaussianMixtureClassifier)


def is_diffusion_classifier(classifier: Any) -> bool:
    """Whether ``classifier`` is a time-conditioned observation classifier of diffusion bases."""
    return isinstance(classifier, DIFFUSION_CLASSIFIERS)


def is_diffusion_base(base: Any) -> bool:
    """Whether ``base`` is a diffusion sampler, its :class:`~pyro_sculpt.ProcessDistribution`, or a
    :class:`DiffusionMixtureProcess` (or its distribution)."""
    proc = getattr(base, "process", base) if not isinstance(base, IterativeProcess) else base
    return isinstance(proc, (ReverseDiffusionProcess, DiffusionMixtureProcess))


def check_gamma(gamma: Any) -> float:
    """Raise a :class:`ValueError` naming ``gamma`` unless it is a finite number >= 0."""
    try:
        g = float(gamma)
    except (TypeError, ValueError):
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}") from None
    if not math.isfinite(g) or g < 0:
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")
    return g


def check_diffusion_classifier(classifier: Any, dim: int, schedule, obs: Observations) -> None:
    """Raise a clear error unless ``classifier`` guides ``obs.num_models`` diffusion bases of data dimension ``dim``
    and noise schedule ``schedule`` for the observations ``obs``.

    :raises TypeError: if ``classifier`` is not a diffusion observation classifier.
    :raises ValueError: for another data dimension, number of bases, number of observations or schedule, or an
        ``alpha`` the classifier cannot answer.
    """
    if not is_diffusion_classifier(classifier):
        raise TypeError(
            "classifier must be a diffusion observation classifier (DiffusionObservationClassifier or "
            f"GaussianMixtureClassifier), got {type(classifier).__name__}"
        )
    if classifier.dim != dim:
        raise ValueError(f"classifier is for data dimension {classifier.dim}, but the bases have dimension {dim}")
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
    classifier: Any, obs: Observations, x: torch.Tensor, t: TimeLike, *, need_grad: bool = True
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """The classifier's part of the guided score at ``x`` ``(..., D)`` and diffusion time ``t``, from one forward
    and (if ``need_grad`` and some :math:`y_k` is observed) one backward pass.

    A learned classifier trained on states up to ``classifier.max_time`` is not used at later (noisier) times: there
    :math:`Q(y_1 \\mid x, t)` is the prior :math:`w` and :math:`Q(y \\mid x, t)` a constant in :math:`x` (reported as
    0, gradient 0), the limit the classifier tends to as the noise grows.

    :returns: ``(log_q1, log_q_y, grad)``: :math:`\\log Q(y_1 = i \\mid x, t)` ``(..., m)``, :math:`\\log Q(y \\mid x,
        t)` ``(...)`` and :math:`\\nabla_x \\log Q(y \\mid x, t)` ``(..., D)`` (``None`` when not needed), detached.
        Works under :func:`torch.no_grad`.

    Example::

        obs = Observations.build((0, 1), 2)
        log_q1, log_q_y, grad = guidance_terms(clf, obs, x, 0.3)
    """
    observed = any(v is not None for v in obs.y)
    need_grad = need_grad and observed
    beyond = None
    max_time = getattr(classifier, "max_time", None)
    if max_time is not None and t is not None:
        beyond = torch.as_tensor(t, device=x.device) > max_time
        if beyond.dim() == 0 or bool(beyond.all()):
            beyond = beyond.expand(x.shape[:-1])
        if bool(beyond.all()):  # nothing to evaluate: the prior, and no guidance term
            log_w = torch.tensor(obs.weights, dtype=x.dtype, device=x.device).log()
            zeros = torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)
            return log_w.expand(x.shape[:-1] + log_w.shape), zeros, torch.zeros_like(x) if need_grad else None
    with torch.enable_grad() if need_grad else torch.no_grad():
        xg = x.detach().requires_grad_(need_grad)
        if isinstance(classifier, GaussianMixtureClassifier):
            # closed-form first marginal; the quadrature only for Q(y | x_t) and only for the observed y_1
            with torch.no_grad():
                log_q1 = classifier.log_prob_first(x.detach(), t, weights=list(obs.weights))
            if observed:
                log_q_y = classifier.log_prob(obs.y, xg, t, **_exact_priors(obs))
            else:
                log_q_y = torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)
        else:
            log_q1, log_q_y = classifier.guidance_log_probs(xg, t, obs)
        grad = torch.autograd.grad(log_q_y.sum(), xg)[0] if need_grad else None
    log_q1, log_q_y = log_q1.detach(), log_q_y.detach()
    if beyond is not None and bool(beyond.any()):  # per-particle times, some beyond max_time
        b = beyond.expand(log_q_y.shape)
        log_w = torch.tensor(obs.weights, dtype=log_q1.dtype, device=x.device).log()
        log_q1 = torch.where(b.unsqueeze(-1), log_w, log_q1)
        log_q_y = torch.where(b, torch.zeros_like(log_q_y), log_q_y)
        if grad is not None:
            grad = torch.where(b.unsqueeze(-1), torch.zeros_like(grad), grad)
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
) -> torch.Tensor:
    """The guided score :math:`\\sum_i Q(y_1 = i \\mid x, t)\\, s_i(x, t) + \\gamma \\nabla_x \\log Q(y \\mid x, t)`
    at ``x`` ``(..., D)``, batched over particles.

    :param bases: the base models (their :meth:`~pyro_sculpt.diffusion.DiffusionModel.score`).
    :param classifier: a diffusion observation classifier of the bases.
    :param obs: the observations and their priors.
    :param gamma: the guidance scale.
    :param base_scores: ``(..., m, D)`` the bases' scores at ``x``, if already computed.

    Example::

        s = composed_score([oracle1, oracle2], clf, Observations.build((0, 0), 2), x, 0.3, gamma=2.0)
    """
    log_q1, _, grad = guidance_terms(classifier, obs, x, t, need_grad=gamma != 0.0)
    if base_scores is None:
        base_scores = torch.stack([b.score(x, t) for b in bases], -2)  # a loop over bases, batched over particles
    score = (log_q1.exp().to(base_scores.dtype).unsqueeze(-1) * base_scores).sum(-2)
    if grad is not None:
        score = score + gamma * grad.to(score.dtype)
    return score


class SculptedDiffusionModel(DiffusionModel):
    """The sculpted diffusion model :math:`\\tilde p(x \\mid y_1, \\dots, y_n)` of bases :math:`p_1, \\dots, p_m`: a
    :class:`~pyro_sculpt.diffusion.DiffusionModel` whose score is the guided score (MATH.md §1.3)

    .. math::

        s_{comp}(x, t) = \\sum_i Q(y_1 = i \\mid x, t)\\, s_i(x, t) + \\gamma\\, \\nabla_x \\log Q(y \\mid x, t)

    (:func:`composed_score`). Any sampler runs it (``sampler.with_model(model)``), and it can be a base of a new
    composition ("chaining").

    :param bases: the base diffusion models (one data dimension and one schedule), or samplers of them.
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
        for k, b in enumerate(models[1:], 1):
            if b.dim != models[0].dim:
                raise ValueError(
                    f"bases[{k}] has data dimension {b.dim}, but bases[0] has {models[0].dim}: every base must live "
                    "in one space"
                )
            if b.schedule != models[0].schedule:
                raise ValueError(
                    f"bases[{k}] has schedule {b.schedule!r}, but bases[0] has {models[0].schedule!r}: every base "
                    "must share one noise schedule"
                )
        self.bases = models
        self.schedule = models[0].schedule
        self.dim = models[0].dim
        self.obs = Observations.build(y, len(models), weights, alpha)
        check_diffusion_classifier(classifier, self.dim, self.schedule, self.obs)
        self.classifier = classifier
        self.gamma = check_gamma(gamma)
        self._device = as_device(device) if device is not None else models[0].device

    @property
    def device(self) -> torch.device:
        return self._device

    def __repr__(self) -> str:
        return (
            f"SculptedDiffusionModel(y={self.obs.y}, alpha={self.obs.alpha}, gamma={self.gamma}, "
            f"{len(self.bases)} bases)"
        )

    def score(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """The guided score :math:`s_{comp}(x, t)`, shape of ``x``."""
        check_points(x, self.dim)
        return composed_score(self.bases, self.classifier, self.obs, x, t, gamma=self.gamma)

    def log_q(self, x: torch.Tensor, t: Optional[TimeLike] = None) -> torch.Tensor:
        """:math:`\\log Q(y \\mid x, t)` of the observations (``t=None``: of a final sample), shape
        ``x.shape[:-1]``."""
        check_points(x, self.dim)
        return classifier_log_prob(self.classifier, self.obs, x, t)


def _exact_priors(obs: Observations) -> dict:
    """The priors of ``obs`` as keywords of :class:`~pyro_sculpt.diffusion.GaussianMixtureClassifier` (whose default
    prior of :math:`y_{2..n}` is the mixture weights; :class:`Observations` uses ``alpha`` or uniform)."""
    kw: dict = {"weights": list(obs.weights)}
    if obs.num_observations > 1:
        kw["alpha"] = obs.log_priors(dtype=torch.float64)[1].exp()
    return kw


def classifier_log_prob(classifier: Any, obs: Observations, x: torch.Tensor, t: Optional[TimeLike]) -> torch.Tensor:
    """:math:`\\log Q(y \\mid x, t)` of the observations ``obs`` under their priors, for either kind of diffusion
    classifier (``t=None``: of a final sample)."""
    if isinstance(classifier, GaussianMixtureClassifier):
        return classifier.log_prob(obs.y, x, t, **_exact_priors(obs))
    return classifier.log_prob(obs, x, t)


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


class DiffusionMixtureProcess(IterativeProcess):
    """The mixture :math:`\\sum_i w_i p_i` of diffusion samplers as an iterative process, exact without a
    classifier.

    The state is ``(x, k)``: the particle ``x`` ``(..., D)`` and the base ``k`` ``(..., 1)`` that generates it. Step 0
    draws :math:`k \\sim \\mathrm{Categorical}(w)` (kind ``"component"``), step 1 the initial noise (kind
    ``"prior"``), and step :math:`t \\ge 2` is step :math:`t - 1` of the bases' sampler with the particle's own
    base's score: every base's score is computed batched over all particles, and each particle's is selected. This is
    exactly "pick a base at random and run it", for any sampler (ODE samplers included). Conditioning the site of
    step 0 picks the base.

    Under :func:`~pyro_sculpt.sculpting.sculpt_guidance` every step :math:`t \\ge 2` is rebuilt from the guided score
    (:func:`composed_score`, which weights the bases by the classifier's :math:`Q(y_1 \\mid x, t)` instead of ``k``).

    :param bases: diffusion samplers built with the same sampler arguments (or their distributions).
    :param weights: mixture weights (default uniform).
    :param device: where states live (default the first sampler's device).

    Example::

        mix = DiffusionMixtureProcess([AncestralSampler(m1, 200), AncestralSampler(m2, 200)])
        x = ps.run("x", mix, num_particles=4000)                 # one site per step
        with ps.sculpt_guidance(classifier=clf, y=(0, 1)):        # the harmonic mean, by guidance
            x = ps.run("x", mix, num_particles=4000)
    """

    state_event_dims = 1

    def __init__(
        self, bases: Sequence[DiffusionBase], weights: Optional[Sequence[float]] = None, *, device: DeviceLike = None
    ):
        self.samplers = check_diffusion_bases(bases, same_sampler=True)
        self.sampler = self.samplers[0]
        self.bases = [s.model for s in self.samplers]
        self.obs = Observations.build((None,), len(self.samplers), weights)
        self.weights = self.obs.weights
        self.dim = self.sampler.dim
        self.schedule = self.sampler.schedule
        self.max_steps = self.sampler.max_steps + 1
        self._device = as_device(device) if device is not None else self.sampler.device
        self._memo: Optional[tuple] = None

    def __repr__(self) -> str:
        return f"DiffusionMixtureProcess({len(self.samplers)} bases, weights={self.weights}, sampler={self.sampler!r})"

    @property
    def device(self) -> torch.device:
        return self._device

    # ----- the step API (that of ReverseDiffusionProcess, shifted by the component step) -----

    def _check_step(self, t: int) -> None:
        if not isinstance(t, int) or not 0 <= t < self.max_steps:
            raise ValueError(f"step t must be an integer in [0, {self.max_steps - 1}], got {t!r}")

    def step_kind(self, t: int) -> str:
        """``"component"`` for step 0, ``"prior"`` for step 1, then the sampler's kinds."""
        self._check_step(t)
        return "component" if t == 0 else self.sampler.step_kind(t - 1)

    def score_time(self, t: int) -> float:
        """The diffusion time at which step ``t`` (>= 2) evaluates the scores."""
        self._check_step(t)
        if t < 2:
            raise ValueError(f"step {t} ({self.step_kind(t)}) evaluates no score")
        return self.sampler.score_time(t - 1)

    def step_coefficients(self, t: int) -> tuple[float, float, float]:
        """The constants :math:`(a, b, c)` of step ``t`` (see
        :meth:`~pyro_sculpt.diffusion.ReverseDiffusionProcess.step_coefficients`)."""
        self._check_step(t)
        if t == 0:
            raise ValueError("step 0 draws the base of each particle; it has no coefficients")
        return self.sampler.step_coefficients(t - 1)

    def base_scores(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """``(..., m, D)`` every base's score at ``x`` for step ``t``, each batched over all particles. The last
        result is remembered for the same state tensor, so that a step's distribution and its guided replacement
        evaluate the bases once."""
        memo = self._memo
        if memo is not None and memo[0] is x and memo[1] == t:
            return memo[2]
        tau = self.score_time(t)
        out = torch.stack([b.score(x, tau) for b in self.bases], -2)  # a loop over bases, not particles
        self._memo = (x, t, out)
        return out

    def step_from_score(self, x: torch.Tensor, t: int, score: torch.Tensor) -> TorchDistribution:
        """The distribution of step ``t`` (>= 2) from ``x`` given a score at ``x`` (the selected base's or a guided
        one); see :meth:`~pyro_sculpt.diffusion.ReverseDiffusionProcess.step_from_score`.

        :raises NonFiniteScoreError: naming the step, for a NaN or infinite score.
        """
        self._check_step(t)
        if t < 2:
            raise ValueError(f"step {t} ({self.step_kind(t)}) has no score")
        try:
            return self.sampler.step_from_score(x, t - 1, score)
        except NonFiniteScoreError as err:
            raise NonFiniteScoreError(f"DiffusionMixtureProcess step {t} (sampler step {t - 1}): {err}") from None

    # ----- IterativeProcess -----

    def init(self):
        return (
            torch.zeros(self.dim, device=self.device),
            torch.zeros(1, dtype=torch.long, device=self.device),
        )

    def step_dist(self, state, t: int) -> TorchDistribution:
        x, k = state
        if t == 0:
            probs = torch.tensor(self.weights, device=self.device)
            return Categorical(probs=probs).expand(k.shape[:-1])
        if t == 1:
            return self.sampler.prior(x.shape[:-1])
        scores = self.base_scores(x, t)  # (..., m, D)
        batch = torch.broadcast_shapes(scores.shape[:-2], k.shape[:-1])
        scores = scores.expand(batch + scores.shape[-2:])
        idx = k.expand(batch + (1,)).unsqueeze(-1).expand(batch + (1, self.dim))
        return self.step_from_score(x.expand(batch + (self.dim,)), t, scores.gather(-2, idx).squeeze(-2))

    def transition(self, state, value: torch.Tensor, t: int):
        x, k = state
        if t == 0:
            return x, value.unsqueeze(-1)
        return value, k

    def terminal(self, state) -> torch.Tensor:
        return state[0]

    @property
    def event_shape(self) -> torch.Size:
        return torch.Size([self.dim])

    @property
    def support(self) -> constraints.Constraint:
        return constraints.real_vector

    def site_infer(self, state, t: int) -> dict:
        """Adds ``"diffusion": {"kind", "time"}`` (the step kind and its score time, ``None`` at steps 0 and 1)."""
        infer = super().site_infer(state, t)
        time = None if t < 2 else self.sampler.score_time(t - 1)
        infer["pyro_sculpt"]["diffusion"] = {"kind": self.step_kind(t), "time": time}
        return infer

    def terminal_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\log \\sum_i w_i p_i(x)` from the bases' own log-densities (deterministic samplers, see
        :class:`~pyro_sculpt.diffusion.DDIMSampler`)."""
        logs = torch.stack([s.terminal_log_prob(x) for s in self.samplers], -1)
        return torch.logsumexp(logs + torch.tensor(self.weights, dtype=logs.dtype, device=logs.device).log(), -1)


def diffusion_mixture(
    bases: Sequence[DiffusionBase], weights: Optional[Sequence[float]] = None
) -> DiffusionMixtureProcess:
    """The exact mixture process of diffusion samplers (:class:`DiffusionMixtureProcess`)."""
    return DiffusionMixtureProcess(bases, weights)


def composition_log_density(
    bases: Sequence[Any],
    y: Sequence[Optional[int]],
    alpha: Optional[float] = None,
    weights: Optional[Sequence[float]] = None,
    *,
    t: Optional[float] = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The exact (unnormalised) log-density of a composition of bases with exact densities,

    .. math::

        \\log \\tilde p(x \\mid y) = \\log \\sum_i w_i p_i(x) + \\sum_{k \\text{ observed}}
        \\log \\frac{\\pi_{k, y_k} p_{y_k}(x)}{\\sum_j \\pi_{k,j} p_j(x)} + \\text{const},

    with the priors of :class:`~pyro_sculpt.sculpting.Observations`, for evaluation on a grid
    (:func:`~pyro_sculpt.metrics.grid_mode_weights`, :func:`~pyro_sculpt.metrics.sample_grid`).

    :param bases: :class:`~pyro_sculpt.diffusion.GaussianMixtureOracle` (or any object with ``log_prob(x, t)``), or
        samplers of them.
    :param y: observed base indices, ``None`` for unobserved (all ``None``: the mixture).
    :param t: the noise level of the densities (``None``: the data densities).
    :returns: a function mapping ``(N, D)`` to ``(N,)`` (float64).

    Example::

        f = composition_log_density([oracle1, oracle2], (0, 1))
        target = ps.metrics.grid_mode_weights(f, [(-5, 5), (-5, 5)], means)
    """
    models = []
    for k, b in enumerate(bases):
        if isinstance(b, ReverseDiffusionProcess) or hasattr(b, "process"):
            b = as_sampler(b, f"bases[{k}]").model
        if not callable(getattr(b, "log_prob", None)):
            raise TypeError(f"bases[{k}] must have an exact log_prob(x, t) (e.g. a GaussianMixtureOracle)")
        models.append(b)
    obs = Observations.build(y, len(models), weights, alpha)
    log_priors = obs.log_priors(dtype=torch.float64)

    def log_density(x: torch.Tensor) -> torch.Tensor:
        logp = torch.stack([m.log_prob(x, t) for m in models], -1).to(torch.float64)
        mix = torch.logsumexp(logp + log_priors[0], -1)
        return mix + obs.select(terminal_log_joint(logp, log_priors))

    return log_density
