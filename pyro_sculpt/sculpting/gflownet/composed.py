"""Classifier-free compositions of GFlowNets: a policy that follows an operator on the prefix likelihoods, and the
SMC twist that corrects it to the exact composition (docs/math.md §1.4, §1.5).

With bases that share the backward policy :math:`P_B`, every particle carries the log-likelihood of its prefix under
each base, :math:`\\ell_i(s) = \\log \\prod_t P_{i,F}(a_t \\mid s_t)`, and the log backward probability of the prefix,
:math:`b(s) = \\log \\prod_t P_B(s_t \\mid s_{t+1})`. A composition :math:`\\propto \\exp \\Phi(\\log p_1(x), \\dots)`
(:mod:`pyro_sculpt.sculpting.log_operators`) of the terminal distributions is the terminal marginal of the trajectory
measure :math:`\\gamma(\\tau) = \\exp\\{\\Phi(\\ell(\\tau) - b(\\tau)) + b(\\tau)\\}`, since
:math:`\\ell_i(\\tau) - b(\\tau) = \\log p_i(x)` for every trajectory of a base with that backward policy. The process
steps with the twisted policy

.. math::

    M(a \\mid s) \\propto \\exp\\{\\Psi(s_a) - \\Psi(s)\\}, \\qquad
    \\Psi(s) = \\Phi_t(\\ell(s) - b(s)) + b(s), \\qquad \\Psi(\\tau) = \\Phi(\\ell(\\tau) - b(\\tau)) + b(\\tau)
    \\text{ at the stop},

and SMC gives each step the incremental log-weight :math:`\\log \\sum_a \\exp\\{\\Psi(s_a) - \\Psi(s)\\}`. For the
sculpting operator :math:`\\Psi` is the product of the prefix posteriors :math:`\\rho_{y_k}(s)` of §1.4 (the
"routing by reaching" rule of Yoon et al. 2026 for the harmonic mean); for a product of bases it is the product of
their prefix likelihoods divided by :math:`P_B^{m-1}` (LLaMPPL-style product-of-experts SMC). No classifier is called:
each step evaluates every base's policy once per distinct state.

The intermediate operator :math:`\\Phi_t` is :math:`\\Phi` itself (``"plain"``) or, for the sculpting operator, a
variant that approximates :math:`Q(y \\mid s) = \\mathbb E[\\prod_k \\rho_{y_k}(x) \\mid s]` better when an observation
repeats (docs/math.md §1.5): ``"distinct"`` counts a repeated observation once until the stop, ``"ramp"`` raises its
exponent with the step from one to its count.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
from pyro.distributions import Categorical

from pyro_sculpt.gflownets.policy_process import gather_rows, unique_rows
from pyro_sculpt.infer.smc import smc
from pyro_sculpt.infer.twist import Twist
from pyro_sculpt.mcmc.independence import IndependenceMH, IndependenceRejuvenation
from pyro_sculpt.processes.categorical import categorical
from pyro_sculpt.processes.distribution import ProcessDistribution
from pyro_sculpt.processes.process import IterativeProcess
from pyro_sculpt.sculpting.gflownet.bases import base_processes
from pyro_sculpt.sculpting.log_operators import Base, Composition, LogOperator, Product, Sculpt

INTERMEDIATES = ("plain", "distinct", "ramp")


class ComposedProcess(IterativeProcess):
    """A classifier-free composition of GFlowNets: the twisted policy of the module docstring.

    Sampled on its own it is the classifier-free guided policy, an approximation of the composition (exact for the
    mixture); :func:`pyro_sculpt.infer.smc` weights and resamples its particles to the exact composition of the bases
    (:meth:`twist`). Build it with the operators: ``ps.harmonic_mean(p1, p2)``, ``ps.sculpt([p1, p2, p3],
    y=(0, 1, 2))``, ``ps.product(p1, p2)``, ``ps.negation(p1, p2, a)``, ``ps.sculpting.compose(bases, operator)``.

    The state is ``(s, log_lik, log_pb)``: the environment state, every base's prefix log-likelihood ``(m,)`` and
    the prefix's log backward probability (float64).

    :param bases: the leaf GFlowNets, sharing one environment and backward policy.
    :param operator: :math:`\\Phi` on their log-densities.
    :param intermediate: ``"plain"``, ``"distinct"`` or ``"ramp"`` (the last two for a sculpting operator).
    """

    state_event_dims = (1, 1, 0)

    def __init__(self, bases: Sequence[Any], operator: LogOperator, intermediate: str = "plain"):
        self.bases = base_processes(bases, single=True)  # one leaf: a composition of one model with itself
        self.env = self.bases[0].env
        if not isinstance(operator, LogOperator):
            raise TypeError(f"operator must be a LogOperator, got {type(operator).__name__}")
        if operator.num_bases != len(self.bases):
            raise ValueError(f"operator reads {operator.num_bases} bases, but {len(self.bases)} bases were given")
        degree = operator.degree
        if not degree > 0:
            raise ValueError(
                f"operator {operator!r} has degree {degree} <= 0: exp(Phi) of the bases cannot be normalised "
                "(e.g. a negation q1 (q1/q2)^a needs (1 + a) deg q1 > a deg q2)"
            )
        if intermediate not in INTERMEDIATES:
            raise ValueError(f"intermediate must be one of {INTERMEDIATES}, got {intermediate!r}")
        if intermediate != "plain" and not isinstance(operator, Sculpt):
            raise ValueError(f"intermediate={intermediate!r} applies to a sculpting operator, got {operator!r}")
        self.operator = operator
        self.intermediate = intermediate
        self.composition = Composition(tuple(self.bases), operator)
        self.max_steps = self.env.max_steps
        self.backward_policy = self.bases[0].backward_policy
        # Phi(l - b) + b = Phi(l) for an operator of degree one: the backward probabilities cancel
        self.uses_backward = abs(degree - 1.0) > 1e-9
        self.can_nan = _any_can_nan(operator)
        if intermediate != "plain":
            self._scales = _observation_scales(operator, intermediate)

    def __repr__(self) -> str:
        return f"ComposedProcess({self.operator!r}, {len(self.bases)} bases, intermediate={self.intermediate!r})"

    @property
    def device(self) -> torch.device:
        return self.bases[0].device

    def with_intermediate(self, intermediate: str) -> "ComposedProcess":
        """The same composition with another intermediate operator."""
        return ComposedProcess(self.bases, self.operator, intermediate)

    # ----- the twisted policy -----

    def _phi_t(self, log_q: torch.Tensor, t: int) -> torch.Tensor:
        if self.intermediate == "plain":
            return self.operator(log_q)
        log_mix, terms = self.operator.log_terms_per_observation(log_q)
        first, extra = self._scales  # per observed observation
        frac = 1.0 if self.intermediate == "distinct" else min(1.0, t / max(1, self.max_steps // 2))
        scale = first + (extra * frac if self.intermediate == "ramp" else 0.0)
        return log_mix + (terms * scale.to(terms)).sum(-1)

    def _psi(self, log_lik: torch.Tensor, log_pb: torch.Tensor, t: int, final: bool) -> torch.Tensor:
        arg = log_lik - log_pb.unsqueeze(-1) if self.uses_backward else log_lik
        val = self.operator(arg) if final else self._phi_t(arg, t)
        # NaN only from inf - inf (the policies were checked): a base that rules out a state that the operator
        # divides by where another also rules it out; the composition is zero there
        if self.can_nan:
            val = torch.nan_to_num(val, nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))
        return val + log_pb if self.uses_backward else val

    def proposal(self, state, t: int) -> tuple[torch.Tensor, ...]:
        """``(logits, base_log_probs, child_log_pb, log_z)`` of the twisted policy at ``state``: the unnormalised
        ``(..., A)`` log-probabilities :math:`\\Psi(s_a) - \\Psi(s)` (``-inf`` for invalid actions; their
        log-sum-exp is the SMC increment), every base's policy ``(..., A, m)`` and the children's log backward
        probability ``(..., A)``, and the log-normaliser of the logits ``(...)``."""
        memo = self.__dict__.get("_memo")
        if memo is not None and memo[0] == t and all(a is b for a, b in zip(memo[1], state)):
            return memo[2]  # the step's distribution and its transition share one evaluation
        out = self._proposal(state, t)
        self.__dict__["_memo"] = (t, tuple(state), out)
        return out

    def _proposal(self, state, t: int) -> tuple[torch.Tensor, ...]:
        s, log_lik, log_pb = state
        env = self.env
        batch = s.shape[:-1]
        rows, inverse = unique_rows(env, s.reshape(-1, s.shape[-1]))
        # (rows, A, m): each action's log-probability under every base, contiguous in the bases
        lp = gather_rows(torch.stack([b.action_log_probs(rows) for b in self.bases], -1), inverse)
        if bool(torch.isnan(lp).any()):
            raise FloatingPointError(f"a base policy returned NaN log-probabilities at step {t}")
        lp = lp.reshape(batch + lp.shape[-2:])
        valid = (lp > float("-inf")).any(-1)
        lp0 = lp.masked_fill(~valid.unsqueeze(-1), 0.0)  # invalid actions: kept out of the NaNs
        # Psi(s_a) - Psi(s) only needs the prefix quantities relative to the particle's own: Phi(l + c) = Phi(l) + d c
        # and b enters as Phi(l - b) + b, so centring l on its maximum and b on the current b leaves the logits
        # exact and lets single precision carry them (the accumulated l and b stay in float64)
        centre = log_lik.amax(-1, keepdim=True)
        rel = (log_lik - torch.where(torch.isfinite(centre), centre, torch.zeros_like(centre))).to(lp.dtype)
        rel = rel.expand(batch + rel.shape[-1:])
        child = rel.unsqueeze(-2) + lp0  # (..., A, m)
        stop = env.stop_action
        if self.uses_backward:
            # the valid children of each distinct state only (sparse: a molecule has thousands of actions, tens valid)
            parent, action, child_lpb = env.children_log_backward(rows)
            table = torch.zeros((rows.shape[0], env.n_actions), dtype=lp.dtype, device=s.device)
            table[parent, action] = child_lpb.to(lp.dtype)
            lpb = gather_rows(table, inverse).reshape(batch + (env.n_actions,)).masked_fill(~valid, 0.0)
            lpb[..., stop] = 0.0
        else:
            lpb = torch.zeros(batch + (env.n_actions,), dtype=lp.dtype, device=s.device)
        values = self._psi(child, lpb, t + 1, final=False)
        if self.intermediate != "plain":  # the stop reaches the exact target
            values[..., stop] = self._psi(child[..., stop, :], lpb[..., stop], t + 1, final=True)
        current = self._psi(rel, torch.zeros(batch, dtype=lp.dtype, device=s.device), t, final=False)
        logits = (values - current.unsqueeze(-1)).masked_fill(~valid, float("-inf"))
        # a prefix the composition already gives probability zero (a particle past a dead end): no -inf - -inf NaNs
        logits = logits.masked_fill((current == float("-inf")).unsqueeze(-1), float("-inf"))
        log_z = torch.logsumexp(logits, -1)  # NaN or +inf when any valid action's logit is
        if not bool((log_z < float("inf")).all()):
            raise ValueError(
                f"the composition {self.operator!r} is not normalisable: a base gives probability zero to an action "
                "that another allows where the operator divides by it (e.g. the second base of a negation q1 (q1/q2)^a "
                "must cover the support of the first)"
            )
        dead = log_z == float("-inf")  # every valid action leads where the composition has probability zero
        if bool(dead.any()):
            if t == 0:
                raise ValueError(
                    f"the composition {self.operator!r} has probability zero everywhere: its bases share no support "
                    "where the operator needs it (e.g. a harmonic mean or product of bases with disjoint supports)"
                )
            # a dead end of the proposal (its particles get weight zero in SMC): follow the bases' mixture from it
            logits = torch.where(dead.unsqueeze(-1), torch.logsumexp(lp, -1), logits)
        return logits, lp0, lpb, log_z

    # ----- IterativeProcess -----

    def init(self):
        m = len(self.bases)
        return (
            self.env.initial_state(self.device),
            torch.zeros(m, dtype=torch.float64, device=self.device),
            torch.zeros((), dtype=torch.float64, device=self.device),
        )

    def step_dist(self, state, t: int) -> Categorical:
        logits = self.proposal(state, t)[0]
        return categorical(logits.to(torch.get_default_dtype()))

    def transition(self, state, value, t: int):
        s, log_lik, log_pb = state
        _, lp0, lpb, _ = self.proposal(state, t)
        batch = torch.broadcast_shapes(lp0.shape[:-2], value.shape)  # the first state may be unbatched
        a = value.expand(batch)
        lp0, lpb = lp0.expand(batch + lp0.shape[-2:]), lpb.expand(batch + lpb.shape[-1:])
        taken = lp0.gather(-2, a[..., None, None].expand(batch + (1, lp0.shape[-1]))).squeeze(-2)
        step_pb = lpb.gather(-1, a.unsqueeze(-1)).squeeze(-1)
        return self.env.step_batch(s, value), log_lik + taken.to(log_lik.dtype), log_pb + step_pb.to(log_pb.dtype)

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

    def terminal_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(
            f"{self!r} has no exact log_prob: its policy depends on each particle's path. Run ps.infer.smc on it for "
            "the exact composition, or compare exp(Phi) of the bases' exact distributions "
            "(ps.sculpting.gflownet.composed.exact_composition)"
        )

    def twist(
        self, intermediate: str = "auto", pilot_fraction: float = 0.1, moves: Optional[IndependenceRejuvenation] = None
    ) -> Twist:
        """The SMC twist of this composition (:class:`OperatorTwist`); see :func:`pyro_sculpt.infer.smc`.

        :param intermediate: ``"plain"``, ``"distinct"``, ``"ramp"``, or ``"auto"`` (default): for a sculpting
            operator with a repeated observation, short pilot runs of the three (``pilot_fraction`` of the particles
            each, at least 1,000) choose the one whose weights keep the highest effective sample size
            (:class:`AutoIntermediateTwist`); otherwise ``"plain"``.
        :param moves: independence Metropolis-Hastings moves of the final particles
            (:class:`~pyro_sculpt.mcmc.IndependenceRejuvenation`; :class:`OperatorTwist`), or ``None``.
        """
        if intermediate == "auto":
            candidates = self.intermediate_candidates()
            if len(candidates) == 1:
                return OperatorTwist(self.with_intermediate(candidates[0]), moves=moves)
            return AutoIntermediateTwist(self, candidates, pilot_fraction, moves=moves)
        same = intermediate == self.intermediate
        return OperatorTwist(self if same else self.with_intermediate(intermediate), moves=moves)

    def intermediate_candidates(self) -> tuple[str, ...]:
        """The intermediate operators that differ for this composition."""
        if not isinstance(self.operator, Sculpt):
            return ("plain",)
        observed = [v for v in self.operator.obs.y if v is not None]
        return INTERMEDIATES if len(set(observed)) < len(observed) else ("plain",)


def _any_can_nan(op: LogOperator) -> bool:
    return op.can_nan or any(_any_can_nan(c) for c in op.children())


def _observation_scales(operator: Sculpt, intermediate: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per observation: its exponent before the stop (one for the first occurrence of a value, zero for a repeat) and
    the extra exponent that ``"ramp"`` adds (the number of repeats) by the end."""
    y = [v for v in operator.obs.y if v is not None]
    first = torch.zeros(len(y), dtype=torch.float64)
    extra = torch.zeros(len(y), dtype=torch.float64)
    seen: dict = {}
    for k, v in enumerate(y):
        if v in seen:
            extra[seen[v]] += 1.0
        else:
            seen[v] = k
            first[k] = 1.0
    return first, extra


class OperatorTwist(Twist):
    """SMC particles of a :class:`ComposedProcess`: its twisted policy as proposal, incremental log-weight the
    policy's log-normaliser :math:`\\log \\sum_a \\exp\\{\\Psi(s_a) - \\Psi(s)\\}` (the module docstring). The first
    increment includes :math:`\\Psi(s_0)`, so that ``log_evidence`` estimates :math:`\\log \\sum_x \\exp \\Phi(\\log
    p_1(x), \\dots)`.

    With ``moves`` (:class:`~pyro_sculpt.mcmc.IndependenceRejuvenation`), :func:`~pyro_sculpt.infer.smc` resamples
    the particles after the last step and every one makes independence Metropolis-Hastings steps
    (:class:`~pyro_sculpt.mcmc.IndependenceMH`, docs/math.md §3) targeting the exact composition, with the mixture of
    the bases (or one base) as the proposal: the bases' exact terminal log-probabilities (dynamic programming on an
    enumerable environment) give the target and the proposal's density. Where no dynamic programme exists, a
    product's moves propose from one base and weigh by the other bases' probabilities estimated from backward
    trajectories (``IndependenceRejuvenation(proposal=i, num_backward=K)``: pseudo-marginal, still exact; docs/math.md
    §4). A moved particle's prefix quantities become those of its new state, :math:`\\ell_i = \\log p_i(x)` (exact,
    or the estimates) and :math:`b = 0`.

    :param process: the composition.
    :param moves: the final moves, or ``None``.

    Example::

        moves = ps.mcmc.IndependenceRejuvenation(num_steps=20)
        res = ps.infer.smc(ps.product(p1, p2), 100_000, moves=moves)   # equally weighted, moved particles
        pm = ps.mcmc.IndependenceRejuvenation(num_steps=20, proposal=0, num_backward=8)  # no enumeration needed
    """

    def __init__(self, process: ComposedProcess, moves: Optional[IndependenceRejuvenation] = None):
        if not isinstance(process, ComposedProcess):
            raise TypeError(f"process must be a ComposedProcess, got {type(process).__name__}")
        self.process = process
        self.max_steps = process.max_steps
        self.moves = check_moves(process, moves)
        self.rejuvenate_final = moves is not None

    def init(self, num_particles: int):
        if self.moves is not None:
            self.moves.reset()
        proc = self.process
        s0, l0, b0 = proc.init()
        n = num_particles
        return {
            "s": s0.expand(n, s0.shape[-1]).clone(),
            "log_lik": l0.expand(n, l0.shape[-1]).clone(),
            "log_pb": b0.expand(n).clone(),
            "done": torch.zeros(n, dtype=torch.bool, device=s0.device),
        }

    def step(self, particles, t: int):
        proc, env = self.process, self.process.env
        s, log_lik, log_pb, done = particles["s"], particles["log_lik"], particles["log_pb"], particles["done"]
        logits, lp0, lpb, log_z = proc.proposal((s, log_lik, log_pb), t)
        log_z = log_z.to(torch.float64)
        if t == 0:
            log_z = log_z + proc._psi(log_lik, log_pb, 0, final=False)
        a = categorical(logits).sample()  # by inverse CDF over thousands of actions (molecules)
        a = torch.where(done, torch.full_like(a, env.stop_action), a)
        taken = lp0.gather(-2, a[:, None, None].expand(-1, 1, lp0.shape[-1])).squeeze(-2)
        keep = done.unsqueeze(-1)
        new = {
            "s": torch.where(keep, s, env.step(s, a)),
            "log_lik": torch.where(keep, log_lik, log_lik + taken.to(log_lik.dtype)),
            "log_pb": torch.where(done, log_pb, log_pb + lpb.gather(-1, a.unsqueeze(-1)).squeeze(-1).to(log_pb.dtype)),
            "done": done | (a == env.stop_action),
        }
        return new, torch.where(done, torch.zeros_like(log_z), log_z), new["done"]

    def terminal(self, particles) -> torch.Tensor:
        return particles["s"]

    def rejuvenate(self, particles, t: int):
        """After the last step (every particle done) with ``moves``: independence Metropolis-Hastings moves of every
        particle targeting the exact composition (the class docstring). Otherwise no move."""
        if self.moves is None or not bool(particles["done"].all()):
            return particles
        kernel, log_p = independence_kernel(self.process, self.moves.proposal, self.moves.num_backward)
        x = self.moves.move(particles["s"], kernel).x
        lp = log_p(x)
        out = dict(particles)
        out.update(s=x, log_lik=lp.to(particles["log_lik"]), log_pb=torch.zeros_like(particles["log_pb"]))
        return out


def check_moves(process: ComposedProcess, moves: Optional[IndependenceRejuvenation]):
    """``moves`` checked against the composition: ``None`` or an :class:`IndependenceRejuvenation` whose proposal is
    a base, on an enumerable environment."""
    if moves is None:
        return None
    if not isinstance(moves, IndependenceRejuvenation):
        raise TypeError(
            f"moves must be a pyro_sculpt.mcmc.IndependenceRejuvenation or None for a GFlowNet composition, got "
            f"{type(moves).__name__}"
        )
    if moves.num_backward is None and not process.env.is_enumerable:
        raise ValueError(
            f"moves need the bases' exact terminal log-probabilities: the environment {process.env!r} is not "
            "enumerable (IndependenceRejuvenation(num_backward=K) estimates them from backward trajectories, for a "
            "product of bases)"
        )
    if moves.proposal == "particles":
        raise ValueError(
            "moves: proposal='particles' (a Gaussian kernel density estimate) is for continuous states; a GFlowNet "
            "composition's moves propose from its bases: use proposal='mixture' or a base's index"
        )
    m = len(process.bases)
    if isinstance(moves.proposal, int) and moves.proposal >= m:
        raise ValueError(f"moves.proposal must index one of the {m} bases, got {moves.proposal}")
    if moves.num_backward is not None:
        leaves = product_leaves(process.operator)
        if leaves is None or len(set(leaves)) != len(leaves):
            raise ValueError(
                f"moves: num_backward (pseudo-marginal moves on estimated probabilities) is exact for a product of "
                f"distinct bases only, got the operator {process.operator!r}"
            )
        if not isinstance(moves.proposal, int) or moves.proposal not in leaves:
            raise ValueError(
                f"moves: with num_backward the proposal must be one of the product's bases {sorted(leaves)} (its "
                f"weight, the other bases' probabilities, is then a product of unbiased estimates), got "
                f"{moves.proposal!r}"
            )
    return moves


def product_leaves(operator: LogOperator) -> Optional[list]:
    """The leaf indices of ``operator`` when it is a product of bases (a :class:`Base`, or a :class:`Product` of
    such products), each with its multiplicity; ``None`` otherwise."""
    if isinstance(operator, Base):
        return [operator.index]
    if isinstance(operator, Product):
        out = []
        for op in operator.ops:
            sub = product_leaves(op)
            if sub is None:
                return None
            out += sub
        return out
    return None


def independence_kernel(
    process: ComposedProcess, proposal, num_backward: Optional[int] = None
) -> tuple[IndependenceMH, Any]:
    """The :class:`~pyro_sculpt.mcmc.IndependenceMH` kernel targeting the exact composition of ``process``, with the
    mixture of its bases (``"mixture"``) or base ``proposal`` as the proposal, and ``x -> (N, m)`` the bases' exact
    log-probabilities; with ``num_backward`` (a product, checked by :func:`check_moves`), the pseudo-marginal kernel
    whose weights and log-probabilities are estimates from that many backward trajectories per base."""
    env, bases = process.env, process.bases
    if num_backward is not None:
        i = int(proposal)

        def log_p_estimate(x: torch.Tensor) -> torch.Tensor:
            return torch.stack([b.estimate_terminal_log_prob(x, num_backward) for b in bases], -1)

        others = [j for j in product_leaves(process.operator) if j != i]

        def log_weight_estimate(x: torch.Tensor) -> torch.Tensor:
            # the product's other bases, each estimated independently: an unbiased estimate of pi(x) / p_i(x)
            w = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
            for j in others:
                w = w + bases[j].estimate_terminal_log_prob(x, num_backward)
            return w

        return IndependenceMH(ProcessDistribution(bases[i]), log_weight_estimate), log_p_estimate
    table = torch.stack([b.exact_terminal_distribution().double().log() for b in bases], -1)  # (S, m)
    m = len(bases)

    def log_p(x: torch.Tensor) -> torch.Tensor:
        return table.to(x.device)[env.index(x)]

    def log_target(x: torch.Tensor) -> torch.Tensor:
        val = process.operator(log_p(x))
        return torch.where(torch.isnan(val), torch.full_like(val, float("-inf")), val)

    dists = [ProcessDistribution(b) for b in bases]
    if proposal == "mixture":

        def sample(n: int) -> torch.Tensor:
            counts = torch.bincount(torch.randint(m, (n,)), minlength=m).tolist()
            x = torch.cat([d.sample((k,)) for d, k in zip(dists, counts) if k > 0])
            return x[torch.randperm(n, device=x.device)]

        def log_weight(x: torch.Tensor) -> torch.Tensor:
            return log_target(x) - (torch.logsumexp(log_p(x), -1) - math.log(m))

        return IndependenceMH(sample, log_weight), log_p
    i = int(proposal)
    return IndependenceMH(dists[i], lambda x: log_target(x) - log_p(x)[:, i]), log_p


def exact_composition(bases: Sequence[Any], operator: LogOperator) -> torch.Tensor:
    """The exact normalised composition :math:`\\propto \\exp \\Phi(\\log p_1(x), \\dots)` over ``env.all_states()``
    (enumerable environments), from the bases' exact terminal distributions (float64)."""
    procs = base_processes(bases)
    log_p = torch.stack([b.exact_terminal_distribution().double().log() for b in procs], -1)  # (S, m)
    val = operator(log_p)
    val = torch.where(torch.isnan(val), torch.full_like(val, float("-inf")), val)
    return torch.softmax(val, 0)


class AutoIntermediateTwist(Twist):
    """:class:`OperatorTwist` with the intermediate operator chosen by pilot runs.

    Each candidate runs SMC on ``pilot_fraction`` of the particles (at least 1,000); the one whose smallest effective
    sample size over the run is the largest is used for the real run (docs/sculpting.md measures the variants: no
    single one is best for every composition). The pilot draws come from the same seeded generators, so a seeded run
    stays reproducible.

    :ivar chosen: the intermediate operator used, after :meth:`init`; :ivar pilot_ess: each candidate's smallest ESS
        fraction in its pilot.
    """

    def __init__(
        self,
        process: ComposedProcess,
        candidates: Sequence[str],
        pilot_fraction: float = 0.1,
        moves: Optional[IndependenceRejuvenation] = None,
    ):
        if not 0.0 < pilot_fraction <= 1.0:
            raise ValueError(f"pilot_fraction must lie in (0, 1], got {pilot_fraction!r}")
        self.moves = check_moves(process, moves)
        self.rejuvenate_final = moves is not None
        self.process = process
        self.candidates = tuple(candidates)
        self.pilot_fraction = pilot_fraction
        self.max_steps = process.max_steps
        self.chosen: Optional[str] = None
        self.pilot_ess: dict = {}

    def init(self, num_particles: int):
        n = min(num_particles, max(1000, int(self.pilot_fraction * num_particles)))
        for c in self.candidates:
            res = smc(OperatorTwist(self.process.with_intermediate(c)), n)
            self.pilot_ess[c] = min(res.ess_history) / n
        self.chosen = max(self.candidates, key=lambda c: self.pilot_ess[c])
        self._twist = OperatorTwist(self.process.with_intermediate(self.chosen), moves=self.moves)
        return self._twist.init(num_particles)

    def step(self, particles, t: int):
        return self._twist.step(particles, t)

    def terminal(self, particles) -> torch.Tensor:
        return self._twist.terminal(particles)

    def rejuvenate(self, particles, t: int):
        return self._twist.rejuvenate(particles, t)
