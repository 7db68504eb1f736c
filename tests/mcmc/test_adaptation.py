"""The step-size adapter reaches its target acceptance rate (within +-0.05) on a Gaussian."""

import math

import pytest
import torch

import pyro_sculpt as ps

STD = torch.linspace(0.3, 2.0, 20, dtype=torch.float64)  # acceptance falls smoothly with the step in 20 dimensions


def gaussian():
    return ps.mcmc.log_density_target(lambda x: -0.5 * ((x / STD) ** 2).sum(-1), lambda x: -x / STD**2)


@pytest.mark.parametrize(
    "kernel, target_accept, per_particle",
    [
        (lambda f: ps.mcmc.MALA(f, 1e-3), 0.574, False),
        (lambda f: ps.mcmc.MALA(f, 1e-3), 0.8, False),
        (lambda f: ps.mcmc.HMC(f, 1e-3, num_leapfrog=3), 0.65, False),
        (lambda f: ps.mcmc.ULA(f, 1.0), 0.9, False),
        (lambda f: ps.mcmc.MALA(f, 1e-3), 0.574, True),
    ],
)
def test_adapter_reaches_its_target_acceptance(kernel, target_accept, per_particle):
    torch.manual_seed(0)
    x = torch.randn(2000, 20, dtype=torch.float64) * STD
    adapter = ps.mcmc.StepSizeAdapter(1e-3, target_accept, per_particle=per_particle)
    _, trace = ps.mcmc.run_chains(kernel(gaussian()), x, 300, adapter=adapter)
    rate = sum(trace.accept_rate[-50:]) / 50
    assert abs(rate - target_accept) <= 0.05, (rate, trace.step_size[-1])
    if per_particle:
        assert adapter.step_size.shape == (2000,)
        return
    # frozen at the adapted step size (geometric mean of the last 50 steps), the kernel keeps that rate
    h = math.exp(sum(math.log(v) for v in trace.step_size[-50:]) / 50)
    _, frozen = ps.mcmc.run_chains(kernel(gaussian()).with_step_size(h), x, 50)
    assert abs(sum(frozen.accept_rate) / 50 - target_accept) <= 0.05
