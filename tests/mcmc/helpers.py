"""A 2D Gaussian mixture with exact samples, mode weights and moments, and the null of the metrics the kernel tests
compare chains with."""

import math

import torch

from pyro_sculpt.diffusion import GaussianMixtureOracle
from pyro_sculpt.metrics import grid_mode_weights

MEANS = torch.tensor([[-1.2, 0.0], [1.2, 0.0], [0.0, 1.5]], dtype=torch.float64)
WEIGHTS = [0.2, 0.3, 0.5]
STD = 0.6
N = 4000


def mixture():
    return GaussianMixtureOracle(MEANS, stds=STD, weights=WEIGHTS)


def target(oracle=None):
    """``x -> (log p(x), grad log p(x))`` of the mixture, in closed form (isotropic components; the oracle's
    ``log_prob`` and ``score`` give the same, more slowly)."""
    log_w = torch.tensor(WEIGHTS, dtype=torch.float64).log()

    def f(x):
        r = x.unsqueeze(-2) - MEANS.to(x.dtype)  # (N, K, 2)
        log_c = log_w.to(x.dtype) - 0.5 * (r**2).sum(-1) / STD**2 - math.log(2 * math.pi * STD**2)
        resp = torch.softmax(log_c, -1)
        return torch.logsumexp(log_c, -1), -(resp.unsqueeze(-1) * r).sum(-2) / STD**2

    return f


def mode_probs(x):
    nearest = torch.cdist(x.double(), MEANS).argmin(-1)
    return torch.bincount(nearest, minlength=len(MEANS)).double() / x.shape[0]


class Reference:
    """Exact mode weights, mean and covariance of the mixture, and the mode-TV null at ``N`` samples."""

    def __init__(self, oracle, draws=8):
        self.modes = grid_mode_weights(oracle.log_prob, [(-5.0, 5.0), (-4.0, 5.5)], MEANS, resolution=400)
        w = torch.tensor(WEIGHTS, dtype=torch.float64)
        self.mean = (w[:, None] * MEANS).sum(0)
        d = MEANS - self.mean
        between = (w[:, None, None] * d[:, :, None] * d[:, None, :]).sum(0)
        self.cov = STD**2 * torch.eye(2, dtype=torch.float64) + between
        g = torch.Generator().manual_seed(123)
        self.null = sum(self.mode_tv(oracle.sample(N, generator=g)) for _ in range(draws)) / draws

    def mode_tv(self, x):
        return float(0.5 * (mode_probs(x) - self.modes).abs().sum())

    def moment_z(self, x):
        """The largest |z-score| of the sample mean and covariance entries against the exact ones (i.i.d.
        standard errors, with the Gaussian-free variance of the covariance entries estimated from ``x``)."""
        n = x.shape[0]
        c = x - self.mean
        z_mean = (x.mean(0) - self.mean) / (self.cov.diagonal() / n).sqrt()
        prods = torch.stack([c[:, 0] * c[:, 0], c[:, 0] * c[:, 1], c[:, 1] * c[:, 1]], -1)
        exact = torch.stack([self.cov[0, 0], self.cov[0, 1], self.cov[1, 1]])
        z_cov = (prods.mean(0) - exact) / (prods.var(0) / n).sqrt()
        return float(torch.cat([z_mean, z_cov]).abs().max())
