"""Classifier-free SMC on the paper's 32x32 grid with learned bases, against the exact composition of those bases
(slow: trains the bases as ``pyro-sculpt grid`` does; figures in docs/sculpting.md)."""

import pytest
import torch

import pyro_sculpt as ps
from pyro_sculpt.experiments.train_grid import FAST_RECIPE
from pyro_sculpt.gflownets.envs.hypergrid import rewards

pytestmark = pytest.mark.slow

ENV = ps.HyperGrid(2, 32)
REFERENCE = 100_000  # the sample size whose floor every row is measured against


def _train(reward, seed):
    return ps.GFlowNet(ENV, reward).fit(**FAST_RECIPE, seed=seed, progress_bar=False)


def _ratio(bases, y, n, seed=0):
    probs = torch.stack([b.exact_terminal_distribution() for b in bases])
    target = ps.composition_distribution(probs, y)
    res = ps.infer.smc(ps.sculpt(bases, y=y), n, seed=seed)  # no classifier
    l1 = ps.metrics.l1_distance(res.distribution(ENV), target)
    return l1 / ps.metrics.expected_l1_floor(target, REFERENCE)


def test_classifier_free_smc_on_the_grid_reaches_the_sampling_floor():
    bases = [_train(rewards.symmetric_shubert(0.5), 0), _train(rewards.diagonal_sigmoid(), 1)]
    for y in [(0, 1), (0, 0), (1, 1)]:  # the paper's Fig. 3 operations at alpha = 1/2, 100,000 particles
        assert _ratio(bases, y, REFERENCE) <= 1.1, y
    circles = [_train(rewards.circle(k), 1 + k) for k in (1, 2, 3)]
    assert _ratio(circles, (0, 1, 2), REFERENCE) <= 1.1
    # a 3-model contrast, where the prefix-posterior twist is far from Q(y | s): 400,000 particles
    assert _ratio(circles, (0, 0, 0), 4 * REFERENCE) <= 1.1
    # the product of the learned bases: the twist alone is at 3.1-3.2x (measured); five independence
    # Metropolis-Hastings moves of the final particles bring it to 1.01x
    probs = torch.stack([b.exact_terminal_distribution() for b in bases]).double()
    target = probs.prod(0) / probs.prod(0).sum()
    res = ps.infer.smc(ps.product(*bases), REFERENCE, seed=0, moves=ps.mcmc.IndependenceRejuvenation(5))
    ratio = ps.metrics.l1_distance(res.distribution(ENV), target) / ps.metrics.expected_l1_floor(target, REFERENCE)
    assert ratio <= 1.1, ratio
