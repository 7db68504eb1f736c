"""The condition every set of GFlowNet bases must meet: one environment and one backward policy."""

from __future__ import annotations

from typing import Any, Sequence

from pyro_sculpt.gflownets.env import DiscreteEnv
from pyro_sculpt.gflownets.policy_process import DiscretePolicyProcess
from pyro_sculpt.processes.distribution import ProcessDistribution
from pyro_sculpt.sculpting.bases import check_classifier_bases as check_classifier_bases_by
from pyro_sculpt.sculpting.bases import check_shared


def check_bases(bases: Sequence[DiscretePolicyProcess], name: str = "bases", *, single: bool = False) -> DiscreteEnv:
    """Check that ``bases`` are at least two discrete policy processes on one environment with one backward policy
    (or, with ``single``, one or more: the leaves of a composition whose bases are all one model, ``p1 * p1``)."""
    bases = [b.process if isinstance(b, ProcessDistribution) else b for b in bases]
    for k, b in enumerate(bases):
        if not isinstance(b, DiscretePolicyProcess):
            raise TypeError(f"{name}[{k}] must be a GFlowNet or another DiscretePolicyProcess, got {type(b).__name__}")
    if single and len(bases) == 1:
        return bases[0].env
    check_shared(bases, name, "environment", lambda b: b.env.config(), "every base must share one environment")
    check_shared(
        bases,
        name,
        "backward policy",
        lambda b: b.backward_policy,
        "sculpting needs every base to share one backward policy",
    )
    env = bases[0].env
    return env


def base_processes(bases, name: str = "bases", *, single: bool = False) -> list:
    """The processes of ``bases`` (processes or their distributions), checked by :func:`check_bases`."""
    procs = [b.process if isinstance(b, ProcessDistribution) else b for b in bases]
    check_bases(procs, name, single=single)
    return procs


def check_classifier_bases(classifier: Any, bases: Sequence[Any]) -> None:
    """:func:`pyro_sculpt.sculpting.bases.check_classifier_bases` for GFlowNet bases (processes or their
    distributions)."""
    check_classifier_bases_by(
        classifier, bases, lambda b: b.process if isinstance(b, ProcessDistribution) else b, strict=True
    )
