"""Exact answers on a tiny fragment vocabulary: dynamic programming against Monte Carlo, trajectory balance with the
exact flows, a GFlowNet smoke test, and a classifier-free composition by SMC."""

import math

import pytest
import torch

pytest.importorskip("rdkit")

import pyro_sculpt as ps  # noqa: E402
from pyro_sculpt.gflownets import TabularGFlowNet, exact  # noqa: E402
from pyro_sculpt.gflownets.envs.fragments import FragmentEnv  # noqa: E402
from tests.conftest import exact_bases  # noqa: E402
from tests.gflownets.envs.fragments.fragment_helpers import TINY  # noqa: E402

ENV = FragmentEnv(TINY, max_fragments=3)


def _uniform_table(env):
    mask = env.forward_mask(env.all_states())
    return torch.log_softmax(torch.zeros(mask.shape, dtype=torch.float64).masked_fill(~mask, float("-inf")), -1)


def test_tiny_environment_is_enumerable():
    assert ENV.is_enumerable and ENV.num_states == 69
    levels = ENV.levels(ENV.all_states())
    # two nodes: unordered pairs of the 5 (fragment, site) ends, 5 * 6 / 2 = 15
    assert torch.bincount(levels).tolist() == [1, 3, 15, 50]
    assert (levels[1:] >= levels[:-1]).all()  # parents before children


def test_exact_terminal_distribution_of_a_uniform_policy_matches_monte_carlo():
    table = _uniform_table(ENV)
    p = exact.terminal_distribution(ENV, table)
    assert abs(float(p.sum()) - 1) < 1e-12 and p[0] == 0  # the empty tree is never terminal
    n = 40_000
    x = TabularGFlowNet(ENV, table.float()).as_distribution().sample((n,))
    emp = ps.metrics.empirical_distribution(ENV.index(x), ENV.num_states)
    assert ps.metrics.l1_distance(emp, p) < 1.3 * ps.metrics.expected_l1_floor(p, n)


def _trajectories(env, table):
    """Every trajectory (states visited, actions) that ends with a stop, by depth-first search."""
    out = []

    def walk(states, actions):
        s = states[-1]
        i = int(env.index(s))
        if table[i, env.stop_action] > float("-inf"):
            out.append((states, actions + [env.stop_action]))
        parent, action, kids = env.valid_children(s.unsqueeze(0))
        for a, k in zip(action.tolist(), kids):
            walk(states + [k], actions + [a])

    walk([env.initial_state()], [])
    return out


def test_trajectory_balance_holds_exactly_for_the_exact_flows_on_every_trajectory():
    g = torch.Generator().manual_seed(5)
    log_r = torch.randn(ENV.num_states, generator=g, dtype=torch.float64) * 2
    table = exact.flow_policy(ENV, log_r)
    assert table[0, ENV.stop_action] == float("-inf")  # the empty tree cannot stop
    target = torch.softmax(log_r[1:], 0)
    p = exact.terminal_distribution(ENV, table)
    assert torch.allclose(p[1:], target, atol=1e-12, rtol=0)
    log_z = torch.logsumexp(log_r[1:], 0)
    trajs = _trajectories(ENV, table)
    sum_pb = torch.zeros(ENV.num_states, dtype=torch.float64)
    residuals = []
    for states, actions in trajs:
        idx = ENV.index(torch.stack(states))
        log_pf = table[idx, torch.tensor(actions)].sum()
        log_pb = -ENV.num_parents(torch.stack(states[1:])).double().log().sum()
        residuals.append(float(log_z + log_pf - log_pb - log_r[idx[-1]]))
        sum_pb[idx[-1]] += log_pb.exp()
    assert len(trajs) > ENV.num_states  # many trees have several build orders
    assert max(abs(r) for r in residuals) < 1e-10
    # the backward policy is a distribution over the trajectories that build each tree
    assert torch.allclose(sum_pb[1:], torch.ones(ENV.num_states - 1, dtype=torch.float64), atol=1e-12)


def test_a_gflownet_with_the_mlp_policy_trains_on_the_tiny_vocabulary():
    gfn = ps.GFlowNet(ENV, reward=ps.gflownets.get_reward("qed", beta=4.0), hidden=32)
    gfn.fit(steps=5, batch_size=8, progress_bar=False, seed=0)
    assert len(gfn.history) >= 1 and all(math.isfinite(h["loss"]) for h in gfn.history)
    x = gfn.as_distribution().sample((16,))
    ENV.validate_states(x)
    assert (ENV.num_fragments_of(x) >= 1).all()


def test_harmonic_mean_of_two_exact_fragment_gflownets_by_smc():
    p1, p2 = exact_bases(ENV, 2, seed=31, scale=2.0)
    probs = torch.stack([p1.exact_terminal_distribution(), p2.exact_terminal_distribution()]).double()
    target = ps.composition_distribution(probs, (0, 1))
    assert ps.metrics.l1_distance(probs.mean(0), target) > 0.2  # far from the mixture
    n = 20_000
    dist = ps.harmonic_mean(p1, p2)
    res = ps.infer.smc(dist, n, seed=0)
    ess = min(res.ess_history)
    l1 = ps.metrics.l1_distance(res.distribution(ENV), target)
    assert l1 < 1.3 * ps.metrics.expected_l1_floor(target, n) * n / ess, (l1, ess)
    # the log-normaliser estimate: log sum_x exp Phi(log p(x)) of the operator (the empty tree has probability 0)
    exact_log_z = float(torch.logsumexp(dist.process.operator(probs[:, 1:].T.log()), 0))
    assert abs(res.log_evidence - exact_log_z) < 0.03
