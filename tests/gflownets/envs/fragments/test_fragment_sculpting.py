"""Classifier-free sculpting of fragment GFlowNets through the shared operators: SMC reaches the sampling floor of the
exact composition (exact DP over the tiny vocabulary) for both contrasts and the 3-model conjunction, and the tree
policy composes through the same operators."""

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


def test_tree_policy_gflownets_compose_through_the_same_operators():
    """Learned policies need not satisfy P_F(tau) = p(x) P_B(tau | x), so the sculpted compositions of their terminal
    distributions are exact only for trained-to-consistency bases (the tabular ones above). Two exact checks hold for
    any policies: the mixture process samples (p1 + p2) / 2, and the harmonic mean of a model with itself is the
    model (every particle's posterior stays uniform, so SMC's weights are equal)."""
    torch.manual_seed(3)
    g1 = ps.GFlowNet(ENV, "qed", policy="env", hidden=16, layers=1, beta_range=(1.0, 8.0)).with_beta(2.0)
    torch.manual_seed(4)
    g2 = ps.GFlowNet(ENV, "sa", policy="env", hidden=16, layers=1)
    p1, p2 = g1.exact_terminal_distribution().double(), g2.exact_terminal_distribution().double()
    n = 20_000
    torch.manual_seed(0)
    x = ps.mixture(g1, g2).sample((n,))
    emp = ps.metrics.empirical_distribution(ENV.index(x), ENV.num_states)
    mix = (p1 + p2) / 2
    assert ps.metrics.l1_distance(emp, mix) < 1.3 * ps.metrics.expected_l1_floor(mix, n)
    res = ps.infer.smc(ps.harmonic_mean(g1, g1.with_beta(2.0)), n, seed=0)  # two views of one network
    assert min(res.ess_history) > 0.999 * n
    assert ps.metrics.l1_distance(res.distribution(ENV), p1) < 1.3 * ps.metrics.expected_l1_floor(p1, n)
