"""Diffusion models as a composition family: bases that are reverse-diffusion samplers of one space and schedule."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from pyro_sculpt.diffusion.samplers import ReverseDiffusionProcess
from pyro_sculpt.sculpting.diffusion.mixture import DiffusionMixtureProcess
from pyro_sculpt.sculpting.diffusion.model import sculpted_diffusion
from pyro_sculpt.sculpting.family import register_family


class DiffusionFamily:
    """Mixture: :class:`DiffusionMixtureProcess`; sculpting: the bases' sampler on the guided score
    (:func:`sculpted_diffusion`)."""

    name = "diffusion"
    base_description = (
        "a diffusion sampler (a ReverseDiffusionProcess such as AncestralSampler(model)) or its ProcessDistribution"
    )

    def mixture(self, bases: Sequence[Any], weights: Optional[Sequence[float]]) -> DiffusionMixtureProcess:
        return DiffusionMixtureProcess(bases, weights)

    def sculpt(self, bases, classifier, y, alpha, weights, gamma: float) -> ReverseDiffusionProcess:
        return sculpted_diffusion(bases, classifier, y, alpha, weights, gamma=gamma)

    def compose(self, bases, operator, gamma: float):
        raise NotImplementedError("classifier-free composition of diffusion models is not built yet")


register_family(ReverseDiffusionProcess, DiffusionFamily())
