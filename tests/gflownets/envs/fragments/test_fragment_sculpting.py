"""Classifier-free sculpting of fragment GFlowNets through the shared operators: SMC reaches the sampling floor of the
exact composition (exact DP over the tiny vocabulary) for both contrasts and the 3-model conjunction, and the trained
tree policy composes too."""

import pytest
import torch

pytest.importorskip("rdkit")

import pyro_sculpt as ps  # noqa: E402
from pyro_sculpt.gflownets.envs.fragments import FragmentEnv  # noqa: E402
from tests.conftest import exact_bases  # noqa: E402
from tests.gflownets.envs.fragments.fragment_helpers import TINY  # noqa: E402

ENV = FragmentEnv(TINY, max_fragments=3)


@pytest.mark.parametrize(
    "m, y, make",
    [
        (2, (0, 0), lambda b: ps.contrast(*b)),
        (2, (1, 1), lambda b: ps.reverse_contrast(*b)),
        (3, (0, 1, 2), lambda b: ps.sculpt(b, y=(0, 1, 2))),
    ],
    ids=["contrast", "reverse_contrast", "conjunction3"],
)
def test_classifier_free_smc_reaches_the_sampling_floor_of_the_exact_composition(m, y, make):
    bases = exact_bases(ENV, m, seed=7, scale=2.0)
    probs = torch.stack([b.exact_terminal_distribution() for b in bases]).double()
    target = ps.composition_distribution(probs, y)
    assert ps.metrics.l1_distance(probs.mean(0), target) > 0.2  # far from the mixture
    n = 20_000
    res = ps.infer.smc(make(bases), n, seed=1)
    ess = min(res.ess_history)
    l1 = ps.metrics.l1_distance(res.distribution(ENV), target)
    assert l1 < 1.3 * ps.metrics.expected_l1_floor(target, n) * n / ess, (l1, ess)


def test_harmonic_mean_of_two_tree_policy_gflownets_matches_the_composition_of_their_exact_distributions():
    """Untrained beta-conditioned tree policies are still GFlowNets with the uniform backward policy: the exact
    composition of their terminal distributions (DP) is what SMC reaches."""
    torch.manual_seed(3)
    g1 = ps.GFlowNet(ENV, "qed", policy="env", hidden=16, layers=1, beta_range=(1.0, 8.0)).with_beta(2.0)
    torch.manual_seed(4)
    g2 = ps.GFlowNet(ENV, "sa", policy="env", hidden=16, layers=1)
    probs = torch.stack([g1.exact_terminal_distribution(), g2.exact_terminal_distribution()]).double()
    target = ps.composition_distribution(probs, (0, 1))
    n = 10_000
    res = ps.infer.smc(ps.harmonic_mean(g1, g2), n, seed=0)
    l1 = ps.metrics.l1_distance(res.distribution(ENV), target)
    assert l1 < 1.3 * ps.metrics.expected_l1_floor(target, n) * n / min(res.ess_history), l1
