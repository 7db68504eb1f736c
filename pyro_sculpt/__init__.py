"""pyro_sculpt: compositions of iterative generative models (GFlowNets, diffusion) as Pyro distributions.

Implements "Compositional Sculpting of Iterative Generative Processes" (Garipov et al., NeurIPS 2023).
"""

from pyro_sculpt import diffusion, gflownets, infer, mcmc, metrics, nn, processes, sculpting, train
from pyro_sculpt.gflownets import DiscreteEnv, GFlowNet, envs
from pyro_sculpt.gflownets.envs.hypergrid import HyperGrid, rewards
from pyro_sculpt.processes import IterativeProcess, ProcessDistribution, ProcessReparam, run, sample
from pyro_sculpt.sculpting import (
    ChildObservationClassifier,
    DiffusionMixtureProcess,
    DiffusionObservationClassifier,
    ExactClassifier,
    GaussianMixtureClassifier,
    ModelOfOrigin,
    ObservationClassifier,
    Observations,
    SculptedDiffusionModel,
    SculptGuidanceMessenger,
    composition_distribution,
    composition_log_density,
    contrast,
    harmonic_mean,
    mixture,
    negation,
    product,
    reverse_contrast,
    sculpt,
    sculpt_guidance,
    sculpted_diffusion,
    sculpted_guide,
)

__version__ = "0.1.0"

__all__ = [
    "ChildObservationClassifier",
    # subpackages
    "diffusion",
    "envs",
    "gflownets",
    "infer",
    "mcmc",
    "metrics",
    "nn",
    "processes",
    "rewards",
    "sculpting",
    "train",
    # processes
    "IterativeProcess",
    "ProcessDistribution",
    "ProcessReparam",
    "run",
    "sample",
    # GFlowNets
    "DiscreteEnv",
    "GFlowNet",
    "HyperGrid",
    # sculpting
    "DiffusionMixtureProcess",
    "DiffusionObservationClassifier",
    "ExactClassifier",
    "GaussianMixtureClassifier",
    "ModelOfOrigin",
    "ObservationClassifier",
    "Observations",
    "SculptGuidanceMessenger",
    "SculptedDiffusionModel",
    "composition_distribution",
    "composition_log_density",
    "contrast",
    "harmonic_mean",
    "mixture",
    "negation",
    "product",
    "reverse_contrast",
    "sculpt",
    "sculpt_guidance",
    "sculpted_diffusion",
    "sculpted_guide",
]
