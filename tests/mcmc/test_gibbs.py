"""Gibbs over the coordinates of hypergrid states with the summed energy of two models (docs/math.md §3), against
the exact product of their terminal distributions (dynamic programming)."""

import math

import pytest
import torch

import pyro_sculpt as ps
from tests.mcmc.discrete_helpers import mean_l1_ratio, product_setup

ENV = ps.HyperGrid(2, 8)
CHAINS, GROUPS = 500, 32


@pytest.mark.parametrize("scan, steps", [("systematic", 20), ("random", 60)])
def test_gibbs_reaches_the_exact_product(scan, steps):
    _, _, log_p1, log_p2, target = product_setup(ENV, seed=2)
    kernel = ps.mcmc.Gibbs.from_energies([lambda x: -log_p1(x), lambda x: -log_p2(x)], ENV.height, scan=scan)
    state = kernel.init(torch.zeros(CHAINS * GROUPS, 2, dtype=torch.long))
    for _ in range(steps):
        state, info = kernel.step(state)
    assert mean_l1_ratio(ENV, state.x, target, GROUPS) <= 1.1
    assert torch.equal(state.log_prob, (log_p1(state.x) + log_p2(state.x)).double())
    assert bool((info.accept_prob == 1).all()) and 0.3 < info.accepted.double().mean() < 1


def test_one_batched_call_per_coordinate():
    calls = []

    def log_prob(x):
        calls.append(x.shape[0])
        return -(x.double() - 2).pow(2).sum(-1)

    kernel = ps.mcmc.Gibbs(log_prob, [5, 3, 4])
    state = kernel.init(torch.zeros(10, 3, dtype=torch.long))
    calls.clear()
    kernel.step(state)
    assert calls == [50, 30, 40]
    calls.clear()
    random = ps.mcmc.Gibbs(log_prob, [5, 3, 4], scan="random")
    torch.manual_seed(0)
    coords = torch.randint(3, (10,))  # the coordinates the step draws first, with the same seed
    torch.manual_seed(0)
    state, _ = random.step(state)
    # one call, on the states of the space only: each chain's candidates number the size of its drawn coordinate
    expected = int(torch.tensor([5, 3, 4])[coords].sum())
    assert expected < 50 and calls == [expected] and bool((state.x < torch.tensor([5, 3, 4])).all())


def test_per_coordinate_sizes_match_a_product_of_categoricals():
    # independent coordinates: each full conditional is its marginal, so one sweep samples exactly
    logits = [torch.randn(5, dtype=torch.float64), torch.randn(3, dtype=torch.float64)]
    kernel = ps.mcmc.Gibbs(lambda x: logits[0][x[:, 0]] + logits[1][x[:, 1]], [5, 3])
    state, _ = kernel.step(kernel.init(torch.zeros(40_000, 2, dtype=torch.long)))
    for d in range(2):
        freq = torch.bincount(state.x[:, d], minlength=len(logits[d])).double() / 40_000
        assert torch.allclose(freq, torch.softmax(logits[d], 0), atol=0.01)


def test_bad_input():
    def lp(x):
        return -x.double().sum(-1)

    for bad in (0, -1, 2.5, True, [3, 0], [], "8"):
        with pytest.raises(ValueError, match="num_values must be an int >= 1"):
            ps.mcmc.Gibbs(lp, bad)
    with pytest.raises(ValueError, match="scan must be one of"):
        ps.mcmc.Gibbs(lp, 8, scan="sweep")
    with pytest.raises(TypeError, match="log_prob must be callable"):
        ps.mcmc.Gibbs(None, 8)
    with pytest.raises(TypeError, match="energies must be a non-empty sequence"):
        ps.mcmc.Gibbs.from_energies([], 8)
    kernel = ps.mcmc.Gibbs(lp, 8)
    with pytest.raises(ValueError, match="x must be an integer tensor"):
        kernel.init(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="x must be an integer tensor"):
        kernel.init(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"x must have coordinate d in \[0, num_values\[d\]\)"):
        kernel.init(torch.full((4, 2), 8))
    with pytest.raises(ValueError, match="x has 2 coordinates but num_values gives 3"):
        ps.mcmc.Gibbs(lp, [8, 8, 8]).init(torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"log_prob returned shape \(4, 1\)"):
        ps.mcmc.Gibbs(lambda x: x[:, :1].double(), 8).init(torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="the log-density is -inf at chain 0"):
        ps.mcmc.Gibbs(lambda x: torch.full(x.shape[:1], -math.inf), 8).init(torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="state must be a GibbsState"):
        kernel.step(torch.zeros(4, 2, dtype=torch.long))


def test_random_scan_gives_log_prob_only_states_of_the_space():
    # uneven sizes: the random scan drew candidates up to the largest size for every chain, and a table-lookup
    # log_prob failed on them (IndexError) or was read outside the space
    tables = [torch.randn(2, dtype=torch.float64), torch.randn(6, dtype=torch.float64)]
    seen = []

    def log_prob(x):
        seen.append(x.amax(0))
        return tables[0][x[:, 0]] + tables[1][x[:, 1]]

    kernel = ps.mcmc.Gibbs(log_prob, [2, 6], scan="random")
    state = kernel.init(torch.zeros(4000, 2, dtype=torch.long))
    for _ in range(6):
        state, _ = kernel.step(state)
    assert torch.stack(seen).amax(0).tolist() == [1, 5]
    for d in range(2):  # independent coordinates: the exact marginals
        freq = torch.bincount(state.x[:, d], minlength=len(tables[d])).double() / 4000
        assert torch.allclose(freq, torch.softmax(tables[d], 0), atol=0.03)
