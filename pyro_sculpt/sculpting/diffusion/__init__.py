"""Sculpting diffusion models: the mixture process, the guided score, observation classifiers (learned and exact
for Gaussian-mixture oracles) and the exact composed densities of oracles."""

from pyro_sculpt.sculpting.diffusion import family  # noqa: F401  (registers the family)
from pyro_sculpt.sculpting.diffusion.bases import (
    as_sampler,
    check_diffusion_bases,
    sample_forward_pairs,
    sample_reverse_chains,
)
from pyro_sculpt.sculpting.diffusion.classifier import DiffusionObservationClassifier
from pyro_sculpt.sculpting.diffusion.closed_form import composition_log_density
from pyro_sculpt.sculpting.diffusion.exact_classifier import GaussianMixtureClassifier
from pyro_sculpt.sculpting.diffusion.mixture import DiffusionMixtureProcess, diffusion_mixture
from pyro_sculpt.sculpting.diffusion.model import SculptedDiffusionModel, sculpted_diffusion
from pyro_sculpt.sculpting.diffusion.score import (
    check_diffusion_classifier,
    classifier_log_prob,
    composed_score,
    guidance_terms,
    is_diffusion_classifier,
)

__all__ = [
    "DiffusionMixtureProcess",
    "DiffusionObservationClassifier",
    "GaussianMixtureClassifier",
    "SculptedDiffusionModel",
    "as_sampler",
    "check_diffusion_bases",
    "check_diffusion_classifier",
    "classifier_log_prob",
    "composed_score",
    "composition_log_density",
    "diffusion_mixture",
    "guidance_terms",
    "is_diffusion_classifier",
    "sample_forward_pairs",
    "sample_reverse_chains",
    "sculpted_diffusion",
]
