"""Guidance as a Pyro effect handler."""

from __future__ import annotations

from typing import Optional, Sequence

from pyro.distributions import Categorical
from pyro.distributions.torch_distribution import MaskedDistribution
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from pyro_sculpt.gflownets.policy_process import gather_rows
from pyro_sculpt.sculpting.classifier import Classifier
from pyro_sculpt.sculpting.diffusion import (
    DiffusionMixtureProcess,
    check_diffusion_classifier,
    check_gamma,
    composed_score,
    is_diffusion_classifier,
)
from pyro_sculpt.sculpting.guidance import guided_step
from pyro_sculpt.sculpting.observations import Observations
from pyro_sculpt.sculpting.processes import MixtureProcess


class SculptGuidanceMessenger(Messenger):
    """Replace every step of a GFlowNet mixture by the guided step for observations ``y``.

    The handler acts on the step sites that :func:`pyro_sculpt.run` emits for a
    :class:`~pyro_sculpt.sculpting.MixtureProcess` (recognised by their ``infer["pyro_sculpt"]`` annotation). Each
    site's distribution becomes the guided policy of MATH.md §1.1 at the site's current states, computed for all
    particles in one batched classifier call; the site's mask (for trajectories that already stopped) and its batch
    shape (from enclosing plates) are kept. Plate sub-sample sites and sites already ``done`` are left alone; observed
    step sites are rescored under the guided policy (their values are kept).

    :param classifier: the observation classifier of the mixture's bases.
    :param y: observed base indices (0-based), ``None`` for unobserved.
    :param alpha: prior :math:`(\\alpha, 1-\\alpha)` of :math:`y_{2..n}` (two bases).
    :param gamma: guidance scale of diffusion mixtures (default 1).

    Diffusion: on the steps of a :class:`~pyro_sculpt.sculpting.DiffusionMixtureProcess` (with a diffusion
    classifier), every step after the initial noise is rebuilt from the guided score
    :math:`\\sum_i Q(y_1 = i \\mid x, t) s_i(x, t) + \\gamma \\nabla_x \\log Q(y \\mid x, t)`
    (:func:`~pyro_sculpt.sculpting.diffusion.composed_score`: the bases' scores of the step, and one classifier
    forward and backward pass over all particles), keeping the site's mask and batch shape. The component and prior
    steps are left alone.

    Example::

        with SculptGuidanceMessenger(clf, y=(0, 1)):  # the harmonic mean
            x = ps.run("x", ps.mixture(p1, p2).process, num_particles=10_000)
    """

    def __init__(
        self,
        classifier: Classifier,
        y: Sequence[Optional[int]],
        alpha: Optional[float] = None,
        gamma: float = 1.0,
    ):
        super().__init__()
        if not isinstance(classifier, Classifier) and not is_diffusion_classifier(classifier):
            raise TypeError(
                "classifier must be an observation Classifier (or a diffusion observation classifier), got "
                f"{type(classifier).__name__}"
            )
        self.classifier = classifier
        self.y = tuple(y)
        self.alpha = alpha
        self.gamma = check_gamma(gamma)
        self._obs: dict = {}

    def _observations(self, process: MixtureProcess) -> Observations:
        key = id(process)
        if key not in self._obs:
            if not self.classifier.env.same_as(process.env):
                raise ValueError(f"classifier is for env {self.classifier.env.config()}, but the mixture lives on "
                                 f"{process.env.config()}")
            obs = Observations.build(self.y, len(process.bases), process.weights, self.alpha)
            self.classifier.check_observations(obs)
            self._obs[key] = obs
        return self._obs[key]

    def _pyro_sample(self, msg) -> None:
        if site_is_subsample(msg) or msg["done"]:
            return
        info = (msg.get("infer") or {}).get("pyro_sculpt")
        if info is not None and isinstance(info["process"], DiffusionMixtureProcess):
            self._diffusion_step(msg, info)
            return
        if info is None or not isinstance(info["process"], MixtureProcess):
            return
        if is_diffusion_classifier(self.classifier):
            raise TypeError(f"classifier {type(self.classifier).__name__} guides diffusion models, but the site "
                            f"{msg['name']!r} is a step of a GFlowNet mixture")
        if self.gamma != 1.0:
            raise ValueError(f"gamma applies to diffusion mixtures only; GFlowNet guidance is exact, got {self.gamma}")
        process: MixtureProcess = info["process"]
        states = info["state"][0]
        rows, inverse, base_lp = process.unique_base_log_probs(states)  # shared with the step and its transition
        obs = self._observations(process)
        step = guided_step(process.bases, self.classifier, obs, rows, base_lp, deduplicate=process.deduplicate)
        log_probs = gather_rows(step.log_probs, inverse)  # the only field the step's distribution needs
        fn = msg["fn"]
        mask = None
        if isinstance(fn, MaskedDistribution):
            mask, fn = fn._mask, fn.base_dist
        new_fn = Categorical(logits=log_probs)
        if new_fn.batch_shape != fn.batch_shape:
            new_fn = new_fn.expand(fn.batch_shape)
        msg["fn"] = new_fn.mask(mask) if mask is not None else new_fn

    def _diffusion_observations(self, process: DiffusionMixtureProcess) -> Observations:
        key = id(process)
        if key not in self._obs:
            if isinstance(self.classifier, Classifier):
                raise TypeError(f"classifier {type(self.classifier).__name__} guides GFlowNets, but {process!r} is a "
                                "diffusion mixture: use a DiffusionObservationClassifier or GaussianMixtureClassifier")
            obs = Observations.build(self.y, len(process.bases), process.weights, self.alpha)
            check_diffusion_classifier(self.classifier, process.dim, process.schedule, obs)
            self._obs[key] = obs
        return self._obs[key]

    def _diffusion_step(self, msg, info) -> None:
        process: DiffusionMixtureProcess = info["process"]
        t = info["t"]
        if process.step_kind(t) in ("component", "prior"):
            return
        obs = self._diffusion_observations(process)
        x = info["state"][0]
        score = composed_score(process.bases, self.classifier, obs, x, process.score_time(t), gamma=self.gamma,
                               base_scores=process.base_scores(x, t))  # the bases' scores of the step, reused
        fn = msg["fn"]
        mask = None
        if isinstance(fn, MaskedDistribution):
            mask, fn = fn._mask, fn.base_dist
        new_fn = process.step_from_score(x, t, score)
        if new_fn.batch_shape != fn.batch_shape:
            new_fn = new_fn.expand(fn.batch_shape)
        msg["fn"] = new_fn.mask(mask) if mask is not None else new_fn


def sculpt_guidance(
    fn=None,
    classifier: Optional[Classifier] = None,
    y: Sequence[Optional[int]] = (),
    alpha: Optional[float] = None,
    gamma: float = 1.0,
):
    """Function form of :class:`SculptGuidanceMessenger`, in the style of :mod:`pyro.poutine` handlers."""
    msngr = SculptGuidanceMessenger(classifier, y, alpha, gamma)
    return msngr(fn) if fn is not None else msngr
