"""Every kernel leaves a 2D Gaussian mixture invariant (start from exact samples, 200 steps, compare with the
exact mode weights and moments, against the null of exact samples); the Metropolis ratios are the proposals' own."""

import math
import warnings

import pytest
import torch
from torch.distributions import Normal

import pyro_sculpt as ps
from pyro_sculpt.mcmc.langevin import proposal_log_density
from tests.mcmc.helpers import N, Reference, mixture, target

KERNELS = {
    # exact kernels: steps near the ones the adapter picks; unadjusted ones: small enough for a bias below the noise
    "mala": lambda f: ps.mcmc.MALA(f, 0.3),
    "hmc": lambda f: ps.mcmc.HMC(f, 0.3, num_leapfrog=5),
    "ghmc": lambda f: ps.mcmc.HMC(f, 0.2, num_leapfrog=2, persistence=0.8),
    "ula": lambda f: ps.mcmc.ULA(f, 0.01),
    "uhmc": lambda f: ps.mcmc.UHMC(f, 0.05, num_leapfrog=1, persistence=0.9),
}


@pytest.fixture(scope="module")
def oracle():
    return mixture()


@pytest.fixture(scope="module")
def reference(oracle):
    return Reference(oracle)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_kernel_leaves_the_mixture_invariant(oracle, reference, name):
    torch.manual_seed(1)
    x0 = oracle.sample(N, generator=torch.Generator().manual_seed(2))
    kernel = KERNELS[name](target(oracle))
    state, trace = ps.mcmc.run_chains(kernel, x0, 200)
    moved = float((state.x - x0).norm(dim=-1).mean())
    assert moved > 0.3, moved  # the chains have moved (and mixed within modes)
    tv, z = reference.mode_tv(state.x), reference.moment_z(state.x)
    # measured: mode TV 0.3-1.3x the null, largest moment z-score 0.6-2.3
    assert tv <= 3.0 * reference.null and z <= 4.0, (tv, reference.null, z, trace.accept_rate[-1])


def test_the_closed_form_target_is_the_oracles(oracle):
    x = torch.randn(100, 2, dtype=torch.float64) * 2
    lp, g = target()(x)
    assert torch.allclose(lp, oracle.log_prob(x), atol=1e-12) and torch.allclose(g, oracle.score(x, 0.0), atol=1e-12)


def test_a_wrong_metropolis_ratio_is_detected(oracle, reference):
    """The check has power: MALA whose ratio drops the proposal terms (a random-walk ratio for a Langevin proposal)
    does not leave the mixture invariant."""

    class Wrong(ps.mcmc.MALA):
        def _step(self, state, step_size):
            h = step_size
            prop = state.x + 0.5 * h * state.grad + h.sqrt() * torch.randn_like(state.x)
            log_p, grad = self.evaluate(prop)
            prob, acc = ps.mcmc.base.metropolis(log_p - state.log_prob)
            x = ps.mcmc.base.select(acc, prop, state.x)
            g = ps.mcmc.base.select(acc, grad, state.grad)
            new = ps.mcmc.MCMCState(x, torch.where(acc, log_p, state.log_prob), g)
            return new, ps.mcmc.MCMCInfo(prob, acc, h, log_p - state.log_prob)

    torch.manual_seed(1)
    x0 = oracle.sample(N, generator=torch.Generator().manual_seed(2))
    state, _ = ps.mcmc.run_chains(Wrong(target(oracle), 0.3), x0, 200)
    assert reference.moment_z(state.x) > 6.0


def test_mala_ratio_uses_the_langevin_proposal_density_both_ways():
    torch.manual_seed(0)
    prec = torch.tensor([1.0, 4.0], dtype=torch.float64)
    f = ps.mcmc.log_density_target(lambda x: -0.5 * (x**2 * prec).sum(-1), lambda x: -x * prec)
    x, y = torch.randn(50, 2, dtype=torch.float64), torch.randn(50, 2, dtype=torch.float64)
    h = torch.rand(50, dtype=torch.float64) * 0.5 + 0.05
    gx, gy = -x * prec, -y * prec
    exact = lambda to, frm, g: Normal(frm + 0.5 * h[:, None] * g, h[:, None].sqrt()).log_prob(to).sum(-1)  # noqa: E731
    diff = proposal_log_density(x, y, gy, h) - proposal_log_density(y, x, gx, h)
    assert torch.allclose(diff, exact(x, y, gy) - exact(y, x, gx), atol=1e-12)
    # the kernel's log alpha for accepted particles: target ratio plus both proposal directions
    kernel = ps.mcmc.MALA(f, h)
    state = kernel.init(x)
    new, info = kernel.step(state)
    acc = info.accepted
    assert acc.any() and (~acc).any()
    lp = lambda z: -0.5 * (z**2 * prec).sum(-1)  # noqa: E731
    by_hand = lp(new.x) - lp(x) + exact(x, new.x, -new.x * prec) - exact(new.x, x, gx)
    assert torch.allclose(info.log_accept_ratio[acc], by_hand[acc], atol=1e-10)
    assert torch.equal(new.x[~acc], x[~acc])  # rejected particles stay, with their cached values
    assert torch.equal(new.log_prob[~acc], state.log_prob[~acc]) and torch.equal(new.grad[~acc], state.grad[~acc])
    assert torch.allclose(info.accept_prob, info.log_accept_ratio.clamp(max=0).exp())


def test_leapfrog_is_reversible_and_hmc_keeps_the_kinetic_term():
    torch.manual_seed(0)
    oracle = mixture()
    f = target(oracle)
    kernel = ps.mcmc.HMC(f, 0.1, num_leapfrog=20)
    x = oracle.sample(100, generator=torch.Generator().manual_seed(0))
    p = torch.randn_like(x)
    lp, g = kernel.evaluate(x)
    h = torch.full((100,), 0.1, dtype=torch.float64)
    x1, p1, lp1, g1 = ps.mcmc.leapfrog(kernel.evaluate, x, p, g, h, 20)
    assert (x1 - x).norm(dim=-1).mean() > 0.5
    x2, p2, _, _ = ps.mcmc.leapfrog(kernel.evaluate, x1, -p1, g1, h, 20)
    assert torch.allclose(x2, x, atol=1e-10, rtol=0) and torch.allclose(p2, -p, atol=1e-10, rtol=0)
    assert torch.allclose(ps.mcmc.leapfrog(kernel.evaluate, x, p, g, 0.1, 20)[0], x1, atol=1e-12, rtol=0)  # a number
    # energy error O(eps^2): tiny steps are (almost) always accepted, which fails if the kinetic term is dropped
    state = ps.mcmc.HMC(f, 0.005, num_leapfrog=10).init(x)
    _, info = ps.mcmc.HMC(f, 0.005, num_leapfrog=10).step(state)
    assert float(info.accept_prob.min()) > 0.999
    h_err = (lp1 - 0.5 * (p1**2).sum(-1)) - (lp - 0.5 * (p**2).sum(-1))
    assert float(h_err.abs().max()) < 0.1


def test_hmc_flips_the_momentum_on_rejection():
    torch.manual_seed(0)
    f = ps.mcmc.log_density_target(lambda x: -0.5 * (x**2).sum(-1) / 0.01, lambda x: -x / 0.01)  # std 0.1
    kernel = ps.mcmc.HMC(f, 0.25, num_leapfrog=3, persistence=0.5)  # eps > 2 sigma: unstable, mostly rejected
    state = kernel.init(torch.randn(200, 2, dtype=torch.float64) * 0.1)
    torch.manual_seed(5)
    new, info = kernel.step(state)
    torch.manual_seed(5)
    refreshed = ps.mcmc.hamiltonian.refresh(state.momentum, 0.5)
    rej = ~info.accepted
    assert rej.sum() > 100
    assert torch.equal(new.momentum[rej], -refreshed[rej]) and torch.equal(new.x[rej], state.x[rej])


def test_ula_and_uhmc_always_move():
    f = ps.mcmc.log_density_target(lambda x: -0.5 * (x**2).sum(-1))
    x = torch.randn(300, 3, dtype=torch.float64)
    for kernel in (ps.mcmc.ULA(f, 0.5), ps.mcmc.UHMC(f, 0.5)):
        new, info = kernel.step(kernel.init(x))
        assert info.accepted.all() and (new.x != x).all(-1).all()
        assert (info.accept_prob < 1).any() and math.isclose(info.accept_prob.max().item(), 1.0)


def _gaussian_run(kernel, num_steps):
    x = torch.randn(200, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    return ps.mcmc.run_chains(kernel, x, num_steps)


@pytest.mark.parametrize("kernel, stable, unstable", [(ps.mcmc.ULA, 0.5, 10.0), (ps.mcmc.UHMC, 0.5, 3.0)])
def test_unadjusted_kernels_warn_of_a_divergence(kernel, stable, unstable):
    # on N(0, I) ULA's chain x' = (1 - h/2) x + sqrt(h) xi is stable for h < 4 and a leapfrog step for eps < 2; above,
    # the chains grow geometrically (to 1e150 and more, still finite) and used to do so without a word
    f = ps.mcmc.log_density_target(lambda x: -0.5 * (x**2).sum(-1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ps.mcmc.DivergenceWarning)
        state, trace = _gaussian_run(kernel(f, stable), 200)
    assert sum(trace.num_divergent) == 0 and state.x.abs().max() < 10
    with pytest.warns(ps.mcmc.DivergenceWarning, match=f"{kernel.__name__}: a chain kept a divergent move"):
        state, trace = _gaussian_run(kernel(f, unstable), 20)
    assert trace.num_divergent[0] < 200 and trace.num_divergent[-1] == 200  # the growing chains, all flagged


@pytest.mark.parametrize("kernel", [ps.mcmc.MALA, ps.mcmc.HMC])
def test_metropolis_kernels_flag_and_reject_divergent_moves(kernel):
    f = ps.mcmc.log_density_target(lambda x: -0.5 * (x**2).sum(-1))
    k = kernel(f, 50.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ps.mcmc.DivergenceWarning)
        torch.manual_seed(0)
        new, info = k.step(k.init(torch.randn(500, 2, dtype=torch.float64)))
    assert info.diverging.sum() > 100 and not (info.diverging & info.accepted).any()
    assert torch.equal(info.diverging, info.log_accept_ratio < -1000)
    # a move outside the support is an ordinary rejection, not a divergence
    half = ps.mcmc.log_density_target(lambda x: torch.where(x[:, 0] > 0, -0.5 * (x**2).sum(-1), -math.inf))
    k = kernel(half, 1.0)
    torch.manual_seed(1)
    _, info = k.step(k.init(torch.rand(500, 2, dtype=torch.float64) * 0.1))
    assert (info.log_accept_ratio == -math.inf).sum() > 50 and not info.diverging.any()
