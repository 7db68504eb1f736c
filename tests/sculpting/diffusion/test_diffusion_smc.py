"""Twisted SMC of sculpted diffusion models (Wu et al. 2023 style): the weights correct a biased guided proposal to
the exact composition of Gaussian-mixture oracles."""

import pytest
import torch

import pyro_sculpt as ps
from pyro_sculpt.diffusion import AncestralSampler, DDIMSampler
from pyro_sculpt.metrics import grid_mode_weights, mode_weight_tv
from pyro_sculpt.sculpting.diffusion import GaussianMixtureClassifier
from tests.sculpting.diffusion.test_diffusion_composition import BOUNDS, MODES, two_bases


def weighted_mode_weights(x, log_w):
    nearest = torch.cdist(x.double(), MODES.double()).argmin(-1)
    return torch.zeros(len(MODES), dtype=torch.float64).index_add_(0, nearest, log_w.exp().double())


@pytest.fixture(scope="module")
def setup():
    p1, p2 = two_bases()
    clf = GaussianMixtureClassifier([p1, p2], 2, quadrature_points=6, chunk_size=8192)
    return p1, p2, clf


def test_smc_weights_correct_an_overguided_proposal_to_the_exact_harmonic_mean(setup):
    p1, p2, clf = setup
    y = (0, 1)
    target = grid_mode_weights(ps.composition_log_density([p1, p2], y), BOUNDS, MODES, resolution=400)
    hm = ps.harmonic_mean(AncestralSampler(p1, 100), AncestralSampler(p2, 100), clf, gamma=3.0)  # a biased proposal
    res = ps.infer.smc(hm, 3000, seed=0)
    unweighted = (
        0.5
        * (
            weighted_mode_weights(res.x, torch.full_like(res.log_weights, 0.0) - torch.log(torch.tensor(3000.0)))
            - target
        )
        .abs()
        .sum()
    )
    weighted = 0.5 * (weighted_mode_weights(res.x, res.log_weights) - target).abs().sum()
    torch.manual_seed(0)
    guided_tv = mode_weight_tv(hm.sample((3000,)), target, MODES)
    assert guided_tv > 0.08  # gamma = 3 overshoots: the guided sampler alone is far off
    assert float(weighted) < 0.035, (float(weighted), float(unweighted), guided_tv)
    assert res.ess > 0.3 * 3000 and res.pareto_k < 0.7
    assert len(res.ess_history) == hm.process.max_steps


def test_smc_needs_a_stochastic_sampler_and_runs_plain_samplers_unweighted(setup):
    p1, p2, clf = setup
    with pytest.raises(ValueError, match="twisted SMC needs a stochastic sampler"):
        ps.infer.smc(ps.harmonic_mean(DDIMSampler(p1, 10), DDIMSampler(p2, 10), clf), 10)
    res = ps.infer.smc(AncestralSampler(p1, 10), 50, seed=0)  # no twist: the process's own steps, equal weights
    assert torch.allclose(res.log_weights, torch.full((50,), -torch.log(torch.tensor(50.0))).double())
    assert res.x.shape == (50, 2) and res.num_resamples == 0
