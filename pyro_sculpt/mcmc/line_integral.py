"""Metropolis tests from scores alone: the log-density difference as a line integral of the score (Sjöberg et al.
2023, arXiv 2307.14012; docs/math.md §2).

For a target :math:`\\pi \\propto e^{l}` whose gradient :math:`\\nabla l` is known but not :math:`l` (a score-only
diffusion model, or a product of them), the difference a Metropolis test needs is

.. math::

    l(x') - l(x) = \\int_0^1 \\langle \\nabla l(x + u (x' - x)),\\ x' - x \\rangle\\, du
    \\approx \\sum_{k=0}^{K-1} w_k \\langle \\nabla l(x + u_k (x' - x)),\\ x' - x \\rangle,

with the trapezoid rule on :math:`K` equally spaced points :math:`u_k = k / (K - 1)` (weights :math:`1/(K-1)`, halved
at the ends). Its error is :math:`O(|x' - x|^3 / K^2)` times the third derivative of :math:`l` along the segment. The
end points' scores are the ones a kernel already has (at the current state and at the proposal), so :math:`K = 2`
costs nothing more and each further point one score evaluation, all :math:`K - 2` batched in one call. For a learned
score that is not an exact gradient the integral depends on the path: the straight segment is the convention.
"""

from __future__ import annotations

from typing import Callable

import torch

from pyro_sculpt.mcmc.base import inner, per_particle


def trapezoid_weights(num_points: int, dtype=torch.float64, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(u, w)``: the ``num_points`` nodes :math:`u_k = k/(K-1)` of :math:`[0, 1]` and the trapezoid weights.

    Example::

        u, w = ps.mcmc.line_integral.trapezoid_weights(3)   # (0, 0.5, 1), (0.25, 0.5, 0.25)
    """
    k = check_num_points(num_points)
    u = torch.linspace(0.0, 1.0, k, dtype=dtype, device=device)
    w = torch.full((k,), 1.0 / (k - 1), dtype=dtype, device=device)
    w[0] = w[-1] = 0.5 / (k - 1)
    return u, w


def trapezoid_log_ratio(
    evaluate: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    x: torch.Tensor,
    x_new: torch.Tensor,
    grad: torch.Tensor,
    grad_new: torch.Tensor,
    num_points: int,
) -> torch.Tensor:
    """The trapezoid estimate of :math:`l(x') - l(x)` for every particle, ``(N,)`` float64 (see the module docstring).

    :param evaluate: the target, ``x -> (log pi (N,), grad (N, ...))``; only its gradient is used, at the
        ``num_points - 2`` interior points of every segment (one batched call of ``(K - 2) N`` points).
    :param x: start points ``(N, ...)``; :param x_new: end points (same shape).
    :param grad: :math:`\\nabla l(x)`; :param grad_new: :math:`\\nabla l(x')`.
    :param num_points: :math:`K \\ge 2`.

    Example::

        delta = ps.mcmc.line_integral.trapezoid_log_ratio(target, x, y, grad_x, grad_y, num_points=5)
    """
    for name, v in (("x_new", x_new), ("grad", grad), ("grad_new", grad_new)):
        if not isinstance(v, torch.Tensor) or v.shape != x.shape:
            shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise ValueError(f"{name} must have the shape of x {tuple(x.shape)}, got {shape}")
    u, w = trapezoid_weights(num_points, device=x.device)
    d = x_new - x
    total = w[0] * inner(grad, d) + w[-1] * inner(grad_new, d)
    k = int(u.shape[0])
    if k > 2:
        n = x.shape[0]
        uu = u[1:-1].to(x.dtype).reshape((k - 2,) + (1,) * x.dim())
        pts = (x.unsqueeze(0) + uu * d.unsqueeze(0)).reshape((-1,) + tuple(x.shape[1:]))
        _, g = evaluate(pts)
        g = g.reshape((k - 2, n) + tuple(x.shape[1:]))
        dd = d.unsqueeze(0).expand_as(g).reshape(g.shape[0] * n, -1)
        per_point = inner(g.reshape(g.shape[0] * n, -1), dd).reshape(k - 2, n)
        total = total + (per_particle(w[1:-1], per_point) * per_point).sum(0)
    return total


def check_num_points(value, name: str = "line_integral") -> int:
    """``value`` as an integer >= 2 (trapezoid points), else a :class:`ValueError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise ValueError(
            f"{name} must be an integer >= 2 (points of the trapezoid rule on the segment from x to x'), got {value!r}"
        )
    return value
