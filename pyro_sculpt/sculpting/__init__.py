"""Layer 3: compositional sculpting.

The top level is family-agnostic: observations of the augmented model, closed forms, the operators (Pyro
distributions), the guidance handler, :class:`ModelOfOrigin` and :func:`sculpted_guide`. The families plug in from
their subpackages (:mod:`pyro_sculpt.sculpting.gflownet`, :mod:`pyro_sculpt.sculpting.diffusion`), which register
themselves with :func:`~pyro_sculpt.sculpting.family.register_family` and give their mixture processes the
:class:`~pyro_sculpt.sculpting.guidance.GuidableProcess` protocol.
"""

from pyro_sculpt.sculpting import diffusion, gflownet, log_operators
from pyro_sculpt.sculpting.auto_guide import sculpted_guide
from pyro_sculpt.sculpting.closed_form import composition_distribution
from pyro_sculpt.sculpting.diffusion import (
    DiffusionMixtureProcess,
    DiffusionObservationClassifier,
    GaussianMixtureClassifier,
    SculptedDiffusionModel,
    composition_log_density,
    sculpted_diffusion,
)
from pyro_sculpt.sculpting.family import CompositionFamily, family_of, register_family
from pyro_sculpt.sculpting.gflownet import (
    ChildObservationClassifier,
    ExactClassifier,
    MixtureProcess,
    ObservationClassifier,
    SculptedProcess,
)
from pyro_sculpt.sculpting.guidance import GuidableProcess, Guidance
from pyro_sculpt.sculpting.handler import SculptGuidanceMessenger, sculpt_guidance
from pyro_sculpt.sculpting.model_of_origin import ModelOfOrigin
from pyro_sculpt.sculpting.observations import Observations
from pyro_sculpt.sculpting.operators import (
    compose,
    contrast,
    harmonic_mean,
    mixture,
    negation,
    product,
    reverse_contrast,
    sculpt,
)

__all__ = [
    "ChildObservationClassifier",
    "CompositionFamily",
    "DiffusionMixtureProcess",
    "DiffusionObservationClassifier",
    "ExactClassifier",
    "GaussianMixtureClassifier",
    "GuidableProcess",
    "Guidance",
    "MixtureProcess",
    "ModelOfOrigin",
    "ObservationClassifier",
    "Observations",
    "SculptGuidanceMessenger",
    "SculptedDiffusionModel",
    "SculptedProcess",
    "composition_distribution",
    "compose",
    "composition_log_density",
    "contrast",
    "diffusion",
    "family_of",
    "gflownet",
    "harmonic_mean",
    "log_operators",
    "mixture",
    "negation",
    "product",
    "register_family",
    "reverse_contrast",
    "sculpt",
    "sculpt_guidance",
    "sculpted_diffusion",
    "sculpted_guide",
]
