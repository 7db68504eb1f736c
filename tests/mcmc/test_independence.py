"""Independence Metropolis-Hastings with a GFlowNet as the proposal (docs/math.md §3), against the exact product of
two GFlowNets' terminal distributions on the hypergrid (dynamic programming)."""

import math

import pytest
import torch

import pyro_sculpt as ps
from tests.mcmc.discrete_helpers import mean_l1_ratio, product_setup

ENV = ps.HyperGrid(2, 8)
CHAINS, GROUPS = 500, 32  # 32 groups of 500 chains: the mean L1 over groups is within a few % of its expectation


def test_independence_mh_reaches_the_exact_product_of_two_gflownets():
    p1, _, _, log_p2, target = product_setup(ENV, seed=2)  # sup pi / p1 = 6.3
    kernel = ps.mcmc.IndependenceMH(p1, log_p2)  # proposal p1, accept with p2(x') / p2(x)
    state = kernel.init(CHAINS * GROUPS)
    # one draw per chain: the chains are independent, so the only error left is the bias of K^k(p1, .)
    assert mean_l1_ratio(ENV, state.x, target, GROUPS) > 5.0  # the proposal alone is far from the product
    state, rates = kernel.run(state, 40)
    assert mean_l1_ratio(ENV, state.x, target, GROUPS) <= 1.1
    assert 0.3 < rates[-1] < 0.7


def test_from_target_with_a_mixture_proposal():
    p1, p2, log_p1, log_p2, target = product_setup(ENV, seed=0)  # sup pi / p1 = 25, / mixture = 4.8
    d1, d2 = p1.as_distribution(), p2.as_distribution()

    class Mixture:
        def sample(self, shape):
            n = shape[0]
            k = int((torch.rand(n) < 0.5).sum())
            return torch.cat([d1.sample((k,)), d2.sample((n - k,))])[torch.randperm(n)]

        def log_prob(self, x):
            return torch.logaddexp(log_p1(x), log_p2(x)) - math.log(2)

    kernel = ps.mcmc.IndependenceMH.from_target(Mixture(), lambda x: log_p1(x) + log_p2(x))
    state, _ = kernel.run(CHAINS * GROUPS, 40)
    assert mean_l1_ratio(ENV, state.x, target, GROUPS) <= 1.1


def test_each_chain_has_its_own_test():
    p1, _, _, log_p2, _ = product_setup(ENV, seed=2)
    stuck = torch.tensor([7, 7])

    def log_weight(x):  # one state of huge weight: a chain there never leaves it
        return torch.where((x == stuck).all(-1), torch.full(x.shape[:1], 1e6, dtype=torch.float64), log_p2(x))

    kernel = ps.mcmc.IndependenceMH(p1, log_weight)
    x0 = kernel.draw(2000)
    x0[0] = stuck
    state = kernel.init(x0)
    moved = torch.zeros(2000, dtype=torch.bool)
    for _ in range(5):
        new, info = kernel.step(state)
        assert info.accept_prob.shape == (2000,) and info.accepted.shape == (2000,)
        assert info.accept_prob[0] == 0.0 and not info.accepted[0]
        assert torch.equal(new.x[~info.accepted], state.x[~info.accepted])  # a rejected chain keeps its state
        assert torch.equal(new.log_weight[info.accepted], kernel.evaluate(new.x)[info.accepted])
        moved |= (new.x != state.x).any(-1)
        state = new
    assert torch.equal(state.x[0], stuck)
    assert 0.5 < moved[1:].double().mean() < 1.0  # the others accept and reject on their own


def test_a_start_outside_the_support_accepts_the_first_proposal_inside_it():
    p1, _, _, log_p2, _ = product_setup(ENV, seed=2)
    kernel = ps.mcmc.IndependenceMH(p1, lambda x: torch.where(x[:, 0] == 0, -math.inf, log_p2(x).double()))
    state = kernel.init(torch.zeros(100, 2, dtype=torch.long))
    state, info = kernel.step(state)
    inside = state.x[:, 0] != 0
    assert bool(info.accepted[inside].all()) and bool((state.log_weight[inside] > -math.inf).all())


def test_bad_input():
    p1, _, _, log_p2, _ = product_setup(ENV, seed=2)
    with pytest.raises(TypeError, match="proposal must be a distribution with sample"):
        ps.mcmc.IndependenceMH(object(), log_p2)
    with pytest.raises(TypeError, match="log_weight must be callable"):
        ps.mcmc.IndependenceMH(p1, "p2")
    with pytest.raises(TypeError, match="must have an exact log_prob"):
        ps.mcmc.IndependenceMH.from_target(lambda n: torch.zeros(n, 2, dtype=torch.long), log_p2)
    with pytest.raises(ValueError, match=r"log_weight returned shape \(4, 1\) for x of shape \(4, 2\)"):
        ps.mcmc.IndependenceMH(p1, lambda x: torch.zeros(x.shape[0], 1)).init(4)
    with pytest.raises(ValueError, match="the log-weight is nan at chain 1"):
        ps.mcmc.IndependenceMH(p1, lambda x: torch.tensor([0.0, math.nan])).init(2)
    with pytest.raises(ValueError, match="number of chains >= 1"):
        ps.mcmc.IndependenceMH(p1, log_p2).init(0)
    with pytest.raises(ValueError, match=r"proposal returned draws of shape \(3, 2\) for 4 chains"):
        ps.mcmc.IndependenceMH(lambda n: torch.zeros(3, 2, dtype=torch.long), log_p2).init(4)
    kernel = ps.mcmc.IndependenceMH(lambda n: torch.zeros(n, 3, dtype=torch.long), lambda x: x.sum(-1).double())
    with pytest.raises(ValueError, match=r"proposal returned draws of shape \(4, 3\) for chains of shape \(4, 2\)"):
        kernel.step(kernel.init(torch.zeros(4, 2, dtype=torch.long)))
    with pytest.raises(TypeError, match="state must be an IndependenceState"):
        kernel.step(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="num_steps must be an integer >= 0"):
        kernel.run(4, -1)


@pytest.mark.slow
def test_independence_mh_on_a_32x32_grid():
    env = ps.HyperGrid(2, 32)
    p1, p2, log_p1, log_p2, target = product_setup(env, seed=1)
    q1 = p1.exact_terminal_distribution()
    kernel = ps.mcmc.IndependenceMH(p1, log_p2)
    state, _ = kernel.run(2000 * 8, int(3 * float((target / q1).max())))  # TV <= (1 - 1/M)^k <= e^-3
    assert mean_l1_ratio(env, state.x, target, 8) <= 1.1
