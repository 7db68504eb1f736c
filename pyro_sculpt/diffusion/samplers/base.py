"""Reverse-diffusion samplers as iterative processes: one Pyro sample site per reverse step.

Every sampler is an :class:`~pyro_sculpt.processes.IterativeProcess` whose state is :math:`x`, of shape
``batch_shape + event_shape`` (the model's :attr:`~pyro_sculpt.diffusion.DiffusionModel.event_shape`: ``(D,)`` for
vectors, ``(C, H, W)`` for images), and whose step ``k`` draws the next state (the value of a step *is* the next
state):

* step 0 draws the initial noise :math:`x_{t_{max}} \\sim \\mathcal N(0, s^2 I)`
  (:meth:`NoiseSchedule.prior_std`); it uses no score;
* every later step is *linear in the score* evaluated at one point,

  .. math::

      x' \\sim \\mathcal N\\big(a_k\\, x + b_k\\, s(x, \\tau_k),\\ c_k^2 I\\big)
      \\qquad (\\text{a } \\mathrm{Delta} \\text{ at the mean when } c_k = 0),

  with per-step constants :math:`(a_k, b_k, c_k)` (:meth:`ReverseDiffusionProcess.step_coefficients`) and
  score time :math:`\\tau_k` (:meth:`ReverseDiffusionProcess.score_time`).

That form is what classifier guidance tilts: a guidance handler computes the step's score with
:meth:`~ReverseDiffusionProcess.score`, modifies it (for instance to
:math:`\\sum_i Q(y_1 = i \\mid x, t)\\, s_i + \\gamma \\nabla_x \\log Q(y \\mid x, t)`) and builds the step's
distribution from the modified score with
:meth:`~ReverseDiffusionProcess.step_from_score`. Run a sampler with :func:`pyro_sculpt.run` (one site per
step) or wrap it in :class:`pyro_sculpt.ProcessDistribution` (one site for the whole chain).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Union

import torch
from pyro.distributions import Delta, Normal, TorchDistribution
from torch.distributions import constraints

from pyro_sculpt.diffusion.model import DiffusionModel, batch_shape_of, describe_event
from pyro_sculpt.processes.process import IterativeProcess
from pyro_sculpt.utils import DeviceLike, as_device, check_positive_int


class NonFiniteScoreError(ValueError):
    """A score (model or guided) contains NaN or infinite values at some step of a sampler.

    Example::

        try:
            x = ps.ProcessDistribution(AncestralSampler(model, 100)).sample((1000,))
        except NonFiniteScoreError as e:
            print(e)  # names the step and the time
    """


class ReverseDiffusionProcess(IterativeProcess):
    """Base class of the reverse-diffusion samplers (see the module docstring for the step's form).

    Subclasses build the per-step tables in :meth:`_build` by calling :meth:`_add_step`.

    :param model: a :class:`~pyro_sculpt.diffusion.DiffusionModel` (trained, oracle or composed).
    :param num_steps: number of noise levels traversed (the grid has ``num_steps + 1`` times, from
        ``schedule.t_max`` down to ``schedule.t_min``).
    :param times: an explicit decreasing grid of times instead (overrides ``num_steps``).
    :param device: where states live (default the model's device).
    :param clip_denoised: ``(low, high)``: at every step, clip the clean sample predicted from the score,
        :math:`\\hat x_0 = (x + \\sigma_\\tau^2 s) / \\alpha_\\tau`, to ``[low, high]`` and use the score of the clipped
        prediction, :math:`(\\alpha_\\tau \\hat x_0 - x) / \\sigma_\\tau^2` (the clipping of Ho et al. 2020's sampler,
        for data known to lie in a box, e.g. images in [-1, 1]). It keeps an undertrained model's early steps, where
        :math:`1 / \\alpha_\\tau` magnifies the score's error, from painting saturated colour fields
        (docs/mnist.md). Applied by :meth:`step_from_score` to whatever score the step is given (a guided one too);
        the classifier-free SMC of composed samplers draws its own, unclipped, steps. ``None`` (the default): no
        clipping.

    The state, every step's value and the output have shape ``batch_shape + event_shape`` (the model's); every
    step's distribution has ``len(event_shape)`` event dimensions.

    Example::

        oracle = GaussianMixtureOracle(torch.tensor([[-2.0, 0.0], [2.0, 0.0]]), stds=0.5)
        sampler = AncestralSampler(oracle, 100)  # a ReverseDiffusionProcess
        x = ps.ProcessDistribution(sampler).sample((1000,))  # (1000, 2)
        x = ps.run("x", sampler, num_particles=1000)  # one Pyro site per step
    """

    def __init__(
        self,
        model: DiffusionModel,
        num_steps: int = 500,
        *,
        times: Union[Sequence[float], torch.Tensor, None] = None,
        device: DeviceLike = None,
        clip_denoised: Optional[tuple[float, float]] = None,
    ):
        if not isinstance(model, DiffusionModel):
            raise TypeError(f"model must be a DiffusionModel, got {type(model).__name__}")
        self.clip_denoised = check_clip(clip_denoised)
        self.model = model
        self.schedule = model.schedule
        self._event_shape = model.event_shape
        self.device = as_device(device) if device is not None else model.device
        if times is None:
            check_positive_int("num_steps", num_steps)
            grid = self.schedule.default_times(num_steps)
        else:
            grid = torch.as_tensor(times, dtype=torch.float64).detach().cpu()
            if grid.dim() != 1 or grid.numel() < 2 or not torch.isfinite(grid).all():
                raise ValueError(f"times must be a 1-D finite sequence of at least 2 times, got {times!r}")
            if (grid[1:] >= grid[:-1]).any():
                raise ValueError("times must strictly decrease (from the noisiest level to the cleanest)")
            if float(grid[-1]) < self.schedule.t_min - 1e-12 or float(grid[0]) > self.schedule.t_max + 1e-12:
                raise ValueError(
                    f"times must lie in [t_min, t_max] = [{self.schedule.t_min}, {self.schedule.t_max}] of the schedule"
                )
            if abs(float(grid[0]) - self.schedule.t_max) > 1e-12:
                raise ValueError(
                    f"times must start at the schedule's t_max = {self.schedule.t_max}, got {float(grid[0])}: the "
                    "first step draws the prior N(0, s^2 I), the law of the noised data at t_max only"
                )
        self.times = grid
        self.num_steps = grid.numel() - 1
        self._score_times: list[Optional[float]] = [None]
        self._coefs: list[tuple[float, float, float]] = [(0.0, 0.0, self.schedule.prior_std())]
        self._kinds: list[str] = ["prior"]
        self._build()
        self.max_steps = len(self._kinds)

    # ----- construction -----

    def _build(self) -> None:
        raise NotImplementedError

    def _add_step(self, kind: str, score_time: float, a: float, b: float, c: float) -> None:
        for name, v in (("a", a), ("b", b), ("c", c)):
            if not math.isfinite(v):
                raise ValueError(
                    f"{type(self).__name__}: step {len(self._kinds)} ({kind} at t={score_time:.4g}) has a "
                    f"non-finite coefficient {name}={v}; the schedule is too stiff for this sampler on this "
                    "grid"
                )
        self._score_times.append(float(score_time))
        self._coefs.append((float(a), float(b), float(c)))
        self._kinds.append(kind)

    def _sched(self, t: float) -> tuple[float, float]:
        tt = torch.tensor(t, dtype=torch.float64)
        return float(self.schedule.alpha(tt)), float(self.schedule.sigma2(tt))

    def with_model(self, model: DiffusionModel) -> "ReverseDiffusionProcess":
        """The same sampler (grid and options) driven by another model with the same schedule, e.g. a composed
        one."""
        if not isinstance(model, DiffusionModel):
            raise TypeError(f"model must be a DiffusionModel, got {type(model).__name__}")
        if model.schedule != self.schedule:
            raise ValueError(f"model has schedule {model.schedule!r}, this sampler uses {self.schedule!r}")
        if model.event_shape != self.event_shape:
            raise ValueError(
                f"model has {describe_event(model.event_shape)}, this sampler has {describe_event(self.event_shape)}"
            )
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.model = model
        return new

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, num_steps={self.num_steps})"

    # ----- the step API used by guidance -----

    def step_kind(self, t: int) -> str:
        """``"prior"`` for step 0, otherwise ``"predictor"``, ``"corrector"`` or ``"ode"``."""
        self._check_step(t)
        return self._kinds[t]

    def score_time(self, t: int) -> float:
        """The diffusion time :math:`\\tau_t` at which step ``t`` evaluates the score (the noise level of its
        input state). Step 0 (the prior draw) has none and raises."""
        self._check_step(t)
        if t == 0:
            raise ValueError("step 0 draws the initial noise from the prior; it evaluates no score")
        return self._score_times[t]  # type: ignore[return-value]

    def step_coefficients(self, t: int) -> tuple[float, float, float]:
        """The constants :math:`(a_t, b_t, c_t)` of step ``t``: next state :math:`\\sim \\mathcal N(a_t x +
        b_t s,\\ c_t^2 I)`. Adding :math:`\\delta` to the score shifts the mean by :math:`b_t \\delta`."""
        self._check_step(t)
        return self._coefs[t]

    def score(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """The model's score used by step ``t`` at state ``x``: :math:`s(x, \\tau_t)`."""
        return self.model.score(x, self.score_time(t))

    def step_from_score(self, x: torch.Tensor, t: int, score: torch.Tensor) -> TorchDistribution:
        """The distribution of step ``t``'s value (the next state) from state ``x`` given ``score`` at ``x``
        (the model's, or a guided one).

        :returns: ``Normal(a x + b score, c).to_event(k)``, or ``Delta(a x + b score, event_dim=k)`` for a
            deterministic step (:math:`c = 0`, ODE samplers), with ``k = len(event_shape)``.
        :raises NonFiniteScoreError: if ``score`` has NaN or infinite entries (the message names the step).
        :raises ValueError: if ``score`` does not have ``x``'s shape.
        """
        self._check_step(t)
        if t == 0:
            raise ValueError("step 0 draws the initial noise from the prior; it has no score")
        if not isinstance(score, torch.Tensor) or score.shape != x.shape:
            shape = tuple(score.shape) if isinstance(score, torch.Tensor) else type(score).__name__
            raise ValueError(f"score must have the state's shape {tuple(x.shape)}, got {shape}")
        if not bool(torch.isfinite(score).all()):
            raise NonFiniteScoreError(
                f"{type(self).__name__}: non-finite score (NaN or inf) at step {t} of {self.max_steps - 1} "
                f"({self._kinds[t]}, t={self._score_times[t]:.4g})"
            )
        if self.clip_denoised is not None:
            score = self._clipped_score(x, t, score)
        a, b, c = self._coefs[t]
        mean = a * x + b * score
        k = len(self.event_shape)
        if c == 0.0:
            return Delta(mean, event_dim=k)
        return Normal(mean, mean.new_full((), c).expand(mean.shape)).to_event(k)

    def _clipped_score(self, x: torch.Tensor, t: int, score: torch.Tensor) -> torch.Tensor:
        alpha, sigma2 = self._sched(self._score_times[t])  # type: ignore[arg-type]
        low, high = self.clip_denoised  # type: ignore[misc]
        x0 = ((x + sigma2 * score) / alpha).clamp(low, high)
        return (alpha * x0 - x) / sigma2

    def prior(self, batch_shape: Optional[torch.Size] = None) -> TorchDistribution:
        """The distribution of step 0, :math:`\\mathcal N(0, s^2 I)`, with batch shape ``batch_shape`` and event
        shape :attr:`event_shape`."""
        loc = torch.zeros(tuple(batch_shape or ()) + tuple(self.event_shape), device=self.device, dtype=self.dtype)
        return Normal(loc, loc.new_full((), self._coefs[0][2]).expand(loc.shape)).to_event(len(self.event_shape))

    def _check_step(self, t: int) -> None:
        if not isinstance(t, int) or not 0 <= t < self.max_steps:
            raise ValueError(f"step t must be an integer in [0, {self.max_steps - 1}], got {t!r}")

    # ----- IterativeProcess -----

    def init(self) -> torch.Tensor:
        """A placeholder state (zeros); step 0 replaces it by the initial noise."""
        return torch.zeros(self.event_shape, device=self.device, dtype=self.dtype)

    def step_dist(self, state: torch.Tensor, t: int) -> TorchDistribution:
        if t == 0:
            return self.prior(batch_shape_of(state, self.event_shape))
        return self.step_from_score(state, t, self.score(state, t))

    def transition(self, state: torch.Tensor, value: torch.Tensor, t: int) -> torch.Tensor:
        return value

    def terminal(self, state: torch.Tensor) -> torch.Tensor:
        return state

    @property
    def event_shape(self) -> torch.Size:
        """The shape of one state and output: the model's event shape."""
        return self._event_shape

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the states: the model's (:attr:`pyro_sculpt.diffusion.DiffusionModel.dtype`)."""
        return self.model.dtype

    @property
    def dim(self) -> int:
        """The number of entries of one state (``event_shape[0]`` for vector data)."""
        return self._event_shape.numel()

    @property
    def state_event_dims(self) -> int:  # type: ignore[override]
        """``len(event_shape)``: the trailing dimensions of a state that describe one point."""
        return len(self._event_shape)

    @property
    def support(self) -> constraints.Constraint:
        """Real entries, with ``len(event_shape)`` event dimensions."""
        return constraints.independent(constraints.real, len(self._event_shape))

    def site_infer(self, state: torch.Tensor, t: int) -> dict[str, Any]:
        """Adds ``"diffusion": {"kind", "time"}`` (the step kind and its score time, ``None`` at step 0) to
        :meth:`IterativeProcess.site_infer`."""
        infer = super().site_infer(state, t)
        infer["pyro_sculpt"]["diffusion"] = {"kind": self._kinds[t], "time": self._score_times[t]}
        return infer

    # ----- MCMC correctors (the protocol of pyro_sculpt.mcmc.CorrectorMessenger) -----

    def corrector_level(self, t: int) -> Optional[float]:
        """The noise level of the state that step ``t`` starts from, which a corrector may move before the step
        (every step that evaluates a score at its input's level: ``"predictor"`` and ``"ode"``); ``None`` for the prior
        draw and for the sampler's own corrector steps."""
        self._check_step(t)
        return self._score_times[t] if self._kinds[t] in ("predictor", "ode") else None

    def corrector_position(self, state: torch.Tensor) -> torch.Tensor:
        """The particles of a state (the state itself)."""
        return state

    def corrector_state(self, state: torch.Tensor, x: torch.Tensor, t: int) -> torch.Tensor:
        """The state with its particles moved to ``x`` (``x`` itself)."""
        return x

    def corrector_models(self) -> tuple[list, None]:
        """``(models, operator)`` of the level targets: the model alone (``log_prob(x, t)`` if it has one, else a
        score-only target)."""
        return [self.model], None

    @property
    def forward_noise(self) -> bool:
        """Whether the noise of every stochastic step is the forward diffusion's (the reverse SDE's: variance
        :math:`g^2 \\Delta t` to first order), the condition under which the plain Itô density estimator
        (:func:`~pyro_sculpt.diffusion.sample_with_log_density` with ``second_order="none"``) is consistent.

        ``False`` in this base class, so that a new sampler is tracked with the second-order term (valid for any
        noise level) unless it declares otherwise; :class:`AncestralSampler`, :class:`EulerMaruyamaSampler`,
        :class:`PredictorCorrectorSampler` (its predictor steps) and :class:`DDIMSampler` with ``eta=1`` declare
        ``True``. A subclass whose steps add the reverse SDE's noise overrides it.
        """
        return False

    def twist(self, **options):
        """The SMC twist of this sampler (see :func:`pyro_sculpt.infer.smc`): its model's, for a model that has one
        (a sculpted diffusion model: the classifier), else ``None`` (SMC then runs the sampler unweighted)."""
        make = getattr(self.model, "twist", None)
        return make(self, **options) if make is not None else None

    def terminal_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        if all(self._coefs[k][2] == 0.0 for k in range(1, self.max_steps)):
            raise NotImplementedError(
                f"{type(self).__name__} is deterministic (no step adds noise) but defines no terminal_log_prob: its "
                "output's log-density is the probability-flow ODE's; override terminal_log_prob with "
                "pyro_sculpt.diffusion.probability_flow_log_prob (as DDIMSampler(eta=0) and ProbabilityFlowSampler do)"
            )
        raise NotImplementedError(
            f"{type(self).__name__} is stochastic: its output has no tractable log-probability; use "
            "DDIMSampler(eta=0) or ProbabilityFlowSampler, whose log_prob is the probability-flow ODE's"
        )


def check_one_score_steps(sampler: ReverseDiffusionProcess, name: str = "sampler") -> None:
    """Raise a :class:`TypeError` naming ``name`` if ``sampler``'s class overrides
    :meth:`~ReverseDiffusionProcess.step_dist`.

    Mixtures, classifier-free compositions and density tracking step a sampler through
    :meth:`~ReverseDiffusionProcess.step_from_score`: one score at the step's start, the step's table
    :math:`(a_k, b_k, c_k)`. A sampler whose own ``step_dist`` does something else (a second-order method that
    evaluates the score twice, say) would silently be run as that table instead.

    Example::

        check_one_score_steps(AncestralSampler(oracle, 100))  # passes
    """
    if type(sampler).step_dist is not ReverseDiffusionProcess.step_dist:
        raise TypeError(
            f"{name} ({type(sampler).__name__}) overrides step_dist, but mixtures, classifier-free compositions and "
            "density tracking build every step from one score with step_from_score (the table of _add_step), so "
            "its own steps would be silently replaced; a sampler for them must define its steps with _add_step only "
            "(a step linear in one score: a multi-evaluation method such as Heun's cannot be composed this way)"
        )


def check_clip(clip_denoised: Any) -> Optional[tuple[float, float]]:
    """``clip_denoised`` as a pair of floats ``low < high``, or ``None``.

    :raises ValueError: for anything else.
    """
    if clip_denoised is None:
        return None
    try:
        low, high = (float(v) for v in clip_denoised)
    except (TypeError, ValueError):
        raise ValueError(f"clip_denoised must be None or a pair (low, high), got {clip_denoised!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"clip_denoised must be a pair of finite numbers low < high, got {clip_denoised!r}")
    return low, high


def check_unclipped(sampler: ReverseDiffusionProcess) -> None:
    """Refuse the probability-flow log-density of a sampler that clips its predictions (it is not that ODE's).

    :raises ValueError: if ``sampler.clip_denoised`` is set.
    """
    if sampler.clip_denoised is not None:
        raise ValueError(
            f"{type(sampler).__name__} clips its predictions (clip_denoised={sampler.clip_denoised}): its "
            "log_prob is not the probability-flow ODE's; build the sampler with clip_denoised=None"
        )


def ddim_coefficients(at: tuple[float, float], as_: tuple[float, float], eta: float) -> tuple[float, float, float]:
    (alpha_t, sigma2_t), (alpha_s, sigma2_s) = at, as_
    a_ts = alpha_t / alpha_s
    sigma2_ts = sigma2_t - a_ts**2 * sigma2_s
    c2 = eta**2 * sigma2_s * sigma2_ts / sigma2_t
    sigma_t = math.sqrt(sigma2_t)
    a = alpha_s / alpha_t
    b = alpha_s * sigma2_t / alpha_t - sigma_t * math.sqrt(max(sigma2_s - c2, 0.0))
    return a, b, math.sqrt(c2)


def euler_coefficients(schedule, t: float, dt: float, noise: float) -> tuple[float, float, float]:
    """Euler step of :math:`dx = [f x - \\lambda g^2 s] dt + \\sqrt{noise}\\, g\\, dw` backwards by ``dt``,
    with :math:`\\lambda = 1` for the SDE (``noise=1``) and :math:`\\tfrac12` for the ODE (``noise=0``)."""
    tt = torch.tensor(t, dtype=torch.float64)
    f, g2 = float(schedule.drift(tt)), float(schedule.diffusion2(tt))
    lam = 1.0 if noise else 0.5
    return 1.0 - f * dt, lam * g2 * dt, math.sqrt(noise * g2 * dt)
