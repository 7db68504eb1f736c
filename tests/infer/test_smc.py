"""The generic SMC driver: any process, twists, resampling, diagnostics and conversions."""

import math

import arviz as az
import pytest
import torch

import pyro_sculpt as ps
from pyro_sculpt.infer import ProcessProposal, SMCResult, Twist, multinomial, smc, systematic
from tests.conftest import exact_bases

ENV = ps.HyperGrid(2, 6)


class CoinTwist(Twist):
    """Two steps of a fair coin proposal towards a target that prefers heads 3:1 (exact answer known)."""

    max_steps = 2

    def init(self, n):
        return {"heads": torch.zeros(n), "done": torch.zeros(n, dtype=torch.bool)}

    def step(self, particles, t):
        coin = torch.randint(0, 2, particles["heads"].shape).float()
        inc = torch.where(coin > 0, torch.tensor(0.75 / 0.5).log(), torch.tensor(0.25 / 0.5).log()).double()
        done = torch.full_like(particles["done"], t == 1)
        return {"heads": particles["heads"] + coin, "done": done}, inc, done

    def terminal(self, particles):
        return particles["heads"]


def test_smc_of_a_twist_targets_its_tilted_distribution_and_reports_the_normaliser():
    res = smc(CoinTwist(), 20_000, seed=0, resample_threshold=None)
    mean = float((res.weights.double() * res.x.double()).sum())
    assert abs(mean - 1.5) < 0.02  # two coins with P(heads) = 3/4
    assert abs(res.log_evidence) < 0.01  # the target is normalised
    assert res.num_resamples == 0 and len(res.ess_history) == 2


def test_resampling_keeps_the_target_and_is_counted():
    res = smc(CoinTwist(), 20_000, seed=1, resample_threshold=1.0)
    assert res.num_resamples == 1 and res.resample_steps == [0]  # never after the last step
    mean = float((res.weights.double() * res.x.double()).sum())
    assert abs(mean - 1.5) < 0.03
    assert abs(res.log_evidence) < 0.01


def test_systematic_resampling_is_proportional():
    log_w = torch.tensor([0.1, 0.2, 0.7]).log()
    counts = torch.bincount(systematic(log_w.repeat_interleave(1000)), minlength=3000)
    picked = torch.stack([counts[:1000].sum(), counts[1000:2000].sum(), counts[2000:].sum()]).double() / 3000
    assert torch.allclose(picked, torch.tensor([0.1, 0.2, 0.7], dtype=torch.float64), atol=1e-3)


def test_resampling_schemes_draw_any_number_of_indices():
    log_w = torch.tensor([0.1, 0.2, 0.7]).log()
    for n in (7, 10, 1000):
        counts = torch.bincount(systematic(log_w, n), minlength=3).double()
        assert counts.sum() == n
        assert bool(((counts - n * log_w.exp()).abs() < 1).all())  # floor or ceil of n w_i
        assert multinomial(log_w, n).shape == (n,)
    assert multinomial(log_w).shape == (3,) and systematic(log_w).shape == (3,)
    for scheme in (systematic, multinomial):
        with pytest.raises(ValueError, match="num_samples must be an integer >= 1"):
            scheme(log_w, 0)


def test_the_result_resamples_systematically_in_random_order():
    torch.manual_seed(0)
    x = torch.arange(1000.0)
    equal = SMCResult(x, torch.full((1000,), -math.log(1000)), [1000.0], 0, 0.0, 0.0)
    out = equal.resample()  # equal weights: every particle exactly once
    assert torch.equal(out.sort().values, x) and not torch.equal(out, x)
    log_w = torch.log_softmax(torch.linspace(0.0, 3.0, 1000), 0)
    res = SMCResult(x, log_w, [1.0], 0, 0.0, 0.0)
    for n in (500, 4000):
        counts = torch.bincount(res.resample(n).long(), minlength=1000).double()
        assert bool(((counts - n * log_w.exp()).abs() < 1).all())  # the least noise a resampling can add
    multi = torch.bincount(res.resample(4000, resampling="multinomial").long(), minlength=1000).double()
    assert float((multi - 4000 * log_w.exp()).abs().max()) >= 1  # independent draws do stray
    with pytest.raises(ValueError, match="resampling must be one of"):
        res.resample(10, resampling="stratified-ish")
    with pytest.raises(ValueError, match="num_samples must be an integer >= 1"):
        res.resample(0)


def test_smc_of_a_plain_gflownet_is_its_sampler_with_equal_weights():
    p1, _ = exact_bases(ENV, 2, seed=3)
    res = smc(p1, 30_000, seed=0)
    assert isinstance(ps.infer.as_twist(p1), ProcessProposal)
    assert torch.allclose(res.log_weights, torch.full_like(res.log_weights, res.log_weights[0]))
    l1 = ps.metrics.l1_distance(res.distribution(ENV), p1.exact_terminal_distribution())
    assert l1 < 3 * ps.metrics.expected_l1_floor(p1.exact_terminal_distribution(), 30_000)


def test_result_converts_to_arviz_and_to_a_pyro_empirical():
    res = smc(CoinTwist(), 500, seed=0)
    idata = res.to_inference_data()
    assert isinstance(idata, az.InferenceData)
    assert idata.posterior["x"].shape == (1, 500)
    assert idata.sample_stats.attrs["num_resamples"] == res.num_resamples
    emp = res.empirical()
    assert abs(float(emp.mean) - float((res.weights * res.x).sum())) < 1e-4


def test_a_twist_may_set_its_own_default_resampling_threshold():
    class Eager(CoinTwist):
        resample_threshold = 1.0  # resample after every step but the last

    res = smc(Eager(), 200, seed=0)
    assert res.num_resamples == len(res.ess_history) - 1
    assert smc(Eager(), 200, seed=0, resample_threshold=None).num_resamples == 0  # an explicit value wins
    with pytest.raises(ValueError, match="resample_threshold must lie in \\(0, 1\\], be None or 'auto'"):
        smc(CoinTwist(), 10, resample_threshold="always")


def test_any_real_threshold_and_integer_seed_are_accepted():
    import numpy as np

    ref = smc(CoinTwist(), 500, seed=3, resample_threshold=0.5)
    for threshold in (np.float32(0.5), np.float64(0.5), torch.tensor(0.5), 0.5):
        res = smc(CoinTwist(), 500, seed=np.int64(3), resample_threshold=threshold)
        assert torch.equal(res.x, ref.x) and res.num_resamples == ref.num_resamples


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_particles must be an integer >= 1"):
        smc(CoinTwist(), 0)
    with pytest.raises(ValueError, match="resample_threshold must lie in"):
        smc(CoinTwist(), 10, resample_threshold=1.5)
    for bad in (float("nan"), torch.tensor(0.0), "0.5", True):
        with pytest.raises(ValueError, match="resample_threshold must lie in"):
            smc(CoinTwist(), 10, resample_threshold=bad)
    for bad in ("a", 1.5, -1, 2**32):
        with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*32\) or None"):
            smc(CoinTwist(), 10, seed=bad)
    with pytest.raises(ValueError, match="resampling must be one of"):
        smc(CoinTwist(), 10, resampling="stratified-ish")
    with pytest.raises(TypeError, match="target must be an IterativeProcess"):
        smc("nope", 10)
    with pytest.raises(ValueError, match="has no twist, so options"):
        smc(exact_bases(ENV, 2)[0], 10, terminal="classifier")


def test_pareto_k_of_tied_weights_sees_the_tail_not_the_ties():
    from pyro_sculpt.infer import pareto_k

    g = torch.Generator().manual_seed(0)
    values = torch.randn(20, generator=g, dtype=torch.float64)
    tied = values[torch.randint(0, 20, (10_000,), generator=g)]  # 20 distinct bounded weights (ArviZ alone: inf)
    assert pareto_k(tied) < 0.0
    dominant = torch.zeros(10_000, dtype=torch.float64)
    dominant[:4] = 25.0  # four weights e^25 times the rest: still an alarm
    assert pareto_k(dominant) > 0.7
    smooth = torch.randn(5_000, generator=g, dtype=torch.float64)  # no ties: ArviZ's value unchanged
    assert abs(pareto_k(smooth) - float(az.psislw(smooth.numpy().copy())[1])) < 1e-12
