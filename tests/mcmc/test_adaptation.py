"""The step-size adapter reaches its target acceptance rate (within +-0.05) on a Gaussian; settled with decaying gains
and frozen, the kernel keeps it (within +-0.02)."""

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
    # Frozen for a fixed target, the step size must first settle: the documented way is decaying gains (module
    # docstring). Constant gain alone can hover in a two-cycle around the target where the acceptance is steep (HMC
    # with 3 leapfrog steps reaches 0.65 just past a resonance of the narrowest coordinate: 0.79 at h = 0.52, 0.43 at
    # 0.56, so r |d alpha / d log h| > 2), and a step frozen between the cycle's two values is then off the target.
    settle = ps.mcmc.StepSizeAdapter(adapter.step_size, target_accept, decay=0.75)
    ps.mcmc.run_chains(kernel(gaussian()), x, 200, adapter=settle)
    _, frozen = ps.mcmc.run_chains(kernel(gaussian()).with_step_size(float(settle.step_size)), x, 50)
    assert abs(sum(frozen.accept_rate) / 50 - target_accept) <= 0.02
