"""A sculpted GFlowNet: the guided policy of a mixture conditioned on observations."""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from pyro_sculpt.gflownets.policy_process import (
    DiscretePolicyProcess,
    parameters_key,
    per_unique_state,
)
from pyro_sculpt.sculpting.gflownet.bases import check_bases, check_classifier_bases
from pyro_sculpt.sculpting.gflownet.classifier import Classifier
from pyro_sculpt.sculpting.gflownet.guided_step import GuidedStep, check_common_support, guided_step
from pyro_sculpt.sculpting.gflownet.twist import ClassifierTwist
from pyro_sculpt.sculpting.observations import Observations


class SculptedProcess(DiscretePolicyProcess):
    """A sculpted GFlowNet: the mixture of ``bases`` conditioned on observations ``y`` through a classifier.

    Its forward policy is the guided policy of :func:`~pyro_sculpt.sculpting.gflownet.guided_step`. With an exact
    classifier and bases that share the uniform backward policy its terminal distribution is exactly

    .. math::

        \\tilde p(x \\mid y) \\propto \\Big(\\sum_i w_i p_i(x)\\Big)
            \\prod_{k \\text{ observed}} \\tilde p(y_k \\mid x).

    A sculpted process can be a base of a new composition ("chaining"). That composition is approximate: a guided
    policy no longer satisfies the uniform backward policy exactly, so the step-wise mixture of the new composition
    is not exactly the mixture of terminal distributions (Garipov et al. 2023, §4.1).

    ``weights`` and ``alpha`` are treated as constants (tensors are detached): the exact :meth:`terminal_log_prob`
    is a dynamic programme over the guided policy, whose classifier (the exact one's tables, a learned one's network)
    is evaluated at a fixed :math:`\\alpha`, so it carries no gradient in them. To learn them, observe
    :class:`~pyro_sculpt.sculpting.ModelOfOrigin` labels, or fit
    :func:`~pyro_sculpt.sculpting.composition_distribution` (which equals this distribution for an exact classifier
    and bases sharing the uniform backward policy) to samples.

    Impossible observations (bases that share no support where ``y`` needs it, so that the target is zero
    everywhere) raise a :class:`ValueError` when the process is sampled or its exact distribution computed
    (:func:`~pyro_sculpt.sculpting.gflownet.guided_step.check_common_support`).

    :param bases: the base models.
    :param classifier: the observation classifier (learned or :class:`~pyro_sculpt.sculpting.ExactClassifier`).
    :param y: observed base indices (0-based), ``None`` for unobserved.
    :param alpha: prior :math:`(\\alpha, 1-\\alpha)` of :math:`y_{2..n}` (two bases).
    :param weights: mixture weights (default uniform).

    Example::

        proc = ps.harmonic_mean(p1, p2, clf).process  # a SculptedProcess
        proc.exact_terminal_distribution()  # the guided policy's, by dynamic programming
    """

    def __init__(
        self,
        bases: Sequence[DiscretePolicyProcess],
        classifier: Classifier,
        y: Sequence[Optional[int]],
        alpha: Optional[float] = None,
        weights: Optional[Sequence[float]] = None,
    ):
        self.env = check_bases(bases)
        if not isinstance(classifier, Classifier):
            raise TypeError(f"classifier must be an observation Classifier, got {type(classifier).__name__}")
        if not classifier.env.same_as(self.env):
            raise ValueError(
                f"classifier is for env {classifier.env.config()}, but the bases live on {self.env.config()}"
            )
        self.bases = list(bases)
        self.classifier = classifier
        self.obs = Observations.build(y, len(self.bases), weights, alpha).detach()
        classifier.check_observations(self.obs)
        check_classifier_bases(classifier, bases)
        self.backward_policy = self.bases[0].backward_policy

    def __repr__(self) -> str:
        return f"SculptedProcess(y={self.obs.y}, alpha={self.obs.alpha_value}, {len(self.bases)} bases)"

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return self.bases[0].device

    def cache_key(self):
        clf_key = (
            self.classifier.cache_key() if hasattr(self.classifier, "cache_key") else parameters_key(self.classifier)
        )
        return (tuple(b.cache_key() for b in self.bases), clf_key)

    def check_support(self) -> None:
        """Raise a :class:`ValueError` naming ``y`` if the bases share no support where the observations need it
        (:func:`~pyro_sculpt.sculpting.gflownet.guided_step.check_common_support`); checked once per version of the
        bases and classifier."""
        key = self.cache_key()
        if self.__dict__.get("_support_checked") == key:
            return
        check_common_support(self.env, self.classifier, self.obs, self.device)
        self.__dict__["_support_checked"] = key

    def init(self) -> torch.Tensor:
        self.check_support()
        return super().init()

    def exact_terminal_distribution(self) -> torch.Tensor:
        self.check_support()
        return super().exact_terminal_distribution()

    def guided(self, states: torch.Tensor) -> GuidedStep:
        """The guided step at ``states``, evaluated once per distinct state."""
        return per_unique_state(
            self.env,
            lambda s: guided_step(self.bases, self.classifier, self.obs, s, deduplicate=self.deduplicate),
            states,
            self.deduplicate,
        )

    def action_log_probs(self, states: torch.Tensor) -> torch.Tensor:
        return self.guided(states).log_probs

    def twist(self, terminal: str = "trajectory"):
        """The SMC twist of this process (:class:`~pyro_sculpt.sculpting.gflownet.twist.ClassifierTwist`): guided
        proposal, classifier twist; see :func:`pyro_sculpt.infer.smc`."""
        return ClassifierTwist(self, terminal)
