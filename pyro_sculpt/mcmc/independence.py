"""Independence Metropolis-Hastings with a generative model as the proposal (docs/math.md §3; Tierney 1994; Du &
Kaelbling 2024, §5.3).

Every chain proposes a fresh draw :math:`x' \\sim q` from a sampler that ignores its current state (a GFlowNet, a
tabular policy, any distribution) and accepts it with probability

.. math::

    \\min\\Big(1, \\frac{\\pi(x')\\, q(x)}{\\pi(x)\\, q(x')}\\Big) = \\min\\big(1, e^{w(x') - w(x)}\\big), \\qquad
    w = \\log \\pi - \\log q,

so only the *log-weight* :math:`w` is needed. For a composition :math:`\\pi \\propto p_1 p_2 = e^{-(E_1 + E_2)}` with
the proposal :math:`q = p_1`, :math:`w = \\log p_2 = -E_2` up to a constant: the proposal's density cancels, and
:math:`p_2` may be any model with a log-density or an energy (another GFlowNet's exact log-probability on an
enumerable space, a reward). The chain is uniformly ergodic when :math:`M = \\sup_x \\pi(x) / q(x) < \\infty` (with
:math:`\\pi, q` normalised), with :math:`\\|K^k(x, \\cdot) - \\pi\\|_{TV} \\le (1 - 1/M)^k` (Mengersen & Tweedie 1996).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import torch

from pyro_sculpt.mcmc.base import MCMCInfo, check_start, metropolis, per_chain, run_steps, select
from pyro_sculpt.utils import check_number, check_positive_int

#: a log-weight or log-density: ``x (N, ...) -> (N,)``
LogDensity = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class IndependenceState:
    """The chains of an :class:`IndependenceMH` kernel.

    :ivar x: ``(N,) + event_shape`` current states.
    :ivar log_weight: ``(N,)`` float64 :math:`w(x) = \\log\\pi(x) - \\log q(x)` (up to a constant).

    Example::

        state = ps.mcmc.IndependenceMH(p1.as_distribution(), p2_log_prob).init(1000)
        state.x.shape, state.log_weight.shape   # (1000, 2), (1000,)
    """

    x: torch.Tensor
    log_weight: torch.Tensor

    @property
    def num_particles(self) -> int:
        return int(self.x.shape[0])

    def index(self, idx: torch.Tensor) -> "IndependenceState":
        """The chains ``idx`` (e.g. a resampling)."""
        return IndependenceState(self.x[idx], self.log_weight[idx])


def _sampler(proposal: Any) -> Callable[[int], torch.Tensor]:
    """``n -> (n, ...)`` draws of ``proposal``: a distribution (``sample(sample_shape)``), a model with
    ``as_distribution()`` (a GFlowNet), or a callable ``n -> (n, ...)``."""
    make = getattr(proposal, "as_distribution", None)
    if callable(make):
        proposal = make()
    sample = getattr(proposal, "sample", None)
    if callable(sample):
        return lambda n: sample(torch.Size([n]))
    if callable(proposal):
        return proposal
    raise TypeError(
        "proposal must be a distribution with sample(sample_shape), a model with as_distribution() (a GFlowNet) or a "
        f"callable n -> (n, ...) draws, got {type(proposal).__name__}"
    )


class IndependenceMH:
    """Independence Metropolis-Hastings over ``N`` chains, each with its own test (see the module docstring).

    :param proposal: the sampler :math:`q`: a distribution with ``sample(sample_shape)`` (e.g. a GFlowNet's
        ``as_distribution()``), a model with ``as_distribution()`` (a :class:`~pyro_sculpt.gflownets.GFlowNet` or
        :class:`~pyro_sculpt.gflownets.TabularGFlowNet`), or a callable ``n -> (n,) + event_shape``. One batched draw
        of ``N`` proposals per step.
    :param log_weight: :math:`w(x) = \\log\\pi(x) - \\log q(x)` up to a constant, ``x (N, ...) -> (N,)``: for the
        product :math:`\\pi \\propto q\\, e^{-E_2}`, :math:`-E_2` (or :math:`\\log p_2`). Use :meth:`from_target` for a
        target :math:`\\log\\pi` and a proposal with an exact ``log_prob``. ``-inf`` marks states outside the target's
        support (never accepted); NaN reads as a rejection of that chain's proposal.

    Example::

        p1, p2 = ps.gflownets.TabularGFlowNet.from_reward(env, r1), ps.gflownets.TabularGFlowNet.from_reward(env, r2)
        kernel = ps.mcmc.IndependenceMH(p1, p2.as_distribution().log_prob)   # targets p1 * p2
        state = kernel.init(4000)                                            # 4000 chains, started from p1
        for _ in range(50):
            state, info = kernel.step(state)
        state.x                                                              # (4000, 2), one draw per chain
    """

    def __init__(self, proposal: Any, log_weight: LogDensity):
        self.sample = _sampler(proposal)
        self.proposal = proposal
        if not callable(log_weight):
            raise TypeError(f"log_weight must be callable x (N, ...) -> (N,), got {type(log_weight).__name__}")
        self.log_weight = log_weight

    @classmethod
    def from_target(cls, proposal: Any, log_prob: LogDensity) -> "IndependenceMH":
        """The kernel targeting :math:`\\pi \\propto e^{\\text{log_prob}}` with :math:`w = \\log\\pi - \\log q`, for a
        ``proposal`` with an exact ``log_prob(x)`` (a distribution, or a model whose ``as_distribution()`` has one).

        Example::

            d1, d2 = p1.as_distribution(), p2.as_distribution()
            mix = ps.mixture(p1, p2)                                   # proposal: the mixture of the bases
            kernel = ps.mcmc.IndependenceMH.from_target(mix, lambda x: d1.log_prob(x) + d2.log_prob(x))
        """
        if not callable(log_prob):
            raise TypeError(f"log_prob must be callable x (N, ...) -> (N,), got {type(log_prob).__name__}")
        dist = proposal.as_distribution() if callable(getattr(proposal, "as_distribution", None)) else proposal
        q_log_prob = getattr(dist, "log_prob", None)
        if not callable(q_log_prob):
            raise TypeError(
                f"proposal must have an exact log_prob(x) for from_target, got {type(proposal).__name__}; pass "
                "log_weight = log pi - log q to IndependenceMH(proposal, log_weight) instead"
            )
        return cls(dist, lambda x: log_prob(x).double() - q_log_prob(x).double())

    def __repr__(self) -> str:
        return f"IndependenceMH(proposal={type(self.proposal).__name__})"

    def evaluate(self, x: torch.Tensor) -> torch.Tensor:
        """The log-weight at ``x``, checked: ``(N,)`` float64."""
        return per_chain(self.log_weight, x, "log_weight")

    def draw(self, num_chains: int) -> torch.Tensor:
        """``num_chains`` proposals, checked: ``(num_chains,) + event_shape``."""
        with torch.no_grad():
            x = self.sample(num_chains)
        if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] != num_chains:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"proposal returned draws of shape {shape} for {num_chains} chains: expected ({num_chains}, ...)"
            )
        return x.detach()

    def init(self, x: Union[torch.Tensor, int]) -> IndependenceState:
        """The chains at ``x`` ``(N,) + event_shape``, or ``x`` chains started from proposals when ``x`` is an int.

        :raises ValueError: if the log-weight is NaN or :math:`+\\infty` at a start (naming the chain).
        """
        if isinstance(x, int) and not isinstance(x, bool):
            if x < 1:
                raise ValueError(f"x must be a tensor (N, ...) of states or a number of chains >= 1, got {x}")
            x = self.draw(x)
        if not isinstance(x, torch.Tensor) or x.dim() < 1:
            raise ValueError(
                "x must be a tensor (N, ...) of states or a number of chains, got "
                f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}"
            )
        x = x.detach()
        w = self.evaluate(x)
        check_start(w, "the log-weight")
        return IndependenceState(x, w)

    def step(self, state: IndependenceState) -> tuple[IndependenceState, MCMCInfo]:
        """One step of every chain: one batched proposal draw and one test per chain; ``(new_state, info)``
        (``info.step_size`` is NaN: the kernel has none)."""
        if not isinstance(state, IndependenceState):
            raise TypeError(f"state must be an IndependenceState (from kernel.init(x)), got {type(state).__name__}")
        n = state.num_particles
        prop = self.draw(n)
        if prop.shape != state.x.shape:
            raise ValueError(
                f"proposal returned draws of shape {tuple(prop.shape)} for chains of shape {tuple(state.x.shape)}"
            )
        w = self.evaluate(prop)
        # a chain at w = -inf (a start outside the support) accepts any proposal inside it (+inf), none outside (NaN)
        log_alpha = w - state.log_weight.to(w.device)
        prob, acc = metropolis(log_alpha)
        x = select(acc.to(prop.device), prop.to(state.x.dtype), state.x.to(prop.device))
        new = IndependenceState(x, torch.where(acc, w, state.log_weight.to(w.device)))
        nan = torch.full((), math.nan, dtype=torch.float64)
        return new, MCMCInfo(prob, acc, nan, log_alpha)

    def run(self, x: Union[torch.Tensor, int, IndependenceState], num_steps: int) -> tuple[IndependenceState, list]:
        """``num_steps`` steps from ``x`` (states, a number of chains, or a state): ``(state, accept_rates)``, the
        mean acceptance probability of every step.

        Example::

            state, rates = ps.mcmc.IndependenceMH(p1, log_p2).run(4000, 50)
        """
        num_steps = check_positive_int("num_steps", num_steps, minimum=0)
        return run_steps(self.step, x if isinstance(x, IndependenceState) else self.init(x), num_steps)


#: the proposals an :class:`IndependenceRejuvenation` accepts by name
PROPOSALS = ("mixture", "particles")


class IndependenceRejuvenation:
    """Independence Metropolis-Hastings moves for the final particles of an SMC sampler over a composition
    :math:`\\pi \\propto \\exp\\Phi(\\log p_1, \\dots, \\log p_m)` of models with exact samplers and exact
    log-probabilities (docs/mcmc.md): after the last step the sampler resamples its weighted particles and every one
    makes :attr:`num_steps` :class:`IndependenceMH` steps targeting :math:`\\pi`, which leaves the (equal) weights
    unchanged and replaces the duplicates of the resampling by distinct draws. The SMC sampler supplies the target and
    the bases: the twist of a GFlowNet composition (the bases' exact terminal log-probabilities by dynamic programming,
    an enumerable environment) or of a classifier-free diffusion composition whose leaves sample their noised marginals
    exactly (``model.sample(n, t)``, e.g. the Gaussian-mixture oracles; the last level's exact densities).

    :param num_steps: steps per particle.
    :param proposal: ``"mixture"``: the equal mixture of the bases (its density is within a factor :math:`m` of
        every base's, so the chain is uniformly ergodic wherever a base covers :math:`\\pi`); or an int ``i``: base
        ``i`` alone (for a product, then :math:`w = \\sum_{j \\ne i} \\log p_j`); or ``"particles"``: a Gaussian
        kernel density estimate of the resampled particles themselves (:class:`~pyro_sculpt.mcmc.GaussianKDE`;
        continuous states in low dimension), which needs no sampler of the bases, only the target's log-density, and
        stays close to the target where a mixture of the bases is far from it (a negation, whose
        :math:`\\pi / q` is unbounded for any base as :math:`q`).
    :param num_centres: kernels of the ``"particles"`` proposal.
    :param bandwidth: factor on Scott's bandwidth of the ``"particles"`` proposal.
    :param refit: of the ``"particles"`` proposal: ``True`` (default), every step splits the population at random into
        halves and updates each half with a density estimate of the other half's current states
        (:class:`~pyro_sculpt.mcmc.PopulationIndependenceMH`: the proposal follows the population as it moves towards
        :math:`\\pi`, and still no chain's proposal depends on its own state); ``False``, one estimate of the resampled
        particles for every step (:class:`IndependenceMH`), which mixes slowly where that population is far from
        :math:`\\pi` (docs/mcmc.md).
    :param ode_steps: where the sampler has no exact log-densities of its bases at fresh points (a diffusion
        composition of score networks, whose SMC tracks densities along each particle's path), the moves target the
        composition of the bases' probability-flow log-densities, integrated with this many Runge-Kutta steps
        (:func:`~pyro_sculpt.diffusion.probability_flow_log_prob`; ``"particles"`` proposal only).
    :param num_backward: of a GFlowNet composition: ``None`` (default), the bases' exact terminal probabilities by
        dynamic programming (an enumerable environment); an int :math:`K`, importance estimates from :math:`K`
        trajectories sampled backward (:func:`~pyro_sculpt.gflownets.backward.estimate_terminal_log_prob`), on any
        environment that lists parents. The moves are then pseudo-marginal Metropolis-Hastings (Andrieu & Roberts
        2009), exact for a product of distinct bases with a base as the proposal, whose weight is a product of
        independent unbiased estimates; other compositions are refused.

    After a run, :attr:`history` holds the mean acceptance probability of every step.

    Example::

        moves = ps.mcmc.IndependenceRejuvenation(num_steps=20, proposal="mixture")
        res = ps.infer.smc(ps.product(p1, p2), 100_000, moves=moves)
        moves.history[-1]          # the last step's mean acceptance probability
    """

    def __init__(
        self,
        num_steps: int = 10,
        proposal: Union[str, int] = "mixture",
        num_centres: int = 1000,
        bandwidth: float = 1.0,
        ode_steps: int = 100,
        refit: bool = True,
        num_backward: Optional[int] = None,
    ):
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")
        valid_int = isinstance(proposal, int) and not isinstance(proposal, bool) and proposal >= 0
        if not (valid_int or proposal in PROPOSALS):
            raise ValueError(
                f"proposal must be one of {PROPOSALS} or the index (an int >= 0) of a base, got {proposal!r}"
            )
        if isinstance(num_centres, bool) or not isinstance(num_centres, int) or num_centres < 2:
            raise ValueError(f"num_centres must be an int >= 2, got {num_centres!r}")
        check_number("bandwidth", bandwidth, 0.0, strict=True)
        if isinstance(ode_steps, bool) or not isinstance(ode_steps, int) or ode_steps < 1:
            raise ValueError(f"ode_steps must be an int >= 1, got {ode_steps!r}")
        if not isinstance(refit, bool):
            raise ValueError(f"refit must be True or False, got {refit!r}")
        if num_backward is not None and (
            isinstance(num_backward, bool) or not isinstance(num_backward, int) or num_backward < 1
        ):
            raise ValueError(f"num_backward must be None or an int >= 1, got {num_backward!r}")
        self.num_backward = num_backward
        self.num_steps = num_steps
        self.proposal = proposal
        self.refit = refit
        self.ode_steps = ode_steps
        self.num_centres = num_centres
        self.bandwidth = float(bandwidth)
        self.reset()

    def __repr__(self) -> str:
        extra = (
            f", num_centres={self.num_centres}, bandwidth={self.bandwidth}, refit={self.refit}"
            if self.proposal == "particles"
            else ""
        )
        if self.num_backward is not None:
            extra += f", num_backward={self.num_backward}"
        return f"IndependenceRejuvenation(num_steps={self.num_steps}, proposal={self.proposal!r}{extra})"

    def reset(self) -> None:
        """Forget the history (called at the start of every SMC run)."""
        self.history: list = []

    def move(self, x: torch.Tensor, kernel: Any) -> Any:
        """Run :attr:`num_steps` steps of ``kernel`` (an :class:`IndependenceMH` or a
        :class:`~pyro_sculpt.mcmc.PopulationIndependenceMH`) from every particle ``x``; returns the final state."""
        state, rates = run_steps(kernel.step, kernel.init(x), self.num_steps)
        self.history += rates
        return state
