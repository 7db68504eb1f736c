"""Classifier-free compositions of diffusion models, corrected to the exact composition by sequential Monte Carlo
(docs/math.md §1.6).

A composition of leaves :math:`q_1, \\dots, q_m` (reverse-diffusion samplers of one space, schedule and sampler) is an
operator :math:`\\Phi` on their log-densities (:mod:`pyro_sculpt.sculpting.log_operators`): its target is
:math:`\\pi(x) \\propto \\exp \\Phi(\\log q_1(x), \\dots, \\log q_m(x))`. :class:`ComposedDiffusionProcess` is

* a sampler on the operator's *proposal score* :math:`\\sum_i \\partial \\Phi / \\partial \\ell_i(\\ell)\\, s_i(x, t)`
  with :math:`\\ell_i = \\log q_{i,t}(x_t)` the leaves' log-densities at the particle (exact or tracked,
  :mod:`~pyro_sculpt.sculpting.diffusion.densities`). For a product it is the sum of the scores (reverse diffusion
  alone, biased: the sum is not the score of the noised product; Du et al. 2023); for sculpting it is the
  classifier-free guided score :math:`\\bar s + \\gamma \\sum_k (s_{y_k} - \\bar s)`, :math:`\\bar s = \\sum_j \\rho_j
  s_j`, with the posterior :math:`\\rho` over bases from the log-densities;
* through :meth:`ComposedDiffusionProcess.twist`, an SMC sampler (Del Moral, Doucet & Jasra 2006) whose weights make
  the particles target :math:`\\pi` exactly as their number grows (:class:`ComposedDiffusionTwist`).

The process carries its :class:`~pyro_sculpt.sculpting.log_operators.Composition`, so a composition is a base of
another (``ps.product(ps.harmonic_mean(a, b), c)`` is one operator on the leaves ``a, b, c``).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Optional, Sequence

import torch
from pyro.distributions import Normal, TorchDistribution
from torch.distributions import constraints

from pyro_sculpt.diffusion.likelihood import probability_flow_log_prob
from pyro_sculpt.diffusion.model import batch_shape_of, per_batch
from pyro_sculpt.diffusion.samplers import NonFiniteScoreError, ReverseDiffusionProcess
from pyro_sculpt.diffusion.samplers.base import check_one_score_steps
from pyro_sculpt.infer.twist import Twist
from pyro_sculpt.mcmc import (
    GaussianKDE,
    IndependenceMH,
    IndependenceRejuvenation,
    PopulationIndependenceMH,
    Rejuvenation,
    operator_target,
)
from pyro_sculpt.processes.process import IterativeProcess
from pyro_sculpt.sculpting.diffusion.bases import as_sampler, check_diffusion_bases
from pyro_sculpt.sculpting.diffusion.densities import (
    DENSITY_MODES,
    AnyBatch,
    ExactDensities,
    PathDensities,
    ScoreOnlyDensities,
    has_exact_log_prob,
    tracked_densities,
)
from pyro_sculpt.sculpting.diffusion.score import check_diffusion_classifier, composed_score, is_diffusion_classifier
from pyro_sculpt.sculpting.log_operators import (
    Base,
    Composition,
    LogOperator,
    Sculpt,
)

_LOG_2PI = math.log(2 * math.pi)


# ----- operators: the proposal's guidance scale, linearity, normalisability -----


class GuidedSculpt(LogOperator):
    """A sculpting operator whose observation terms are scaled by :math:`\\gamma`:
    :math:`\\log \\sum_j w_j e^{\\Phi_j} + \\gamma \\sum_k \\log \\tilde p(y_k \\mid x)`. Its gradient is the guided
    proposal :math:`\\bar s + \\gamma \\sum_k (s_{y_k} - \\bar s)` (docs/math.md §1.6); :math:`\\gamma = 1` is the
    sculpting operator itself. Only proposals use it: targets keep :math:`\\gamma = 1`.

    :param sculpt: the sculpting operator.
    :param gamma: the guidance scale, :math:`\\ge 0`.
    """

    def __init__(self, sculpt: Sculpt, gamma: float):
        self.sculpt, self.gamma = sculpt, float(gamma)
        self.num_bases = sculpt.num_bases

    def __call__(self, log_q: torch.Tensor) -> torch.Tensor:
        log_mix, log_y = self.sculpt.log_terms(log_q)
        return log_mix + self.gamma * log_y

    @property
    def degree(self) -> float:
        return self.sculpt.degree

    def children(self) -> tuple:
        return self.sculpt.children()

    def map_leaves(self, fn) -> LogOperator:
        return GuidedSculpt(self.sculpt.map_leaves(fn), self.gamma)

    def map_children(self, fn) -> LogOperator:
        return GuidedSculpt(self.sculpt.map_children(fn), self.gamma)

    def __repr__(self) -> str:
        return f"GuidedSculpt({self.sculpt!r}, gamma={self.gamma})"


def proposal_operator(operator: LogOperator, gamma: float) -> LogOperator:
    """``operator`` with the observation terms of every sculpting operator in it scaled by ``gamma``
    (:class:`GuidedSculpt`); ``operator`` itself for ``gamma = 1`` or an operator without sculpting."""
    if gamma == 1.0:
        return operator

    def rebuild(op: LogOperator) -> LogOperator:
        inner = op.map_children(rebuild)
        return GuidedSculpt(inner, gamma) if isinstance(op, Sculpt) else inner

    return rebuild(operator)


def is_linear(operator: LogOperator) -> bool:
    """Whether :math:`\\Phi` is linear in the log-densities (:attr:`LogOperator.linear`): then its gradient, and so
    its proposal, needs no log-density."""
    return operator.linear


def _precisions(model: Any) -> Optional[torch.Tensor]:
    """The components' precision matrices ``(C, D, D)`` (float64, CPU) of a Gaussian mixture's ``covariances``;
    ``None`` for a model without them."""
    cov = getattr(model, "covariances", None)
    if not isinstance(cov, torch.Tensor):
        return None
    return torch.linalg.inv(cov.detach().double().cpu())  # a one-off check at construction, on the CPU


def _tail_decay(operator: LogOperator, precisions: Sequence[torch.Tensor], u: torch.Tensor) -> torch.Tensor:
    """:math:`c(u)` of unit directions ``u`` ``(K, D)``: :math:`\\Phi(\\log q_1(r u), \\dots) \\approx -c(u) r^2 / 2`
    for large :math:`r`, with :math:`\\log q_i(r u) \\approx -\\lambda_i(u) r^2 / 2` and :math:`\\lambda_i(u) = \\min_k
    u^\\top \\Sigma_{ik}^{-1} u` (the widest component of mixture :math:`i` along :math:`u`)."""
    lam = torch.stack([torch.einsum("ud,cde,ue->uc", u, p, u).min(-1).values for p in precisions], -1)  # (K, m)
    big = 1e8  # l_i = -lambda_i R / 2 with R large: Phi is then -c R / 2 up to O(1) terms (log-sum-exp -> max)
    return -2.0 * operator(-0.5 * big * lam) / big


def _descend_tail(
    operator: LogOperator, precisions: Sequence[torch.Tensor], u: torch.Tensor, iterations: int = 100
) -> torch.Tensor:
    """Unit directions moved downhill on :math:`c(u)` (:func:`_tail_decay`) along the sphere, with angular steps
    shrinking from 0.3 to 1e-4 radians: the fixed directions alone can miss a narrow cone of growth between them (for
    one Gaussian per leaf and a linear operator, :math:`c(u) = u^\\top M u` and the descent finds :math:`M`'s smallest
    eigenvalue)."""
    steps = torch.logspace(math.log10(0.3), -4.0, iterations, dtype=torch.float64)
    u = u.clone()
    for step in steps:
        v = u.clone().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(_tail_decay(operator, precisions, v).sum(), v)
        tangent = grad - (grad * u).sum(-1, keepdim=True) * u
        norm = tangent.norm(dim=-1, keepdim=True)
        moved = u - step * tangent / norm.clamp_min(1e-300)
        moved = moved / moved.norm(dim=-1, keepdim=True)
        keep = (norm > 0) & torch.isfinite(moved).all(-1, keepdim=True)
        u = torch.where(keep, moved, u)
    return u


def check_normalisable(operator: LogOperator, models: Sequence[Any], name: str = "operator") -> None:
    """Raise a :class:`ValueError` naming ``name`` if the composition cannot be normalised.

    * Its degree (:attr:`LogOperator.degree`) must be > 0: the particles start from :math:`\\mathcal N(0, s^2 I / d)`.
    * For Gaussian-mixture leaves (with ``covariances``, e.g. the oracles), along every tested direction :math:`u`
      the tail of :math:`\\Phi(\\log q_1, \\dots)` must decay. With :math:`\\log q_i(r u) \\approx -\\lambda_i(u)
      r^2/2`, :math:`\\Phi \\approx -c(u) r^2 / 2` where :math:`c` follows the operator (sums for products,
      :math:`(1 + a) c_1 - a c_2` for negations, minima for mixtures and sculpting), and :math:`c(u) \\le 0` is not
      normalisable. E.g. a negation :math:`q_1 (q_1 / q_2)^a` of isotropic mixtures needs :math:`(1 + a)/v_1 - a / v_2
      > 0` for the widest variances :math:`v_1, v_2`. The directions tested are the axes, the diagonals, 64 fixed
      random ones and the eigenvectors of every component's precision, each also moved downhill on :math:`c(u)` along
      the sphere (:func:`_descend_tail`): exact for one Gaussian per leaf and a linear operator (products,
      negations), where :math:`c(u) = u^\\top M u`.
    """
    degree = float(operator.degree)
    if not degree > 0:
        raise ValueError(
            f"{name} has degree {degree:.4g} (exp Phi(l + c) = exp(Phi(l) + d c)); a composition of diffusion models "
            "needs degree > 0 (its particles start from N(0, s^2 I / d)): e.g. a negation (1 + a) Phi_1 - a Phi_2 "
            "whose second operand has the larger degree cannot be normalised"
        )
    d = int(models[0].event_shape.numel())
    precisions = [_precisions(m) for m in models]
    if any(p is None for p in precisions):
        return  # not Gaussian mixtures: nothing to tell
    g = torch.Generator().manual_seed(0)
    dirs = [torch.eye(d, dtype=torch.float64), torch.randn(64, d, generator=g, dtype=torch.float64)]
    if d > 1:
        dirs.append(torch.cartesian_prod(*([torch.tensor([-1.0, 1.0], dtype=torch.float64)] * min(d, 6)))[:, :d])
    dirs.append(torch.cat([torch.linalg.eigh(p).eigenvectors.transpose(-1, -2).reshape(-1, d) for p in precisions]))
    u = torch.cat([x if x.shape[1] == d else torch.cat([x, x.new_zeros(x.shape[0], d - x.shape[1])], 1) for x in dirs])
    u = u / u.norm(dim=-1, keepdim=True)
    u = torch.cat([u, _descend_tail(operator, precisions, u)])
    c = _tail_decay(operator, precisions, u)
    bad = torch.nonzero(c <= 1e-6).flatten()
    if bad.numel():
        k = int(bad[0])
        raise ValueError(
            f"{name} cannot be normalised: its log-density does not decay along direction {u[k].tolist()} "
            f"(tail precision {float(c[k]):.4g} <= 0; e.g. a negation q1 (q1/q2)^a needs (1 + a)/v1 - a/v2 > 0 for the "
            "widest component variances v1 of q1 and v2 of q2): lower a or negate a wider base"
        )


# ----- the shared step machinery -----


def _step_times(sampler: ReverseDiffusionProcess) -> list:
    """``(t_in, t_out)`` of every step (``None`` for step 0): the input's score time and the output's noise level."""
    out: list = [None]
    final = float(sampler.times[-1])
    for t in range(1, sampler.max_steps):
        t_out = sampler.score_time(t + 1) if t + 1 < sampler.max_steps else final
        out.append((sampler.score_time(t), t_out))
    return out


def _gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, var: float) -> torch.Tensor:
    """:math:`\\log \\mathcal N(x; \\mu, v I)` of flattened events ``(N, D)`` (float64)."""
    d = x.shape[-1]
    return -0.5 * ((x - mean) ** 2).sum(-1) / var - 0.5 * d * (math.log(var) + _LOG_2PI)


class _Composed:
    """What the plain process and the SMC twist share: the leaves, the operator, densities and proposal scores."""

    def __init__(self, samplers, operator, gamma, densities_mode: str, proposal: Any, *, for_weights: bool):
        self.samplers = samplers
        self.sampler = samplers[0]
        self.models = [s.model for s in samplers]
        self.dtype = functools.reduce(torch.promote_types, (mod.dtype for mod in self.models))
        self.operator = operator
        self.gamma = gamma
        self.event_shape = self.sampler.event_shape
        self.axis = -1 - len(self.event_shape)
        self.prop_op = proposal_operator(operator, gamma)
        self.times = _step_times(self.sampler)
        self.densities = self._densities(densities_mode, for_weights)
        self.classifier = None
        if proposal is not None and not (isinstance(proposal, str) and proposal == "operator"):
            self._set_classifier(proposal)

    def _densities(self, mode: str, for_weights: bool) -> PathDensities:
        if mode not in DENSITY_MODES:
            raise ValueError(f"densities must be one of {DENSITY_MODES}, got {mode!r}")
        exact = all(has_exact_log_prob(m) for m in self.models)
        shifted = [k for k, m in enumerate(self.models) if not getattr(m, "log_prob_normalised", True)]
        if exact and shifted and not is_linear(self.operator):
            # log_prob up to a constant per level (energy models): enough for linear operators only
            if mode == "exact":
                k = shifted[0]
                raise ValueError(
                    f"densities='exact': models[{k}] ({type(self.models[k]).__name__}) has log_prob(x, t) only up to a "
                    f"constant per noise level, which cancels in the SMC weights of operators linear in the "
                    f"log-densities (products, negations) but not in {self.operator!r}: use densities='tracked' (the "
                    "Itô estimator) or models with normalised log-densities"
                )
            exact = False
        if mode == "exact" or (mode == "auto" and exact):
            return ExactDensities(self.models)
        if mode == "auto" and not for_weights and is_linear(self.operator):
            return ScoreOnlyDensities(self.models)
        tracked = tracked_densities(self.models, self.sampler)
        return tracked if for_weights else AnyBatch(tracked, self.event_shape)  # a plain process: any sample shape

    def _set_classifier(self, clf: Any) -> None:
        if not is_diffusion_classifier(clf):
            raise TypeError(
                "proposal must be 'operator' or a diffusion observation classifier (DiffusionObservationClassifier or "
                f"GaussianMixtureClassifier) of the bases, got {type(clf).__name__}"
            )
        op = self.operator
        m = len(self.models)
        if not (isinstance(op, Sculpt) and all(isinstance(c, Base) and c.index == k for k, c in enumerate(op.ops))):
            raise ValueError(
                f"proposal: a classifier guides a sculpting operator of the leaves themselves (ps.sculpt(bases, "
                f"y=...)), but this composition is {op!r}"
            )
        if len(op.ops) != m:
            raise ValueError(f"proposal: the classifier's composition reads {len(op.ops)} of {m} leaves")
        check_diffusion_classifier(clf, self.event_shape, self.sampler.schedule, op.obs)
        self.classifier = clf

    @property
    def prior_std(self) -> float:
        """:math:`s / \\sqrt d`: the initial noise of a composition of degree :math:`d`."""
        return self.sampler.step_coefficients(0)[2] / math.sqrt(float(self.operator.degree))

    def proposal_score(self, x: torch.Tensor, log_q: torch.Tensor, scores: torch.Tensor, t: int) -> torch.Tensor:
        """The proposal's score at ``x`` for step ``t``: :math:`\\sum_i \\partial\\Phi_\\gamma / \\partial \\ell_i\\,
        s_i`, or the classifier's guided score."""
        if self.classifier is not None:
            return composed_score(
                self.models, self.classifier, self.operator.obs, x, self.times[t][0], gamma=self.gamma,
                base_scores=scores, create_graph=False,
            )  # fmt: skip
        grad = self.prop_op.gradient(log_q).to(scores.dtype)  # (N, m)
        return (per_batch(grad, self.event_shape) * scores).sum(self.axis)


def _finite(score: torch.Tensor, t: int, where: str) -> None:
    if not bool(torch.isfinite(score).all()):
        raise NonFiniteScoreError(f"{where}: non-finite proposal score (NaN or inf) at step {t}")


# ----- the plain process -----


class ComposedDiffusionProcess(IterativeProcess):
    """A classifier-free composition :math:`\\propto \\exp \\Phi(\\log q_1(x), \\dots, \\log q_m(x))` of diffusion
    samplers, as an iterative process that runs the leaves' sampler on the operator's proposal score (see the module
    docstring). Its particles are biased unless weighted: :func:`pyro_sculpt.infer.smc` uses :meth:`twist`.

    The state is ``(x, log_q)``: the particle (``batch_shape + event_shape``) and its leaves' log-densities
    ``batch_shape + (m,)`` (float64; exact, tracked along the path, or zeros for linear operators of models without
    exact densities, whose proposal needs none). Step 0 draws :math:`x_T \\sim \\mathcal N(0, s^2 I / d)`
    (:math:`d` the operator's degree: the product of :math:`m` bases starts at :math:`s^2 / m`), every later step is
    the leaves' sampler step on the proposal score.

    :param bases: the leaves: diffusion samplers built with the same sampler arguments (or their distributions).
    :param operator: :math:`\\Phi` on the leaves (:class:`~pyro_sculpt.sculpting.log_operators.LogOperator`).
    :param gamma: scale of the sculpting operators' guidance terms in the proposal (1: the operator's gradient).
    :param densities: where the proposal's log-densities come from: ``"exact"`` (every leaf model has
        ``log_prob(x, t)``), ``"tracked"`` (the Itô estimator; stochastic samplers) or ``"auto"`` (exact if
        available, none for linear operators, else tracked).

    Example::

        proc = ps.product(AncestralSampler(o1, 100), AncestralSampler(o2, 100)).process
        x = ps.ProcessDistribution(proc).sample((4000,))      # summed scores: biased
        res = ps.infer.smc(proc, 4000)                          # weighted towards the exact product
    """

    def __init__(self, bases: Sequence[Any], operator: LogOperator, gamma: float = 1.0, *, densities: str = "auto"):
        bases = list(bases)
        if len(bases) == 1:
            samplers = [as_sampler(bases[0], "bases[0]")]
        else:
            samplers = check_diffusion_bases(bases, same_sampler=True)
        check_one_score_steps(samplers[0], "bases[0]")  # its steps are rebuilt from the composed score
        if not isinstance(operator, LogOperator):
            raise TypeError(f"operator must be a LogOperator, got {type(operator).__name__}")
        if operator.num_bases != len(samplers):
            raise ValueError(f"operator reads {operator.num_bases} bases, but {len(samplers)} leaves were given")
        check_normalisable(operator, [s.model for s in samplers])
        self.leaves = tuple(bases)
        self.composition = Composition(tuple(bases), operator)
        self.operator = operator
        self.gamma = float(gamma)
        self._core = _Composed(samplers, operator, self.gamma, densities, None, for_weights=False)
        self.samplers = samplers
        self.sampler = samplers[0]
        self.schedule = self.sampler.schedule
        self._event_shape = self.sampler.event_shape
        self.state_event_dims = (len(self._event_shape), 1)
        self.max_steps = self.sampler.max_steps
        self.device = self.sampler.device
        self._memo: Optional[tuple] = None

    def __repr__(self) -> str:
        return f"ComposedDiffusionProcess({self.operator!r}, gamma={self.gamma}, sampler={self.sampler!r})"

    @property
    def event_shape(self) -> torch.Size:
        return self._event_shape

    @property
    def support(self) -> constraints.Constraint:
        return constraints.independent(constraints.real, len(self._event_shape))

    @property
    def densities(self) -> PathDensities:
        """The source of the proposal's log-densities."""
        return self._core.densities

    def init(self):
        m = len(self.samplers)
        x = torch.zeros(self._event_shape, device=self.device, dtype=self._core.dtype)
        return x, torch.zeros(m, dtype=torch.float64, device=self.device)

    def _scores(self, x: torch.Tensor, t: int) -> torch.Tensor:
        memo = self._memo
        if memo is not None and memo[0] is x and memo[1] == t:
            return memo[2]
        scores = self._core.densities.scores(x, self._core.times[t][0])
        self._memo = (x, t, scores)
        return scores

    def step_dist(self, state, t: int) -> TorchDistribution:
        x, log_q = state
        if t == 0:
            loc = torch.zeros(
                batch_shape_of(x, self._event_shape) + self._event_shape, device=self.device, dtype=x.dtype
            )
            return Normal(loc, loc.new_full((), self._core.prior_std).expand(loc.shape)).to_event(
                len(self._event_shape)
            )
        scores = self._scores(x, t)
        log_q = log_q.expand(scores.shape[: self._core.axis] + log_q.shape[-1:])
        score = self._core.proposal_score(x, log_q, scores, t)
        _finite(score, t, repr(self))
        return self.sampler.step_from_score(x, t, score.to(x.dtype))

    def transition(self, state, value: torch.Tensor, t: int):
        x, log_q = state
        dens = self._core.densities
        if t == 0:
            return value, dens.init(value, self._core.times[1][0])
        t_in, t_out = self._core.times[t]
        scores = None if isinstance(dens, ExactDensities) else self._scores(x, t)  # exact ones need no scores
        return value, dens.update(log_q, x, value, t_in, t_out, scores=scores)

    def terminal(self, state) -> torch.Tensor:
        return state[0]

    def site_infer(self, state, t: int) -> dict:
        infer = super().site_infer(state, t)
        time = None if t == 0 else self.sampler.score_time(t)
        infer["pyro_sculpt"]["diffusion"] = {"kind": self.sampler.step_kind(t), "time": time}
        return infer

    # ----- MCMC correctors (the protocol of pyro_sculpt.mcmc.CorrectorMessenger) -----

    def corrector_level(self, t: int) -> Optional[float]:
        """The noise level of step ``t``'s input state (``None`` for the prior draw)."""
        return None if t == 0 else self.sampler.corrector_level(t)

    def corrector_position(self, state) -> torch.Tensor:
        return state[0]

    def corrector_state(self, state, x: torch.Tensor, t: int):
        """``(x, log_q)`` with the leaves' log-densities at the moved particles: exact (or none, for linear
        operators of score-only models); tracked densities are path integrals that a move would invalidate."""
        dens = self._core.densities
        shifted = [k for k, m in enumerate(self._core.models) if not getattr(m, "log_prob_normalised", True)]
        if not isinstance(dens, ExactDensities) and shifted and all(has_exact_log_prob(m) for m in self._core.models):
            k = shifted[0]
            raise ValueError(
                f"correctors move the particles of {self!r}, but models[{k}] ({type(self._core.models[k]).__name__}) "
                f"has log_prob(x, t) only up to a constant per noise level, which {self.operator!r} does not cancel "
                "(operators linear in the log-densities do: products, negations); use models with normalised "
                "log-densities"
            )
        if not isinstance(dens, ExactDensities):
            raise ValueError(
                f"correctors move the particles of {self!r}, whose proposal uses {type(dens).__name__}: tracked "
                "densities are integrals along each particle's own path, which a move would invalidate; use leaf "
                "models with log_prob(x, t) (densities='exact') or a linear operator (products, negations)"
            )
        return x, dens.init(x, self.corrector_level(t))

    def corrector_models(self) -> tuple[list, LogOperator]:
        """``(leaf models, operator)`` of the level targets :math:`\\exp\\Phi(\\log q_{1,t}, \\dots)`."""
        return list(self._core.models), self.operator

    def twist(
        self, *, densities: str = "auto", proposal: Any = "operator", moves: Optional[Moves] = None
    ) -> "ComposedDiffusionTwist":
        """The SMC sampler of this composition for :func:`pyro_sculpt.infer.smc` (:class:`ComposedDiffusionTwist`).

        :param densities: ``"exact"``, ``"tracked"`` or ``"auto"`` (exact when every leaf model has ``log_prob(x,
            t)``, else tracked).
        :param proposal: ``"operator"`` (the operator's proposal score, this process's steps) or a diffusion
            observation classifier of the leaves for a sculpting operator (its guided score, twisted diffusion
            sampling; Wu et al. 2023): the weights are the same.
        :param moves: MCMC rejuvenation moves at the levels (:class:`~pyro_sculpt.mcmc.Rejuvenation`; exact
            densities only), final independence moves (:class:`~pyro_sculpt.mcmc.IndependenceRejuvenation`; leaves
            with exact samplers), or ``None``.
        """
        return ComposedDiffusionTwist(self, densities=densities, proposal=proposal, moves=moves)


# ----- the SMC sampler -----

#: what ``moves`` of a composed diffusion SMC may be
Moves = Any


def has_exact_sampler(model: Any) -> bool:
    """Whether ``model`` draws exact samples of its noised marginal, ``model.sample(num_samples, t)`` (e.g.
    :class:`~pyro_sculpt.diffusion.GaussianMixtureOracle`): the protocol of the final independence moves."""
    return callable(getattr(model, "sample", None))


class _Evaluated:
    """A log-density function ``x (N, ...) -> (N, m)`` that keeps every batch it evaluated, so that the final states
    of an independence sampler (each one a start or an accepted proposal) are read back instead of recomputed (a
    probability-flow solve per state)."""

    def __init__(self, fn):
        self.fn, self.xs, self.values = fn, [], []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        value = self.fn(x)
        self.xs.append(x)
        self.values.append(value)
        return value

    def at(self, x: torch.Tensor) -> torch.Tensor:
        """The values at the rows of ``x``, each from the last evaluation of that exact state (batches of any
        size: a population kernel evaluates half the chains at a time). Vectorised: one ``torch.unique`` over the
        evaluated rows and the queries, then the last evaluation of every distinct row."""
        rows = torch.cat([b.reshape(b.shape[0], -1).double() for b in self.xs])
        query = x.reshape(x.shape[0], -1).double().to(rows.device)
        _, ids = torch.unique(torch.cat([rows, query]), dim=0, return_inverse=True)
        m = rows.shape[0]
        last = torch.full((int(ids.max()) + 1,), -1, dtype=torch.long, device=ids.device)
        last = last.scatter_reduce(0, ids[:m], torch.arange(m, device=ids.device), "amax")  # later ones win
        idx = last[ids[m:]]
        if bool((idx < 0).any()):
            raise RuntimeError("a final state was never evaluated (internal error of the independence moves)")
        values = torch.cat(self.values)
        return values[idx.to(values.device)]


class ComposedDiffusionTwist(Twist):
    """The SMC sampler of a classifier-free composition (Del Moral, Doucet & Jasra 2006; docs/math.md §1.6).

    Intermediate targets :math:`\\pi_t(x) \\propto \\exp \\Phi(\\log q_{1,t}(x), \\dots, \\log q_{m,t}(x))`; the
    proposal :math:`M(x_{t-1} \\mid x_t)` is the step's Gaussian :math:`\\mathcal N(a x + b\\, s_{prop}, c^2 I)`; the
    backward kernel :math:`L` is the forward noising kernel :math:`\\mathcal N(x_t; \\alpha_{t|s} x_s, \\sigma_{t|s}^2
    I)`. Incremental log-weight

    .. math::

        \\log \\pi_{t-1}(x_{t-1}) + \\log L(x_t \\mid x_{t-1}) - \\log \\pi_t(x_t) - \\log M(x_{t-1} \\mid x_t),

    and initially :math:`\\log \\pi_T(x_T) - \\log \\mathcal N(x_T; 0, s^2 I / d)`. The weighted particles target
    :math:`\\exp \\Phi(\\log q_{i,t_{min}})` whatever the proposal and the number of steps (with exact densities, as
    the particle number grows; with tracked densities, up to the estimator's error). Weights are float64.

    :param process: the :class:`ComposedDiffusionProcess`.
    :param densities: ``"exact"``, ``"tracked"`` or ``"auto"``.
    :param proposal: ``"operator"`` or a diffusion observation classifier (sculpting operators).
    :param moves: MCMC rejuvenation (:class:`~pyro_sculpt.mcmc.Rejuvenation`, e.g. ``Rejuvenation("mala",
        num_steps=5)``): its kernel moves every particle ``num_steps`` times targeting the current level's
        :math:`\\pi_t` (exact log-densities: :func:`~pyro_sculpt.mcmc.operator_target` of the leaves and the
        operator), after each resampling (``when="resample"``, through :meth:`rejuvenate`) or at every level
        (``when="step"``: before each proposal, and after the last step). Moves that leave :math:`\\pi_t` invariant do
        not change the weights; the next increment uses the moved particle's :math:`\\pi_t`. Tracked densities are
        path integrals of one particle's own path, so a move would make them wrong: moves need exact densities.
        Or final independence moves (:class:`~pyro_sculpt.mcmc.IndependenceRejuvenation`): after the last step
        :func:`~pyro_sculpt.infer.smc` resamples and every particle makes ``num_steps`` independence
        Metropolis-Hastings steps (:class:`~pyro_sculpt.mcmc.IndependenceMH`) targeting the last level's
        :math:`\\pi` with fresh draws of the equal mixture of the leaves (or of one leaf) at that level as proposals,
        so that the duplicates of the resampling are replaced by distinct draws and the mode weights, decided early
        and inherited by the genealogy, are redrawn. That needs leaves with exact samplers of their noised marginals
        (:func:`has_exact_sampler`, e.g. the oracles) and exact normalised log-densities; with
        ``proposal="particles"`` the proposal is a Gaussian kernel density estimate of the resampled particles
        (:class:`~pyro_sculpt.mcmc.GaussianKDE`), which needs only the leaves' exact log-densities and also moves
        compositions whose ratio to every leaf is unbounded (the negation).

    Example::

        moves = ps.mcmc.Rejuvenation("mala", num_steps=5, step_size=0.01)
        res = ps.infer.smc(ps.product(s1, s2), 4000, moves=moves)
        res = ps.infer.smc(ps.product(s1, s2), 4000, moves=ps.mcmc.IndependenceRejuvenation(10))  # oracle leaves
        kde_moves = ps.mcmc.IndependenceRejuvenation(20, proposal="particles", bandwidth=0.5)
        res = ps.infer.smc(ps.negation(s1, s2, 1.0), 10_000, moves=kde_moves)  # leaves with exact log_prob(x, t)
    """

    #: the default of :func:`~pyro_sculpt.infer.smc`'s ``resample_threshold="auto"`` for these twists: resampling
    #: early keeps more distinct ancestors through the levels where mode weights are decided (docs/diffusion.md)
    resample_threshold = 0.9

    def __init__(
        self,
        process: ComposedDiffusionProcess,
        *,
        densities: str = "auto",
        proposal: Any = "operator",
        moves: Optional[Moves] = None,
    ):
        sampler = process.sampler
        for t in range(1, sampler.max_steps):
            if sampler.step_coefficients(t)[2] == 0.0:
                raise ValueError(
                    f"SMC of a composition needs a stochastic sampler, but step {t} of {sampler!r} is deterministic "
                    "(an ODE step has no transition density): compose AncestralSampler, EulerMaruyamaSampler or "
                    "DDIMSampler(eta > 0) bases"
                )
            if sampler.step_kind(t) == "corrector":
                raise ValueError(
                    f"SMC of a composition uses the forward noising kernel as backward kernel, which a corrector step "
                    f"at a fixed time (step {t} of {sampler!r}) does not have: use a sampler without corrector steps"
                )
        self.process = process
        self.core = _Composed(process.samplers, process.operator, process.gamma, densities, proposal, for_weights=True)
        self.max_steps = sampler.max_steps
        sched = sampler.schedule
        self._kernels: list = [None]
        for t in range(1, sampler.max_steps):  # the forward kernel from t_out back to t_in
            t_in, t_out = (torch.tensor(v, dtype=torch.float64) for v in self.core.times[t])
            a_ts = float((sched.log_alpha(t_in) - sched.log_alpha(t_out)).exp())
            var = float(sched.sigma2(t_in) - a_ts**2 * sched.sigma2(t_out))
            if not var > 0:
                raise ValueError(f"step {t} of {sampler!r} does not add noise forwards ({var=}); it cannot be weighted")
            self._kernels.append((a_ts, var))
        if moves is not None:
            if not isinstance(moves, (Rejuvenation, IndependenceRejuvenation)):
                raise TypeError(
                    "moves must be a pyro_sculpt.mcmc.Rejuvenation, a pyro_sculpt.mcmc.IndependenceRejuvenation or "
                    f"None, got {type(moves).__name__}"
                )
            particle_moves = isinstance(moves, IndependenceRejuvenation) and moves.proposal == "particles"
            if not isinstance(self.core.densities, ExactDensities) and not particle_moves:
                raise ValueError(
                    "moves: MCMC rejuvenation needs the leaves' exact log-densities at every level (densities='exact', "
                    "leaf models with log_prob(x, t)), but this SMC uses "
                    f"{type(self.core.densities).__name__}: tracked densities are integrals along each particle's own "
                    "path, which a move would invalidate (final moves with "
                    "IndependenceRejuvenation(proposal='particles') work with them: they target the leaves' "
                    "probability-flow densities)"
                )
            if isinstance(moves, IndependenceRejuvenation):
                self._check_independence(moves)
        self.moves = moves
        self.rejuvenate_final = isinstance(moves, IndependenceRejuvenation)

    def _check_independence(self, moves: IndependenceRejuvenation) -> None:
        if moves.num_backward is not None:
            raise ValueError(
                "moves: num_backward (backward trajectories) is for GFlowNet compositions; a diffusion composition's "
                "independence moves use the leaves' exact or probability-flow densities"
            )
        if moves.proposal == "particles":
            return  # the particles' own density estimate: no sampler of the leaves needed
        models = self.core.models
        missing = [k for k, m in enumerate(models) if not has_exact_sampler(m)]
        if missing:
            k = missing[0]
            raise ValueError(
                f"moves: IndependenceRejuvenation proposes exact draws of the leaves, but leaf {k} "
                f"({type(models[k]).__name__}) has no sample(num_samples, t) (an exact sampler, e.g. "
                "GaussianMixtureOracle); use Rejuvenation('mala', ...) instead"
            )
        shifted = [k for k, m in enumerate(models) if not getattr(m, "log_prob_normalised", True)]
        if shifted:
            raise ValueError(
                f"moves: IndependenceRejuvenation needs the proposal's normalised density, but leaf {shifted[0]} has "
                "log_prob(x, t) only up to a constant"
            )
        if isinstance(moves.proposal, int) and moves.proposal >= len(models):
            raise ValueError(
                f"moves: proposal={moves.proposal} is not the index of a leaf (the composition has {len(models)})"
            )

    def level(self, t: int) -> float:
        """The noise level of the particles after step ``t``."""
        return float(self.core.times[1][0] if t == 0 else self.core.times[t][1])

    def _move(self, particles, t: int):
        """Particles after step ``t`` moved by the rejuvenation kernel at their level's target."""
        lvl = self.level(t)
        if self.moves.steps_at(lvl) == 0:
            return particles
        target = operator_target(self.core.models, lvl, self.core.operator)
        x = self.moves.move(particles["x"], target, level=lvl).x
        log_q = self.core.densities.init(x, lvl)
        return {"x": x, "log_q": log_q, "phi": self._phi(log_q)}

    def _independence_move(self, particles, t: int):
        """The final independence moves (class docstring) of the particles after the last step ``t``."""
        lvl = self.level(t)
        models, dens = self.core.models, self.core.densities
        x0 = particles["x"]
        m, choice = len(models), self.moves.proposal

        def draw(n: int) -> torch.Tensor:
            if choice != "mixture":
                return models[choice].sample(n, lvl).to(x0)
            counts = torch.bincount(torch.randint(m, (n,)), minlength=m).tolist()
            x = torch.cat([models[k].sample(c, lvl).to(x0) for k, c in enumerate(counts) if c > 0])
            return x[torch.randperm(n, device=x.device)]  # each chain's proposal a draw of the mixture

        def log_weight(x: torch.Tensor) -> torch.Tensor:
            log_q = dens.init(x, lvl).double()
            log_prop = torch.logsumexp(log_q, -1) - math.log(m) if choice == "mixture" else log_q[..., choice]
            return self._phi(log_q) - log_prop

        if choice == "particles":
            log_leaves = _Evaluated(self._final_log_densities(lvl))
            mv = self.moves
            if mv.refit:
                kernel = PopulationIndependenceMH(lambda x: self._phi(log_leaves(x)), mv.num_centres, mv.bandwidth)
            else:
                kde = GaussianKDE(x0, mv.num_centres, mv.bandwidth)
                kernel = IndependenceMH(kde.sample, lambda x: self._phi(log_leaves(x)) - kde.log_prob(x))
            x = mv.move(x0, kernel).x
            log_q = log_leaves.at(x)  # every final state was evaluated as a start or a proposal: no new ODE solve
        else:
            x = self.moves.move(x0, IndependenceMH(draw, log_weight)).x
            log_q = dens.init(x, lvl)
        return {"x": x, "log_q": log_q, "phi": self._phi(log_q)}

    def _final_log_densities(self, lvl: float):
        """``x -> (N, m)``: the leaves' log-densities at level ``lvl`` at any point: exact where the SMC has them,
        else by the probability-flow ODE of each leaf (score networks: the tracked densities exist only along each
        particle's own path)."""
        dens = self.core.densities
        if isinstance(dens, ExactDensities):
            return lambda x: dens.init(x, lvl).double()
        models, steps = self.core.models, self.moves.ode_steps

        def log_leaves(x: torch.Tensor) -> torch.Tensor:
            cols = [probability_flow_log_prob(m, x, t0=lvl, num_steps=steps).detach().double() for m in models]
            return torch.stack(cols, -1)

        return log_leaves

    def rejuvenate(self, particles, t: int):
        if isinstance(self.moves, IndependenceRejuvenation):
            return self._independence_move(particles, t) if t == self.max_steps - 1 else particles
        if self.moves is None or self.moves.when != "resample":
            return particles
        return self._move(particles, t)

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1).double()

    def _phi(self, log_q: torch.Tensor) -> torch.Tensor:
        return self.core.operator(log_q).double()

    def init(self, num_particles: int):
        x = torch.zeros(
            (num_particles,) + tuple(self.core.event_shape), device=self.process.device, dtype=self.core.dtype
        )
        if self.moves is not None:
            self.moves.reset()
        return {"x": x}

    def step(self, particles, t: int):
        core = self.core
        x = particles["x"]
        n = x.shape[0]
        done = torch.full((n,), t + 1 >= self.max_steps, dtype=torch.bool, device=x.device)
        if t == 0:
            std = core.prior_std
            x = torch.randn_like(x) * std
            log_q = core.densities.init(x, core.times[1][0])
            phi = self._phi(log_q)
            inc = phi - _gaussian_log_prob(self._flat(x), torch.zeros((), dtype=torch.float64), std**2)
            return {"x": x, "log_q": log_q, "phi": phi}, self._check(inc, t), done
        every_step = isinstance(self.moves, Rejuvenation) and self.moves.when == "step"
        if every_step:
            particles = self._move(particles, t - 1)
            x = particles["x"]
        a, b, c = core.sampler.step_coefficients(t)
        t_in, t_out = core.times[t]
        log_q = particles["log_q"]
        scores = core.densities.scores(x, t_in)
        score = core.proposal_score(x, log_q, scores, t)
        _finite(score, t, repr(self.process))
        mean = a * x + b * score.to(x.dtype)
        new = mean + c * torch.randn_like(mean)
        log_q_new = core.densities.update(log_q, x, new, t_in, t_out, scores=scores)
        phi_new = self._phi(log_q_new)
        xf, newf = self._flat(x), self._flat(new)
        log_m = _gaussian_log_prob(newf, a * xf + b * self._flat(score), c**2)
        a_ts, var = self._kernels[t]
        log_l = _gaussian_log_prob(xf, a_ts * newf, var)
        inc = phi_new + log_l - particles["phi"] - log_m
        out = {"x": new, "log_q": log_q_new, "phi": phi_new}
        if every_step and t + 1 >= self.max_steps:
            out = self._move(out, t)  # the final level too: weighted particles stay weighted
        return out, self._check(inc, t), done

    def _check(self, inc: torch.Tensor, t: int) -> torch.Tensor:
        if bool(torch.isnan(inc).any()) or bool((inc == float("inf")).any()):
            raise FloatingPointError(f"composition SMC: NaN or infinite incremental weight at step {t}")
        return inc

    def terminal(self, particles) -> torch.Tensor:
        return particles["x"]
