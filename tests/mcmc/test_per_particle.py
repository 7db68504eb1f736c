"""Every particle is its own chain: one particle in a region of huge energy (or NaN) changes neither the others'
acceptance nor their step, nor (per-particle adaptation) their step size."""

import warnings

import pytest
import torch

import pyro_sculpt as ps
from tests.mcmc.helpers import mixture, target

KERNELS = {
    "mala": lambda f, h: ps.mcmc.MALA(f, h),
    "hmc": lambda f, h: ps.mcmc.HMC(f, h, num_leapfrog=3, persistence=0.5),
    "ula": lambda f, h: ps.mcmc.ULA(f, h),
    "uhmc": lambda f, h: ps.mcmc.UHMC(f, h, num_leapfrog=2),
}


def _run(kernel, x, seed, steps=3):
    torch.manual_seed(seed)
    state = kernel.init(x)
    infos = []
    for _ in range(steps):
        state, info = kernel.step(state)
        infos.append(info)
    return state, infos


@pytest.mark.parametrize("name", sorted(KERNELS))
@pytest.mark.parametrize("far", [1e4, float("nan")])
def test_one_particle_with_huge_energy_changes_nothing_for_the_others(name, far):
    f = target()
    x = mixture().sample(256, generator=torch.Generator().manual_seed(0))
    h = torch.full((256,), 0.2, dtype=torch.float64)
    outlier = x.clone()
    outlier[7] = far
    kernel = KERNELS[name](f, h)
    if far != far:  # NaN: init refuses the state, but a state that meets NaN later stays isolated
        with pytest.raises(ValueError, match="x: the target's log-density is nan at particle 7"):
            kernel.init(outlier)
        return
    ref_state, ref_infos = _run(kernel, x, seed=3)
    with warnings.catch_warnings():  # U-HMC's outlier diverges: warned (tests/mcmc/test_kernels.py), flagged alone
        warnings.simplefilter("ignore", ps.mcmc.DivergenceWarning)
        out_state, out_infos = _run(kernel, outlier, seed=3)
    others = torch.arange(256) != 7
    assert torch.equal(ref_state.x[others], out_state.x[others])
    for a, b in zip(ref_infos, out_infos):
        assert torch.equal(a.accept_prob[others], b.accept_prob[others])
        assert torch.equal(a.accepted[others], b.accepted[others])
        assert torch.equal(a.diverging[others], b.diverging[others]) and not a.diverging.any()
    assert torch.isfinite(out_state.x).all()


def test_a_nan_at_the_proposal_is_a_rejection_of_that_particle_only():
    def f(x):
        lp = -0.5 * (x**2).sum(-1)
        lp = torch.where(x[:, 0] > 2.0, torch.full_like(lp, float("nan")), lp)
        return lp, -x

    x = torch.zeros(100, 2, dtype=torch.float64)
    x[0, 0] = 1.9  # its proposals often land where the target is NaN
    kernel = ps.mcmc.MALA(f, 0.5)
    torch.manual_seed(0)
    state = kernel.init(x)
    for _ in range(20):
        state, info = kernel.step(state)
        assert torch.isfinite(state.x).all() and torch.isfinite(state.log_prob).all()
        assert not (info.accepted & (info.accept_prob == 0)).any()


def test_per_particle_adaptation_keeps_the_others_step_sizes():
    f = target()
    x = mixture().sample(128, generator=torch.Generator().manual_seed(0))
    outlier = x.clone()
    outlier[3] = 1e4
    sizes = []
    for xs in (x, outlier):
        torch.manual_seed(1)
        adapter = ps.mcmc.StepSizeAdapter(0.3, 0.574, per_particle=True)
        ps.mcmc.run_chains(ps.mcmc.MALA(f, 0.3), xs, 20, adapter=adapter)
        sizes.append(adapter.step_size)
    others = torch.arange(128) != 3
    assert sizes[0].shape == (128,) and torch.equal(sizes[0][others], sizes[1][others])
    assert sizes[1][3] != sizes[0][3]  # the outlier's own step size followed its own acceptance
