"""pyro_sculpt: compositions of iterative generative models (GFlowNets, diffusion) as Pyro distributions.

Implements "Compositional Sculpting of Iterative Generative Processes" (Garipov et al., NeurIPS 2023).
"""

from pyro_sculpt import envs, infer, metrics, processes, rewards, sculpting
from pyro_sculpt.gflownets import DiscreteEnv, GFlowNet, HyperGrid
from pyro_sculpt.processes import IterativeProcess, ProcessDistribution, ProcessReparam, run, sample
from pyro_sculpt.sculpting import (
    ExactClassifier,
    ModelOfOrigin,
    ObservationClassifier,
    SculptGuidanceMessenger,
    composition_distribution,
    contrast,
    harmonic_mean,
    mixture,
    reverse_contrast,
    sculpt,
    sculpt_guidance,
)

__version__ = "0.1.0"

__all__ = [
    "DiscreteEnv",
    "ExactClassifier",
    "ModelOfOrigin",
    "ObservationClassifier",
    "SculptGuidanceMessenger",
    "composition_distribution",
    "contrast",
    "harmonic_mean",
    "mixture",
    "reverse_contrast",
    "sculpt",
    "sculpt_guidance",
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
