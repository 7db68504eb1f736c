"""Diffusion models as a composition family: bases that are reverse-diffusion samplers of one space and schedule."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from pyro_sculpt.diffusion.samplers import ReverseDiffusionProcess
from pyro_sculpt.processes.process import IterativeProcess
from pyro_sculpt.sculpting.diffusion.composed import ComposedDiffusionProcess
from pyro_sculpt.sculpting.diffusion.mixture import DiffusionMixtureProcess
from pyro_sculpt.sculpting.diffusion.model import sculpted_diffusion
from pyro_sculpt.sculpting.family import register_family


class DiffusionFamily:
    """Mixture: :class:`DiffusionMixtureProcess`; sculpting: the bases' sampler on the guided score
    (:func:`sculpted_diffusion`); classifier-free compositions: :class:`ComposedDiffusionProcess` (docs/math.md
    §1.6)."""

    name = "diffusion"
    base_description = (
        "a diffusion sampler (a ReverseDiffusionProcess such as AncestralSampler(model)) or its ProcessDistribution"
    )

    def mixture(self, bases: Sequence[Any], weights: Optional[Sequence[float]]) -> IterativeProcess:
        """The exact mixture process of samplers."""
        return DiffusionMixtureProcess(bases, weights)

    def sculpt(self, bases, classifier, y, alpha, weights, gamma: float) -> ReverseDiffusionProcess:
        return sculpted_diffusion(bases, classifier, y, alpha, weights, gamma=gamma)

    def compose(self, bases, operator, gamma: float) -> ComposedDiffusionProcess:
        """The classifier-free composition of the leaves ``bases`` (:class:`ComposedDiffusionProcess`)."""
        return ComposedDiffusionProcess(bases, operator, gamma)


_FAMILY = DiffusionFamily()
register_family(ReverseDiffusionProcess, _FAMILY)
register_family(ComposedDiffusionProcess, _FAMILY)
