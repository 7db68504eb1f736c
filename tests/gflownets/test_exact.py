import time

import pyro.poutine as poutine
import pytest
import torch
from scipy.stats import chisquare

import pyro_sculpt as ps
from pyro_sculpt.gflownets import exact
from tests.conftest import exact_bases, random_gflownet


def brute_force_terminal(gfn):
    """Enumerate every trajectory recursively and add up its probability at its terminal state."""
    env = gfn.env
    table = gfn.log_prob_table().double().exp()
    out = torch.zeros(env.num_states, dtype=torch.float64)

    def visit(s, prob):
        i = int(env.index(s))
        out[i] += prob * table[i, env.stop_action]
        for a in range(env.n_actions - 1):
            if env.forward_mask(s)[a]:
                visit(env.step(s, torch.tensor(a)), prob * table[i, a])

    visit(env.initial_state(), 1.0)
    return out


@pytest.mark.parametrize("ndim,height", [(2, 3), (2, 4), (3, 3), (1, 5)])
def test_dp_matches_brute_force(ndim, height):
    gfn = random_gflownet(ps.HyperGrid(ndim, height), seed=ndim * 10 + height)
    p = gfn.exact_terminal_distribution()
    assert torch.allclose(p, brute_force_terminal(gfn), atol=1e-12)
    assert p.sum().item() == pytest.approx(1.0, abs=1e-12)


def test_dp_matches_pyro_sampling_path():
    gfn = random_gflownet(ps.HyperGrid(2, 4), seed=3)
    env = gfn.env
    n = 20_000
    x = poutine.trace(lambda: ps.run("x", gfn, num_particles=n)).get_trace().nodes["_RETURN"]["value"]
    counts = torch.bincount(env.index(x), minlength=env.num_states).double()
    p = gfn.exact_terminal_distribution()
    assert chisquare(counts.numpy(), (p * n).numpy()).pvalue > 1e-3
    emp = counts / n
    assert ps.metrics.l1_distance(emp, p) < 3 * ps.metrics.expected_l1_floor(p, n)


def test_backward_values_are_conditional_expectations():
    gfn = random_gflownet(ps.HyperGrid(2, 4), seed=5)
    env = gfn.env
    table = gfn.log_prob_table()
    eye = torch.eye(env.num_states, dtype=torch.float64)
    v = exact.backward_values(env, table, eye)
    init = int(env.index(env.initial_state()))
    # from the initial state, E[1{x = j}] is the terminal distribution
    assert torch.allclose(v[init], exact.terminal_distribution(env, table), atol=1e-12)
    # and every row is a distribution over terminal states reachable from that state
    assert torch.allclose(v.sum(1), torch.ones(env.num_states, dtype=torch.float64), atol=1e-12)


def test_dp_on_32x32_is_fast():
    gfn = random_gflownet(ps.HyperGrid(2, 32), hidden=256)
    gfn.exact_terminal_distribution()  # builds and caches the state graph
    gfn.policy[0].weight.data.mul_(1.0)  # bump the version: the next call recomputes
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        with torch.no_grad():
            gfn.policy[0].weight.add_(0.0)
        p = gfn.exact_terminal_distribution()
        best = min(best, time.perf_counter() - t)
    assert p.sum().item() == pytest.approx(1.0, abs=1e-9)
    assert best < 0.5


def test_exact_cache_invalidates_on_training_step():
    gfn = random_gflownet(ps.HyperGrid(2, 4))
    p1 = gfn.exact_terminal_distribution()
    with torch.no_grad():
        gfn.policy[-1].bias.add_(torch.tensor([2.0, 0.0, 0.0]))
    p2 = gfn.exact_terminal_distribution()
    assert not torch.allclose(p1, p2)


def test_table_must_cover_all_states():
    env = ps.HyperGrid(2, 3)
    with pytest.raises(ValueError, match="log_pf must have shape"):
        exact.terminal_distribution(env, torch.zeros(4, 3))


def test_flows_of_rewards_spanning_more_than_float64_stay_finite():
    env = ps.HyperGrid(2, 4)
    states = env.all_states()
    log_r = torch.zeros(env.num_states, dtype=torch.float64)
    log_r[states.sum(-1) >= 4] = -750.0  # exp(-750) underflows: the flows used to be 0 / 0 there
    p = ps.gflownets.TabularGFlowNet.from_reward(env, log_r)
    assert torch.isfinite(p.table.logsumexp(-1)).all()
    exact = p.exact_terminal_distribution().double()
    assert torch.allclose(exact, torch.softmax(log_r, 0), atol=1e-6)


def test_a_table_row_without_a_valid_action_is_refused():
    env = ps.HyperGrid(2, 4)
    t = torch.zeros(env.num_states, env.n_actions)
    row = int(env.index(torch.tensor([3, 0])))  # at (3, 0) the only finite entry is the invalid "x0 + 1"
    t[row] = torch.tensor([0.0, float("-inf"), float("-inf")])
    with pytest.raises(ValueError, match=r"row .* \(state \[3, 0\]\) gives every action the environment allows"):
        ps.gflownets.TabularGFlowNet(env, t)
    t[row] = float("nan")
    with pytest.raises(ValueError, match="log_probs has NaN entries"):
        ps.gflownets.TabularGFlowNet(env, t)


def test_distributions_pickle_after_their_exact_caches_are_filled():
    """The exact caches are keyed by weak references to the parameters: a pickled (or copied) key comes back stale,
    so that the unpickled object recomputes its caches instead of failing to pickle or reading another's."""
    import copy
    import io
    import pickle

    from pyro_sculpt.gflownets.policy_process import ParametersKey, StaleKey

    env = ps.HyperGrid(2, 4)
    p1, p2 = exact_bases(env, 2, seed=1)
    clf = ps.ExactClassifier([p1, p2], 2)
    states = env.all_states()
    d, hm = p1.as_distribution(), ps.harmonic_mean(p1, p2, clf)
    expected = (d.log_prob(states), hm.log_prob(states))  # fills the bases' and the classifier's caches
    for obj, want in zip((d, hm), expected):
        back = pickle.loads(pickle.dumps(obj))
        assert torch.allclose(back.log_prob(states), want)
        assert torch.allclose(copy.deepcopy(obj).log_prob(states), want)
    buf = io.BytesIO()
    torch.save(p1, buf)
    key = ParametersKey(list(p1.parameters()))
    assert isinstance(pickle.loads(pickle.dumps(key)), StaleKey) and pickle.loads(pickle.dumps(key)) != key
