"""What every batched MCMC kernel shares (docs/math.md §2): the state with its cached log-density and gradient, the
per-particle step information, the checks of the target and of step sizes.

A *target* is any callable ``x -> (log_prob, grad)`` with ``x`` of shape ``(N,) + event_shape`` (``N`` particles),
``log_prob`` of shape ``(N,)`` (an unnormalised :math:`\\log \\pi`) and ``grad`` of the shape of ``x``
(:math:`\\nabla_x \\log \\pi`); :mod:`pyro_sculpt.mcmc.targets` builds them. Every kernel treats the ``N`` particles
as ``N`` independent chains: each has its own Metropolis test, and a particle whose target is huge, NaN or infinite
changes nothing for the others.

Kernels follow the functional style: ``state = kernel.init(x)`` evaluates the target once and caches it, and
``state, info = kernel.step(state)`` returns a new state and per-particle :class:`MCMCInfo` without mutating its
input.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Callable, Optional, Union

import torch

#: a target: ``x (N, ...) -> (log pi (N,), grad log pi (N, ...))``
LogProbAndGrad = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
#: a step size: a positive number (one for every particle) or a positive tensor ``(N,)`` (one per particle)
StepSize = Union[float, torch.Tensor]
#: a move whose log Metropolis ratio :math:`\\log\\alpha` falls below minus this is *divergent* (Stan's and NumPyro's
#: threshold on the Hamiltonian's energy error, Betancourt 2017 §6.2): the discretisation has left the target
DIVERGENCE_THRESHOLD = 1000.0


class DivergenceWarning(UserWarning):
    """An unadjusted kernel (ULA, U-HMC), which keeps every move, made a divergent one (:attr:`MCMCInfo.diverging`):
    its step size is far above the stability limit and its chains no longer sample the target.

    Example::

        with warnings.catch_warnings():
            warnings.simplefilter("error", ps.mcmc.DivergenceWarning)   # a divergence stops the run
            state, info = ps.mcmc.ULA(target, step_size=0.01).step(state)
    """


@dataclass(frozen=True)
class MCMCState:
    """The particles of a batch of chains with their cached target values.

    :ivar x: ``(N,) + event_shape`` positions.
    :ivar log_prob: ``(N,)`` float64 :math:`\\log \\pi(x)`.
    :ivar grad: :math:`\\nabla_x \\log \\pi(x)`, the shape of ``x``.
    :ivar momentum: the shape of ``x``, for the Hamiltonian kernels (``None`` otherwise).

    Example::

        state = ps.mcmc.MALA(target, step_size=0.05).init(torch.randn(100, 2))
        state.x.shape, state.log_prob.shape   # (100, 2), (100,)
    """

    x: torch.Tensor
    log_prob: torch.Tensor
    grad: torch.Tensor
    momentum: Optional[torch.Tensor] = None

    @property
    def num_particles(self) -> int:
        return int(self.x.shape[0])

    def index(self, idx: torch.Tensor) -> "MCMCState":
        """The chains ``idx`` (e.g. a resampling)."""
        mom = None if self.momentum is None else self.momentum[idx]
        return MCMCState(self.x[idx], self.log_prob[idx], self.grad[idx], mom)


@dataclass(frozen=True)
class MCMCInfo:
    """What one step did to every particle.

    :ivar accept_prob: ``(N,)`` float64 Metropolis acceptance probability :math:`\\min(1, e^{\\log \\alpha})` (0 where
        :math:`\\log \\alpha` is NaN). Kernels without a test (ULA, U-HMC) report the probability the corresponding
        Metropolis-adjusted kernel would have had: a diagnostic of their discretisation error that also drives the
        step-size adapter.
    :ivar accepted: ``(N,)`` bool, whether the particle moved to its proposal (always true without a test).
    :ivar step_size: the step size used (a number or ``(N,)``).
    :ivar log_accept_ratio: ``(N,)`` float64 :math:`\\log \\alpha` before clipping.
    :ivar diverging: ``(N,)`` bool, for the gradient kernels (ULA, MALA, U-HMC, HMC): whether the proposal was
        divergent, :math:`\\log\\alpha < -1000` (:data:`DIVERGENCE_THRESHOLD`) or NaN at a point of the support
        (the Metropolis kernels reject such a move; the unadjusted ones keep it and warn, :class:`DivergenceWarning`);
        ``None`` for the other kernels.

    Example::

        state, info = kernel.step(state)
        float(info.accept_prob.mean()), int(info.accepted.sum())
    """

    accept_prob: torch.Tensor
    accepted: torch.Tensor
    step_size: torch.Tensor
    log_accept_ratio: torch.Tensor
    diverging: Optional[torch.Tensor] = None

    @property
    def mean_accept_prob(self) -> float:
        """The acceptance probability averaged over particles."""
        return float(self.accept_prob.mean())


def check_step_size(step_size: StepSize, num_particles: Optional[int] = None, name: str = "step_size") -> torch.Tensor:
    """``step_size`` as a float64 tensor of shape ``()`` or ``(N,)``; raise a :class:`ValueError` naming ``name``
    unless every entry is finite and > 0 (and a tensor has shape ``(num_particles,)``)."""
    if isinstance(step_size, bool):
        raise ValueError(f"{name} must be a positive number or a tensor (N,) of them, got {step_size!r}")
    if isinstance(step_size, torch.Tensor):
        h = step_size.detach().double()
        if h.dim() > 1 or (h.dim() == 1 and num_particles is not None and h.shape[0] != num_particles):
            expected = "()" if num_particles is None else f"() or ({num_particles},)"
            raise ValueError(f"{name} must have shape {expected} (one per particle), got {tuple(h.shape)}")
    else:
        try:
            h = torch.tensor(float(step_size), dtype=torch.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a positive number or a tensor (N,) of them, got {step_size!r}") from None
    if not bool(torch.isfinite(h).all()) or not bool((h > 0).all()):
        raise ValueError(f"{name} must be finite and > 0, got {step_size!r}")
    return h


def per_particle(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A number, or a scalar or ``(N,)`` tensor, ``v`` broadcastable against ``like`` ``(N,) + event_shape``, in its
    dtype.

    Example::

        x_new = x + ps.mcmc.per_particle(step_size, x).sqrt() * ps.mcmc.standard_normal(x, "proposal")
    """
    if not isinstance(v, torch.Tensor):
        v = torch.tensor(float(v), dtype=torch.float64)  # not the default dtype: 0.1 stays 0.1 for float64 states
    v = v.to(device=like.device, dtype=like.dtype)
    return v.reshape(v.shape + (1,) * (like.dim() - v.dim())) if v.dim() == 1 else v


def sq_norm(v: torch.Tensor) -> torch.Tensor:
    """:math:`|v|^2` of every particle, ``(N,)`` float64."""
    return v.reshape(v.shape[0], -1).double().pow(2).sum(-1)


def inner(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """:math:`\\langle u, v \\rangle` of every particle, ``(N,)`` float64."""
    return (u.reshape(u.shape[0], -1).double() * v.reshape(v.shape[0], -1).double()).sum(-1)


class NoiseSource:
    """Where the kernels' random numbers come from: torch's global generator (this default), or, inside
    :func:`noise_source`, another source, e.g. Pyro sample sites (:class:`~pyro_sculpt.mcmc.CorrectorMessenger` makes
    every draw of a corrector step a site). Each draw is named by what it is for: ``"proposal"`` (a Langevin
    proposal's noise), ``"momentum"`` (a Hamiltonian kernel's refreshed momentum), ``"initial_momentum"`` (drawn by
    ``init``) or ``"accept"`` (the uniform of a Metropolis test).

    Example::

        class Zeros(ps.mcmc.NoiseSource):
            def normal(self, like, name):
                return torch.zeros_like(like)

        with ps.mcmc.noise_source(Zeros()):
            state, info = ps.mcmc.ULA(target, 0.1).step(state)    # a deterministic gradient step
    """

    def normal(self, like: torch.Tensor, name: str) -> torch.Tensor:
        """Standard normal draws of ``like``'s shape, dtype and device."""
        return torch.randn_like(like)

    def uniform(self, shape: torch.Size, device: torch.device, name: str) -> torch.Tensor:
        """Uniform draws on [0, 1), float64, of shape ``shape``."""
        return torch.rand(shape, dtype=torch.float64, device=device)


_NOISE: list = [NoiseSource()]


@contextmanager
def noise_source(source: Optional[NoiseSource]):
    """Draw the kernels' random numbers from ``source`` inside the context (``None``: leave the current source).

    Example::

        with ps.mcmc.noise_source(my_source):
            state, info = kernel.step(state)
    """
    if source is None:
        yield
        return
    if not isinstance(source, NoiseSource):
        raise TypeError(f"source must be a NoiseSource, got {type(source).__name__}")
    _NOISE.append(source)
    try:
        yield
    finally:
        _NOISE.pop()


def standard_normal(like: torch.Tensor, name: str) -> torch.Tensor:
    """Standard normal draws of ``like``'s shape from the current :class:`NoiseSource` (a Pyro site under a
    corrector), ``name`` saying what they are for (``"proposal"``, ``"momentum"``, ...).

    Example::

        noise = ps.mcmc.standard_normal(state.x, "proposal")
    """
    return _NOISE[-1].normal(like, name)


def standard_uniform(shape: torch.Size, device: torch.device, name: str = "accept") -> torch.Tensor:
    """Uniform float64 draws from the current :class:`NoiseSource`.

    Example::

        u = ps.mcmc.standard_uniform(torch.Size([n]), x.device)
    """
    return _NOISE[-1].uniform(torch.Size(shape), device, name)


def accept_probability(log_alpha: torch.Tensor) -> torch.Tensor:
    """:math:`\\min(1, e^{\\log\\alpha})` per particle, with NaN read as a rejection (probability 0)."""
    log_alpha = torch.nan_to_num(log_alpha.double(), nan=-math.inf)
    return log_alpha.clamp(max=0.0).exp()


def metropolis(log_alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One independent Metropolis test per particle: ``(accept_prob, accepted)``, from ``log_alpha`` ``(N,)`` (NaN
    read as a rejection), its uniform drawn from the current :class:`NoiseSource`.

    Example::

        prob, accepted = ps.mcmc.metropolis(log_p_new - log_p)   # a random-walk Metropolis test
    """
    prob = accept_probability(log_alpha)
    u = standard_uniform(prob.shape, prob.device, "accept")
    return prob, u < prob


def per_chain(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, name: str) -> torch.Tensor:
    """``fn(x)`` without gradients, checked to be one value per chain: ``(N,)`` float64 (``name`` names ``fn`` in the
    error)."""
    with torch.no_grad():
        v = fn(x)
    n = x.shape[0]
    if not isinstance(v, torch.Tensor) or tuple(v.shape) != (n,):
        shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
        raise ValueError(
            f"{name} returned shape {shape} for x of shape {tuple(x.shape)}: expected ({n},), one per chain"
        )
    return v.detach().double()


def check_start(log_p: torch.Tensor, what: str, unit: str = "chain") -> None:
    """Raise a :class:`ValueError` naming the first ``unit`` whose start ``log_p`` (``(N,)``, ``what`` in the message)
    is NaN or :math:`+\\infty`; a start at :math:`-\\infty` (outside the support) is allowed."""
    bad = torch.nonzero(torch.isnan(log_p) | (log_p == math.inf)).flatten()
    if bad.numel():
        raise ValueError(f"x: {what} is {float(log_p[bad[0]])} at {unit} {int(bad[0])}")


def run_steps(step: Callable, state, num_steps: int) -> tuple:
    """``num_steps`` calls ``state, info = step(state)``: ``(state, accept_rates)``, the mean acceptance probability
    of every step (the ``run`` of the kernels without a step size; ``num_steps`` checked by the caller)."""
    rates = []
    for _ in range(num_steps):
        state, info = step(state)
        rates.append(info.mean_accept_prob)
    return state, rates


def finite_proposal(x: torch.Tensor, log_p: Optional[torch.Tensor], grad: torch.Tensor) -> torch.Tensor:
    """``(N,)``: whether each particle's proposal is usable (position, gradient and log-density finite): what an
    unadjusted kernel, which has no Metropolis test to reject it, keeps (a NaN, a divergence to infinity, or a point
    outside the support is rejected alone)."""
    n = x.shape[0]
    ok = torch.isfinite(x.reshape(n, -1)).all(-1) & torch.isfinite(grad.reshape(n, -1)).all(-1)
    if log_p is not None:
        ok = ok & torch.isfinite(log_p)
    return ok


def divergent(log_alpha: torch.Tensor, log_p: Optional[torch.Tensor]) -> torch.Tensor:
    """``(N,)``: whether each proposal is divergent (:attr:`MCMCInfo.diverging`): its log Metropolis ratio is below
    :math:`-`:data:`DIVERGENCE_THRESHOLD` or NaN, unless the proposal lies outside the support (``log_p`` of
    :math:`-\\infty`, an ordinary rejection)."""
    bad = ~(log_alpha >= -DIVERGENCE_THRESHOLD)
    return bad if log_p is None else bad & (log_p != -math.inf)


def warn_divergent(kernel: "MCMCKernel", diverging: torch.Tensor, accepted: torch.Tensor) -> None:
    """Warn (:class:`DivergenceWarning`) if an unadjusted ``kernel`` kept a divergent move."""
    if bool((diverging & accepted).any()):
        warnings.warn(
            f"{type(kernel).__name__}: a chain kept a divergent move (the log acceptance ratio of the Metropolis-"
            f"adjusted kernel below -{DIVERGENCE_THRESHOLD:g}): its step size is far above the stability limit and "
            "its chains no longer sample the target; reduce step_size, adapt it (ps.mcmc.StepSizeAdapter), or use a "
            "kernel with a Metropolis test (MALA, HMC). MCMCInfo.diverging flags the chains",
            DivergenceWarning,
            stacklevel=4,
        )


def select(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a`` where ``mask`` (``(N,)``) else ``b``, per particle (new tensor; NaNs of the unselected side are
    dropped).

    Example::

        x = ps.mcmc.select(accepted, x_new, x)
    """
    return torch.where(mask.reshape(mask.shape + (1,) * (a.dim() - 1)), a, b)


class MCMCKernel(ABC):
    """A batched MCMC kernel over ``N`` independent chains (docs/math.md §2).

    :param log_prob_and_grad: the target, ``x (N, ...) -> (log pi (N,), grad (N, ...))``.
    :param step_size: a positive number, or a positive tensor ``(N,)`` (one per particle).
    :param line_integral: ``None`` (default): the Metropolis test takes :math:`l(x') - l(x)` from the target's
        log-densities; an integer :math:`K \\ge 2`: from the trapezoid rule on :math:`K` points of the score along the
        segment from :math:`x` to :math:`x'` (:mod:`~pyro_sculpt.mcmc.line_integral`; Sjöberg et al. 2023), for
        targets whose log-density is unknown (:func:`~pyro_sculpt.mcmc.score_target`: score-only models). The state's
        ``log_prob`` is then the running estimate of :math:`l(x) - l(x_0)` from the chain's start. A Metropolis-adjusted
        kernel (MALA, HMC) on a score-only target without ``line_integral`` raises a :class:`ValueError`; the
        unadjusted ones (ULA, U-HMC) use :math:`K = 2` (no extra score evaluation) for their diagnostic acceptance
        probability.

    Subclasses implement :meth:`_step` (``(state, step_size (N,) or ()) -> (state, info)``), evaluating the target
    with :meth:`evaluate` and drawing every random number with :func:`standard_normal` and :func:`metropolis` (or
    :func:`standard_uniform`), all in ``ps.mcmc``: those draws come from the current :class:`NoiseSource`, so under
    :func:`~pyro_sculpt.mcmc.corrector` each is a Pyro sample site that a trace can replay; a draw from
    ``torch.randn`` is invisible to Pyro (no site, a replayed trace with another log-probability).
    :func:`per_particle` broadcasts a step size against the states and :func:`select` keeps each particle's move or
    its old value. The kernel is then passed by class where kernels plug in (``ps.mcmc.Rejuvenation(kernel=MyKernel,
    ...)``, ``ps.mcmc.corrector(kernel=MyKernel, ...)``); no registration. :attr:`default_target_accept` is the
    acceptance rate the step-size adapter aims at by default.

    Example::

        kernel = ps.mcmc.HMC(target, step_size=0.1, num_leapfrog=5)   # any subclass
        state = kernel.init(torch.randn(1000, 2))
        state, info = kernel.step(state)
    """

    #: whether the kernel has a Metropolis test (and so leaves the target exactly invariant)
    exact: bool = True
    #: the default acceptance rate for :class:`~pyro_sculpt.mcmc.adaptation.StepSizeAdapter`
    default_target_accept: float = 0.65
    #: whether the state carries a momentum
    uses_momentum: bool = False

    def __init__(self, log_prob_and_grad: LogProbAndGrad, step_size: StepSize, *, line_integral: Optional[int] = None):
        if not callable(log_prob_and_grad):
            raise TypeError(f"log_prob_and_grad must be callable x -> (log_prob, grad), got {log_prob_and_grad!r}")
        self.log_prob_and_grad = log_prob_and_grad
        self.step_size = check_step_size(step_size)
        if line_integral is not None:
            from pyro_sculpt.mcmc.line_integral import check_num_points

            line_integral = check_num_points(line_integral)
        elif getattr(log_prob_and_grad, "score_only", False):
            if self.exact:
                raise ValueError(
                    f"{type(self).__name__}: the target is score-only (no log-density), so an exact Metropolis test is "
                    "impossible: pass line_integral=K (an integer >= 2) to estimate l(x') - l(x) by the trapezoid rule "
                    "on K points of the score (Sjöberg et al. 2023), use a model with energies (log_prob(x, t)), or an "
                    "unadjusted kernel (ULA, UHMC)"
                )
            line_integral = 2  # the unadjusted kernels' diagnostic acceptance probability: free end-point rule
        self.line_integral = line_integral

    def log_target_ratio(
        self, x: torch.Tensor, x_new: torch.Tensor, log_p: torch.Tensor, log_p_new: torch.Tensor, grad, grad_new
    ) -> torch.Tensor:
        """:math:`l(x') - l(x)` per particle, ``(N,)`` float64: from the log-densities, or the trapezoid line integral
        of the score with :attr:`line_integral` points."""
        if self.line_integral is None:
            return log_p_new - log_p
        from pyro_sculpt.mcmc.line_integral import trapezoid_log_ratio

        return trapezoid_log_ratio(self.evaluate, x, x_new, grad, grad_new, self.line_integral)

    def __repr__(self) -> str:
        h = self.step_size
        extra = "" if self.line_integral is None else f", line_integral={self.line_integral}"
        return f"{type(self).__name__}(step_size={float(h) if h.dim() == 0 else tuple(h.shape)}{extra})"

    def evaluate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The target at ``x``, checked: ``(log_prob (N,) float64, grad)``."""
        out = self.log_prob_and_grad(x)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError("log_prob_and_grad must return a pair (log_prob (N,), grad (N, ...))")
        log_p, grad = out
        n = x.shape[0]
        if not isinstance(log_p, torch.Tensor) or tuple(log_p.shape) != (n,):
            shape = tuple(log_p.shape) if isinstance(log_p, torch.Tensor) else type(log_p).__name__
            raise ValueError(
                f"log_prob_and_grad returned a log-density of shape {shape} for x of shape {tuple(x.shape)}: expected "
                f"({n},), one per particle"
            )
        if not isinstance(grad, torch.Tensor) or grad.shape != x.shape:
            shape = tuple(grad.shape) if isinstance(grad, torch.Tensor) else type(grad).__name__
            raise ValueError(
                f"log_prob_and_grad returned a gradient of shape {shape} for x of shape {tuple(x.shape)}: expected the "
                "shape of x"
            )
        return log_p.double(), grad.to(x.dtype)

    def init(self, x: torch.Tensor) -> MCMCState:
        """The state of chains at ``x`` ``(N,) + event_shape``: evaluates and caches the target (and draws a
        momentum for the Hamiltonian kernels). Raises a :class:`ValueError` if a log-density is NaN or
        :math:`+\\infty`, a gradient is not finite where the log-density is, or a per-particle step size does not
        have ``N`` entries."""
        if not isinstance(x, torch.Tensor) or x.dim() < 1 or not x.is_floating_point():
            raise ValueError(
                f"x must be a floating tensor (N,) + event_shape, got "
                f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}"
            )
        check_step_size(self.step_size, x.shape[0])
        x = x.detach()
        log_p, grad = self.evaluate(x)
        check_start(log_p, "the target's log-density", "particle")
        bad = torch.nonzero(torch.isfinite(log_p) & ~torch.isfinite(grad.reshape(grad.shape[0], -1)).all(-1)).flatten()
        if bad.numel():
            raise ValueError(
                f"x: the target's gradient has NaN or infinite entries at particle {int(bad[0])}, where its "
                "log-density is finite (every move from there would be rejected)"
            )
        mom = standard_normal(x, "initial_momentum") if self.uses_momentum else None
        return MCMCState(x, log_p, grad, mom)

    def step(self, state: MCMCState, step_size: Optional[StepSize] = None) -> tuple[MCMCState, MCMCInfo]:
        """One step of every chain: ``(new_state, info)``.

        :param state: from :meth:`init` or a previous step.
        :param step_size: overrides the kernel's step size for this step (e.g. an adapter's), a number or ``(N,)``.
        """
        if not isinstance(state, MCMCState):
            raise TypeError(f"state must be an MCMCState (from kernel.init(x)), got {type(state).__name__}")
        if self.uses_momentum and state.momentum is None:
            raise ValueError(f"state has no momentum: {type(self).__name__} needs a state from its own init")
        h = self.step_size if step_size is None else step_size
        h = check_step_size(h, state.num_particles).to(state.x.device)
        new, info = self._step(state, h)
        if new.log_prob is not None and bool((new.log_prob == math.inf).any()):  # one check per step, not per call
            pole = int(torch.nonzero(new.log_prob == math.inf).flatten()[0])
            raise ValueError(
                f"log_prob_and_grad returned +inf at particle {pole}'s accepted move: a log-density must be finite, "
                "or -inf outside the support (a target with a pole cannot be normalised, and a Metropolis test "
                "accepts every move onto it)"
            )
        return new, info

    @abstractmethod
    def _step(self, state: MCMCState, step_size: torch.Tensor) -> tuple[MCMCState, MCMCInfo]:
        """One step with a checked step size (``()`` or ``(N,)`` float64)."""

    def with_step_size(self, step_size: StepSize) -> "MCMCKernel":
        """A copy of this kernel with another step size."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.step_size = check_step_size(step_size)
        return new


def replace_momentum(state: MCMCState, momentum: torch.Tensor) -> MCMCState:
    """``state`` with another momentum."""
    return replace(state, momentum=momentum)
