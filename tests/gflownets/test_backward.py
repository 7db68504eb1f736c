"""Parents, backward trajectories and the importance estimate of terminal probabilities
(pyro_sculpt/gflownets/backward.py), against dynamic programming on enumerable environments."""

import math

import pytest
import torch

import pyro_sculpt as ps
from pyro_sculpt.gflownets import DiscreteEnv, TabularGFlowNet
from pyro_sculpt.gflownets.backward import estimate_terminal_log_prob, sample_backward
from tests.conftest import exact_bases

GRID = ps.HyperGrid(2, 8)


def _fragment_env(**kw):
    pytest.importorskip("rdkit")
    from pyro_sculpt.gflownets.envs.fragments import FragmentEnv
    from tests.gflownets.envs.fragments.fragment_helpers import PAIR, TINY

    return FragmentEnv(PAIR if kw.pop("pair", False) else TINY, **kw)


ENVS = {
    "grid": lambda: GRID,
    "grid3d": lambda: ps.HyperGrid(3, 4),
    "fragments": lambda: _fragment_env(max_fragments=4),
    "fragments_pair": lambda: _fragment_env(pair=True, max_fragments=4),
}


def perturbed(base, seed, scale):
    """``base``'s policy with Gaussian noise on its logits: no longer in detailed balance with the uniform P_B."""
    g = torch.Generator().manual_seed(seed)
    table = base.log_prob_table().double()
    table = table + torch.randn(table.shape, generator=g, dtype=torch.float64) * scale
    mask = base.env.forward_mask(base.env.all_states())
    return TabularGFlowNet(base.env, torch.log_softmax(table.masked_fill(~mask, -math.inf), -1).float())


@pytest.mark.parametrize("name", list(ENVS))
def test_parents_are_the_incoming_edges_of_the_enumeration(name):
    env = ENVS[name]()
    states = env.all_states()
    perm = torch.randperm(len(states), generator=torch.Generator().manual_seed(0))
    batch = torch.cat([states[perm], states[:5]])  # any order, with repeats
    index, parents, actions = env.parents(batch)
    assert bool((index[1:] >= index[:-1]).all())
    assert torch.equal(torch.bincount(index, minlength=len(batch)), env.num_parents(batch))
    assert torch.equal(env.step(parents, actions), batch[index])
    assert bool(env.forward_mask(parents).gather(1, actions.unsqueeze(-1)).all())  # the one action the mask keeps
    # the same edges as the generic enumeration of DiscreteEnv.parents
    ref = DiscreteEnv.parents(env, batch)

    def edges(out):
        return sorted(zip(out[0].tolist(), env.index(out[1]).tolist(), out[2].tolist()))

    assert edges((index, parents, actions)) == edges(ref)


def test_parents_of_random_molecules_keep_the_masked_action():
    """On the default vocabulary (not enumerable) the parents' actions are the ones their forward mask keeps (the
    mask is computed only for children that repeat a fragment), and rebuild the states."""
    pytest.importorskip("rdkit")
    from pyro_sculpt.gflownets.envs.fragments import FragmentEnv
    from tests.gflownets.envs.fragments.test_fragment_env import _random_states

    env = FragmentEnv(max_fragments=6)
    x = torch.cat([_random_states(env, 60, k, seed=k) for k in range(1, 7)])
    index, parents, actions = env.parents(x)
    assert torch.equal(torch.bincount(index, minlength=len(x)), env.num_parents(x))
    assert torch.equal(env.step(parents, actions), x[index])
    assert bool(env.forward_mask(parents).gather(1, actions.unsqueeze(-1)).all())
    frags = x.view(len(x), 6, 4)[..., 0]
    repeated = [len(set(r) - {0}) < sum(f > 0 for f in r) for r in frags.tolist()]
    assert 0 < sum(repeated) < len(x)  # both paths taken


@pytest.mark.parametrize("name", ["grid", "fragments"])
def test_backward_trajectories_rebuild_their_states(name):
    env = ENVS[name]()
    x = env.all_states()[1:]
    torch.manual_seed(0)
    parents, actions, active, log_pb = sample_backward(env, x)
    assert bool((~active[:, -1] | (parents[:, -1] == env.initial_state()).all(-1)).all())
    s = env.initial_state().expand_as(x).clone()
    expected = torch.zeros(len(x), dtype=torch.float64)
    for t in reversed(range(parents.shape[1])):
        on = active[:, t]
        assert torch.equal(parents[on, t], s[on])  # the forward path from s0 passes through the parents
        s[on] = env.step(s[on], actions[on, t])
        expected[on] -= env.num_parents(s[on]).double().log()
    assert torch.equal(s, x)
    assert torch.allclose(log_pb, expected)
    # the number of steps is the state's level
    assert torch.equal(active.sum(1), env.levels(x))


@pytest.mark.parametrize("name", ["grid", "grid3d", "fragments"])
def test_one_trajectory_is_exact_for_a_policy_in_detailed_balance(name):
    env = ENVS[name]()
    (gfn,) = exact_bases(env, 1, seed=3)
    x = env.all_states()[1:]
    torch.manual_seed(0)
    est = gfn.estimate_terminal_log_prob(x, num_trajectories=1)
    assert est.dtype == torch.float64 and est.shape == (len(x),)
    assert torch.allclose(est, gfn.terminal_log_prob(x).double(), atol=1e-4)


@pytest.mark.parametrize("name", ["grid", "fragments3"])
def test_the_estimate_is_unbiased_for_any_policy(name):
    """The mean of the estimated probabilities (K = 1) over 400 draws, per state, within 4.5 standard errors of
    the exact probability; and K = 2,000 trajectories within 0.03 nats of it on average."""
    env = GRID if name == "grid" else _fragment_env(max_fragments=3)
    (base,) = exact_bases(env, 1, seed=5)
    gfn = perturbed(base, seed=6, scale=0.3)
    x = env.all_states()[1:]
    exact_lp = gfn.terminal_log_prob(x).double()
    torch.manual_seed(1)
    draws = 400
    est = estimate_terminal_log_prob(gfn, x.repeat(draws, 1), 1).reshape(draws, len(x))
    ratios = (est - exact_lp).exp()
    sd = ratios.std(0)
    assert float(sd.mean()) > 0.05  # the perturbed policy makes the estimate noisy
    single = sd < 1e-6  # states reached by one trajectory only: the ratio is exactly one
    assert 0 < int((~single).sum()) and float((ratios[:, single] - 1).abs().max()) < 1e-4
    z = (ratios.mean(0) - 1)[~single] / (sd[~single] / math.sqrt(draws))
    assert float(z.abs().max()) < 4.5, z
    err = (gfn.estimate_terminal_log_prob(x, 2000) - exact_lp).abs().mean()
    assert float(err) < 0.03


def test_a_network_policy_on_a_non_enumerable_environment():
    """A GFlowNet on an environment that is not enumerable has no exact log-probability, says so and points to the
    estimate; the estimate agrees with the exact value of the same network on the enumerable twin environment."""
    env = _fragment_env(max_fragments=3)
    twin = _fragment_env(max_fragments=3, max_enumerable_states=1)
    assert env.is_enumerable and not twin.is_enumerable
    torch.manual_seed(0)
    gfn = ps.GFlowNet(env, reward=ps.gflownets.get_reward("qed", beta=4.0), hidden=32)
    other = ps.GFlowNet(twin, reward=ps.gflownets.get_reward("qed", beta=4.0), hidden=32)
    other.load_state_dict(gfn.state_dict())
    x = env.all_states()[1:]
    with pytest.raises(NotImplementedError, match="not enumerable; estimate_terminal_log_prob"):
        other.as_distribution().log_prob(x)
    torch.manual_seed(1)
    est = estimate_terminal_log_prob(other, x, num_trajectories=512, chunk_size=5000)
    assert float((est - gfn.terminal_log_prob(x).double()).abs().mean()) < 0.03  # measured 0.011 at K = 256
    # the empty tree is never terminal
    assert other.estimate_terminal_log_prob(env.initial_state().unsqueeze(0), 4).item() == -math.inf


def test_chunks_do_not_change_the_estimate():
    """The chunk size bounds the memory only: with a policy in detailed balance every trajectory gives the exact
    value, so chunks of 1, 7 and all trajectories agree to rounding; a seed reproduces a noisy estimate."""
    (exact_gfn,) = exact_bases(GRID, 1, seed=3)
    x = GRID.all_states()[5:20]
    results = [estimate_terminal_log_prob(exact_gfn, x, 3, chunk_size=c) for c in (1, 7, 1000)]
    for r in results:
        assert torch.allclose(r, exact_gfn.terminal_log_prob(x).double(), atol=1e-4)
    noisy = perturbed(exact_gfn, 1, 0.5)
    torch.manual_seed(2)
    a = estimate_terminal_log_prob(noisy, x, 7, chunk_size=10)
    torch.manual_seed(2)
    assert torch.equal(a, estimate_terminal_log_prob(noisy, x, 7, chunk_size=10))
    assert estimate_terminal_log_prob(noisy, x.reshape(3, 5, 2), 7).shape == (3, 5)


def test_bad_input():
    (gfn,) = exact_bases(GRID, 1, seed=3)
    x = GRID.all_states()[:4]
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="num_trajectories must be"):
            gfn.estimate_terminal_log_prob(x, bad)
    with pytest.raises(ValueError, match="chunk_size must be"):
        estimate_terminal_log_prob(gfn, x, 2, chunk_size=0)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 2\)"):
        gfn.estimate_terminal_log_prob(torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="x must have coordinates in"):
        gfn.estimate_terminal_log_prob(torch.tensor([[0, 9]]))
    with pytest.raises(ValueError, match="x must be a tensor of states"):
        gfn.estimate_terminal_log_prob([[0, 1]])
