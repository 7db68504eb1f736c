"""Independence Metropolis-Hastings moves of the final particles of the classifier-free GFlowNet SMC (the product of
two GFlowNets), against the exact product (dynamic programming)."""

import math

import pytest
import torch

import pyro_sculpt as ps
from tests.conftest import exact_bases

ENV = ps.HyperGrid(2, 8)


def _l1_ratio(res, target, n):
    return ps.metrics.l1_distance(res.distribution(ENV), target) / ps.metrics.expected_l1_floor(target, n)


def test_final_moves_bring_the_product_smc_to_the_sampling_floor():
    p1, p2 = exact_bases(ENV, 2, seed=23)
    probs = torch.stack([p1.exact_terminal_distribution(), p2.exact_terminal_distribution()]).double()
    target = probs.prod(0) / probs.prod(0).sum()
    dist = ps.product(p1, p2)
    n, seeds = 10_000, range(3)
    plain = [_l1_ratio(ps.infer.smc(dist, n, seed=s), target, n) for s in seeds]
    moves = ps.mcmc.IndependenceRejuvenation(num_steps=10, proposal="mixture")
    moved = []
    for s in seeds:
        res = ps.infer.smc(dist, n, seed=s, moves=moves)
        moved.append(_l1_ratio(res, target, n))
        assert torch.allclose(res.log_weights, torch.full((n,), -math.log(n), dtype=torch.float64))  # equal weights
        assert res.resample_steps[-1] == len(res.ess_history) - 1  # resampled after the last step
        assert abs(res.log_evidence - math.log(float(probs.prod(0).sum()))) < 0.05
        assert len(moves.history) == 10 and 0.3 < moves.history[-1] < 0.8  # reset at every run
    assert sum(plain) / 3 > 1.5, plain  # the product twist alone: far from the floor
    assert sum(moved) / 3 < 1.15, moved


def test_moves_update_the_particles_prefix_quantities():
    p1, p2 = exact_bases(ENV, 2, seed=23)
    twist = ps.product(p1, p2).process.twist(moves=ps.mcmc.IndependenceRejuvenation(3, proposal=1))
    assert twist.rejuvenate_final
    particles = twist.init(500)
    for t in range(twist.max_steps):
        particles, _, done = twist.step(particles, t)
        same = twist.rejuvenate(particles, t)
        if not bool(done.all()):
            assert same is particles  # no move before every particle is done
        else:
            break
    moved = twist.rejuvenate(particles, t)
    log_p = torch.stack([p1.exact_terminal_distribution(), p2.exact_terminal_distribution()], -1).double().log()
    assert torch.allclose(moved["log_lik"], log_p[ENV.index(moved["s"])])
    assert bool((moved["log_pb"] == 0).all()) and bool(moved["done"].all())


def test_bad_moves():
    p1, p2 = exact_bases(ENV, 2, seed=23)
    with pytest.raises(TypeError, match="moves must be a pyro_sculpt.mcmc.IndependenceRejuvenation"):
        ps.infer.smc(ps.product(p1, p2), 10, moves=ps.mcmc.Rejuvenation("mala"))
    with pytest.raises(ValueError, match="moves.proposal must index one of the 2 bases, got 2"):
        ps.infer.smc(ps.product(p1, p2), 10, moves=ps.mcmc.IndependenceRejuvenation(proposal=2))
    with pytest.raises(ValueError, match="proposal='particles' .* is for continuous states"):
        ps.infer.smc(ps.product(p1, p2), 10, moves=ps.mcmc.IndependenceRejuvenation(proposal="particles"))
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="num_steps must be an int >= 1"):
            ps.mcmc.IndependenceRejuvenation(num_steps=bad)
    for bad in ("uniform", -1, 1.0, True):
        with pytest.raises(ValueError, match="proposal must be one of"):
            ps.mcmc.IndependenceRejuvenation(proposal=bad)
