"""Layer 3: compositional sculpting: observation classifiers, combinators, and guidance as a Pyro handler."""

from pyro_sculpt.sculpting.classifier import Classifier, ObservationClassifier, check_bases
from pyro_sculpt.sculpting.closed_form import composition_distribution
from pyro_sculpt.sculpting.combinators import contrast, harmonic_mean, mixture, reverse_contrast, sculpt
from pyro_sculpt.sculpting.exact_classifier import ExactClassifier
from pyro_sculpt.sculpting.guidance import GuidedStep, guided_step
from pyro_sculpt.sculpting.handler import SculptGuidanceMessenger, sculpt_guidance
from pyro_sculpt.sculpting.model_of_origin import ModelOfOrigin
from pyro_sculpt.sculpting.observations import Observations
from pyro_sculpt.sculpting.processes import MixtureProcess, SculptedProcess

__all__ = [
    "Classifier",
    "ExactClassifier",
    "GuidedStep",
    "MixtureProcess",
    "ModelOfOrigin",
    "ObservationClassifier",
    "Observations",
    "SculptGuidanceMessenger",
    "SculptedProcess",
    "check_bases",
    "composition_distribution",
    "contrast",
    "guided_step",
    "harmonic_mean",
    "mixture",
    "reverse_contrast",
    "sculpt",
    "sculpt_guidance",
]
