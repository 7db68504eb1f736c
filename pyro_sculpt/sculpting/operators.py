"""Composition operators on GFlowNets and diffusion models, each a Pyro distribution (Garipov et al. 2023, Table 1;
docs/math.md §1).

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

Learnable parameters (DESIGN.md: composition parameters stay tensors with gradients where the density is
differentiable in them). ``weights`` and ``alpha`` may be tensors, e.g. :func:`pyro.param` with a ``simplex`` or
``unit_interval`` constraint:

* differentiable: the :func:`mixture`'s ``log_prob`` in its weights (exact on enumerable spaces; for diffusion bases
  the bases' own densities, e.g. :class:`~pyro_sculpt.diffusion.DDIMSampler` with ``eta=0``), its step sites under
  :func:`pyro_sculpt.run`; :class:`~pyro_sculpt.sculpting.ModelOfOrigin`'s ``log_prob`` in ``prior`` and ``alpha``;
  the closed forms :func:`~pyro_sculpt.sculpting.composition_distribution` and
  :func:`~pyro_sculpt.sculpting.composition_log_density` in both;
* constant (detached, with a warning when a tensor requires grad): the sculpted processes of :func:`sculpt`,
  :func:`harmonic_mean`, :func:`contrast` and :func:`reverse_contrast`. Their exact ``log_prob`` is a dynamic
  programme over a guided policy whose classifier is evaluated at a fixed ``alpha`` (an exact classifier's tables, a
  learned one's network), and a diffusion composition's density is that of a guided score; neither carries a
  gradient in the composition parameters. Learn them by observing ``ModelOfOrigin`` labels in a Pyro model, or by
  fitting a closed form.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional, Sequence, Union

import torch

from pyro_sculpt.processes.distribution import ProcessDistribution
from pyro_sculpt.sculpting.family import family_of
from pyro_sculpt.sculpting.guidance import check_gamma
from pyro_sculpt.sculpting.log_operators import LogOperator, Negation, Product, Sculpt, composition_of, flatten
from pyro_sculpt.sculpting.observations import PriorLike


def _requires_grad(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.requires_grad
    if isinstance(value, (list, tuple)):
        return any(_requires_grad(v) for v in value)
    return False


def _warn_constant_parameters(alpha: Any, weights: Any) -> None:
    if _requires_grad(alpha) or _requires_grad(weights):
        warnings.warn(
            "sculpt(...) treats weights and alpha as constants: the sculpted process's samples and log_prob carry no "
            "gradient in them. To learn them, observe ps.ModelOfOrigin labels in the model, or fit "
            "ps.sculpting.composition_distribution / composition_log_density",
            UserWarning,
            stacklevel=3,
        )


def mixture(*bases: Any, weights: Optional[PriorLike] = None) -> ProcessDistribution:
    """The mixture :math:`\\sum_i w_i p_i` (exact; no classifier needed).

    :param bases: the base models, or their distributions.
    :param weights: mixture weights (default uniform), each finite and > 0: numbers or tensors. Its ``log_prob`` is
        differentiable in tensor weights; samples are drawn with their current values.

    Example::

        x = pyro.sample("x", ps.mixture(p1, p2))

        w = pyro.param("w", torch.tensor([0.5, 0.5]), constraint=constraints.simplex)
        pyro.sample("x", ps.mixture(p1, p2, weights=w), obs=x_data)   # SVI learns w
    """
    _check_normalised(bases, "mixture")
    return ProcessDistribution(family_of(bases).mixture(list(bases), weights))


def sculpt(
    bases: Sequence[Any],
    classifier: Any = None,
    y: Optional[Sequence[Optional[int]]] = None,
    alpha: Optional[Union[float, torch.Tensor]] = None,
    weights: Optional[PriorLike] = None,
    *,
    gamma: float = 1.0,
) -> ProcessDistribution:
    """The general sculpting operator :math:`\\tilde p(x \\mid y_1, \\dots, y_n)` for m bases.

    :param bases: the base models (GFlowNets or compositions; or diffusion samplers), or their distributions.
    :param classifier: trained for ``len(bases)`` models and ``len(y)`` observations; or ``None`` (the default)
        for the classifier-free composition: its steps are guided by the exact posterior over bases that every
        particle carries (docs/math.md §1.4, §1.6), and :func:`pyro_sculpt.infer.smc` corrects its particles to the
        exact composition of the bases. It needs no training and nests in :func:`product` and :func:`negation`.
    :param y: observed base indices (0-based), ``None`` to leave an entry unobserved.
    :param alpha: prior :math:`(\\alpha, 1-\\alpha)` of :math:`y_{2..n}` (two bases), in (0, 1).
    :param weights: mixture weights.

    ``alpha`` and ``weights`` are constants of the sculpted process (see the module's notes on learnable
    parameters): a tensor that requires grad is detached, with a :class:`UserWarning`.
    :param gamma: guidance scale of diffusion bases (:func:`~pyro_sculpt.sculpting.diffusion.composed_score`).

    Example::

        # the n-ary conjunction of three GFlowNets, and an n-ary contrast
        conj = ps.sculpt([p1, p2, p3], clf3, y=(0, 1, 2))
        only_1 = ps.sculpt([p1, p2, p3], clf3, y=(0, 0, 0))
        # diffusion bases: the same operators, guided reverse diffusion
        hm = ps.sculpt([AncestralSampler(m1, 200), AncestralSampler(m2, 200)], diffusion_clf, y=(0, 1))
        # no classifier: guided by each particle's posterior over bases, corrected to the exact target by SMC
        res = ps.infer.smc(ps.sculpt([p1, p2, p3], y=(0, 1, 2)), 100_000)
    """
    if y is None:
        raise TypeError("sculpt() needs the observations y, e.g. y=(0, 1) for the harmonic mean of two bases")
    if alpha is not None and not any(v is not None for v in tuple(y)[1:]):
        raise ValueError(
            f"alpha is the prior of the observations after the first, but y={tuple(y)} observes none of them: it "
            "would have no effect (the mixture weights are the first observation's prior)"
        )
    if classifier is None:
        _check_normalised(bases, "sculpt")
        leaves, ops = flatten(list(bases))
        return _compose(leaves, Sculpt(ops, y, alpha, weights), gamma, alpha, weights)
    family = family_of(bases)
    process = family.sculpt(list(bases), classifier, y, alpha, weights, check_gamma(gamma))
    _warn_constant_parameters(alpha, weights)  # after the checks: bad values raise first
    return ProcessDistribution(process)


def harmonic_mean(
    p1: Any, p2: Any, classifier: Any = None, alpha: Optional[Union[float, torch.Tensor]] = None, *, gamma: float = 1.0
) -> ProcessDistribution:
    """:math:`p_1 \\otimes p_2 \\propto p_1 p_2 / (\\alpha p_1 + (1-\\alpha) p_2)`
    (:math:`\\alpha = 1/2` by default).

    Example::

        hm = ps.harmonic_mean(p1, p2, clf)  # guided by a classifier
        x = hm.sample((1000,))
        res = ps.infer.smc(ps.harmonic_mean(p1, p2), 10_000)  # classifier-free, corrected by SMC
    """
    return sculpt([p1, p2], classifier, (0, 1), alpha, gamma=gamma)


def contrast(
    p1: Any, p2: Any, classifier: Any = None, alpha: Optional[Union[float, torch.Tensor]] = None, *, gamma: float = 1.0
) -> ProcessDistribution:
    """:math:`p_1 \\,◑\\, p_2 \\propto p_1^2 / (\\alpha p_1 + (1-\\alpha) p_2)`: what :math:`p_1` has and
    :math:`p_2` lacks.

    Example::

        d = ps.contrast(p1, p2, clf, alpha=0.05)
        x = d.sample((1000,))
    """
    return sculpt([p1, p2], classifier, (0, 0), alpha, gamma=gamma)


def reverse_contrast(
    p1: Any, p2: Any, classifier: Any = None, alpha: Optional[Union[float, torch.Tensor]] = None, *, gamma: float = 1.0
) -> ProcessDistribution:
    """:math:`p_1 \\,◐\\, p_2 \\propto p_2^2 / (\\alpha p_1 + (1-\\alpha) p_2)`.

    Example::

        d = ps.reverse_contrast(p1, p2, clf)
        x = d.sample((1000,))
    """
    return sculpt([p1, p2], classifier, (1, 1), alpha, gamma=gamma)


def _check_normalised(bases: Sequence[Any], name: str) -> None:
    """A mixture or sculpting of classifier-free compositions would need each composition's normaliser (they enter
    with their unnormalised densities exp(Phi)); products and negations do not."""
    for k, b in enumerate(bases):
        if composition_of(b) is not None:
            raise ValueError(
                f"{name}: bases[{k}] is a classifier-free composition, whose normaliser is unknown; {name} needs "
                "normalised bases. Products and negations of compositions nest; otherwise write the whole composition "
                "as one operator on the leaves with ps.sculpting.compose"
            )


def _compose(leaves: list, operator: LogOperator, gamma: float, alpha: Any = None, weights: Any = None):
    family = family_of(leaves)
    process = family.compose(leaves, operator, check_gamma(gamma))
    _warn_constant_parameters(alpha, weights)
    return ProcessDistribution(process)


def product(*bases: Any, gamma: float = 1.0) -> ProcessDistribution:
    """The product :math:`\\propto \\prod_i p_i(x)` of bases (GFlowNets or diffusion samplers, or compositions of
    them), without a classifier (docs/math.md §1.5, §1.6).

    Its own steps are the normalised product of the bases' steps (GFlowNets: policies; diffusion: summed scores),
    which alone is biased; :func:`pyro_sculpt.infer.smc` weights and resamples the particles towards the exact
    product.

    Example::

        res = ps.infer.smc(ps.product(p1, p2), 100_000)
        x = res.resample(10_000)
    """
    if len(bases) < 2:
        raise ValueError(f"product needs at least two bases, got {len(bases)}")
    leaves, ops = flatten(list(bases))
    return _compose(leaves, Product(*ops), gamma)


def negation(p1: Any, p2: Any, a: float = 1.0, *, gamma: float = 1.0) -> ProcessDistribution:
    """The negation :math:`\\propto p_1 (p_1 / p_2)^a`: :math:`p_1` away from :math:`p_2` (Du et al. 2023), without a
    classifier; corrected to the exact target by :func:`pyro_sculpt.infer.smc`.

    :param a: strength, ``>= 0``. The target must be normalisable: a family raises where it can tell that it is not
        (e.g. Gaussian tails of :math:`p_2` narrower than those of :math:`p_1` with a large ``a``).

    Example::

        neg = ps.negation(p1, p2, a=0.5)  # p1 (p1 / p2)^0.5
        res = ps.infer.smc(neg, 10_000)
        x = res.resample(1000)
    """
    leaves, ops = flatten([p1, p2])
    return _compose(leaves, Negation(ops[0], ops[1], a), gamma)


def compose(bases: Sequence[Any], operator: LogOperator, *, gamma: float = 1.0) -> ProcessDistribution:
    """Any composition :math:`\\propto \\exp \\Phi(\\log p_1(x), \\dots, \\log p_m(x))` of ``bases``, with
    ``operator`` (:mod:`pyro_sculpt.sculpting.log_operators`) reading base ``i`` as ``Base(i, m)``.

    Example::

        from pyro_sculpt.sculpting.log_operators import Base, Negation, Product
        op = Negation(Product(Base(0, 3), Base(1, 3)), Base(2, 3), a=0.5)   # (p1 p2) away from p3
        res = ps.infer.smc(ps.sculpting.compose([p1, p2, p3], op), 50_000)
    """
    if not isinstance(operator, LogOperator):
        raise TypeError(f"operator must be a LogOperator, got {type(operator).__name__}")
    bases = list(bases)
    if operator.num_bases != len(bases):
        raise ValueError(f"operator reads {operator.num_bases} bases, but {len(bases)} bases were given")
    leaves, ops = flatten(bases)
    return _compose(leaves, operator.substitute(ops), gamma)
