"""Guidance as a Pyro effect handler."""

from __future__ import annotations

from typing import Optional, Sequence

from pyro.distributions import Categorical
from pyro.distributions.torch_distribution import MaskedDistribution
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from pyro_sculpt.gflownets.policy_process import gather_rows
from pyro_sculpt.sculpting.classifier import Classifier
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

    Example::

        with SculptGuidanceMessenger(clf, y=(0, 1)):  # the harmonic mean
            x = ps.run("x", ps.mixture(p1, p2).process, num_particles=10_000)
    """

    def __init__(self, classifier: Classifier, y: Sequence[Optional[int]], alpha: Optional[float] = None):
        super().__init__()
        if not isinstance(classifier, Classifier):
            raise TypeError(f"classifier must be an observation Classifier, got {type(classifier).__name__}")
        self.classifier = classifier
        self.y = tuple(y)
        self.alpha = alpha
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
        if info is None or not isinstance(info["process"], MixtureProcess):
            return
        process: MixtureProcess = info["process"]
        states = info["state"][0]
        rows, inverse, base_lp = process.unique_base_log_probs(states)  # shared with the step and its transition
        step = gather_rows(
            guided_step(process.bases, self.classifier, self._observations(process), rows, base_lp), inverse
        )
        fn = msg["fn"]
        mask = None
        if isinstance(fn, MaskedDistribution):
            mask, fn = fn._mask, fn.base_dist
        new_fn = Categorical(logits=step.log_probs)
        if new_fn.batch_shape != fn.batch_shape:
            new_fn = new_fn.expand(fn.batch_shape)
        msg["fn"] = new_fn.mask(mask) if mask is not None else new_fn


def sculpt_guidance(
    fn=None, classifier: Optional[Classifier] = None, y: Sequence[Optional[int]] = (), alpha: Optional[float] = None
):
    """Function form of :class:`SculptGuidanceMessenger`, in the style of :mod:`pyro.poutine` handlers."""
    msngr = SculptGuidanceMessenger(classifier, y, alpha)
    return msngr(fn) if fn is not None else msngr
