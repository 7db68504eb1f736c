import math

import pytest
import torch

import pyro_sculpt as ps
from pyro_sculpt.gflownets.envs.hypergrid.rewards import SymmetricShubert


def test_hypergrid_structure():
    env = ps.HyperGrid(ndim=3, height=4)
    assert env.num_states == 64 and env.n_actions == 4 and env.max_steps == 10
    s = torch.tensor([[0, 3, 1]])
    assert env.forward_mask(s).tolist() == [[True, False, True, True]]
    assert env.step(s, torch.tensor([2])).tolist() == [[0, 3, 2]]
    assert env.step(s, torch.tensor([3])).tolist() == [[0, 3, 1]]  # stop leaves the state
    assert env.num_parents(s).tolist() == [2]
    kids, mask = env.children(s)
    assert kids.shape == (1, 4, 3) and kids[0, 0].tolist() == [1, 3, 1]
    states = env.all_states()
    assert torch.equal(env.index(states), torch.arange(64))
    assert env.encode(s).shape == (1, 12)
    # the default backward probabilities of the valid children: child [1, 3, 1] has 3 parents, [0, 3, 2] has 2
    parent, action, log_pb = env.children_log_backward(s)
    assert parent.tolist() == [0, 0] and action.tolist() == [0, 2]
    assert torch.allclose(log_pb, -torch.tensor([3.0, 2.0]).log())


def test_all_states_are_topologically_ordered():
    env = ps.HyperGrid(2, 5)
    states = env.all_states()
    kids, mask = env.children(states)
    mask[:, env.stop_action] = False
    src, a = mask.nonzero(as_tuple=True)
    assert (env.index(kids[src, a]) > src).all()


def test_original_reward_values():
    env = ps.HyperGrid(2, 8)
    r = ps.rewards.original(r0=0.1, r1=0.5, r2=2.0)
    log_r = r(env, env.all_states()).exp().reshape(8, 8)
    assert log_r[0, 0].item() == pytest.approx(0.1 + 0.5)  # a = 0.5 on both axes: outer band
    assert log_r[3, 3].item() == pytest.approx(0.1)  # centre
    # u = 1/7 -> a = 0.357 in (0.3, 0.4): core
    assert log_r[1, 1].item() == pytest.approx(0.1 + 0.5 + 2.0)


def test_symmetric_shubert_matches_formula():
    env = ps.HyperGrid(2, 32)
    rew = ps.rewards.symmetric_shubert(temperature=0.5)
    states = torch.tensor([[0, 0], [5, 17], [31, 12]])
    got = rew(env, states)
    for s, g in zip(states.tolist(), got.tolist()):
        prod = 1.0
        for z in s:
            x = z / 31 * 2 - 1
            u = -9.45 + (abs(x) / 2 + 0.5) * 2.3
            prod *= sum(i * math.cos((i + 1) * u + i) for i in range(1, 6))
        r = (prod - SymmetricShubert.MN) / (SymmetricShubert.MX - SymmetricShubert.MN)
        assert g == pytest.approx(math.log(r + 1e-3) / 0.5, rel=1e-5)
    all_r = rew(env, env.all_states())
    assert all_r.max() <= math.log(1 + 1e-3) / 0.5 + 1e-5


def test_diagonal_sigmoid_and_circles():
    env = ps.HyperGrid(2, 32)
    s = torch.tensor([[0, 0], [31, 31]])
    d = ps.rewards.diagonal_sigmoid()(env, s)
    assert d[0].item() == pytest.approx(math.log(1 / (1 + math.exp(10)) + 1e-5), abs=1e-6)
    assert d[1].item() == pytest.approx(math.log(1 / (1 + math.exp(-10)) + 1e-5), abs=1e-6)  # float32
    for k in (1, 2, 3):
        r = ps.rewards.circle(k)(env, env.all_states()).exp()
        assert r.min().item() == pytest.approx(0.1, rel=1e-6)  # outside the disc
        assert r.max().item() > 5.0
    # circle 1 centre (-0.3, 0): a single normal with std 0.3 at its mean
    c1 = ps.rewards.circle(1).log_reward_unit(torch.tensor([[0.35, 0.5]])).exp()
    assert c1.item() == pytest.approx(2.5 / (2 * math.pi * 0.09) + 6.5, rel=1e-5)


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown reward name 'nope'"):
        ps.rewards.get("nope")
    with pytest.raises(ValueError, match="height must be an integer >= 2"):
        ps.HyperGrid(2, 1)
    with pytest.raises(ValueError, match="ndim must be an integer >= 1"):
        ps.HyperGrid(0, 4)
    for temperature in (0.0, float("inf"), float("nan"), "1"):  # inf made the target uniform in silence
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            ps.rewards.symmetric_shubert(temperature=temperature)
    for name, value in (("r0", 0.0), ("r1", float("nan")), ("r2", -1.0), ("r2", float("inf"))):
        with pytest.raises(ValueError, match=f"{name} must be a finite number"):
            ps.rewards.original(**{name: value})
    assert ps.gflownets.reward_names(ps.rewards.GridReward) == ["circle", "diagonal_sigmoid", "original",
                                                               "symmetric_shubert"]  # fmt: skip
    with pytest.raises(ValueError, match="index must be 1, 2 or 3"):
        ps.rewards.circle(4)
    with pytest.raises(ValueError, match="circle rewards are defined on 2D grids"):
        ps.rewards.circle(1)(ps.HyperGrid(3, 4), torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="non-finite"):
        ps.GFlowNet(ps.HyperGrid(2, 4), reward=lambda env, s: torch.full(s.shape[:-1], float("nan"))).log_reward(
            torch.zeros(1, 2, dtype=torch.long)
        )
