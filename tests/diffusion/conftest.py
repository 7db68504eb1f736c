import pytest
import torch

from pyro_sculpt.diffusion import GaussianMixtureOracle, VPSchedule

F64 = torch.float64


def four_modes(schedule=None, dtype=torch.float32):
    """Four well separated modes with unequal weights."""
    means = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.0], [0.0, -2.0]], dtype=dtype)
    return GaussianMixtureOracle(
        means,
        stds=torch.tensor([0.3, 0.2, 0.4, 0.25], dtype=dtype),
        weights=[0.1, 0.2, 0.3, 0.4],
        schedule=schedule or VPSchedule(),
    )


@pytest.fixture
def oracle():
    return four_modes()


@pytest.fixture
def full_cov_oracle():
    """A mixture with full (correlated) covariances, in float64."""
    means = torch.tensor([[-1.0, 0.5], [1.5, -0.5], [0.0, 1.5]], dtype=F64)
    covs = torch.tensor(
        [[[0.30, 0.12], [0.12, 0.20]], [[0.10, -0.05], [-0.05, 0.25]], [[0.5, 0.0], [0.0, 0.05]]], dtype=F64
    )
    return GaussianMixtureOracle(means, covs, weights=[0.5, 0.3, 0.2])


@pytest.fixture
def make_four_modes():
    return four_modes
