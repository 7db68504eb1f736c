"""Running a batch of chains for a number of steps, with or without step-size adaptation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

import torch

from pyro_sculpt.mcmc.adaptation import StepSizeAdapter
from pyro_sculpt.mcmc.base import MCMCKernel, MCMCState
from pyro_sculpt.utils import check_positive_int


@dataclass
class ChainTrace:
    """Diagnostics of :func:`run_chains`, one entry per step.

    :ivar accept_rate: mean acceptance probability over particles.
    :ivar step_size: the (mean) step size used.
    :ivar num_divergent: chains whose move was divergent (:attr:`~pyro_sculpt.mcmc.base.MCMCInfo.diverging`; 0 for
        kernels that do not report it).

    Example::

        state, trace = ps.mcmc.run_chains(ps.mcmc.MALA(target, 0.1), torch.randn(500, 2), 200)
        trace.accept_rate[-1], trace.step_size[-1]
    """

    accept_rate: list = field(default_factory=list)
    step_size: list = field(default_factory=list)
    num_divergent: list = field(default_factory=list)


def run_chains(
    kernel: MCMCKernel,
    x: Union[torch.Tensor, MCMCState],
    num_steps: int,
    *,
    adapter: Optional[StepSizeAdapter] = None,
) -> tuple[MCMCState, ChainTrace]:
    """``num_steps`` steps of ``kernel`` from ``x`` (positions or a state), adapting the step size after every step
    when an ``adapter`` is given: ``(state, trace)``.

    Example::

        kernel = ps.mcmc.MALA(target, 0.1)
        state, trace = ps.mcmc.run_chains(kernel, x, 200, adapter=ps.mcmc.StepSizeAdapter(0.1, 0.574))
    """
    num_steps = check_positive_int("num_steps", num_steps, minimum=0)
    state = x if isinstance(x, MCMCState) else kernel.init(x)
    trace = ChainTrace()
    for _ in range(num_steps):
        h = None if adapter is None else adapter.step_size
        state, info = kernel.step(state, step_size=h)
        trace.accept_rate.append(info.mean_accept_prob)
        trace.step_size.append(float(info.step_size.mean()))
        trace.num_divergent.append(0 if info.diverging is None else int(info.diverging.sum()))
        if adapter is not None:
            adapter.update(info)
    return state, trace
