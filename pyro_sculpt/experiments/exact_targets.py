"""Exact targets of classifier-free compositions of Gaussian-mixture oracles (docs/math.md §1.6), shared by the
experiments and the tests.

* :func:`operator_log_density`: :math:`\\Phi(\\log p_1(x), \\dots, \\log p_m(x))` of the oracles' data densities, the
  unnormalised target of any composition operator, for integration on a grid;
* :func:`gaussian_mixture_product`: the product of Gaussian mixtures, itself a Gaussian mixture in closed form;
* :func:`rrr_ring_product_task`: Reduce, Reuse, Recycle's 2D product task (Du et al. 2023): a ring of 8 Gaussians
  times a Gaussian.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch

from pyro_sculpt.diffusion import GaussianMixtureOracle, VPSchedule
from pyro_sculpt.sculpting.log_operators import LogOperator


def operator_log_density(oracles: Sequence, operator: LogOperator) -> Callable[[torch.Tensor], torch.Tensor]:
    """:math:`x \\mapsto \\Phi(\\log p_1(x), \\dots, \\log p_m(x))` of the oracles' data densities (float64): the
    exact unnormalised log-density of the composition ``operator`` of ``oracles``.

    :param oracles: models with ``log_prob(x)`` (the data densities), one per base the operator reads.
    :param operator: the composition (:mod:`pyro_sculpt.sculpting.log_operators`).
    """
    if operator.num_bases != len(oracles):
        raise ValueError(f"operator reads {operator.num_bases} bases, but {len(oracles)} oracles were given")

    def log_density(x: torch.Tensor) -> torch.Tensor:
        return operator(torch.stack([o.log_prob(x.double()).double() for o in oracles], -1))

    return log_density


def gaussian_mixture_product(
    *oracles: GaussianMixtureOracle, schedule: Optional[VPSchedule] = None
) -> GaussianMixtureOracle:
    """The normalised product :math:`\\propto \\prod_i p_i(x)` of Gaussian mixtures, in closed form.

    Two components multiply as :math:`\\mathcal N(x; \\mu_1, \\Sigma_1)\\, \\mathcal N(x; \\mu_2, \\Sigma_2) =
    \\mathcal N(\\mu_1; \\mu_2, \\Sigma_1 + \\Sigma_2)\\, \\mathcal N(x; \\mu, \\Sigma)` with :math:`\\Sigma =
    (\\Sigma_1^{-1} + \\Sigma_2^{-1})^{-1}` and :math:`\\mu = \\Sigma (\\Sigma_1^{-1} \\mu_1 + \\Sigma_2^{-1}
    \\mu_2)`, so the product of mixtures with :math:`K_1, K_2` components is a mixture of :math:`K_1 K_2` components
    of weights :math:`\\propto w_{1,j} w_{2,k} \\mathcal N(\\mu_{1,j}; \\mu_{2,k}, \\Sigma_{1,j} + \\Sigma_{2,k})`
    (applied pairwise for more factors). Component order: the first factor's index varies slowest.

    :param oracles: two or more Gaussian mixtures of one dimension.
    :param schedule: the noise schedule of the result (default: the first factor's).
    :returns: the product as a :class:`~pyro_sculpt.diffusion.GaussianMixtureOracle` (float64 parameters): exact
        samples, densities and component weights.
    """
    if len(oracles) < 2:
        raise ValueError(f"gaussian_mixture_product needs at least two oracles, got {len(oracles)}")
    dims = {o.dim for o in oracles}
    if len(dims) != 1:
        raise ValueError(f"oracles must have one dimension, got {sorted(dims)}")
    means = oracles[0].means.double()
    cov = oracles[0].covariances.double()
    log_w = oracles[0].weights.double().log()
    for o in oracles[1:]:
        m2, c2, lw2 = o.means.double(), o.covariances.double(), o.weights.double().log()
        k1, k2, d = means.shape[0], m2.shape[0], means.shape[1]
        s = cov[:, None] + c2[None]  # (K1, K2, D, D)
        diff = means[:, None] - m2[None]
        lw = torch.distributions.MultivariateNormal(torch.zeros(d, dtype=torch.float64), s).log_prob(diff)
        p1, p2 = torch.linalg.inv(cov), torch.linalg.inv(c2)
        new_cov = torch.linalg.inv(p1[:, None] + p2[None])
        rhs = (p1 @ means.unsqueeze(-1))[:, None] + (p2 @ m2.unsqueeze(-1))[None]
        new_mean = (new_cov @ rhs).squeeze(-1)
        log_w = (log_w[:, None] + lw2[None] + lw).reshape(k1 * k2)
        means, cov = new_mean.reshape(k1 * k2, d), 0.5 * (new_cov + new_cov.transpose(-1, -2)).reshape(k1 * k2, d, d)
    w = torch.softmax(log_w, 0)
    return GaussianMixtureOracle(means, cov, w / w.sum(), schedule=schedule or oracles[0].schedule)


#: Reduce, Reuse, Recycle's 2D product task: the ring (8 Gaussians of std 0.1 on the unit circle) and the Gaussian
RRR_RING_RADIUS, RRR_RING_STD, RRR_GAUSSIAN_MEAN, RRR_GAUSSIAN_STD = 1.0, 0.1, (0.6, 0.3), 0.5


def rrr_ring_product_task(
    schedule: Optional[VPSchedule] = None,
) -> tuple[GaussianMixtureOracle, GaussianMixtureOracle, GaussianMixtureOracle]:
    """Reduce, Reuse, Recycle's 2D product task (Du et al. 2023): a ring of 8 Gaussians (radius 1, std 0.1) times
    :math:`\\mathcal N((0.6, 0.3), 0.5^2 I)`.

    :returns: ``(ring, gaussian, product)``: the two factors and their exact product
        (:func:`gaussian_mixture_product`: 8 components, one per ring mode, weights
        :math:`\\propto \\mathcal N(\\mu_k; (0.6, 0.3), (0.1^2 + 0.5^2) I)`).
    """
    ang = torch.arange(8, dtype=torch.float64) * 2 * math.pi / 8
    means = RRR_RING_RADIUS * torch.stack([ang.cos(), ang.sin()], -1)
    ring = GaussianMixtureOracle(means.float(), stds=RRR_RING_STD, schedule=schedule)
    gauss = GaussianMixtureOracle(torch.tensor([RRR_GAUSSIAN_MEAN]), stds=RRR_GAUSSIAN_STD, schedule=schedule)
    return ring, gauss, gaussian_mixture_product(ring, gauss)
