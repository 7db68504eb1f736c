import pyro
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _clear_param_store_and_seed():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield


def random_gflownet(env, seed=0, hidden=32):
    """A GFlowNet with random (untrained, but far from uniform) weights."""
    from pyro_sculpt import GFlowNet

    torch.manual_seed(seed)
    gfn = GFlowNet(env, hidden=hidden, layers=2)
    with torch.no_grad():
        for p in gfn.policy.parameters():
            p.mul_(3.0)
    return gfn


def exact_bases(env, m=2, seed=0, scale=1.5):
    """Tabular GFlowNets that satisfy the uniform backward policy exactly, with random rewards."""
    from pyro_sculpt.gflownets import TabularGFlowNet

    g = torch.Generator().manual_seed(seed)
    return [TabularGFlowNet.from_reward(env, torch.randn(env.num_states, generator=g) * scale) for _ in range(m)]
