import math

import pytest
import torch

import pyro_sculpt as ps

MEANS = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])
STD = 0.5


def two_modes(x: torch.Tensor) -> torch.Tensor:
    """log of the equal mixture of N((-2, 0), 0.5^2 I) and N((2, 0), 0.5^2 I), normalised: right-mode weight 1/2."""
    d = ((x[:, None, :].double() - MEANS[None].double()) ** 2).sum(-1)
    return torch.logsumexp(-0.5 * d / STD**2, -1) - math.log(2 * 2 * math.pi * STD**2)


def population(n: int, right: float, seed: int) -> torch.Tensor:
    """n draws of the two modes with weight ``right`` on the right one."""
    g = torch.Generator().manual_seed(seed)
    k = (torch.rand(n, generator=g) < right).long()
    return MEANS[k] + STD * torch.randn(n, 2, generator=g)


def right_weight(x: torch.Tensor) -> float:
    return float((x[:, 0] > 0).double().mean())


def test_a_population_far_from_the_target_reaches_it_where_a_fixed_proposal_stalls():
    # 98 % of the chains start in the left mode, the target has half its mass in the right one. A density estimate
    # fitted once to that population proposes the right mode 2 % of the time, so the chains cross at about that rate;
    # refitted to the other half at every step, the proposal follows the population across
    x0 = population(4000, 0.02, seed=0)
    torch.manual_seed(1)
    kernel = ps.mcmc.PopulationIndependenceMH(two_modes, num_centres=1000, bandwidth=0.5)
    state, rates = kernel.run(x0, 10)
    assert abs(right_weight(state.x) - 0.5) < 0.03, right_weight(state.x)  # 3.8 standard errors of 4,000 draws
    assert len(rates) == 10 and min(rates[3:]) > 0.7, rates
    assert torch.allclose(state.log_prob, two_modes(state.x))  # the kept log-densities are the states'
    torch.manual_seed(1)
    kde = ps.mcmc.GaussianKDE(x0, 1000, 0.5)
    fixed, _ = ps.mcmc.IndependenceMH(kde.sample, lambda x: two_modes(x) - kde.log_prob(x)).run(x0, 10)
    assert right_weight(fixed.x) < 0.35, right_weight(fixed.x)


def test_the_target_is_invariant():
    # started from exact draws, the population stays exact: the right-mode weight and the spread in each mode
    x0 = population(20_000, 0.5, seed=2)
    torch.manual_seed(3)
    state, _ = ps.mcmc.PopulationIndependenceMH(two_modes, num_centres=500, bandwidth=1.0).run(x0, 8)
    x = state.x
    assert abs(right_weight(x) - 0.5) < 0.012  # 3.4 standard errors
    assert torch.unique(x, dim=0).shape[0] > 15_000  # the chains moved
    for k in (0, 1):
        part = x[(x[:, 0] > 0) == bool(k)]
        assert torch.allclose(part.mean(0), MEANS[k], atol=0.02), part.mean(0)
        assert torch.allclose(part.std(0), torch.full((2,), STD), atol=0.02), part.std(0)


def test_a_step_updates_every_chain_once_and_reports_per_chain():
    x0 = population(11, 0.5, seed=4)  # odd: halves of 5 and 6
    kernel = ps.mcmc.PopulationIndependenceMH(two_modes, num_centres=4)
    state, info = kernel.step(kernel.init(x0))
    assert state.x.shape == (11, 2) and state.log_prob.shape == (11,) and state.num_particles == 11
    assert info.accept_prob.shape == (11,) and info.accepted.shape == (11,) and info.log_accept_ratio.shape == (11,)
    moved = (state.x != x0).any(-1)
    assert torch.equal(moved, info.accepted)
    assert "PopulationIndependenceMH(num_centres=4, bandwidth=1.0)" == repr(kernel)


def test_bad_input():
    kernel = ps.mcmc.PopulationIndependenceMH(two_modes)
    with pytest.raises(ValueError, match="x must be a tensor \\(N, ...\\) of N >= 4 states"):
        kernel.init(torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"x: log_prob is nan at chain 1"):
        ps.mcmc.PopulationIndependenceMH(lambda x: torch.where(x[:, 0] > 0, math.nan, 0.0)).init(
            torch.tensor([[-1.0, 0.0], [1.0, 0.0], [-1.0, 1.0], [-2.0, 0.0]])
        )
    with pytest.raises(ValueError, match=r"log_prob returned shape \(4, 1\) for x of shape \(4, 2\): expected \(4,\)"):
        ps.mcmc.PopulationIndependenceMH(lambda x: x[:, :1]).init(torch.zeros(4, 2))
    with pytest.raises(TypeError, match="log_prob must be callable"):
        ps.mcmc.PopulationIndependenceMH(3.0)
    with pytest.raises(ValueError, match="bandwidth must be a finite number > 0"):
        ps.mcmc.PopulationIndependenceMH(two_modes, bandwidth=0)
    with pytest.raises(TypeError, match="state must be a PopulationState"):
        kernel.step(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="num_steps must be an integer >= 0"):
        kernel.run(torch.zeros(4, 2), -1)
    with pytest.raises(ValueError, match="refit must be True or False"):
        ps.mcmc.IndependenceRejuvenation(5, proposal="particles", refit="halves")
