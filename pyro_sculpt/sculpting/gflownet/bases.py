"""The condition every set of GFlowNet bases must meet: one environment and one backward policy."""

from __future__ import annotations

from typing import Sequence

from pyro_sculpt.gflownets.env import DiscreteEnv
from pyro_sculpt.gflownets.policy_process import DiscretePolicyProcess
from pyro_sculpt.processes.distribution import ProcessDistribution


def check_bases(bases: Sequence[DiscretePolicyProcess], name: str = "bases") -> DiscreteEnv:
    """Check that ``bases`` are at least two discrete policy processes on one environment with one backward policy."""
    bases = [b.process if isinstance(b, ProcessDistribution) else b for b in bases]
    if len(bases) < 2:
        raise ValueError(f"{name} must hold at least two base models, got {len(bases)}")
    for k, b in enumerate(bases):
        if not isinstance(b, DiscretePolicyProcess):
            raise TypeError(f"{name}[{k}] must be a GFlowNet or another DiscretePolicyProcess, got {type(b).__name__}")
    env = bases[0].env
    for k, b in enumerate(bases[1:], 1):
        if not env.same_as(b.env):
            raise ValueError(
                f"{name}[{k}] lives on {b.env.config()}, but {name}[0] on {env.config()}: every base "
                "must share one environment"
            )
        if b.backward_policy != bases[0].backward_policy:
            raise ValueError(
                f"{name}[{k}] has backward policy {b.backward_policy!r}, but {name}[0] has "
                f"{bases[0].backward_policy!r}: sculpting needs every base to share one backward policy"
            )
    return env


def base_processes(bases, name: str = "bases") -> list:
    """The processes of ``bases`` (processes or their distributions), checked by :func:`check_bases`."""
    procs = [b.process if isinstance(b, ProcessDistribution) else b for b in bases]
    check_bases(procs, name)
    return procs
