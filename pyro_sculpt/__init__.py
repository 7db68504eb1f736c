"""pyro_sculpt: compositions of iterative generative models (GFlowNets, diffusion) as Pyro distributions.

Implements "Compositional Sculpting of Iterative Generative Processes" (Garipov et al., NeurIPS 2023).
"""

from pyro_sculpt import diffusion, envs, infer, metrics, processes, rewards, sculpting
from pyro_sculpt.gflownets import DiscreteEnv, GFlowNet, HyperGrid
from pyro_sculpt.processes import IterativeProcess, ProcessDistribution, ProcessReparam, run, sample
from pyro_sculpt.sculpting import (
    DiffusionMixtureProcess,
    DiffusionObservationClassifier,
    ExactClassifier,
    ModelOfOrigin,
    ObservationClassifier,
    SculptedDiffusionModel,
    SculptGuidanceMessenger,
    composition_distribution,
    composition_log_density,
    contrast,
    harmonic_mean,
    mixture,
    reverse_contrast,
    sculpt,
    sculpt_guidance,
    sculpted_diffusion,
    sculpted_guide,
)

__version__ = "0.1.0"

__all__ = [
    "diffusion",
    "envs",
    "infer",
    "metrics",
    "processes",
    "rewards",
    "sculpting",
    "DiffusionMixtureProcess",
    "DiffusionObservationClassifier",
    "DiscreteEnv",
    "ExactClassifier",
    "ModelOfOrigin",
    "ObservationClassifier",
    "SculptGuidanceMessenger",
    "SculptedDiffusionModel",
    "composition_distribution",
    "composition_log_density",
    "contrast",
    "harmonic_mean",
    "mixture",
    "reverse_contrast",
    "sculpt",
    "sculpt_guidance",
    "sculpted_guide",
    "sculpted_diffusion",
    "GFlowNet",
    "HyperGrid",
    "IterativeProcess",
    "ProcessDistribution",
    "ProcessReparam",
    "envs",
    "metrics",
    "rewards",
    "run",
    "sample",
]
