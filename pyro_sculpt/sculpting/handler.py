"""Guidance as a Pyro effect handler."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from pyro_sculpt.processes.runner import replace_step_dist
from pyro_sculpt.sculpting.guidance import Guidance


class SculptGuidanceMessenger(Messenger):
    """Replace every step of a composition's mixture process by its guided step for observations ``y``.

    The handler acts on the step sites that :func:`pyro_sculpt.run` emits (recognised by their
    ``infer["pyro_sculpt"]`` annotation) and asks the site's process for the guided distribution
    (:class:`~pyro_sculpt.sculpting.guidance.GuidableProcess`): the guided policy of docs/math.md §1.1 for a GFlowNet
    mixture, one batched classifier call over all particles; the guided score of §1.3 for a diffusion mixture, one
    classifier forward and backward pass. The site's mask (trajectories that already stopped) and batch shape
    (enclosing plates) are kept. Plate sub-sample sites and sites already ``done`` are left alone; observed step
    sites are rescored under the guided step (their values are kept). A step site of a process that cannot be guided
    is an error, never an unguided step in silence.

    :param classifier: the observation classifier of the mixture's bases.
    :param y: observed base indices (0-based), ``None`` for unobserved.
    :param alpha: prior :math:`(\\alpha, 1-\\alpha)` of :math:`y_{2..n}` (two bases).
    :param gamma: guidance scale of diffusion mixtures (default 1).

    Example::

        with SculptGuidanceMessenger(clf, y=(0, 1)):  # the harmonic mean
            x = ps.run("x", ps.mixture(p1, p2).process, num_particles=10_000)
    """

    def __init__(self, classifier: Any, y: Sequence[Optional[int]], alpha: Optional[float] = None, gamma: float = 1.0):
        super().__init__()
        self.guidance = Guidance(classifier, y, alpha, gamma)

    def _pyro_sample(self, msg) -> None:
        if site_is_subsample(msg) or msg["done"]:
            return
        info = (msg.get("infer") or {}).get("pyro_sculpt")
        if info is None:
            return
        process = info["process"]
        guided = getattr(process, "guided_step_dist", None)
        if guided is None:
            raise TypeError(
                f"sculpt_guidance: site {msg['name']!r} is a step of {process!r}, which cannot be guided; guidance "
                "applies to the mixture process of a composition (ps.mixture(...).process)"
            )
        try:
            new_fn = guided(info["state"], info["t"], self.guidance)
        except TypeError as err:  # the classifier is not one of this process's family: say which site
            raise TypeError(f"sculpt_guidance at site {msg['name']!r}: {err}") from None
        if new_fn is not None:
            msg["fn"] = replace_step_dist(msg["fn"], new_fn)


def sculpt_guidance(
    fn=None,
    classifier: Any = None,
    y: Sequence[Optional[int]] = (),
    alpha: Optional[float] = None,
    gamma: float = 1.0,
):
    """Function form of :class:`SculptGuidanceMessenger`, in the style of :mod:`pyro.poutine` handlers.

    Example::

        with ps.sculpt_guidance(classifier=clf, y=(0, 1)):
            x = ps.run("x", ps.mixture(p1, p2).process, num_particles=1000)
    """
    msngr = SculptGuidanceMessenger(classifier, y, alpha, gamma)
    return msngr(fn) if fn is not None else msngr
