"""The exact observation classifier of enumerable environments, by dynamic programming over the bases' policies."""

from __future__ import annotations

from typing import Sequence

import torch

from pyro_sculpt.gflownets import exact
from pyro_sculpt.gflownets.policy_process import DiscretePolicyProcess, is_cacheable
from pyro_sculpt.sculpting.gflownet.bases import base_processes
from pyro_sculpt.sculpting.gflownet.classifier import Classifier, check_bases
from pyro_sculpt.sculpting.observations import Observations, terminal_log_joint


class ExactClassifier(Classifier):
    """:math:`Q(y \\mid s)` of the augmented model computed exactly from the bases' policies.

    With :math:`u_i(s)` the probability that base :math:`i` visits :math:`s` and
    :math:`V_i(s; y_{2:n}) = \\mathbb E_{P_i}[\\prod_{k \\ge 2} \\tilde p(y_k \\mid x) \\mid s]` (both by dynamic
    programming, :mod:`pyro_sculpt.gflownets.exact`),

    .. math::

        Q(y_1 = i, y_{2:n} \\mid s) = \\frac{u_i(s)\\, V_i(s; y_{2:n})}{\\sum_j u_j(s)}, \\qquad
        \\ell_i(x) = \\log p_i(x),

    for a uniform prior of :math:`y_1` (other mixture weights are applied by Bayes' rule, as for a learned
    classifier). Any prior :math:`\\alpha` of :math:`y_{2..n}` is exact. It is the test oracle of the guidance, and a
    practical choice on small spaces. Tables are computed on first use (in float64) and cached while the bases do not
    change (:meth:`~pyro_sculpt.gflownets.DiscretePolicyProcess.cache_key`); answers are in the default dtype.

    :param bases: the base models (processes or their distributions).
    :param num_observations: :math:`n`.

    Example::

        clf = ps.ExactClassifier([p1, p2], num_observations=2)  # no training
        hm = ps.harmonic_mean(p1, p2, clf)
        hm.process.exact_terminal_distribution()
    """

    supports_alpha = True
    defined_by_bases = True

    def __init__(self, bases: Sequence[DiscretePolicyProcess], num_observations: int = 2):
        env = check_bases(bases)
        if not env.is_enumerable:
            raise ValueError(f"ExactClassifier needs an enumerable environment, got {env!r}")
        super().__init__(env, len(bases), num_observations)
        self.bases = base_processes(bases)
        self._cache: dict = {}

    def _key(self):
        return tuple(b.cache_key() for b in self.bases)

    def _tables(self, alpha):
        key = self._key()
        if not is_cacheable(key) or self._cache.get("key") != key:
            self._cache = {"key": key}  # a base that cannot tell when it changes (key None) is never cached
        if alpha in self._cache:
            return self._cache[alpha]
        env, m, n = self.env, self.num_models, self.num_observations
        device = self.bases[0].device
        logs = [b.log_prob_table() for b in self.bases]
        flows = torch.stack([exact.state_flows(env, t) for t in logs])  # (m, N)
        p_term = torch.stack([exact.terminal_distribution(env, t) for t in logs])  # (m, N)
        term_logits = p_term.clamp(min=1e-300).log().T  # (N, m)
        obs = Observations.build((None,) * n, m, alpha=alpha)
        log_priors = obs.log_priors(device, torch.float64)
        if n > 1:
            # g(x; y_2..y_n) = prod_k p(y_k | x), flattened over the m**(n-1) combinations
            g = terminal_log_joint(term_logits, log_priors[1:]).exp().reshape(len(term_logits), -1)
            v = torch.stack([exact.backward_values(env, t, g) for t in logs])  # (m, N, m**(n-1))
        else:
            v = torch.ones(m, flows.shape[1], 1, dtype=torch.float64, device=device)
        total = flows.sum(0).unsqueeze(-1)  # zero at states no base visits: their joint is zero, not 0 / 0
        joint = torch.where(total > 0, flows.unsqueeze(-1) * v / total.clamp(min=1e-300), 0.0)  # (m, N, m**(n-1))
        nt = joint.permute(1, 0, 2).reshape((-1,) + (m,) * n).clamp(min=1e-300).log()
        tables = (term_logits, nt)
        if is_cacheable(key):
            self._cache[alpha] = tables
        return tables

    def raw(self, states, terminal, obs):
        term, nt = self._tables(obs.alpha_value if self.num_observations > 1 else None)
        idx = self.env.index(states)
        # computed in float64 (the precision of the oracle), returned in the default dtype like any classifier's
        dtype = torch.get_default_dtype()
        return term[idx].to(dtype), nt[idx].to(dtype)

    def cache_key(self):
        return self._key()
