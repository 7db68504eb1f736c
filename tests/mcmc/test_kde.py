import math

import pytest
import torch

import pyro_sculpt as ps


def test_the_density_is_normalised_and_matches_its_samples():
    torch.manual_seed(0)
    pts = torch.cat([torch.randn(300, 2) * 0.3 + torch.tensor([-2.0, 0.0]), torch.randn(700, 2) * 0.5 + 2.0])
    kde = ps.mcmc.GaussianKDE(pts, num_centres=200, bandwidth=0.8)
    assert kde.num_centres == 200
    # integral on a fine grid: 1
    g = torch.linspace(-6, 6, 401)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    grid = torch.stack([xx.flatten(), yy.flatten()], -1)
    mass = kde.log_prob(grid).exp().sum() * (g[1] - g[0]) ** 2
    assert abs(float(mass) - 1.0) < 1e-3, float(mass)
    # its draws follow it: the mass of the left cluster, and the log-density against a direct formula
    x = kde.sample(20_000)
    assert x.shape == (20_000, 2) and x.dtype == pts.dtype
    left = (kde.centres[:, 0] < 0).double().mean()
    assert abs(float((x[:, 0] < 0).double().mean()) - float(left)) < 0.015
    z = (x[:5, None, :].double() - kde.centres[None]) / kde.h
    direct = torch.logsumexp(-0.5 * (z**2).sum(-1), 1) - math.log(200) - torch.log(kde.h).sum() - math.log(2 * math.pi)
    assert torch.allclose(kde.log_prob(x[:5]), direct)


def test_event_shapes_and_chunks():
    pts = torch.randn(50, 1, 2, 2)
    kde = ps.mcmc.GaussianKDE(pts, num_centres=80)  # more centres than points: all of them
    assert kde.num_centres == 50 and kde.sample(7).shape == (7, 1, 2, 2)
    x = torch.randn(33, 1, 2, 2)
    assert torch.allclose(kde.log_prob(x, chunk=5), kde.log_prob(x))


def test_bad_input():
    with pytest.raises(ValueError, match="points must be a tensor"):
        ps.mcmc.GaussianKDE(torch.randn(1, 2))
    with pytest.raises(ValueError, match="num_centres must be"):
        ps.mcmc.GaussianKDE(torch.randn(10, 2), num_centres=0)
    with pytest.raises(ValueError, match="bandwidth must be a finite number > 0"):
        ps.mcmc.GaussianKDE(torch.randn(10, 2), bandwidth=0.0)
    with pytest.raises(ValueError, match="points must be finite"):
        ps.mcmc.GaussianKDE(torch.tensor([[0.0, 1.0], [float("nan"), 0.0]]))
    kde = ps.mcmc.GaussianKDE(torch.randn(10, 2))
    with pytest.raises(ValueError, match=r"x must have event shape \(2,\)"):
        kde.log_prob(torch.randn(3, 3))
    with pytest.raises(ValueError, match="num_centres must be an int >= 2"):
        ps.mcmc.IndependenceRejuvenation(5, proposal="particles", num_centres=1)
    with pytest.raises(ValueError, match="bandwidth must be a finite number > 0"):
        ps.mcmc.IndependenceRejuvenation(5, proposal="particles", bandwidth=-1)
