"""Log-likelihoods by the probability-flow ODE (instantaneous change of variables)."""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from pyro_sculpt.diffusion.model import DiffusionModel, check_points
from pyro_sculpt.utils import check_positive_int


def probability_flow_drift(model: DiffusionModel, x: torch.Tensor, t: float) -> torch.Tensor:
    """The probability-flow ODE's velocity :math:`v(x, t) = f(t)\\, x - \\tfrac12 g^2(t)\\, s(x, t)`."""
    tt = torch.tensor(float(t), dtype=torch.float64)
    f, g2 = float(model.schedule.drift(tt)), float(model.schedule.diffusion2(tt))
    return f * x - 0.5 * g2 * model.score(x, t)


def _velocity_and_divergence(model: DiffusionModel, x: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        v = probability_flow_drift(model, xr, t)
        div = torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)
        for d in range(x.shape[-1]):  # exact divergence: one backward pass per data dimension (low-dimensional data)
            (g,) = torch.autograd.grad(v[..., d].sum(), xr, retain_graph=d + 1 < x.shape[-1])
            div = div + g[..., d]
    return v.detach(), div.detach()


def probability_flow_log_prob(
    model: DiffusionModel,
    x: torch.Tensor,
    *,
    t0: Optional[float] = None,
    t1: Optional[float] = None,
    num_steps: int = 200,
    prior_log_prob: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    return_latent: bool = False,
):
    """Log-density of ``x`` at time ``t0`` under the model's probability-flow ODE.

    The ODE :math:`dx/dt = v(x, t) = f(t)\\, x - \\tfrac12 g^2(t)\\, s(x, t)` transports :math:`p_{t_0}` to
    :math:`p_{t_1}`, and by the instantaneous change of variables (Chen et al. 2018; Song et al. 2021)

    .. math::

        \\log p_{t_0}(x_{t_0}) = \\log \\pi(x_{t_1}) + \\int_{t_0}^{t_1} \\nabla \\cdot v(x_t, t)\\, dt,

    with :math:`\\pi = \\mathcal N(0, s^2 I)` the samplers' prior (:meth:`NoiseSchedule.prior_std`) unless
    ``prior_log_prob`` is given (e.g. an oracle's exact :math:`\\log p_{t_1}`, which removes the prior's
    mismatch :math:`O(\\alpha_{t_1})` and leaves only the integration error). The state and the log-density
    are integrated together by the classical Runge-Kutta method with ``num_steps`` uniform steps; the
    divergence is exact (one backward pass per data dimension: meant for low-dimensional data), by autograd through
    ``model.score`` at points that require grad: a model whose score holds terms it computes separately (the
    classifier's guidance of :class:`~pyro_sculpt.sculpting.SculptedDiffusionModel`) must keep them differentiable
    in ``x`` there, or their part of the divergence is lost.

    :param model: a diffusion model (trained, oracle or composed).
    :param x: points, shape ``(..., D)``.
    :param t0: the time of ``x`` (default ``schedule.t_min``, the samplers' output time).
    :param t1: the end time (default ``schedule.t_max``).
    :param num_steps: RK4 steps.
    :param prior_log_prob: :math:`\\log \\pi` at :math:`x_{t_1}` (default the samplers' Gaussian prior).
    :param return_latent: also return :math:`x_{t_1}`.
    :returns: ``log p_{t0}(x)`` of shape ``x.shape[:-1]``.

    Example::

        oracle = GaussianMixtureOracle(torch.zeros(1, 2), stds=1.0)
        lp = probability_flow_log_prob(oracle, torch.randn(100, 2))   # ~ oracle.log_prob(x, t_min)
    """
    if not isinstance(model, DiffusionModel):
        raise TypeError(f"model must be a DiffusionModel, got {type(model).__name__}")
    check_points(x, model.dim, "x")
    check_positive_int("num_steps", num_steps)
    sched = model.schedule
    t0 = sched.t_min if t0 is None else float(t0)
    t1 = sched.t_max if t1 is None else float(t1)
    if not (sched.t_min - 1e-12 <= t0 < t1 <= sched.t_max + 1e-12):
        raise ValueError(f"need t_min <= t0 < t1 <= t_max = [{sched.t_min}, {sched.t_max}], got t0={t0}, t1={t1}")
    h = (t1 - t0) / num_steps
    y = x.detach()
    acc = torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)
    for k in range(num_steps):
        t = t0 + k * h
        v1, d1 = _velocity_and_divergence(model, y, t)
        v2, d2 = _velocity_and_divergence(model, y + 0.5 * h * v1, t + 0.5 * h)
        v3, d3 = _velocity_and_divergence(model, y + 0.5 * h * v2, t + 0.5 * h)
        v4, d4 = _velocity_and_divergence(model, y + h * v3, t + h)
        y = y + (h / 6) * (v1 + 2 * v2 + 2 * v3 + v4)
        acc = acc + (h / 6) * (d1 + 2 * d2 + 2 * d3 + d4)
    if prior_log_prob is None:
        s = sched.prior_std()
        dim = x.shape[-1]
        log_prior = -0.5 * (y**2).sum(-1) / s**2 - dim * math.log(s) - 0.5 * dim * math.log(2 * math.pi)
    else:
        log_prior = prior_log_prob(y)
        if not isinstance(log_prior, torch.Tensor) or log_prior.shape != y.shape[:-1]:
            raise ValueError(f"prior_log_prob must return a tensor of shape {tuple(y.shape[:-1])}")
    lp = log_prior + acc
    return (lp, y) if return_latent else lp
