"""The mixture of diffusion samplers as an iterative process, exact without a classifier, and guidable."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from pyro.distributions import Categorical, TorchDistribution
from torch.distributions import constraints

from pyro_sculpt.diffusion.model import batch_shape_of, per_batch
from pyro_sculpt.diffusion.samplers import NonFiniteScoreError
from pyro_sculpt.diffusion.samplers.base import check_one_score_steps
from pyro_sculpt.processes.process import IterativeProcess
from pyro_sculpt.sculpting.diffusion.bases import DiffusionBase, check_classifier_bases, check_diffusion_bases
from pyro_sculpt.sculpting.diffusion.score import check_diffusion_classifier, composed_score, is_diffusion_classifier
from pyro_sculpt.sculpting.guidance import Guidance
from pyro_sculpt.sculpting.observations import Observations, PriorLike
from pyro_sculpt.utils import DeviceLike, as_device


class DiffusionMixtureProcess(IterativeProcess):
    """The mixture :math:`\\sum_i w_i p_i` of diffusion samplers as an iterative process, exact without a
    classifier.

    The state is ``(x, k)``: the particle ``x`` (``batch_shape + event_shape``, the bases' event shape) and the base
    ``k`` ``batch_shape + (1,)`` that generates it. Step 0
    draws :math:`k \\sim \\mathrm{Categorical}(w)` (kind ``"component"``), step 1 the initial noise (kind
    ``"prior"``), and step :math:`t \\ge 2` is step :math:`t - 1` of the bases' sampler with the particle's own
    base's score: every base's score is computed batched over all particles, and each particle's is selected. This is
    exactly "pick a base at random and run it", for any sampler (ODE samplers included). Conditioning the site of
    step 0 picks the base.

    Under :func:`~pyro_sculpt.sculpting.sculpt_guidance` every step :math:`t \\ge 2` is rebuilt from the guided score
    (:func:`composed_score`, which weights the bases by the classifier's :math:`Q(y_1 \\mid x, t)` instead of ``k``).

    The weights may be tensors (e.g. a ``simplex``-constrained :func:`pyro.param`): :meth:`terminal_log_prob` and the
    component site of step 0 are differentiable in them (the bases' densities are not); sampling draws detached
    values, and guidance treats them as constants.

    :param bases: diffusion samplers built with the same sampler arguments (or their distributions).
    :param weights: mixture weights (default uniform): numbers or tensors, each finite and > 0.
    :param device: where states live (default the first sampler's device).

    Example::

        mix = DiffusionMixtureProcess([AncestralSampler(m1, 200), AncestralSampler(m2, 200)])
        x = ps.run("x", mix, num_particles=4000)                 # one site per step
        with ps.sculpt_guidance(classifier=clf, y=(0, 1)):        # the harmonic mean, by guidance
            x = ps.run("x", mix, num_particles=4000)
    """

    #: a mixture of bases (read by :func:`~pyro_sculpt.sculpting.sculpted_guide`)
    is_mixture = True

    def __init__(
        self, bases: Sequence[DiffusionBase], weights: Optional[PriorLike] = None, *, device: DeviceLike = None
    ):
        self.samplers = check_diffusion_bases(bases, same_sampler=True)
        check_one_score_steps(self.samplers[0], "bases[0]")  # its steps are rebuilt from the selected base's score
        self.sampler = self.samplers[0]
        self.bases = [s.model for s in self.samplers]
        self.base_processes = self.samplers
        self.obs = Observations.build((None,), len(self.samplers), weights)
        self.weights = self.obs.weights
        self.dim = self.sampler.dim
        #: the shape of one particle (the bases' event shape)
        self._event_shape = self.sampler.event_shape
        #: the event dimensions of the state's leaves ``(x, k)``
        self.state_event_dims = (len(self._event_shape), 1)
        self.schedule = self.sampler.schedule
        self.max_steps = self.sampler.max_steps + 1
        self._device = as_device(device) if device is not None else self.sampler.device
        self._memo: Optional[tuple] = None

    def __repr__(self) -> str:
        return (
            f"DiffusionMixtureProcess({len(self.samplers)} bases, weights={self.obs.weight_values}, "
            f"sampler={self.sampler!r})"
        )

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
        """``batch_shape + (m,) + event_shape`` every base's score at ``x`` for step ``t``, each batched over all
        particles. The last
        result is remembered for the same state tensor, so that a step's distribution and its guided replacement
        evaluate the bases once."""
        memo = self._memo
        if memo is not None and memo[0] is x and memo[1] == t:
            return memo[2]
        tau = self.score_time(t)
        out = torch.stack([b.score(x, tau) for b in self.bases], -1 - len(self._event_shape))  # a loop over bases
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
            torch.zeros(self._event_shape, device=self.device, dtype=self.sampler.dtype),
            torch.zeros(1, dtype=torch.long, device=self.device),
        )

    def step_dist(self, state, t: int) -> TorchDistribution:
        x, k = state
        if t == 0:
            probs = self.weights.to(device=self.device, dtype=torch.get_default_dtype())
            return Categorical(probs=probs).expand(k.shape[:-1])
        event = self._event_shape
        if t == 1:
            return self.sampler.prior(batch_shape_of(x, event))
        scores = self.base_scores(x, t)  # batch + (m,) + event
        axis = -1 - len(event)
        batch = torch.broadcast_shapes(scores.shape[:axis], k.shape[:-1])
        scores = scores.expand(batch + scores.shape[axis:])
        idx = per_batch(k.expand(batch + (1,)), event).expand(batch + (1,) + event)
        return self.step_from_score(x.expand(batch + event), t, scores.gather(axis, idx).squeeze(axis))

    def transition(self, state, value: torch.Tensor, t: int):
        x, k = state
        if t == 0:
            return x, value.unsqueeze(-1)
        return value, k

    def terminal(self, state) -> torch.Tensor:
        return state[0]

    @property
    def event_shape(self) -> torch.Size:
        return self._event_shape

    @property
    def support(self) -> constraints.Constraint:
        return constraints.independent(constraints.real, len(self._event_shape))

    def site_infer(self, state, t: int) -> dict:
        """Adds ``"diffusion": {"kind", "time"}`` (the step kind and its score time, ``None`` at steps 0 and 1)."""
        infer = super().site_infer(state, t)
        time = None if t < 2 else self.sampler.score_time(t - 1)
        infer["pyro_sculpt"]["diffusion"] = {"kind": self.step_kind(t), "time": time}
        return infer

    def terminal_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\log \\sum_i w_i p_i(x)` from the bases' own log-densities (deterministic samplers, see
        :class:`~pyro_sculpt.diffusion.DDIMSampler`), differentiable in tensor weights."""
        logs = torch.stack([s.terminal_log_prob(x) for s in self.samplers], -1)
        return torch.logsumexp(logs + self.weights.to(dtype=logs.dtype, device=logs.device).log(), -1)

    # ----- MCMC correctors (the protocol of pyro_sculpt.mcmc.CorrectorMessenger) -----

    def corrector_level(self, t: int) -> Optional[float]:
        """The noise level of step ``t``'s input state (``None`` for the component and prior draws)."""
        return None if t < 2 else self.sampler.corrector_level(t - 1)

    def corrector_position(self, state) -> torch.Tensor:
        return state[0]

    def corrector_state(self, state, x: torch.Tensor, t: int):
        return x, state[1]

    def corrector_models(self) -> None:
        """``None``: the level target of a mixture depends on what guides it (a sculpting operator under
        :func:`~pyro_sculpt.sculpting.sculpt_guidance`), so a corrector needs an explicit ``target``."""
        return None

    # ----- guidance (GuidableProcess) -----

    def _check_guidance(self, guidance: Guidance) -> Observations:
        clf = guidance.classifier
        if not is_diffusion_classifier(clf):
            raise TypeError(
                f"classifier {type(clf).__name__} guides {getattr(clf, 'guides', 'another family')}, but {self!r} is a "
                "diffusion mixture: use a DiffusionObservationClassifier or GaussianMixtureClassifier"
            )
        obs = Observations.build(guidance.y, len(self.bases), self.weights, guidance.alpha).detach()
        check_diffusion_classifier(guidance.classifier, self._event_shape, self.schedule, obs)
        check_classifier_bases(guidance.classifier, self.bases)
        return obs

    def guided_step_dist(self, state, t: int, guidance: Guidance) -> Optional[TorchDistribution]:
        """Step ``t`` rebuilt from the guided score :math:`\\sum_i Q(y_1 = i \\mid x, t) s_i(x, t) + \\gamma
        \\nabla_x \\log Q(y \\mid x, t)` (:func:`~pyro_sculpt.sculpting.diffusion.composed_score`, reusing the bases'
        scores of the step); ``None`` for the component and prior steps, which guidance leaves alone."""
        if self.step_kind(t) in ("component", "prior"):
            return None
        obs = guidance.cached(self, lambda: self._check_guidance(guidance))
        x = state[0]
        score = composed_score(
            self.bases,
            guidance.classifier,
            obs,
            x,
            self.score_time(t),
            gamma=guidance.gamma,
            base_scores=self.base_scores(x, t),
        )
        return self.step_from_score(x, t, score)


def diffusion_mixture(bases: Sequence[DiffusionBase], weights: Optional[PriorLike] = None) -> DiffusionMixtureProcess:
    """The exact mixture process of diffusion samplers (:class:`DiffusionMixtureProcess`)."""
    return DiffusionMixtureProcess(bases, weights)
