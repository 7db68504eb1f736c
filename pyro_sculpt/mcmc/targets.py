"""Targets for the kernels: callables ``x (N, ...) -> (log pi(x) (N,), grad log pi(x) (N, ...))``.

* :func:`log_density_target`: from a log-density (its gradient by autograd, or a given score);
* :func:`energy_target`: from an energy, :math:`\\log\\pi = -E` (and a score, or autograd);
* :func:`score_target`: from a score alone (Metropolis tests then need the line integral of
  :mod:`~pyro_sculpt.mcmc.line_integral`);
* :func:`operator_target`: from an operator :math:`\\Phi` on the log-densities of diffusion models at one noise level
  :math:`t`, :math:`\\log \\pi_t = \\Phi(\\log q_{1,t}, \\dots, \\log q_{m,t})` with gradient :math:`\\sum_i
  \\partial\\Phi/\\partial\\ell_i\\, s_i(x, t)` (docs/math.md §1.6, §2): the intermediate targets of the diffusion
  SMC sampler. The models need exact ``log_prob(x, t)`` and ``score(x, t)`` (e.g. the Gaussian-mixture oracles).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch

from pyro_sculpt.mcmc.base import LogProbAndGrad, per_particle


def _autograd(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        val = fn(xr)
        (grad,) = torch.autograd.grad(val.sum(), xr)
    return val.detach(), grad.detach()


def log_density_target(
    log_prob: Callable[[torch.Tensor], torch.Tensor], score: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
) -> LogProbAndGrad:
    """The target :math:`\\pi \\propto e^{\\text{log_prob}}`.

    :param log_prob: ``x (N, ...) -> (N,)``, an unnormalised log-density.
    :param score: ``x -> grad log_prob(x)``; ``None``: by autograd through ``log_prob``.

    Example::

        target = ps.mcmc.log_density_target(lambda x: -0.5 * (x**2).sum(-1))
        kernel = ps.mcmc.MALA(target, 0.5)
    """
    if not callable(log_prob):
        raise TypeError(f"log_prob must be callable x -> (N,), got {log_prob!r}")
    if score is not None and not callable(score):
        raise TypeError(f"score must be callable x -> grad, got {score!r}")

    def target(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if score is None:
            return _autograd(log_prob, x)
        with torch.no_grad():
            return log_prob(x), score(x)

    return target


def energy_target(
    energy: Callable[[torch.Tensor], torch.Tensor], score: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
) -> LogProbAndGrad:
    """The target :math:`\\pi \\propto e^{-E}` of an energy model (docs/math.md §2).

    :param energy: ``x (N, ...) -> E(x) (N,)``.
    :param score: ``x -> -grad E(x)`` if the model gives it (a score-and-energy model); ``None``: by autograd.

    Example::

        target = ps.mcmc.energy_target(lambda x: 0.5 * (x**2).sum(-1))   # a standard Gaussian
        log_pi, grad = target(torch.randn(10, 2))
    """
    if not callable(energy):
        raise TypeError(f"energy must be callable x -> (N,), got {energy!r}")
    return log_density_target(lambda x: -energy(x), score)


class _ScoreOnlyTarget:
    """A target that knows :math:`\\nabla \\log\\pi` only: its log-density reads 0 (see :func:`score_target`)."""

    score_only = True

    def __init__(self, score: Callable[[torch.Tensor], torch.Tensor]):
        self.score = score

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            grad = self.score(x)
        return torch.zeros(x.shape[0], dtype=torch.float64, device=x.device), grad

    def __repr__(self) -> str:
        return f"score_target({self.score!r})"


def score_target(score: Callable[[torch.Tensor], torch.Tensor]) -> LogProbAndGrad:
    """A *score-only* target: :math:`\\nabla\\log\\pi` is ``score``, :math:`\\log\\pi` is unknown (it reads 0 and
    the target carries ``score_only = True``). Unadjusted kernels (ULA, U-HMC) run on it as they are; Metropolis-
    adjusted ones (MALA, HMC) need ``line_integral=K``, the trapezoid estimate of :math:`l(x') - l(x)` from the score
    (:mod:`~pyro_sculpt.mcmc.line_integral`), and raise a :class:`ValueError` without it.

    :param score: ``x (N, ...) -> grad log pi(x)`` of ``x``'s shape, e.g. a score model's ``score(x, t)`` at one
        noise level.

    Example::

        target = ps.mcmc.score_target(lambda x: model.score(x, 0.2))
        kernel = ps.mcmc.MALA(target, 0.05, line_integral=5)   # MALA(target, 0.05) raises
    """
    if not callable(score):
        raise TypeError(f"score must be callable x -> grad log pi(x), got {score!r}")
    return _ScoreOnlyTarget(score)


def _check_models(models: Sequence[Any], need_log_prob: bool = True) -> list:
    models = list(models)
    if not models:
        raise ValueError("models must hold at least one diffusion model")
    for k, m in enumerate(models):
        for attr in ("log_prob", "score") if need_log_prob else ("score",):
            if not callable(getattr(m, attr, None)):
                raise TypeError(
                    f"models[{k}] ({type(m).__name__}) has no exact {attr}(x, t): a Metropolis test needs exact "
                    "log-densities at the noise level (e.g. GaussianMixtureOracle, EnergyScoreModel); a product of "
                    "score-only models (operator=None) is a score-only target (MCMC kernels then need line_integral=K)"
                )
    shapes = [getattr(m, "event_shape", None) for m in models]
    for k, shape in enumerate(shapes):
        if shape is not None and shapes[0] is not None and tuple(shape) != tuple(shapes[0]):
            raise ValueError(
                f"models[{k}] has event shape {tuple(shape)} but models[0] has {tuple(shapes[0])}: an operator "
                "composes models of one space"
            )
    return models


def operator_target(models: Sequence[Any], t: float, operator: Optional[Callable] = None) -> LogProbAndGrad:
    """The target :math:`\\pi_t \\propto \\exp\\Phi(\\log q_{1,t}(x), \\dots, \\log q_{m,t}(x))` of diffusion models at
    noise level ``t``.

    :param models: ``m`` diffusion models with ``log_prob(x, t)`` (exact, or up to a constant per level for
        operators linear in the log-densities: energy models) and ``score(x, t)``. For the product
        (``operator=None``) and operators with ``linear = True`` (products, negations), models without
        ``log_prob`` are allowed: the target is then score-only (:func:`score_target` of the operator's combination
        of scores; Metropolis-adjusted kernels need ``line_integral=K``).
    :param t: the noise level.
    :param operator: :math:`\\Phi`, a callable on log-densities ``(N, m) -> (N,)`` (e.g. a
        :class:`~pyro_sculpt.sculpting.log_operators.LogOperator`); its ``gradient(log_q)`` is used if it has one,
        else autograd. ``None``: the product, :math:`\\Phi(\\ell) = \\sum_i \\ell_i`.

    Example::

        target = ps.mcmc.operator_target([ring, gauss], t=0.3)        # the noised product at t = 0.3
        state = ps.mcmc.MALA(target, 0.01).init(x)
    """
    if operator is not None and not callable(operator):
        raise TypeError(f"operator must be callable on log-densities (N, m) -> (N,), got {operator!r}")
    t = float(t)
    linear = operator is None or getattr(operator, "linear", False) is True
    models = _check_models(models, need_log_prob=not linear)
    shifted = [k for k, mod in enumerate(models) if not getattr(mod, "log_prob_normalised", True)]
    if shifted and not linear:
        k = shifted[0]
        raise ValueError(
            f"models[{k}] ({type(models[k]).__name__}) has log_prob(x, t) only up to a constant per noise level, "
            f"which cancels in operators linear in the log-densities (products, negations) but not in {operator!r}: "
            "its target would be wrong; use models with normalised log-densities"
        )
    m = len(models)
    if not all(callable(getattr(mod, "log_prob", None)) for mod in models):
        # a linear operator of score-only models: its gradient needs no log-density (constant coefficients)
        if operator is None:
            coefs = [1.0] * m
        else:
            zero = torch.zeros(1, m, dtype=torch.float64)
            coefs = [float(c) for c in operator.gradient(zero).reshape(-1)]
        return score_target(lambda x: sum(c * mod.score(x, t) for c, mod in zip(coefs, models)))

    def target(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            xd = x.double()
            log_q = torch.stack([mod.log_prob(xd, t).double() for mod in models], -1)
            scores = [mod.score(x, t) for mod in models]
            if operator is None:
                return log_q.sum(-1), sum(scores)
            phi = operator(log_q).double()
            if tuple(phi.shape) != (x.shape[0],):
                shape = (x.shape[0], m)
                raise ValueError(f"operator returned shape {tuple(phi.shape)} for log-densities of shape {shape}")
            grad_fn = getattr(operator, "gradient", None)
            if callable(grad_fn):
                coef = grad_fn(log_q)
            else:
                with torch.enable_grad():
                    lq = log_q.detach().requires_grad_(True)
                    (coef,) = torch.autograd.grad(operator(lq).sum(), lq)
            grad = sum(per_particle(coef[:, i], x) * scores[i] for i in range(m))
            return phi, grad

    return target
