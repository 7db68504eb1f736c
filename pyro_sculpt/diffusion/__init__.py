"""Layer 2: diffusion models as iterative processes (schedules, score networks, samplers, oracles)."""

from pyro_sculpt.diffusion.density import PathDensityTracker, sample_with_log_density
from pyro_sculpt.diffusion.energy_model import EnergyScoreModel
from pyro_sculpt.diffusion.likelihood import probability_flow_drift, probability_flow_log_prob
from pyro_sculpt.diffusion.model import DiffusionModel
from pyro_sculpt.diffusion.oracle import GaussianMixtureOracle
from pyro_sculpt.diffusion.samplers import (
    AncestralSampler,
    DDIMSampler,
    EulerMaruyamaSampler,
    NonFiniteScoreError,
    PredictorCorrectorSampler,
    ProbabilityFlowSampler,
    ReverseDiffusionProcess,
)
from pyro_sculpt.diffusion.schedules import (
    NoiseSchedule,
    TabulatedVESchedule,
    TabulatedVPSchedule,
    VESchedule,
    VPSchedule,
    schedule_from_config,
)
from pyro_sculpt.diffusion.score_model import ScoreModel

__all__ = [
    "AncestralSampler",
    "DDIMSampler",
    "DiffusionModel",
    "EnergyScoreModel",
    "EulerMaruyamaSampler",
    "GaussianMixtureOracle",
    "NoiseSchedule",
    "NonFiniteScoreError",
    "PathDensityTracker",
    "PredictorCorrectorSampler",
    "ProbabilityFlowSampler",
    "ReverseDiffusionProcess",
    "ScoreModel",
    "TabulatedVESchedule",
    "TabulatedVPSchedule",
    "VESchedule",
    "VPSchedule",
    "probability_flow_drift",
    "probability_flow_log_prob",
    "sample_with_log_density",
    "schedule_from_config",
]
