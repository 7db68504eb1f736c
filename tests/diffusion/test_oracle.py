import math

import pytest
import torch
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from pyro_sculpt.diffusion import (
    GaussianMixtureOracle,
    TabulatedVPSchedule,
    VESchedule,
    VPSchedule,
)

F64 = torch.float64
SCHEDULES = [VPSchedule(), VPSchedule("cosine"), VESchedule(0.01, 8.0), TabulatedVPSchedule.linear(200)]


def _with_schedule(oracle, schedule):
    return GaussianMixtureOracle(oracle.means, oracle.covariances, oracle.weights, schedule=schedule)


def _reference(oracle, t):
    """The noised mixture built independently with torch.distributions."""
    tt = torch.tensor(t, dtype=F64)
    a, s2 = oracle.schedule.alpha(tt), oracle.schedule.sigma2(tt)
    cov = a**2 * oracle.covariances + s2 * torch.eye(oracle.dim, dtype=F64)
    return MixtureSameFamily(Categorical(probs=oracle.weights), MultivariateNormal(a * oracle.means, cov))


@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
def test_noised_density_is_the_convolved_mixture(full_cov_oracle, schedule):
    oracle = _with_schedule(full_cov_oracle, schedule)
    x = torch.randn(64, 2, dtype=F64) * 1.5
    for t in [schedule.t_min, 0.05, 0.3, 0.7, 1.0]:
        ref = _reference(oracle, t)
        assert torch.allclose(oracle.log_prob(x, t), ref.log_prob(x), atol=1e-10)
    data = MixtureSameFamily(Categorical(probs=oracle.weights), MultivariateNormal(oracle.means, oracle.covariances))
    assert torch.allclose(oracle.log_prob(x), data.log_prob(x), atol=1e-10)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
def test_noised_score_is_the_gradient_of_the_noised_log_density(full_cov_oracle, schedule):
    oracle = _with_schedule(full_cov_oracle, schedule)
    x = torch.randn(3, 40, 2, dtype=F64) * 1.5
    for t in [schedule.t_min, 0.02, 0.2, 0.5, 0.9, 1.0]:
        xr = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(_reference(oracle, t).log_prob(xr).sum(), xr)
        assert torch.allclose(oracle.score(x, t), grad, rtol=1e-9, atol=1e-9)
    # a different time per point
    t = torch.rand(3, 40, dtype=F64) * (1 - schedule.t_min) + schedule.t_min
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(oracle.log_prob(xr, t).sum(), xr)
    assert torch.allclose(oracle.score(x, t), grad, rtol=1e-9, atol=1e-9)
    k = 17
    assert torch.allclose(oracle.score(x[1, k], t[1, k].item()), grad[1, k], rtol=1e-9, atol=1e-9)


def test_eps_and_denoise_follow_from_the_score(full_cov_oracle):
    x = torch.randn(10, 2, dtype=F64)
    t = 0.4
    sigma = full_cov_oracle.schedule.sigma(torch.tensor(t, dtype=F64))
    assert torch.allclose(full_cov_oracle.eps(x, t), -sigma * full_cov_oracle.score(x, t))
    # Tweedie's mean equals the mean of the closed-form posterior
    log_r, m, _ = full_cov_oracle.posterior(x, t)
    assert torch.allclose(full_cov_oracle.denoise(x, t), (log_r.exp().unsqueeze(-1) * m).sum(-2), atol=1e-10)


@pytest.mark.parametrize("t", [0.01, 0.3, 0.9])
def test_posterior_is_bayes_rule(full_cov_oracle, t):
    """p(x0 | xt) = p0(x0) N(xt; a x0, s^2 I) / p_t(xt), at arbitrary x0."""
    o = full_cov_oracle
    xt = torch.randn(5, 2, dtype=F64)
    x0 = torch.randn(5, 2, dtype=F64) * 0.7
    tt = torch.tensor(t, dtype=F64)
    a, s = o.schedule.alpha(tt), o.schedule.sigma(tt)
    lik = torch.distributions.Normal(a * x0, s).log_prob(xt).sum(-1)
    bayes = o.log_prob(x0) + lik - o.log_prob(xt, t)
    log_r, m, v = o.posterior(xt, t)
    post = torch.logsumexp(log_r + MultivariateNormal(m, v).log_prob(x0.unsqueeze(-2)), -1)
    assert torch.allclose(post, bayes, atol=1e-9)
    _, _, chol = o.posterior(xt, t, cholesky=True)
    assert torch.allclose(chol @ chol.transpose(-1, -2), v, atol=1e-12)


def test_posterior_at_zero_noise_is_a_point_mass(full_cov_oracle):
    x = torch.randn(4, 2, dtype=F64)
    log_r, m, chol = full_cov_oracle.posterior(x, torch.tensor(0.0, dtype=F64), cholesky=True)
    assert torch.allclose(m, x.unsqueeze(-2).expand_as(m), atol=1e-12)
    assert chol.abs().max() == 0


def test_samples_have_the_noised_moments(full_cov_oracle):
    gen = torch.Generator().manual_seed(0)
    n, t = 200_000, 0.3
    x = full_cov_oracle.sample(n, t, generator=gen)
    ref = _reference(full_cov_oracle, t)
    mean, cov = ref.mean, ref.variance
    assert torch.allclose(x.mean(0), mean, atol=5 * math.sqrt(cov.max() / n))
    assert torch.allclose(x.var(0), cov, rtol=0.02)
    _, labels = full_cov_oracle.sample(n, generator=gen, return_labels=True)
    freq = torch.bincount(labels, minlength=3).double() / n
    assert torch.allclose(freq, full_cov_oracle.weights, atol=5 * math.sqrt(0.25 / n))


def test_bad_inputs(full_cov_oracle):
    with pytest.raises(ValueError, match="means"):
        GaussianMixtureOracle(torch.zeros(2), stds=1.0)
    with pytest.raises(ValueError, match="exactly one"):
        GaussianMixtureOracle(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="weights"):
        GaussianMixtureOracle(torch.zeros(2, 2), stds=1.0, weights=[0.5, 0.6])
    with pytest.raises(ValueError, match="weights"):
        GaussianMixtureOracle(torch.zeros(2, 2), stds=1.0, weights=[1.0])
    with pytest.raises(ValueError, match="positive definite"):
        GaussianMixtureOracle(torch.zeros(1, 2), torch.tensor([[[1.0, 2.0], [2.0, 1.0]]]))
    with pytest.raises(ValueError, match="stds"):
        GaussianMixtureOracle(torch.zeros(2, 2), stds=-1.0)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 2\)"):
        full_cov_oracle.score(torch.zeros(5, 3, dtype=F64), 0.5)
    with pytest.raises(ValueError, match="t of shape"):
        full_cov_oracle.score(torch.zeros(5, 2, dtype=F64), torch.rand(4, dtype=F64))
