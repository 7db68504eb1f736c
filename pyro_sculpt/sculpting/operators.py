"""Composition operators on GFlowNets and diffusion models, each a Pyro distribution (Garipov et al. 2023, Table 1;
MATH.md §1).

Every operator returns a :class:`~pyro_sculpt.processes.ProcessDistribution`: sample it (guided and vectorised over
particles), score it (exactly on enumerable spaces, by dynamic programming over the guided policy), run its steps
in a Pyro program with :func:`pyro_sculpt.run`, or use it as a base of a new composition. Indices are 0-based.

The operators name no family: the bases' composition family (:mod:`pyro_sculpt.sculpting.family`) builds the
processes. GFlowNet bases give the mixture process and the guided policy of :mod:`pyro_sculpt.sculpting.gflownet`;
diffusion bases (reverse-diffusion samplers built with the same sampler arguments) give the exact diffusion mixture
and the bases' sampler run on the guided score
:math:`\\sum_i Q(y_1 = i \\mid x, t) s_i + \\gamma \\nabla_x \\log Q(y \\mid x, t)`
(:mod:`pyro_sculpt.sculpting.diffusion`; ``gamma``, default 1, applies to diffusion bases only).

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

from typing import Any, Optional, Sequence

from pyro_sculpt.processes.distribution import ProcessDistribution
from pyro_sculpt.sculpting.family import family_of
from pyro_sculpt.sculpting.guidance import check_gamma


def mixture(*bases: Any, weights: Optional[Sequence[float]] = None) -> ProcessDistribution:
    """The mixture :math:`\\sum_i w_i p_i` (exact; no classifier needed).

    Example::

        x = pyro.sample("x", ps.mixture(p1, p2))
    """
    return ProcessDistribution(family_of(bases).mixture(list(bases), weights))


def sculpt(
    bases: Sequence[Any],
    classifier: Any,
    y: Sequence[Optional[int]],
    alpha: Optional[float] = None,
    weights: Optional[Sequence[float]] = None,
    *,
    gamma: float = 1.0,
) -> ProcessDistribution:
    """The general sculpting operator :math:`\\tilde p(x \\mid y_1, \\dots, y_n)` for m bases.

    :param bases: the base models (GFlowNets or compositions; or diffusion samplers), or their distributions.
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
    family = family_of(bases)
    return ProcessDistribution(family.sculpt(list(bases), classifier, y, alpha, weights, check_gamma(gamma)))


def harmonic_mean(
    p1: Any, p2: Any, classifier: Any, alpha: Optional[float] = None, *, gamma: float = 1.0
) -> ProcessDistribution:
    """:math:`p_1 \\otimes p_2 \\propto p_1 p_2 / (\\alpha p_1 + (1-\\alpha) p_2)`
    (:math:`\\alpha = 1/2` by default)."""
    return sculpt([p1, p2], classifier, (0, 1), alpha, gamma=gamma)


def contrast(
    p1: Any, p2: Any, classifier: Any, alpha: Optional[float] = None, *, gamma: float = 1.0
) -> ProcessDistribution:
    """:math:`p_1 \\,◑\\, p_2 \\propto p_1^2 / (\\alpha p_1 + (1-\\alpha) p_2)`: what :math:`p_1` has and
    :math:`p_2` lacks."""
    return sculpt([p1, p2], classifier, (0, 0), alpha, gamma=gamma)


def reverse_contrast(
    p1: Any, p2: Any, classifier: Any, alpha: Optional[float] = None, *, gamma: float = 1.0
) -> ProcessDistribution:
    """:math:`p_1 \\,◐\\, p_2 \\propto p_2^2 / (\\alpha p_1 + (1-\\alpha) p_2)`."""
    return sculpt([p1, p2], classifier, (1, 1), alpha, gamma=gamma)
