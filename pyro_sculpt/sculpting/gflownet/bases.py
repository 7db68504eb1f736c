"""The condition every set of GFlowNet bases must meet: one environment and one backward policy."""

from __future__ import annotations

from typing import Any, Sequence

from pyro_sculpt.gflownets.env import DiscreteEnv
from pyro_sculpt.gflownets.policy_process import DiscretePolicyProcess
from pyro_sculpt.processes.distribution import ProcessDistribution
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
    """Refuse a classifier made for other bases, or for the same bases in another order (its output :math:`i` is the
    probability of *its* base :math:`i`: a permutation silently composes the wrong models).

    An :class:`~pyro_sculpt.sculpting.ExactClassifier` is computed from its bases, so they must be these very bases,
    in this order. A learned classifier remembers the bases it was built or fitted for (``classifier.bases``, when
    set); bases that are all other objects are accepted (e.g. the same models loaded again from checkpoints), but a
    permutation or a partial overlap with them is refused.

    :raises ValueError: naming the classifier's bases and the given ones.
    """
    known = getattr(classifier, "bases", None)
    if not known:
        return
    known = [b.process if isinstance(b, ProcessDistribution) else b for b in known]
    given = [b.process if isinstance(b, ProcessDistribution) else b for b in bases]
    where = [next((j for j, k in enumerate(known) if k is b), None) for b in given]
    if len(known) == len(given) and where == list(range(len(given))):
        return
    if (
        not getattr(classifier, "defined_by_bases", False)
        and all(w is None for w in where)
        and len(known) == len(given)
    ):
        return  # other objects throughout: e.g. the same models loaded again
    raise ValueError(
        f"classifier was made for other bases: the given bases are, by position, its bases {where} (None: not one of "
        f"its {len(known)} bases); its output i is the probability of its own base i, so pass the bases in the "
        "classifier's order, or build a classifier for these bases"
    )
