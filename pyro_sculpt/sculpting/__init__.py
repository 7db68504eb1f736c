"""Layer 3: compositional sculpting: observation classifiers, combinators, and guidance as a Pyro handler."""

from pyro_sculpt.sculpting.auto_guide import sculpted_guide
from pyro_sculpt.sculpting.classifier import Classifier, ObservationClassifier, check_bases
from pyro_sculpt.sculpting.closed_form import composition_distribution
from pyro_sculpt.sculpting.combinators import contrast, harmonic_mean, mixture, reverse_contrast, sculpt
from pyro_sculpt.sculpting.diffusion import (
    DiffusionMixtureProcess,
    SculptedDiffusionModel,
    composed_score,
    composition_log_density,
    sculpted_diffusion,
)
from pyro_sculpt.sculpting.diffusion_classifier import DiffusionObservationClassifier, sample_reverse_chains
from pyro_sculpt.sculpting.exact_classifier import ExactClassifier
from pyro_sculpt.sculpting.guidance import GuidedStep, guided_step
from pyro_sculpt.sculpting.handler import SculptGuidanceMessenger, sculpt_guidance
from pyro_sculpt.sculpting.model_of_origin import ModelOfOrigin
from pyro_sculpt.sculpting.observations import Observations
from pyro_sculpt.sculpting.processes import MixtureProcess, SculptedProcess

__all__ = [
    "Classifier",
    "DiffusionMixtureProcess",
    "DiffusionObservationClassifier",
    "ExactClassifier",
    "GuidedStep",
    "MixtureProcess",
    "ModelOfOrigin",
    "ObservationClassifier",
    "Observations",
    "SculptGuidanceMessenger",
    "SculptedDiffusionModel",
    "SculptedProcess",
    "check_bases",
    "composed_score",
    "composition_log_density",
    "composition_distribution",
    "contrast",
    "guided_step",
    "harmonic_mean",
    "mixture",
    "reverse_contrast",
    "sample_reverse_chains",
    "sculpt",
    "sculpted_diffusion",
    "sculpt_guidance",
    "sculpted_guide",
]
