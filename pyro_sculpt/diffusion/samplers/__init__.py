"""Reverse-diffusion samplers, one per file; each is an :class:`~pyro_sculpt.processes.IterativeProcess` whose
steps are linear in the score (:class:`ReverseDiffusionProcess`)."""

from pyro_sculpt.diffusion.samplers.ancestral import AncestralSampler
from pyro_sculpt.diffusion.samplers.base import NonFiniteScoreError, ReverseDiffusionProcess
from pyro_sculpt.diffusion.samplers.ddim import DDIMSampler
from pyro_sculpt.diffusion.samplers.euler_maruyama import EulerMaruyamaSampler
from pyro_sculpt.diffusion.samplers.predictor_corrector import PredictorCorrectorSampler
from pyro_sculpt.diffusion.samplers.probability_flow import ProbabilityFlowSampler

__all__ = [
    "AncestralSampler",
    "DDIMSampler",
    "EulerMaruyamaSampler",
    "NonFiniteScoreError",
    "PredictorCorrectorSampler",
    "ProbabilityFlowSampler",
    "ReverseDiffusionProcess",
]
