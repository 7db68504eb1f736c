import time

import pytest
import torch
from torch import nn

import pyro_sculpt as ps
from pyro_sculpt.gflownets import exact


def test_height_8_original_reward_trains_within_60s():
    env = ps.HyperGrid(ndim=2, height=8)
    gfn = ps.GFlowNet(env, ps.rewards.original(r0=0.1, r1=0.5, r2=2.0))
    target = exact.reward_distribution(env, gfn.reward)
    t = time.perf_counter()
    gfn.fit(steps=2000, batch_size=64, lr=1e-3, seed=0, progress_bar=False, time_limit=60)
    elapsed = time.perf_counter() - t
    l1 = ps.metrics.l1_distance(gfn.exact_terminal_distribution(), target)
    assert elapsed < 60
    assert l1 <= 0.02, f"exact L1 {l1:.4f} after {elapsed:.1f}s"
    # log Z converges to the log partition function
    assert gfn.log_z.item() == pytest.approx(torch.logsumexp(gfn.reward(env, env.all_states()), 0).item(), abs=0.05)


def test_training_is_reproducible_from_seed():
    env = ps.HyperGrid(2, 4)
    a = ps.GFlowNet(env, "original", hidden=16).fit(steps=30, batch_size=8, seed=7, progress_bar=False)
    b = ps.GFlowNet(env, "original", hidden=16)
    b.load_state_dict(ps.GFlowNet(env, "original", hidden=16).state_dict())  # any start; fit reseeds
    torch.manual_seed(123)
    a2 = ps.GFlowNet(env, "original", hidden=16)
    a2.load_state_dict(a.state_dict())
    c = ps.GFlowNet(env, "original", hidden=16)
    torch.manual_seed(0)
    c = ps.GFlowNet(env, "original", hidden=16)
    d = ps.GFlowNet(env, "original", hidden=16)
    d.load_state_dict(c.state_dict())
    c.fit(steps=30, batch_size=8, seed=7, progress_bar=False)
    d.fit(steps=30, batch_size=8, seed=7, progress_bar=False)
    for p, q in zip(c.parameters(), d.parameters()):
        assert torch.equal(p, q)


def test_checkpoint_round_trip(tmp_path):
    env = ps.HyperGrid(2, 5)
    gfn = ps.GFlowNet(env, ps.rewards.symmetric_shubert(0.5), hidden=32).fit(
        steps=20, batch_size=8, seed=0, progress_bar=False
    )
    path = tmp_path / "gfn.pt"
    gfn.save(path)
    loaded = ps.GFlowNet.load(path)
    assert loaded.env.config() == env.config()
    assert loaded.reward.config() == gfn.reward.config()
    assert torch.allclose(loaded.exact_terminal_distribution(), gfn.exact_terminal_distribution())
    assert loaded.log_z.item() == gfn.log_z.item()


def test_checkpoint_of_another_env_is_rejected(tmp_path):
    path = tmp_path / "gfn.pt"
    ps.GFlowNet(ps.HyperGrid(2, 5), hidden=8).save(path)
    with pytest.raises(ValueError, match="was trained on env"):
        ps.GFlowNet.load(path, env=ps.HyperGrid(2, 6))
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a pyro_sculpt GFlowNet checkpoint"):
        ps.GFlowNet.load(tmp_path / "other.pt")


def test_policy_output_size_mismatch():
    env = ps.HyperGrid(2, 4)
    with pytest.raises(ValueError, match=r"env.n_actions=3"):
        ps.GFlowNet(env, policy=nn.Linear(env.feature_dim, 5))


def test_fit_argument_errors():
    gfn = ps.GFlowNet(ps.HyperGrid(2, 4), hidden=8)
    with pytest.raises(ValueError, match="fit needs a reward"):
        gfn.fit(steps=1, progress_bar=False)
    gfn.reward = ps.rewards.original()
    with pytest.raises(ValueError, match="exploration must lie in"):
        gfn.fit(steps=1, exploration=1.0, progress_bar=False)
    with pytest.raises(ValueError, match="batch_size must be an integer"):
        gfn.fit(steps=1, batch_size=0, progress_bar=False)


def test_log_prob_validates_states():
    gfn = ps.GFlowNet(ps.HyperGrid(2, 4), hidden=8)
    with pytest.raises(ValueError, match=r"x must have coordinates in \[0, 3\]"):
        gfn.terminal_log_prob(torch.tensor([[0, 4]]))
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 2\)"):
        gfn.terminal_log_prob(torch.tensor([[0, 1, 2]]))
    with pytest.raises(ValueError, match="support"):  # Pyro's validation of the distribution's support
        gfn.as_distribution().log_prob(torch.tensor([[0, 4]]))


@pytest.mark.slow  # end-to-end training quality; 25-60 s on the slower 2-core machine of 2026-12-02
@pytest.mark.parametrize("reward", ["symmetric_shubert", "diagonal_sigmoid"])
def test_fast_recipe_reaches_l1_005_on_32x32(reward):
    from pyro_sculpt.experiments.train_grid import FAST_RECIPE

    env = ps.HyperGrid(2, 32)
    r = ps.rewards.get(reward, **({"temperature": 0.5} if reward == "symmetric_shubert" else {}))
    gfn = ps.GFlowNet(env, r).fit(**FAST_RECIPE, seed=0, progress_bar=False)
    l1 = ps.metrics.l1_distance(gfn.exact_terminal_distribution(), exact.reward_distribution(env, r))
    assert l1 <= 0.05, l1
