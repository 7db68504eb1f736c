"""A Gaussian kernel density estimate of a particle population: the proposal of independence moves that need no
sampler of the bases (docs/mcmc.md, "Final independence moves").

The estimate puts a Gaussian :math:`\\mathcal N(c_j, \\operatorname{diag}(h^2))` on each of :math:`M` centres
:math:`c_j` drawn from the particles,

.. math::

    q(x) = \\frac1M \\sum_{j=1}^M \\mathcal N(x; c_j, \\operatorname{diag}(h^2)), \\qquad
    h_d = \\beta\\, \\hat\\sigma_d\\, M^{-1/(D + 4)},

Scott's rule per dimension (:math:`\\hat\\sigma_d` the particles' standard deviation along dimension :math:`d`, of
:math:`D`) times a factor :math:`\\beta`. Its density is exact and its tails are those of its Gaussians, heavier than
those of the population it was fitted to, which is what an independence proposal needs (bounded
:math:`\\pi / q`). It suits low dimensions: in high dimension a product of per-dimension kernels covers the target
too thinly for a move to be accepted.
"""

from __future__ import annotations

import math

import torch

from pyro_sculpt.utils import check_number, check_positive_int


class GaussianKDE:
    """A Gaussian kernel density estimate of ``points`` (see the module docstring).

    :param points: ``(N,) + event_shape`` particles (flattened to ``(N, D)`` internally; at least 2, finite).
    :param num_centres: :math:`M`, how many particles (drawn without replacement) carry a kernel; all of them when
        there are fewer.
    :param bandwidth: the factor :math:`\\beta > 0` on Scott's bandwidth.

    Example::

        kde = ps.mcmc.GaussianKDE(particles, num_centres=1000)
        x = kde.sample(500)            # (500,) + event_shape
        kde.log_prob(x)                # (500,) float64, exact
    """

    def __init__(self, points: torch.Tensor, num_centres: int = 1000, bandwidth: float = 1.0):
        if not isinstance(points, torch.Tensor) or points.dim() < 2 or points.shape[0] < 2:
            shape = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
            raise ValueError(f"points must be a tensor (N, ...) of at least 2 particles, got {shape}")
        num_centres = check_positive_int("num_centres", num_centres)
        check_number("bandwidth", bandwidth, 0.0, strict=True)
        flat = points.detach().reshape(points.shape[0], -1).double()
        if not bool(torch.isfinite(flat).all()):
            raise ValueError("points must be finite (a NaN or infinite particle cannot carry a kernel)")
        n, d = flat.shape
        m = min(num_centres, n)
        idx = torch.randperm(n, device=flat.device)[:m]
        self.centres = flat[idx]
        sd = flat.std(0)
        sd = torch.where(sd > 0, sd, torch.full_like(sd, float(sd.max()) if float(sd.max()) > 0 else 1.0))
        self.h = float(bandwidth) * sd * m ** (-1.0 / (d + 4))
        self.event_shape = tuple(points.shape[1:])
        self.dtype = points.dtype
        self._log_norm = math.log(m) + float(torch.log(self.h).sum()) + 0.5 * d * math.log(2 * math.pi)

    @property
    def num_centres(self) -> int:
        return int(self.centres.shape[0])

    def __repr__(self) -> str:
        return f"GaussianKDE(num_centres={self.num_centres}, dim={self.centres.shape[1]})"

    def sample(self, num_samples: int) -> torch.Tensor:
        """``(num_samples,) + event_shape`` draws: a random centre plus its kernel's noise."""
        k = check_positive_int("num_samples", num_samples)
        j = torch.randint(self.num_centres, (k,), device=self.centres.device)
        x = self.centres[j] + self.h * torch.randn(k, self.centres.shape[1], dtype=torch.float64, device=self.h.device)
        return x.reshape((k,) + self.event_shape).to(self.dtype)

    def log_prob(self, x: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
        """The exact log-density ``(N,)`` float64 at ``x`` ``(N,) + event_shape`` (in chunks of ``chunk`` points)."""
        flat = x.detach().reshape(x.shape[0], -1).double().to(self.centres.device)
        if flat.shape[1] != self.centres.shape[1]:
            raise ValueError(f"x must have event shape {self.event_shape}, got {tuple(x.shape[1:])}")
        out = []
        for part in flat.split(chunk):
            z = (part[:, None, :] - self.centres[None]) / self.h
            out.append(torch.logsumexp(-0.5 * (z**2).sum(-1), 1))
        return torch.cat(out) - self._log_norm if out else flat.new_zeros(0)
