"""The mixture of GFlowNets as an iterative process, exact without a classifier, and guidable."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from pyro.distributions import Categorical

from pyro_sculpt.gflownets.policy_process import (
    DiscretePolicyProcess,
    gather_rows,
    unique_rows,
)
from pyro_sculpt.processes.categorical import categorical
from pyro_sculpt.processes.deferred import DeferredCategorical
from pyro_sculpt.processes.process import IterativeProcess
from pyro_sculpt.sculpting.gflownet.bases import check_bases, check_classifier_bases
from pyro_sculpt.sculpting.gflownet.classifier import Classifier
from pyro_sculpt.sculpting.gflownet.guided_step import check_common_support, guided_step
from pyro_sculpt.sculpting.guidance import Guidance
from pyro_sculpt.sculpting.observations import Observations, PriorLike


class MixtureProcess(IterativeProcess):
    """The mixture :math:`\\sum_i w_i p_i` of GFlowNets as an iterative process, exact without a classifier.

    Each trajectory carries the posterior :math:`\\rho_i \\propto w_i \\prod_t P_{i,F}(a_t \\mid s_t)` of "which base
    generated this prefix" and steps with :math:`\\sum_i \\rho_i P_{i,F}(a \\mid s)`: this is exactly the process that
    picks a base at random and runs it, written one action at a time. The state is ``(s, log_rho)``. Under the
    guidance handler (:class:`~pyro_sculpt.sculpting.SculptGuidanceMessenger`) its steps become the guided policy
    while ``log_rho`` keeps tracking the exact prefix posterior (used by the SMC correction).

    The weights may be tensors (e.g. a ``simplex``-constrained :func:`pyro.param`): the exact
    :meth:`terminal_log_prob` (the log-probability of :func:`~pyro_sculpt.sculpting.mixture` on an enumerable space)
    and the step sites of :func:`pyro_sculpt.run` are differentiable in them; sampling draws detached values. Under
    guidance the guided policy treats them as constants (see :class:`~pyro_sculpt.sculpting.gflownet.SculptedProcess`).

    :param bases: the base models.
    :param weights: mixture weights (default uniform): numbers or tensors, each finite and > 0.

    Example::

        mix = ps.sculpting.MixtureProcess([p1, p2], weights=(0.7, 0.3))
        x = ps.ProcessDistribution(mix).sample((1000,))  # same as ps.mixture(p1, p2, weights=(0.7, 0.3))
    """

    #: a mixture of bases (read by :func:`~pyro_sculpt.sculpting.sculpted_guide`)
    is_mixture = True

    def __init__(self, bases: Sequence[DiscretePolicyProcess], weights: Optional[PriorLike] = None):
        self.env = check_bases(bases)
        self.bases = list(bases)
        self.base_processes = self.bases
        self.obs = Observations.build((None,), len(self.bases), weights)
        self.weights = self.obs.weights
        self.max_steps = self.env.max_steps
        self.backward_policy = self.bases[0].backward_policy

    def __repr__(self) -> str:
        return f"MixtureProcess({len(self.bases)} bases, weights={self.obs.weight_values})"

    @property
    def device(self) -> torch.device:
        return self.bases[0].device

    def init(self):
        log_w = self.weights.to(device=self.device, dtype=torch.get_default_dtype()).log()
        return (self.env.initial_state(self.device), log_w)

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
        if not log_rho.requires_grad:  # computed on first use: under guidance the handler replaces it unused
            batch = torch.broadcast_shapes(s.shape[:-1], log_rho.shape[:-1])
            return DeferredCategorical(batch, self.env.n_actions, lambda: self._mixture_logits(s, log_rho))
        lp = self.base_log_probs(s)
        post = torch.log_softmax(log_rho, -1).unsqueeze(-1)
        # differentiable in the weights (under pyro_sculpt.run): keep the logsumexp of invalid actions, -inf under
        # every base, out of the graph, where its gradient would be NaN
        valid = (lp > float("-inf")).any(-2)
        logits = torch.logsumexp(post + torch.where(valid.unsqueeze(-2), lp, torch.zeros_like(lp)), -2)
        return categorical(logits.masked_fill(~valid, float("-inf")))

    def _mixture_logits(self, s: torch.Tensor, log_rho: torch.Tensor) -> torch.Tensor:
        post = torch.log_softmax(log_rho, -1).unsqueeze(-1)
        return torch.logsumexp(post + self.base_log_probs(s), -2)

    def transition(self, state, value, t):
        s, log_rho = state
        _, inverse, lp = self.unique_base_log_probs(s)
        if inverse is None:  # one row per state (or the unbatched first state)
            batch = torch.broadcast_shapes(lp.shape[:-2], value.shape)
            idx = value.expand(batch)[..., None, None].expand(batch + (lp.shape[-2], 1))
            taken = lp.expand(batch + lp.shape[-2:]).gather(-1, idx).squeeze(-1)
        else:  # read the taken action's probability from the distinct-state table, without expanding it
            taken = lp[inverse, :, value]  # advanced indices around a slice: shape batch + (m,)
        return self.env.step_batch(s, value), log_rho + taken

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
        """:math:`\\sum_i w_i p_i(x)` over all states (float64), from the bases' exact distributions; differentiable in
        tensor weights."""
        p = torch.stack([b.exact_terminal_distribution() for b in self.bases])  # (m, N)
        return (self.weights.to(device=p.device, dtype=p.dtype).unsqueeze(-1) * p).sum(0)

    def terminal_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        if not self.env.is_enumerable:
            return super().terminal_log_prob(x)
        self.env.validate_states(x, "x")
        return self.exact_terminal_distribution().to(x.device)[self.env.index(x)].log().to(torch.get_default_dtype())

    # ----- guidance (GuidableProcess) -----

    def _check_guidance(self, guidance: Guidance) -> Observations:
        clf = guidance.classifier
        if not isinstance(clf, Classifier):
            raise TypeError(
                f"classifier {type(clf).__name__} guides {getattr(clf, 'guides', 'another family')}, but {self!r} is a "
                "GFlowNet mixture: use an ObservationClassifier or ExactClassifier"
            )
        if guidance.gamma != 1.0:
            raise ValueError(
                f"gamma applies to diffusion mixtures only; GFlowNet guidance is exact, got {guidance.gamma}"
            )
        if not clf.env.same_as(self.env):
            raise ValueError(f"classifier is for env {clf.env.config()}, but the mixture lives on {self.env.config()}")
        obs = Observations.build(guidance.y, len(self.bases), self.weights, guidance.alpha).detach()
        clf.check_observations(obs)
        check_classifier_bases(clf, self.bases)
        check_common_support(self.env, clf, obs, self.device)
        return obs

    def guided_step_dist(self, state, t: int, guidance: Guidance) -> Categorical:
        """The guided policy of docs/math.md §1.1 at the states of ``state`` (one batched classifier call over the
        distinct rows); ``log_rho`` keeps tracking the exact prefix posterior."""
        obs = guidance.cached(self, lambda: self._check_guidance(guidance))
        rows, inverse, base_lp = self.unique_base_log_probs(state[0])  # shared with the step and its transition
        step = guided_step(self.bases, guidance.classifier, obs, rows, base_lp, deduplicate=self.deduplicate)
        return categorical(gather_rows(step.log_probs, inverse))
