"""Classifier-free SMC of sculpted GFlowNets (the prefix-posterior twist) against the exact compositions."""

import pytest
import torch

import pyro_sculpt as ps
from pyro_sculpt.sculpting.gflownet import PrefixPosteriorTwist
from tests.conftest import exact_bases

ENV = ps.HyperGrid(2, 8)


@pytest.mark.parametrize("y, alpha", [((0, 1), None), ((0, 0), None), ((1, 1), 0.3), ((0, 1, 2), None)])
def test_prefix_posterior_smc_reaches_the_exact_composition(y, alpha):
    m = max(v for v in y if v is not None) + 1 if len(y) == 3 else 2
    bases = exact_bases(ENV, m, seed=21)
    probs = torch.stack([b.exact_terminal_distribution() for b in bases])
    target = ps.composition_distribution(probs, y, alpha)
    n = 40_000
    res = ps.infer.smc(PrefixPosteriorTwist(bases, y, alpha), n, seed=0)
    floor = ps.metrics.expected_l1_floor(target, n)
    l1 = ps.metrics.l1_distance(res.distribution(ENV), target)
    ess = min(res.ess_history)  # after a resampling the final ESS overstates the number of distinct draws
    assert l1 < 1.3 * floor * n / ess, (l1, floor, ess)
    assert ess > 0.3 * n  # the twist is a good one on these bases
    mixture = probs.mean(0)
    assert ps.metrics.l1_distance(mixture, target) > 5 * l1  # the composition is far from the plain mixture


def test_prefix_posterior_twist_calls_no_classifier_and_checks_its_arguments():
    p1, p2 = exact_bases(ENV, 2, seed=22)
    twist = PrefixPosteriorTwist([p1, ps.ProcessDistribution(p2)], (0, 1))  # bases or their distributions
    res = ps.infer.smc(twist, 100, seed=0)
    assert res.x.shape == (100, 2)
    with pytest.raises(ValueError, match=r"y\[1\] must be a base index in \[0, 1\] or None, got 2"):
        PrefixPosteriorTwist([p1, p2], (0, 2))
    with pytest.raises(ValueError, match="bases must hold at least two base models"):
        PrefixPosteriorTwist([p1], (0,))
