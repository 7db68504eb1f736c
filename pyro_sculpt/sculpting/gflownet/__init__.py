"""Sculpting GFlowNets: the mixture process, the guided policy, observation classifiers (learned and exact)."""

from pyro_sculpt.sculpting.gflownet import family  # noqa: F401  (registers the family)
from pyro_sculpt.sculpting.gflownet.bases import base_processes, check_bases
from pyro_sculpt.sculpting.gflownet.child_classifier import ChildObservationClassifier
from pyro_sculpt.sculpting.gflownet.classifier import Classifier, ObservationClassifier
from pyro_sculpt.sculpting.gflownet.composed import ComposedProcess, OperatorTwist, exact_composition
from pyro_sculpt.sculpting.gflownet.exact_classifier import ExactClassifier
from pyro_sculpt.sculpting.gflownet.guided_step import GuidedStep, guided_step
from pyro_sculpt.sculpting.gflownet.mixture import MixtureProcess
from pyro_sculpt.sculpting.gflownet.sculpted import SculptedProcess

__all__ = [
    "ChildObservationClassifier",
    "Classifier",
    "ComposedProcess",
    "ExactClassifier",
    "GuidedStep",
    "MixtureProcess",
    "ObservationClassifier",
    "OperatorTwist",
    "SculptedProcess",
    "base_processes",
    "check_bases",
    "exact_composition",
    "guided_step",
]
