"""Every path that evaluates a reward checks that it returns one finite log-reward per state."""

import pytest
import torch

import pyro_sculpt as ps
from pyro_sculpt.gflownets import Reward, TabularGFlowNet, exact

ENV = ps.HyperGrid(2, 4)


def column_reward(env, states):
    """A mistake: log-rewards of shape (B, 1), which would broadcast to (B, B) against (B,) tensors."""
    return states.sum(-1, keepdim=True).to(torch.get_default_dtype())


class ColumnReward(Reward):
    name = "column"

    def log_reward(self, env, states):
        return column_reward(env, states)


def nan_reward(env, states):
    out = states.sum(-1).to(torch.get_default_dtype())
    out[..., 0] = float("nan")
    return out


SHAPES = r"shape \(16,\).*got \(16, 1\)"


@pytest.mark.parametrize("reward", [column_reward, ColumnReward()], ids=["callable", "Reward"])
def test_gflownet_rejects_a_column_of_log_rewards(reward):
    gfn = ps.GFlowNet(ENV, reward, hidden=8)
    with pytest.raises(ValueError, match=r"shape \(5,\).*got \(5, 1\)"):
        gfn.log_reward(ENV.all_states()[:5])
    with pytest.raises(ValueError, match=r"shape \(\d+,\).*got \(\d+, 1\)"):
        gfn.fit(steps=1, batch_size=4, progress_bar=False)


def test_reward_subclass_checks_its_own_result():
    with pytest.raises(ValueError, match=r"reward 'column'.*" + SHAPES):
        ColumnReward()(ENV, ENV.all_states())


@pytest.mark.parametrize("reward", [column_reward, ColumnReward()], ids=["callable", "Reward"])
def test_exact_answers_reject_a_column_of_log_rewards(reward):
    with pytest.raises(ValueError, match="must return log-rewards of " + SHAPES):
        exact.reward_distribution(ENV, reward)
    with pytest.raises(ValueError, match="must return log-rewards of " + SHAPES):
        TabularGFlowNet.from_reward(ENV, reward)
    with pytest.raises(ValueError, match="must return log-rewards of " + SHAPES):
        TabularGFlowNet.from_reward(ENV, reward(ENV, ENV.all_states()))


def test_exact_answers_reject_non_finite_log_rewards():
    with pytest.raises(ValueError, match="non-finite"):
        exact.reward_distribution(ENV, nan_reward)
    with pytest.raises(ValueError, match="non-finite"):
        TabularGFlowNet.from_reward(ENV, nan_reward)


def test_good_rewards_still_give_the_exact_target():
    r = ps.rewards.original()
    target = exact.reward_distribution(ENV, r)
    assert target.shape == (ENV.num_states,)
    assert torch.allclose(TabularGFlowNet.from_reward(ENV, r).exact_terminal_distribution(), target, atol=1e-12)
