"""The classifier twist of a sculpted GFlowNet for SMC (docs/math.md §1.5).

The target is the sculpted trajectory measure :math:`\\gamma(\\tau) = \\big(\\sum_i w_i P_i(\\tau)\\big) Q(y \\mid x)`,
whose terminal marginal is :math:`\\tilde p(x \\mid y)`. The guided policy :math:`q` is the proposal and the
non-terminal classifier :math:`Q(y \\mid s)` the twist, so step :math:`t` has the incremental weight

.. math::

    \\omega_t = \\frac{\\sum_i \\rho_i(\\tau_{<t}) P_i(a_t \\mid s_t)\\; Q(y \\mid s_{t+1})}
                    {Q(y \\mid s_t)\\; q(a_t \\mid s_t)},

with :math:`\\rho(\\tau_{<t})` the exact posterior of "which base generated the prefix", carried per particle, and
:math:`Q(y \\mid s_0)` left out of the first step's denominator, so that the weights' mean (SMC's ``log_evidence``)
estimates the normaliser :math:`\\tilde p(y) = \\sum_x \\big(\\sum_i w_i p_i(x)\\big) Q(y \\mid x)` (a constant factor:
resampling and the normalised weights do not see it). With an exact classifier every weight is :math:`\\tilde p(y)`.
"""

from __future__ import annotations

import torch

from pyro_sculpt.infer.twist import Twist
from pyro_sculpt.processes.categorical import categorical
from pyro_sculpt.sculpting.observations import terminal_log_joint

TERMINALS = ("trajectory", "classifier")


class ClassifierTwist(Twist):
    """SMC particles of a :class:`~pyro_sculpt.sculpting.gflownet.SculptedProcess`: guided proposal, classifier twist.

    :param process: the sculpted GFlowNet.
    :param terminal: which :math:`Q(y \\mid x)` the target uses at the stop. ``"classifier"``: the classifier's
        terminal head (its error stays in the target). ``"trajectory"`` (default): each base's posterior from the
        whole trajectory's likelihood, :math:`\\tilde p(y_k = i \\mid \\tau) \\propto \\pi_{k,i} P_i(\\tau)`, which
        equals
        :math:`\\pi_{k,i} p_i(x) / \\sum_j \\pi_{k,j} p_j(x)` when the bases share their backward policy exactly
        (:math:`P_i(\\tau) = p_i(x) P_B(\\tau \\mid x)`): the classifier then only steers the proposal, and the
        weighted particles target the exact composition of the bases.
    """

    def __init__(self, process, terminal: str = "trajectory"):
        if terminal not in TERMINALS:
            raise ValueError(f"terminal must be 'classifier' or 'trajectory', got {terminal!r}")
        self.process = process
        self.terminal_kind = terminal
        self.max_steps = process.env.max_steps

    def init(self, num_particles: int):
        env, device = self.process.env, self.process.device
        self.process.check_support()  # impossible observations raise here, not as NaN weights
        log_w0 = self.process.obs.weights.detach().to(device=device, dtype=torch.get_default_dtype()).log()
        return {
            "s": env.initial_state(device).expand(num_particles, env.state_dim).clone(),
            "log_rho": log_w0.expand(num_particles, -1).clone(),  # log w_i + log P_i(prefix), unnormalised
            "done": torch.zeros(num_particles, dtype=torch.bool, device=device),
        }

    def step(self, particles, t: int):
        proc = self.process
        env, obs = proc.env, proc.obs
        s, log_rho, done = particles["s"], particles["log_rho"], particles["done"]
        stop = env.stop_action
        g = proc.guided(s)
        a = categorical(g.log_probs).sample()  # by inverse CDF over thousands of actions (molecules)
        a = torch.where(done, torch.full_like(a, stop), a)
        idx = a.unsqueeze(-1)
        base_lp = g.base_log_probs
        base_taken = base_lp.gather(-1, idx.unsqueeze(-2).expand(base_lp.shape[:-1] + (1,))).squeeze(-1)  # (N, m)
        log_mix = torch.logsumexp(torch.log_softmax(log_rho, -1) + base_taken, -1)
        log_q_next = g.log_q_y.gather(-1, idx).squeeze(-1)
        if self.terminal_kind == "trajectory":  # at the stop, Q(y | x) from the trajectory's likelihood under each base
            log_w0 = obs.weights.detach().to(device=s.device, dtype=log_rho.dtype).log()
            log_priors = obs.log_priors(s.device, log_rho.dtype)
            traj = obs.select(terminal_log_joint((log_rho + base_taken) - log_w0, log_priors))
            log_q_next = torch.where(a == stop, traj.to(log_q_next.dtype), log_q_next)
        inc = log_mix + log_q_next - g.log_probs.gather(-1, idx).squeeze(-1)
        if t > 0:  # the twists telescope to Q(y | x) / Q(y | s_0): keeping Q(y | s_0) makes the weights' mean p~(y)
            inc = inc - g.log_q_y_current
        inc = torch.where(done, torch.zeros_like(inc), inc)
        log_rho = torch.where(done.unsqueeze(-1), log_rho, log_rho + base_taken)
        s = torch.where(done.unsqueeze(-1), s, env.step(s, a))
        done = done | (a == stop)
        return {"s": s, "log_rho": log_rho, "done": done}, inc, done

    def terminal(self, particles) -> torch.Tensor:
        return particles["s"]
