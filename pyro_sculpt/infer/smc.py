"""Correcting an imperfect classifier: importance weights and twisted SMC over guided GFlowNet particles.

Beyond the paper. The target is the sculpted trajectory measure
:math:`\\gamma(\\tau) = \\big(\\sum_i w_i P_i(\\tau)\\big)\\, Q(y \\mid x)`, whose terminal marginal is
:math:`\\tilde p(x \\mid y)` for the terminal classifier :math:`Q(y \\mid x)`. The guided policy :math:`q` is the
proposal and the non-terminal classifier :math:`Q(y \\mid s)` the twist, so step :math:`t` has the incremental weight

.. math::

    \\omega_t = \\frac{\\sum_i \\rho_i(\\tau_{<t}) P_i(a_t \\mid s_t)\\; Q(y \\mid s_{t+1})}
                    {Q(y \\mid s_t)\\; q(a_t \\mid s_t)},

with :math:`\\rho(\\tau_{<t})` the exact posterior of "which base generated the prefix" (carried per particle). When
the classifier's :math:`Q(y_1 \\mid s)` equals that posterior, :math:`\\omega_t` is the normaliser of the tilted step
divided by :math:`Q(y \\mid s_t)`; with an exact classifier every weight is 1. Particles are resampled
(systematically) when the effective sample size drops below a threshold. Pareto :math:`\\hat k` of the final weights
comes from ArviZ's PSIS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from pyro_sculpt.sculpting.observations import terminal_log_joint
from pyro_sculpt.sculpting.processes import SculptedProcess
from pyro_sculpt.utils import check_positive_int, progress, set_seed


@dataclass
class SMCResult:
    """Particles and diagnostics of :func:`twisted_smc`.

    :ivar x: ``(N, state_dim)`` terminal states.
    :ivar log_weights: ``(N,)`` final log-weights (normalised to log-sum-exp 0).
    :ivar ess_history: effective sample size before each step's resampling decision.
    :ivar num_resamples: how many times the particles were resampled.
    :ivar log_evidence: estimate of :math:`\\log \\mathbb E_q[\\gamma/q]` (up to the constant :math:`Q(y \\mid s_0)`).
    :ivar pareto_k: Pareto :math:`\\hat k` of the final weights (reliable below 0.7).
    """

    x: torch.Tensor
    log_weights: torch.Tensor
    ess_history: list = field(default_factory=list)
    num_resamples: int = 0
    log_evidence: float = 0.0
    pareto_k: float = float("nan")

    @property
    def ess(self) -> float:
        """Effective sample size of the final weights, :math:`1 / \\sum_j \\bar w_j^2`."""
        return float(torch.exp(-torch.logsumexp(2 * self.log_weights, 0)))

    def distribution(self, env) -> torch.Tensor:
        """Weighted empirical distribution over ``env.all_states()`` (enumerable environments)."""
        w = self.log_weights.exp().double()
        out = torch.zeros(env.num_states, dtype=torch.float64, device=w.device)
        return out.index_add_(0, env.index(self.x), w)


def _systematic(log_w: torch.Tensor) -> torch.Tensor:
    n = log_w.shape[0]
    cdf = torch.cumsum(torch.softmax(log_w.double(), 0), 0)
    u = (torch.rand((), device=log_w.device, dtype=torch.float64) + torch.arange(n, device=log_w.device)) / n
    return torch.searchsorted(cdf, u.clamp(max=cdf[-1].item() - 1e-12)).clamp(max=n - 1)


def twisted_smc(
    process: SculptedProcess,
    num_particles: int,
    *,
    resample_threshold: Optional[float] = 0.5,
    terminal: str = "trajectory",
    seed: Optional[int] = None,
    progress_bar: bool = False,
) -> SMCResult:
    """Run guided particles with importance weights and, optionally, resampling.

    :param process: the sculpted GFlowNet (its guided policy is the proposal, its classifier the twist).
    :param num_particles: number of particles.
    :param resample_threshold: resample when the ESS falls below this fraction of the particles; ``None`` for plain
        sequential importance sampling.
    :param terminal: which :math:`Q(y \\mid x)` the target uses at the stop. ``"classifier"``: the classifier's
        terminal head, so the target is :math:`\\sum_i w_i P_i(\\tau)\\, Q(y \\mid x)` and the terminal head's own
        error stays. ``"trajectory"``: the posterior of each base from the whole trajectory's likelihood,
        :math:`\\tilde p(y_k = i \\mid \\tau) \\propto \\pi_{k,i} P_i(\\tau)`, which equals
        :math:`\\pi_{k,i} p_i(x) / \\sum_j \\pi_{k,j} p_j(x)` when the bases share their backward policy exactly
        (:math:`P_i(\\tau) = p_i(x) P_B(\\tau \\mid x)`): the classifier then only steers the proposal, and the
        weighted particles target the exact composition of the bases. This is the default.
    :param seed: seed of the global generators.
    :param progress_bar: show a progress bar over steps.

    Example::

        hm = ps.harmonic_mean(p1, p2, clf)
        res = twisted_smc(hm.process, 100_000)
        p_hat = res.distribution(env)
    """
    if not isinstance(process, SculptedProcess):
        raise TypeError(f"process must be a SculptedProcess, got {type(process).__name__}")
    n = check_positive_int("num_particles", num_particles)
    if terminal not in ("classifier", "trajectory"):
        raise ValueError(f"terminal must be 'classifier' or 'trajectory', got {terminal!r}")
    if resample_threshold is not None and not 0.0 < resample_threshold <= 1.0:
        raise ValueError(f"resample_threshold must lie in (0, 1] or be None, got {resample_threshold!r}")
    set_seed(seed)
    env, device = process.env, process.device
    stop = env.stop_action
    s = env.initial_state(device).expand(n, env.state_dim).clone()
    log_w0 = torch.tensor(process.obs.weights, device=device).log()
    log_rho = log_w0.expand(n, -1).clone()  # log w_i + log P_i(prefix): the prefix posterior, unnormalised
    log_priors = process.obs.log_priors(device, log_w0.dtype)
    log_w = torch.zeros(n, device=device, dtype=torch.float64)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    ess_history, resamples, log_evidence = [], 0, 0.0
    with torch.no_grad():
        for _ in progress(range(env.max_steps), enabled=progress_bar, total=env.max_steps, desc="twisted SMC"):
            g = process.guided(s)
            a = torch.distributions.Categorical(logits=g.log_probs).sample()
            a = torch.where(done, torch.full_like(a, stop), a)
            idx = a.unsqueeze(-1)
            base_taken = g.base_log_probs.gather(-1, idx.unsqueeze(-2).expand(g.base_log_probs.shape[:-1] + (1,)))
            base_taken = base_taken.squeeze(-1)  # (N, m)
            log_mix = torch.logsumexp(torch.log_softmax(log_rho, -1) + base_taken, -1)
            log_q_next = g.log_q_y.gather(-1, idx).squeeze(-1)
            if terminal == "trajectory":  # at the stop, Q(y | x) from the trajectory's likelihood under each base
                traj = process.obs.select(terminal_log_joint((log_rho + base_taken) - log_w0, log_priors))
                log_q_next = torch.where(a == stop, traj.to(log_q_next.dtype), log_q_next)
            inc = log_mix + log_q_next - g.log_q_y_current - g.log_probs.gather(-1, idx).squeeze(-1)
            log_w = log_w + torch.where(done, torch.zeros_like(inc), inc).double()
            log_rho = torch.where(done.unsqueeze(-1), log_rho, log_rho + base_taken)
            s = torch.where(done.unsqueeze(-1), s, env.step(s, a))
            done = done | (a == stop)
            ess = float(torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)))
            ess_history.append(ess)
            last = bool(done.all())
            if resample_threshold is not None and ess < resample_threshold * n and not last:
                norm = torch.logsumexp(log_w, 0)
                log_evidence += float(norm) - torch.log(torch.tensor(float(n))).item()
                pick = _systematic(log_w)
                s, log_rho, done = s[pick], log_rho[pick], done[pick]
                log_w = torch.zeros_like(log_w)
                resamples += 1
            if last:
                break
    norm = torch.logsumexp(log_w, 0)
    log_evidence += float(norm) - torch.log(torch.tensor(float(n))).item()
    log_w = log_w - norm
    return SMCResult(s, log_w, ess_history, resamples, log_evidence, pareto_k(log_w))


def pareto_k(log_weights: torch.Tensor) -> float:
    """Pareto :math:`\\hat k` of importance log-weights, by ArviZ's PSIS (nan if too few distinct weights)."""
    import arviz as az
    import numpy as np

    lw = log_weights.detach().double().cpu().numpy()
    if np.ptp(lw) == 0:
        return float("-inf")  # all weights equal: no tail at all
    with np.errstate(all="ignore"):
        _, k = az.psislw(lw.copy())
    return float(k)
