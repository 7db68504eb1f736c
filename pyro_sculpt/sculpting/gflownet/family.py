"""GFlowNets as a composition family: bases that are discrete policy processes on one environment."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from pyro_sculpt.gflownets.policy_process import DiscretePolicyProcess
from pyro_sculpt.sculpting.family import register_family
from pyro_sculpt.sculpting.gflownet.bases import base_processes
from pyro_sculpt.sculpting.gflownet.composed import ComposedProcess
from pyro_sculpt.sculpting.gflownet.mixture import MixtureProcess
from pyro_sculpt.sculpting.gflownet.sculpted import SculptedProcess


class GFlowNetFamily:
    """Mixture: :class:`MixtureProcess`; sculpting: :class:`SculptedProcess` (the guided policy, docs/math.md §1.1)."""

    name = "GFlowNet"
    base_description = "a GFlowNet, a composition, or their distribution"

    def mixture(self, bases: Sequence[Any], weights: Optional[Sequence[float]]) -> MixtureProcess:
        return MixtureProcess(base_processes(bases), weights)

    def sculpt(self, bases, classifier, y, alpha, weights, gamma: float) -> SculptedProcess:
        if gamma != 1.0:
            raise ValueError(f"gamma applies to diffusion bases only; GFlowNet guidance is exact, got gamma={gamma!r}")
        return SculptedProcess(base_processes(bases), classifier, y, alpha, weights)

    def compose(self, bases, operator, gamma: float) -> ComposedProcess:
        if gamma != 1.0:
            raise ValueError(f"gamma applies to diffusion bases only; got gamma={gamma!r} for GFlowNet bases")
        return ComposedProcess(bases, operator)


register_family(DiscretePolicyProcess, GFlowNetFamily())
