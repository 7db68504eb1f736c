"""The diffusion layer on a GPU: the same numbers as on the CPU (skipped without CUDA)."""

import pytest
import torch

import pyro_sculpt as ps
from pyro_sculpt.diffusion import (
    AncestralSampler,
    GaussianMixtureOracle,
    PredictorCorrectorSampler,
    ScoreModel,
    TabulatedVPSchedule,
    probability_flow_log_prob,
)
from pyro_sculpt.metrics import energy_distance, mode_weight_tv
from pyro_sculpt.sculpting.diffusion import GaussianMixtureClassifier

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _oracles(device):
    kw = {"schedule": TabulatedVPSchedule.linear(100), "device": device}
    p1 = GaussianMixtureOracle(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]), stds=0.35, **kw)
    p2 = GaussianMixtureOracle(torch.tensor([[1.0, 0.0], [0.0, 1.5]]), stds=0.4, **kw)
    return p1, p2


def test_oracle_classifier_and_likelihood_match_the_cpu():
    cpu, gpu = _oracles("cpu"), _oracles("cuda")
    x = torch.randn(50, 2)
    assert torch.allclose(gpu[0].score(x.cuda(), 0.3).cpu(), cpu[0].score(x, 0.3), atol=1e-5)
    c_cpu, c_gpu = GaussianMixtureClassifier(list(cpu)), GaussianMixtureClassifier(list(gpu))
    v_cpu, g_cpu = c_cpu.grad_log_prob((0, 1), x, 0.3)
    v_gpu, g_gpu = c_gpu.grad_log_prob((0, 1), x.cuda(), 0.3)
    assert v_gpu.is_cuda and torch.allclose(v_gpu.cpu(), v_cpu, atol=1e-4)
    assert torch.allclose(g_gpu.cpu(), g_cpu, atol=1e-3)
    lp_cpu = probability_flow_log_prob(cpu[0], x[:5], num_steps=20)
    lp_gpu = probability_flow_log_prob(gpu[0], x[:5].cuda(), num_steps=20)
    assert torch.allclose(lp_gpu.cpu(), lp_cpu, atol=1e-3)


def test_samplers_and_training_run_on_the_gpu():
    p1, _ = _oracles("cuda")
    x = ps.sample(AncestralSampler(p1, 99), (4000,))
    assert x.is_cuda
    assert mode_weight_tv(x, [0.5, 0.5], p1.means) <= 0.03
    tr = ps.sample(PredictorCorrectorSampler(p1, 50), (100,))
    assert tr.is_cuda
    model = ScoreModel(2, p1.schedule, hidden=32, layers=2, device="cuda", seed=0)
    model.fit(p1.sample, steps=50, batch_size=64, seed=0, progress_bar=False)
    y = ps.sample(AncestralSampler(model, 99), (100,))
    assert y.is_cuda and energy_distance(y, x) >= 0


def test_classifier_free_smc_with_mala_moves_runs_on_cuda():
    """The classifier-free composition SMC (exact leaf densities, MALA rejuvenation) on the GPU: particles, weights
    and evidence stay there, and the evidence agrees with the CPU run's (both estimate log int q_1 q_2)."""
    from pyro_sculpt.diffusion import EulerMaruyamaSampler
    from pyro_sculpt.experiments.exact_targets import rrr_ring_product_task

    out = {}
    for device in ("cpu", "cuda"):
        ring, gauss, _ = (m.to(device) for m in rrr_ring_product_task())
        dist = ps.product(EulerMaruyamaSampler(ring, 50), EulerMaruyamaSampler(gauss, 50))
        res = ps.infer.smc(dist, 4000, seed=0, moves=ps.mcmc.Rejuvenation("mala", num_steps=2), progress_bar=False)
        assert res.x.device.type == device and res.log_weights.device.type == device
        assert torch.isfinite(res.x).all() and torch.isfinite(res.log_weights).all() and res.ess > 400
        out[device] = float(res.log_evidence)
    assert abs(out["cuda"] - out["cpu"]) < 0.05, out


def test_classifier_free_gflownet_smc_runs_on_cuda():
    from pyro_sculpt.gflownets import TabularGFlowNet

    env = ps.HyperGrid(2, 8)
    bases = [
        TabularGFlowNet.from_reward(env, r) for r in (ps.rewards.symmetric_shubert(0.5), ps.rewards.diagonal_sigmoid())
    ]
    ev = {}
    for device in ("cpu", "cuda"):
        res = ps.infer.smc(ps.sculpt([b.to(device) for b in bases], y=(0, 1)), 20_000, seed=0, progress_bar=False)
        assert res.x.device.type == device and torch.isfinite(res.log_weights).all()
        ev[device] = float(res.log_evidence)
    assert abs(ev["cuda"] - ev["cpu"]) < 0.02, ev
