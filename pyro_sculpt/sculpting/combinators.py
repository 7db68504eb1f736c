"""Composition operators on GFlowNets and diffusion models, each a Pyro distribution (Garipov et al. 2023, Table 1;
MATH.md §1).

Every operator returns a :class:`~pyro_sculpt.processes.ProcessDistribution`: sample it (guided and vectorised over
particles), score it (exactly on enumerable spaces, by dynamic programming over the guided policy), run its steps
in a Pyro program with :func:`pyro_sculpt.run`, or use it as a base of a new composition. Indices are 0-based.

Diffusion bases (reverse-diffusion samplers built with the same sampler arguments, or their distributions) are
dispatched to :mod:`pyro_sculpt.sculpting.diffusion`: :func:`mixture` is the exact
:class:`~pyro_sculpt.sculpting.DiffusionMixtureProcess`, and the sculpting operators run the bases' sampler on the
guided score :math:`\\sum_i Q(y_1 = i \\mid x, t) s_i + \\gamma \\nabla_x \\log Q(y \\mid x, t)`
(``gamma``, default 1, applies to diffusion bases only).

=======================  =====================  ==========================================================
operator                 observation             density (2 bases, uniform weights)
=======================  =====================  ==========================================================
:func:`mixture`          none                   :math:`(p_1 + p_2)/2`
:func:`harmonic_mean`    :math:`y = (0, 1)`     :math:`p_1 p_2 / (p_1 + p_2)`
:func:`contrast`         :math:`y = (0, 0)`     :math:`p_1^2 / (p_1 + p_2)`
:func:`reverse_contrast` :math:`y = (1, 1)`     :math:`p_2^2 / (p_1 + p_2)`
:func:`sculpt`           any, ``None`` unobs.    :math:`\\propto \\sum_i w_i p_i \\prod_k \\tilde p(y_k \\mid x)`
=======================  =====================  ==========================================================

With ``alpha``, the denominators :math:`p_1 + p_2` become :math:`\\alpha p_1 + (1-\\alpha) p_2`.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

from pyro_sculpt.gflownets.policy_process import DiscretePolicyProcess
from pyro_sculpt.processes.distribution import ProcessDistribution
from pyro_sculpt.sculpting.classifier import Classifier
from pyro_sculpt.sculpting.diffusion import DiffusionMixtureProcess, check_gamma, is_diffusion_base, sculpted_diffusion
from pyro_sculpt.sculpting.processes import MixtureProcess, SculptedProcess

Base = Union[DiscretePolicyProcess, ProcessDistribution]


def as_process(base: Base, name: str = "base") -> DiscretePolicyProcess:
    """Unwrap a :class:`ProcessDistribution` to its process."""
    if isinstance(base, ProcessDistribution):
        base = base.process
    if not isinstance(base, DiscretePolicyProcess):
        raise TypeError(f"{name} must be a GFlowNet, a composition, or their distribution; got {type(base).__name__}")
    return base


def _processes(bases: Sequence[Base]) -> list:
    return [as_process(b, f"bases[{k}]") for k, b in enumerate(bases)]


def _any_diffusion(bases) -> bool:
    return hasattr(bases, "__iter__") and any(is_diffusion_base(b) for b in bases)


def _gflownet_gamma(gamma: float) -> None:
    if check_gamma(gamma) != 1.0:
        raise ValueError(f"gamma applies to diffusion bases only; GFlowNet guidance is exact, got gamma={gamma!r}")


def mixture(*bases: Base, weights: Optional[Sequence[float]] = None) -> ProcessDistribution:
    """The mixture :math:`\\sum_i w_i p_i` (exact; no classifier needed, see :class:`MixtureProcess`).

    Example::

        x = pyro.sample("x", ps.mixture(p1, p2))
    """
    if _any_diffusion(bases):
        return ProcessDistribution(DiffusionMixtureProcess(bases, weights))
    return ProcessDistribution(MixtureProcess(_processes(bases), weights))


def sculpt(
    bases: Sequence[Base],
    classifier: Classifier,
    y: Sequence[Optional[int]],
    alpha: Optional[float] = None,
    weights: Optional[Sequence[float]] = None,
    *,
    gamma: float = 1.0,
) -> ProcessDistribution:
    """The general sculpting operator :math:`\\tilde p(x \\mid y_1, \\dots, y_n)` for m bases.

    :param bases: the base models (GFlowNets or compositions; or diffusion samplers).
    :param classifier: trained for ``len(bases)`` models and ``len(y)`` observations.
    :param y: observed base indices (0-based), ``None`` to leave an entry unobserved.
    :param alpha: prior :math:`(\\alpha, 1-\\alpha)` of :math:`y_{2..n}` (two bases), in (0, 1).
    :param weights: mixture weights.
    :param gamma: guidance scale of diffusion bases (:func:`~pyro_sculpt.sculpting.diffusion.composed_score`).

    Example::

        # the n-ary conjunction of three GFlowNets, and an n-ary contrast
        conj = ps.sculpt([p1, p2, p3], clf3, y=(0, 1, 2))
        only_1 = ps.sculpt([p1, p2, p3], clf3, y=(0, 0, 0))
        # diffusion bases: the same operators, guided reverse diffusion
        hm = ps.sculpt([AncestralSampler(m1, 200), AncestralSampler(m2, 200)], diffusion_clf, y=(0, 1))
    """
    if _any_diffusion(bases):
        return ProcessDistribution(sculpted_diffusion(bases, classifier, y, alpha, weights, gamma=gamma))
    _gflownet_gamma(gamma)
    return ProcessDistribution(SculptedProcess(_processes(bases), classifier, y, alpha, weights))


def harmonic_mean(
    p1: Base, p2: Base, classifier: Classifier, alpha: Optional[float] = None, *, gamma: float = 1.0
) -> ProcessDistribution:
    """:math:`p_1 \\otimes p_2 \\propto p_1 p_2 / (\\alpha p_1 + (1-\\alpha) p_2)`
    (:math:`\\alpha = 1/2` by default)."""
    return sculpt([p1, p2], classifier, (0, 1), alpha, gamma=gamma)


def contrast(
    p1: Base, p2: Base, classifier: Classifier, alpha: Optional[float] = None, *, gamma: float = 1.0
) -> ProcessDistribution:
    """:math:`p_1 \\,◑\\, p_2 \\propto p_1^2 / (\\alpha p_1 + (1-\\alpha) p_2)`: what :math:`p_1` has and
    :math:`p_2` lacks."""
    return sculpt([p1, p2], classifier, (0, 0), alpha, gamma=gamma)


def reverse_contrast(
    p1: Base, p2: Base, classifier: Classifier, alpha: Optional[float] = None, *, gamma: float = 1.0
) -> ProcessDistribution:
    """:math:`p_1 \\,◐\\, p_2 \\propto p_2^2 / (\\alpha p_1 + (1-\\alpha) p_2)`."""
    return sculpt([p1, p2], classifier, (1, 1), alpha, gamma=gamma)
