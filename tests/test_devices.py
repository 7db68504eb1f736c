"""Asking for a device this machine does not have is a ValueError naming ``device``, for every model, sampler and
oracle (on a machine without CUDA; on a CUDA machine only the malformed and out-of-range cases apply)."""

import pytest
import torch

import pyro_sculpt as ps
from pyro_sculpt.diffusion import (
    AncestralSampler,
    DDIMSampler,
    GaussianMixtureOracle,
    ProbabilityFlowSampler,
    ScoreModel,
    VPSchedule,
)
from pyro_sculpt.nn import SinusoidalTimeEmbedding
from pyro_sculpt.utils import as_device

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
ENV = ps.HyperGrid(2, 4)
CUDA_MISSING = r"device='cuda(:0)?' asks for CUDA, but CUDA is not available"


def _oracle(**kw):
    return GaussianMixtureOracle(torch.zeros(1, 2), stds=1.0, **kw)


CONSTRUCTORS = {
    "GFlowNet": lambda device: ps.GFlowNet(ENV, hidden=8, device=device),
    "ScoreModel": lambda device: ScoreModel(2, VPSchedule(), hidden=8, layers=1, device=device),
    "GaussianMixtureOracle": lambda device: _oracle(device=device),
    "GaussianMixtureOracle.to": lambda device: _oracle().to(device),
    "AncestralSampler": lambda device: AncestralSampler(_oracle(), 10, device=device),
    "DDIMSampler": lambda device: DDIMSampler(_oracle(), 10, device=device),
    "ProbabilityFlowSampler": lambda device: ProbabilityFlowSampler(_oracle(), 10, device=device),
    "DiffusionMixtureProcess": lambda device: ps.DiffusionMixtureProcess(
        [AncestralSampler(_oracle(), 10), AncestralSampler(_oracle(), 10)], device=device
    ),
    "GaussianMixtureClassifier": lambda device: ps.GaussianMixtureClassifier([_oracle(), _oracle()], device=device),
    "DiffusionObservationClassifier": lambda device: ps.DiffusionObservationClassifier(
        2, hidden=8, layers=1, device=device
    ),
    "ObservationClassifier": lambda device: ps.ObservationClassifier(ENV, 2, 2, hidden=8, device=device),
    "SinusoidalTimeEmbedding": lambda device: SinusoidalTimeEmbedding(8, device=device),
}


@no_cuda
@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda")], ids=repr)
@pytest.mark.parametrize("name", sorted(CONSTRUCTORS))
def test_cuda_without_cuda_is_a_value_error(name, device):
    with pytest.raises(ValueError, match=CUDA_MISSING):
        CONSTRUCTORS[name](device)


@no_cuda
def test_loading_onto_cuda_without_cuda_is_a_value_error(tmp_path):
    gfn = ps.GFlowNet(ENV, hidden=8)
    gfn.save(tmp_path / "gfn.pt")
    with pytest.raises(ValueError, match=CUDA_MISSING):
        ps.GFlowNet.load(tmp_path / "gfn.pt", device="cuda")
    model = ScoreModel(2, VPSchedule(), hidden=8, layers=1)
    model.save(tmp_path / "score.pt")
    with pytest.raises(ValueError, match=CUDA_MISSING):
        ScoreModel.load(tmp_path / "score.pt", device="cuda")


@pytest.mark.parametrize("name", sorted(CONSTRUCTORS))
def test_cpu_devices_still_work(name):
    for device in (None, "cpu", torch.device("cpu")):
        CONSTRUCTORS[name](device)


def test_malformed_devices():
    with pytest.raises(ValueError, match="device must be a device such as 'cpu' or 'cuda:0', got 'gpu'"):
        as_device("gpu")
    with pytest.raises(ValueError, match="device must be a device name"):
        as_device(1.5)
    with pytest.raises(ValueError, match="where must be a device name"):
        as_device(True, "where")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ValueError, match="device="):
        as_device(f"cuda:{count}")
    assert as_device(None) == torch.device("cpu") and as_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_mps_without_mps_is_a_value_error():
    with pytest.raises(ValueError, match="device='mps' asks for MPS"):
        ps.GFlowNet(ENV, hidden=8, device="mps")
