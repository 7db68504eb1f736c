"""Composition families: how the operators find the mixture and sculpted processes of a set of bases.

A family (GFlowNets, diffusion models, ...) registers the process types of its bases with :func:`register_family`;
:func:`family_of` looks a base's type up along its method resolution order, in the manner of
:func:`functools.singledispatch`. The operators (:mod:`pyro_sculpt.sculpting.operators`) never name a family.
"""

from __future__ import annotations

from typing import Any, Optional, Protocol, Sequence

from pyro_sculpt.processes.distribution import ProcessDistribution
from pyro_sculpt.processes.process import IterativeProcess


class CompositionFamily(Protocol):
    """What a family provides to the operators.

    Example::

        family = ps.sculpting.family_of([p1, p2])  # the CompositionFamily of GFlowNets
        mix = family.mixture([p1, p2], None)
    """

    #: a short name for messages ("GFlowNet", "diffusion")
    name: str
    #: what a base of this family is, for messages ("a GFlowNet, a composition, or their distribution")
    base_description: str

    def mixture(self, bases: Sequence[Any], weights: Optional[Sequence[float]]) -> IterativeProcess:
        """The exact mixture process :math:`\\sum_i w_i p_i` of ``bases``."""

    def sculpt(
        self,
        bases: Sequence[Any],
        classifier: Any,
        y: Sequence[Optional[int]],
        alpha: Optional[float],
        weights: Optional[Sequence[float]],
        gamma: float,
    ) -> IterativeProcess:
        """The sculpted process :math:`\\tilde p(x \\mid y)` of ``bases`` guided by ``classifier``."""

    def compose(self, bases: Sequence[Any], operator: Any, gamma: float) -> IterativeProcess:
        """A process for the composition :math:`\\propto \\exp \\Phi(\\log p_1(x), \\dots, \\log p_m(x))` of the
        leaves ``bases`` (``operator`` a :class:`~pyro_sculpt.sculpting.log_operators.LogOperator` on them), without a
        classifier. Its own steps are a proposal that follows the operator (``gamma`` scales the guidance terms of
        diffusion proposals); its ``twist()`` gives :func:`pyro_sculpt.infer.smc` the weights that correct the
        particles to the exact composition. It carries ``composition`` (a
        :class:`~pyro_sculpt.sculpting.log_operators.Composition`), so that it nests in other operators."""


_FAMILIES: dict[type, CompositionFamily] = {}


def register_family(process_type: type, family: CompositionFamily) -> None:
    """Make ``family`` the composition family of every process of type ``process_type`` (and its subclasses).

    Example::

        ps.sculpting.register_family(MyProcess, MyFamily())  # then ps.mixture(MyProcess(...), ...) works
    """
    _FAMILIES[process_type] = family


def as_process(base: Any) -> Any:
    """A base given as a process or as its :class:`~pyro_sculpt.processes.ProcessDistribution`: the process."""
    return base.process if isinstance(base, ProcessDistribution) else base


def family_of(bases: Sequence[Any], name: str = "bases") -> CompositionFamily:
    """The one composition family of ``bases``.

    :raises TypeError: for a base of no registered family, or bases of different families.

    Example::

        family = ps.sculpting.family_of([p1, p2])
    """
    if isinstance(bases, (IterativeProcess, ProcessDistribution)) or not hasattr(bases, "__iter__"):
        raise TypeError(f"{name} must be a sequence of base models, got {type(bases).__name__}")
    bases = list(bases)
    if not bases:
        raise ValueError(f"{name} must hold at least two base models, got 0")
    found = [next((_FAMILIES[c] for c in type(as_process(b)).__mro__ if c in _FAMILIES), None) for b in bases]
    first = next((f for f in found if f is not None), None)
    for k, (b, fam) in enumerate(zip(bases, found)):
        if fam is None:
            if first is not None:  # the other bases say which family is meant
                raise TypeError(f"{name}[{k}] must be {first.base_description}; got {type(b).__name__}")
            known = ", ".join(sorted({f.name for f in _FAMILIES.values()}))
            raise TypeError(
                f"{name}[{k}] must be a base model of a composition family ({known}) or its distribution, got "
                f"{type(b).__name__}"
            )
    for k, (b, fam) in enumerate(zip(bases, found)):
        if fam is not found[0]:
            raise TypeError(
                f"{name}[{k}] must be {found[0].base_description}, like {name}[0] (every base of a composition is of "
                f"one family); got a {fam.name} base, {type(b).__name__}"
            )
    return found[0]
