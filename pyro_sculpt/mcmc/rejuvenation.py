"""MCMC rejuvenation moves for sequential Monte Carlo samplers (resample-move; Gilks & Berzuini 2001; Del Moral,
Doucet & Jasra 2006, §3.3).

After the particles of an SMC sampler are resampled at a level whose target :math:`\\pi_t` is known exactly, moving
each of them with a kernel that leaves :math:`\\pi_t` invariant keeps the weighted system a valid approximation of
:math:`\\pi_t` *without changing the weights*, and gives the duplicated ancestors distinct positions again. A
:class:`Rejuvenation` describes those moves: the kernel, the number of steps per level, the step size and its
adaptation across levels. The SMC sampler (e.g. the diffusion composition's twist,
:class:`~pyro_sculpt.sculpting.diffusion.composed.ComposedDiffusionTwist`) supplies the level's target.

Exact invariance needs a Metropolis-adjusted kernel (MALA, HMC); ULA and U-HMC are biased by their discretisation.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Optional, Union

import torch

from pyro_sculpt.mcmc.adaptation import StepSizeAdapter, check_target_accept
from pyro_sculpt.mcmc.base import LogProbAndGrad, MCMCKernel, MCMCState, StepSize, check_step_size
from pyro_sculpt.mcmc.hmc import HMC
from pyro_sculpt.mcmc.mala import MALA
from pyro_sculpt.mcmc.uhmc import UHMC
from pyro_sculpt.mcmc.ula import ULA
from pyro_sculpt.utils import check_positive_int

#: the kernels a :class:`Rejuvenation` accepts by name
KERNELS = {"ula": ULA, "mala": MALA, "uhmc": UHMC, "hmc": HMC}
#: when the moves run: after each resampling, or at every level
WHEN = ("resample", "step")


class Rejuvenation:
    """MCMC moves at the levels of an SMC sampler (see the module docstring).

    :param kernel: ``"mala"``, ``"hmc"``, ``"ula"``, ``"uhmc"`` or an :class:`~pyro_sculpt.mcmc.base.MCMCKernel`
        subclass (called as ``kernel(target, step_size, **kernel_options)``).
    :param num_steps: kernel steps per level and particle: a number (>= 1), or a function of the level's noise time
        returning the number for that level (an integer >= 0; 0 leaves the level unmoved), e.g.
        ``lambda t: 200 if t <= 0.1 else 5``: on the Reduce-Reuse-Recycle product the level targets' mode weights keep
        moving until t of about 0.02 while local moves still cross between modes down to about 0.03, so steps spent
        there buy more than steps spread evenly (docs/mcmc.md).
    :param step_size: the initial step size (a number; one for all particles).
    :param target_accept: the acceptance rate the step size is adapted to, in (0, 1); ``None``: the kernel's default
        (0.574 for MALA, 0.65 for HMC).
    :param adapt: adapt the step size after every kernel step, from the mean acceptance probability over particles
        (:class:`~pyro_sculpt.mcmc.adaptation.StepSizeAdapter` with a constant gain ``rate``, so the step size
        follows the levels as they sharpen); ``False``: keep ``step_size``.
    :param when: ``"resample"``: after each resampling of the SMC sampler; ``"step"``: at every level.
    :param rate: the adapter's gain.
    :param kernel_options: passed to the kernel (e.g. ``num_leapfrog=3`` for HMC).

    After a run, :attr:`history` holds one record per level moved: the level, the step size, the mean acceptance
    probability and the number of divergent moves (:attr:`~pyro_sculpt.mcmc.base.MCMCInfo.diverging`, summed over
    the particles and the level's steps); :attr:`num_evaluations` counts target evaluations per particle.

    Example::

        dist = ps.product(EulerMaruyamaSampler(ring, 100), EulerMaruyamaSampler(gauss, 100))
        moves = ps.mcmc.Rejuvenation("mala", num_steps=5, step_size=0.05)
        res = ps.infer.smc(dist, 4000, moves=moves)
        moves.history[-1]        # {'level': ..., 'step_size': ..., 'accept_rate': ..., 'num_divergent': 0}
    """

    def __init__(
        self,
        kernel: Union[str, type] = "mala",
        num_steps: Union[int, Callable[[float], int]] = 5,
        step_size: StepSize = 0.05,
        *,
        target_accept: Optional[float] = None,
        adapt: bool = True,
        when: str = "resample",
        rate: float = 0.5,
        **kernel_options: Any,
    ):
        if isinstance(kernel, str):
            if kernel.lower() not in KERNELS:
                raise ValueError(f"kernel must be one of {sorted(KERNELS)} or an MCMCKernel subclass, got {kernel!r}")
            kernel = KERNELS[kernel.lower()]
        if not (isinstance(kernel, type) and issubclass(kernel, MCMCKernel)):
            raise TypeError(f"kernel must be one of {sorted(KERNELS)} or an MCMCKernel subclass, got {kernel!r}")
        self.kernel = kernel
        if callable(num_steps):
            self.num_steps = num_steps
        else:
            self.num_steps = check_positive_int("num_steps", num_steps)
        h = check_step_size(step_size)
        if h.dim() != 0:
            raise ValueError(f"step_size must be a number (one for all particles), got shape {tuple(h.shape)}")
        self.initial_step_size = float(h)
        tgt = kernel.default_target_accept if target_accept is None else target_accept
        self.target_accept = check_target_accept(tgt)
        if not isinstance(adapt, bool):
            raise ValueError(f"adapt must be True or False, got {adapt!r}")
        self.adapt = adapt
        if when not in WHEN:
            raise ValueError(f"when must be one of {WHEN}, got {when!r}")
        self.when = when
        self.rate = rate
        self.kernel_options = kernel_options
        try:
            kernel(lambda x: (x, x), self.initial_step_size, **kernel_options)  # check the options now
        except TypeError as err:
            raise ValueError(
                f"kernel {kernel.__name__} does not take the options {sorted(kernel_options)} ({err}); see its "
                "documentation (e.g. num_leapfrog for HMC kernels, line_integral for any)"
            ) from None
        StepSizeAdapter(self.initial_step_size, self.target_accept, rate=rate)
        self.reset()

    def __repr__(self) -> str:
        return (
            f"Rejuvenation({self.kernel.__name__}, num_steps={self.num_steps}, step_size={self.initial_step_size}, "
            f"target_accept={self.target_accept}, adapt={self.adapt}, when={self.when!r})"
        )

    def reset(self) -> None:
        """Forget the adapted step size and the history (called at the start of every SMC run)."""
        self.adapter = StepSizeAdapter(self.initial_step_size, self.target_accept, rate=self.rate)
        self.history: list = []
        self.num_evaluations = 0

    @property
    def step_size(self) -> float:
        """The current (adapted) step size."""
        return float(self.adapter.step_size)

    def steps_at(self, level: Any) -> int:
        """The number of kernel steps at noise level ``level`` (:attr:`num_steps`, or its value at ``level``)."""
        if not callable(self.num_steps):
            return self.num_steps
        if level is None:
            raise ValueError("num_steps is a function of the noise level, but these moves were given no level")
        k = self.num_steps(float(level))
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0:
            raise ValueError(f"num_steps({float(level):.4g}) must return an integer >= 0, got {k!r}")
        return int(k)

    def move(self, x: torch.Tensor, target: LogProbAndGrad, level: Any = None) -> MCMCState:
        """Run :meth:`steps_at` ``(level)`` kernel steps on every particle ``x`` ``(N, ...)`` targeting ``target``;
        returns the final :class:`~pyro_sculpt.mcmc.base.MCMCState` (its ``log_prob`` is the target at the new
        positions; with 0 steps, at ``x``)."""
        num_steps = self.steps_at(level)
        kernel = self.kernel(target, self.adapter.step_size, **self.kernel_options)
        state = kernel.init(x)
        if num_steps == 0:
            self.num_evaluations += 1
            return state
        rates, sizes, divergent = [], [], 0
        for _ in range(num_steps):
            state, info = kernel.step(state, step_size=self.adapter.step_size)
            rates.append(info.mean_accept_prob)
            sizes.append(float(info.step_size.mean()))
            if info.diverging is not None:
                divergent = divergent + info.diverging.sum()  # a tensor: read once per level
            if self.adapt:
                self.adapter.update(info)
        per_step = getattr(kernel, "num_leapfrog", 1)
        points = getattr(kernel, "line_integral", None)
        if points is not None:
            per_step += points - 2  # the line integral's inner points along each proposal (its ends are evaluated)
        self.num_evaluations += 1 + num_steps * per_step
        mean_h, mean_a = sum(sizes) / len(sizes), sum(rates) / len(rates)
        self.history.append(
            {"level": level, "step_size": mean_h, "accept_rate": mean_a, "num_divergent": int(divergent)}
        )
        return state
