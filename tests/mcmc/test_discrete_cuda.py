"""Independence Metropolis-Hastings, Gibbs and the GFlowNet SMC's final moves on a GPU (skipped without CUDA)."""

import pytest
import torch

import pyro_sculpt as ps
from tests.conftest import exact_bases
from tests.mcmc.discrete_helpers import mean_l1_ratio

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

ENV = ps.HyperGrid(2, 8)


def _setup():
    p1, p2 = (b.to("cuda") for b in exact_bases(ENV, 2, seed=2))
    q1, q2 = p1.exact_terminal_distribution(), p2.exact_terminal_distribution()
    return p1, p2, q1.log(), q2.log(), (q1 * q2 / (q1 * q2).sum()).cpu()


def test_independence_mh_and_gibbs_on_cuda():
    p1, _, lq1, lq2, target = _setup()
    kernel = ps.mcmc.IndependenceMH(p1, lambda x: lq2[ENV.index(x)])
    state, _ = kernel.run(500 * 32, 40)
    assert state.x.device.type == "cuda" and state.log_weight.device.type == "cuda"
    assert mean_l1_ratio(ENV, state.x.cpu(), target, 32) <= 1.1
    gibbs = ps.mcmc.Gibbs(lambda x: (lq1 + lq2)[ENV.index(x)], ENV.height)
    state = gibbs.init(torch.zeros(500 * 32, 2, dtype=torch.long, device="cuda"))
    for _ in range(20):
        state, info = gibbs.step(state)
    assert state.x.device.type == "cuda" and info.accepted.device.type == "cuda"
    assert mean_l1_ratio(ENV, state.x.cpu(), target, 32) <= 1.1


def test_product_smc_with_final_moves_on_cuda():
    p1, p2, _, _, target = _setup()
    n = 20_000
    res = ps.infer.smc(ps.product(p1, p2), n, seed=0, moves=ps.mcmc.IndependenceRejuvenation(10))
    assert res.x.device.type == "cuda"
    l1 = ps.metrics.l1_distance(res.distribution(ENV).cpu(), target)
    assert l1 < 1.3 * ps.metrics.expected_l1_floor(target, n)
