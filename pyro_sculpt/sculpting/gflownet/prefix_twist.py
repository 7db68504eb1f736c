"""Classifier-free SMC for sculpted GFlowNets: the prefix-posterior twist (docs/math.md §1.4, §1.5).

With bases that share their backward policy, the posterior of "which base generated this prefix" is exact and free:
each particle carries :math:`\\rho_i(s) \\propto w_i \\prod_t P_{i,F}(a_t \\mid s_t)`, and :math:`\\rho_i(s) = Q(y_1 = i
\\mid s)`. The twist :math:`\\psi(s) = \\prod_{k \\text{ observed}} \\rho^{(k)}_{y_k}(s)` (each observation with its own
prior :math:`\\pi_k`) replaces the classifier in the guided step,

.. math::

    \\log M(a \\mid s) = \\log \\sum_i \\rho_i(s) P_{i,F}(a \\mid s) + \\log \\psi(s_a) - \\log \\psi(s) - \\log Z(s),

and the incremental log-weight is :math:`\\log Z(s)`. At the stop :math:`\\psi(x)` is the exact posterior of the
observations given the whole trajectory, so the weighted particles target the exact composition of the bases; the
twist is an approximation in between (:math:`Q(y_1, y_2 \\mid s) \\ne \\rho(y_1) \\rho(y_2)`), which only lowers the
effective sample size. No classifier is called: every step evaluates the bases' policies once per distinct state.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from pyro_sculpt.gflownets.policy_process import gather_rows, unique_rows
from pyro_sculpt.infer.twist import Twist
from pyro_sculpt.sculpting.gflownet.bases import base_processes
from pyro_sculpt.sculpting.observations import Observations, terminal_log_joint


class PrefixPosteriorTwist(Twist):
    """SMC particles of a sculpted GFlowNet without a classifier: the prefix posterior as twist.

    :param bases: the base GFlowNets (or their distributions), sharing one environment and backward policy.
    :param y: observed base indices (0-based), ``None`` for unobserved.
    :param alpha: prior :math:`(\\alpha, 1-\\alpha)` of :math:`y_{2..n}` (two bases).
    :param weights: mixture weights (default uniform).

    Example::

        res = ps.infer.smc(PrefixPosteriorTwist([p1, p2], y=(0, 1)), 100_000)   # the harmonic mean, no classifier
        p_hat = res.distribution(env)
    """

    def __init__(
        self,
        bases: Sequence[Any],
        y: Sequence[Optional[int]],
        alpha: Optional[float] = None,
        weights: Optional[Sequence[float]] = None,
    ):
        self.bases = base_processes(bases)
        self.env = self.bases[0].env
        self.obs = Observations.build(y, len(self.bases), weights, alpha).detach()
        self.max_steps = self.env.max_steps
        self.device = self.bases[0].device

    def _log_psi(self, log_lik: torch.Tensor) -> torch.Tensor:
        """:math:`\\log \\psi` from each base's log-likelihood of the prefix, ``(..., m)`` -> ``(...)``."""
        log_priors = self.obs.log_priors(log_lik.device, log_lik.dtype)
        return self.obs.select(terminal_log_joint(log_lik, log_priors))

    def init(self, num_particles: int):
        env = self.env
        m = len(self.bases)
        return {
            "s": env.initial_state(self.device).expand(num_particles, env.state_dim).clone(),
            "log_lik": torch.zeros(num_particles, m, device=self.device),  # log P_i(prefix)
            "done": torch.zeros(num_particles, dtype=torch.bool, device=self.device),
        }

    def step(self, particles, t: int):
        env = self.env
        s, log_lik, done = particles["s"], particles["log_lik"], particles["done"]
        rows, inverse = unique_rows(env, s)
        lp = gather_rows(torch.stack([b.action_log_probs(rows) for b in self.bases], -2), inverse)  # (N, m, A)
        lp = lp.to(log_lik.dtype)
        valid = (lp > float("-inf")).any(-2)  # (N, A)
        lp0 = torch.where(valid.unsqueeze(-2), lp, torch.zeros_like(lp))  # invalid actions: kept out of the NaNs
        log_w = self.obs.log_priors(s.device, log_lik.dtype)[0]
        post = torch.log_softmax(log_lik + log_w, -1)  # rho(s)
        mix = torch.logsumexp(post.unsqueeze(-1) + lp0, -2)  # (N, A)
        child = (log_lik.unsqueeze(-1) + lp0).transpose(-1, -2)  # (N, A, m): the likelihoods after each action
        logits = mix + self._log_psi(child) - self._log_psi(log_lik).unsqueeze(-1)
        logits = logits.masked_fill(~valid, float("-inf"))
        log_z = torch.logsumexp(logits, -1)
        a = torch.distributions.Categorical(logits=logits).sample()
        a = torch.where(done, torch.full_like(a, env.stop_action), a)
        taken = lp0.gather(-1, a[:, None, None].expand(-1, lp0.shape[-2], 1)).squeeze(-1)  # (N, m)
        inc = torch.where(done, torch.zeros_like(log_z), log_z)
        log_lik = torch.where(done.unsqueeze(-1), log_lik, log_lik + taken)
        s = torch.where(done.unsqueeze(-1), s, env.step(s, a))
        done = done | (a == env.stop_action)
        return {"s": s, "log_lik": log_lik, "done": done}, inc, done

    def terminal(self, particles) -> torch.Tensor:
        return particles["s"]
