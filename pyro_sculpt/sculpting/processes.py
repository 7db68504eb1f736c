"""Sculpted and mixture GFlowNet processes."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from pyro.distributions import Categorical

from pyro_sculpt.gflownets.policy_process import (
    DiscretePolicyProcess,
    gather_rows,
    parameters_key,
    per_unique_state,
    unique_rows,
)
from pyro_sculpt.processes.process import IterativeProcess
from pyro_sculpt.sculpting.classifier import Classifier, check_bases
from pyro_sculpt.sculpting.guidance import GuidedStep, guided_step
from pyro_sculpt.sculpting.observations import Observations


class MixtureProcess(IterativeProcess):
    """The mixture :math:`\\sum_i w_i p_i` of GFlowNets as an iterative process, exact without a classifier.

    Each trajectory carries the posterior :math:`\\rho_i \\propto w_i \\prod_t P_{i,F}(a_t \\mid s_t)` of "which base
    generated this prefix" and steps with :math:`\\sum_i \\rho_i P_{i,F}(a \\mid s)`: this is exactly the process that
    picks a base at random and runs it, written one action at a time. The state is ``(s, log_rho)``. Under the
    guidance handler (:class:`~pyro_sculpt.sculpting.SculptGuidanceMessenger`) its steps become the guided policy
    while ``log_rho`` keeps tracking the exact prefix posterior (used by the SMC correction).

    :param bases: the base models.
    :param weights: mixture weights (default uniform).
    """

    def __init__(self, bases: Sequence[DiscretePolicyProcess], weights: Optional[Sequence[float]] = None):
        self.env = check_bases(bases)
        self.bases = list(bases)
        self.obs = Observations.build((None,), len(self.bases), weights)
        self.weights = self.obs.weights
        self.max_steps = self.env.max_steps
        self.backward_policy = self.bases[0].backward_policy

    def __repr__(self) -> str:
        return f"MixtureProcess({len(self.bases)} bases, weights={self.weights})"

    @property
    def device(self) -> torch.device:
        return self.bases[0].device

    def init(self):
        return (self.env.initial_state(self.device), torch.tensor(self.weights, device=self.device).log())

    #: evaluate the bases once per distinct state of a batch
    deduplicate: bool = True

    def unique_base_log_probs(self, states: torch.Tensor):
        """``(rows, inverse, log_probs)``: the rows to evaluate (see :func:`~pyro_sculpt.gflownets.policy_process.
        unique_rows`) and every base's policy there, ``(rows, m, A)``.

        The last result is remembered for the same state tensor, so that a step's distribution, its guided
        replacement and its transition deduplicate and evaluate the bases once.
        """
        memo = self.__dict__.get("_memo")
        if memo is not None and memo[0] is states:
            return memo[1]
        rows, inverse = unique_rows(self.env, states, self.deduplicate)
        out = (rows, inverse, torch.stack([b.action_log_probs(rows) for b in self.bases], -2))
        self.__dict__["_memo"] = (states, out)
        return out

    def base_log_probs(self, states: torch.Tensor) -> torch.Tensor:
        """``(..., m, A)`` every base's policy at ``states``."""
        _, inverse, lp = self.unique_base_log_probs(states)
        return gather_rows(lp, inverse)

    def step_dist(self, state, t):
        s, log_rho = state
        lp = self.base_log_probs(s)
        post = torch.log_softmax(log_rho, -1).unsqueeze(-1)
        return Categorical(logits=torch.logsumexp(post + lp, -2))

    def transition(self, state, value, t):
        s, log_rho = state
        _, inverse, lp = self.unique_base_log_probs(s)
        if inverse is None:  # one row per state (or the unbatched first state)
            batch = torch.broadcast_shapes(lp.shape[:-2], value.shape)
            idx = value.expand(batch)[..., None, None].expand(batch + (lp.shape[-2], 1))
            taken = lp.expand(batch + lp.shape[-2:]).gather(-1, idx).squeeze(-1)
        else:  # read the taken action's probability from the distinct-state table, without expanding it
            taken = lp[inverse, :, value]  # advanced indices around a slice: shape batch + (m,)
        return self.env.step(s, value), log_rho + taken

    def stops(self, state, value, t):
        return value == self.env.stop_action

    def terminal(self, state):
        return state[0]

    @property
    def event_shape(self) -> torch.Size:
        return self.bases[0].event_shape

    @property
    def support(self):
        return self.bases[0].support

    def exact_terminal_distribution(self) -> torch.Tensor:
        """:math:`\\sum_i w_i p_i(x)` over all states, from the bases' exact distributions."""
        return sum(w * b.exact_terminal_distribution() for w, b in zip(self.weights, self.bases))

    def terminal_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        if not self.env.is_enumerable:
            return super().terminal_log_prob(x)
        self.env.validate_states(x, "x")
        return self.exact_terminal_distribution().to(x.device)[self.env.index(x)].log().to(torch.get_default_dtype())


class SculptedProcess(DiscretePolicyProcess):
    """A sculpted GFlowNet: the mixture of ``bases`` conditioned on observations ``y`` through a classifier.

    Its forward policy is the guided policy of :func:`~pyro_sculpt.sculpting.guidance.guided_step`. With an exact
    classifier and bases that share the uniform backward policy its terminal distribution is exactly

    .. math::

        \\tilde p(x \\mid y) \\propto \\Big(\\sum_i w_i p_i(x)\\Big)
            \\prod_{k \\text{ observed}} \\tilde p(y_k \\mid x).

    A sculpted process can be a base of a new composition ("chaining"). That composition is approximate: a guided
    policy no longer satisfies the uniform backward policy exactly, so the step-wise mixture of the new composition
    is not exactly the mixture of terminal distributions (Garipov et al. 2023, §4.1).

    :param bases: the base models.
    :param classifier: the observation classifier (learned or :class:`~pyro_sculpt.sculpting.ExactClassifier`).
    :param y: observed base indices (0-based), ``None`` for unobserved.
    :param alpha: prior :math:`(\\alpha, 1-\\alpha)` of :math:`y_{2..n}` (two bases).
    :param weights: mixture weights (default uniform).
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
        self.obs = Observations.build(y, len(self.bases), weights, alpha)
        classifier.check_observations(self.obs)
        self.backward_policy = self.bases[0].backward_policy

    def __repr__(self) -> str:
        return f"SculptedProcess(y={self.obs.y}, alpha={self.obs.alpha}, {len(self.bases)} bases)"

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return self.bases[0].device

    def cache_key(self):
        clf_key = (
            self.classifier.cache_key() if hasattr(self.classifier, "cache_key") else parameters_key(self.classifier)
        )
        return (tuple(b.cache_key() for b in self.bases), clf_key)

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
