"""Metropolis tests from scores alone: the trapezoid line integral of the score against exact log-density differences
(error shrinking with the number of points), invariance of MALA and HMC on a score-only mixture, and the clear error
of an exact test asked of a score-only target."""

import pytest
import torch

import pyro_sculpt as ps
from pyro_sculpt.diffusion import GaussianMixtureOracle, ScoreModel
from pyro_sculpt.mcmc.line_integral import trapezoid_weights
from tests.mcmc.helpers import N, Reference, mixture, target


def test_trapezoid_weights():
    u, w = trapezoid_weights(3)
    assert torch.allclose(u, torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    assert torch.allclose(w, torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64))
    for bad in (1, 0, 2.5, True, "5"):
        with pytest.raises(ValueError, match="line_integral must be an integer >= 2"):
            trapezoid_weights(bad)


def test_line_integral_matches_the_exact_log_ratio_and_converges():
    """On a sharp 2D mixture at a small noise level, the trapezoid estimate of l(x') - l(x) converges to the exact
    difference like 1/K^2 (the trapezoid rule's order)."""
    oracle = GaussianMixtureOracle(torch.tensor([[-1.0, 0.0], [1.0, 0.5]]), stds=0.3, weights=[0.4, 0.6])
    t = 0.05
    g = torch.Generator().manual_seed(0)
    x = oracle.sample(500, t, generator=g).double()
    y = x + 0.4 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    f = ps.mcmc.log_density_target(lambda z: oracle.log_prob(z, t), lambda z: oracle.score(z, t))
    exact = oracle.log_prob(y, t) - oracle.log_prob(x, t)
    gx, gy = oracle.score(x, t), oracle.score(y, t)
    errors = {}
    for k in (2, 3, 5, 9, 17, 33):
        est = ps.mcmc.trapezoid_log_ratio(f, x, y, gx, gy, k)
        assert est.shape == (500,) and est.dtype == torch.float64
        errors[k] = float((est - exact).abs().mean())
    for a, b in [(2, 3), (3, 5), (5, 9), (9, 17), (17, 33)]:
        assert errors[b] < errors[a], errors
    # second order: doubling the intervals divides the error by about 4 once the rule resolves the path
    assert errors[33] < 0.4 * errors[17] and errors[17] < 0.4 * errors[9], errors
    assert errors[33] < 1e-3 * float(exact.abs().mean()), errors
    # the score-only target gives the same estimate (its log-density reads zero)
    so = ps.mcmc.score_target(lambda z: oracle.score(z, t))
    assert torch.allclose(
        ps.mcmc.trapezoid_log_ratio(so, x, y, gx, gy, 9), ps.mcmc.trapezoid_log_ratio(f, x, y, gx, gy, 9)
    )


KERNELS = {
    "mala": lambda f: ps.mcmc.MALA(f, 0.3, line_integral=5),
    "hmc": lambda f: ps.mcmc.HMC(f, 0.3, num_leapfrog=5, line_integral=9),
}


@pytest.fixture(scope="module")
def reference():
    return Reference(mixture())


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_score_only_kernels_leave_the_mixture_invariant(reference, name):
    oracle = mixture()
    torch.manual_seed(1)
    x0 = oracle.sample(N, generator=torch.Generator().manual_seed(2))
    exact = target(oracle)
    kernel = KERNELS[name](ps.mcmc.score_target(lambda x: exact(x)[1]))
    state, trace = ps.mcmc.run_chains(kernel, x0, 200)
    assert float((state.x - x0).norm(dim=-1).mean()) > 0.3
    tv, z = reference.mode_tv(state.x), reference.moment_z(state.x)
    assert tv <= 3.0 * reference.null and z <= 4.0, (tv, reference.null, z, trace.accept_rate[-1])
    # the state's log_prob is the running estimate of l(x) - l(x0); the rule's errors add up over accepted moves
    # (measured: mean |error| 0.08, max 0.4 after 200 steps)
    drift = (state.log_prob - (exact(state.x)[0] - exact(x0)[0])).abs()
    assert float(drift.mean()) < 0.15 and float(drift.max()) < 1.0, (float(drift.mean()), float(drift.max()))


def test_line_integral_acceptance_matches_the_exact_test():
    """Same random numbers, same proposals: acceptance probabilities with K = 17 points agree with the exact ones."""
    f = target()
    x0 = mixture().sample(500, generator=torch.Generator().manual_seed(0))
    out = []
    for kernel in (ps.mcmc.MALA(f, 0.3), ps.mcmc.MALA(ps.mcmc.score_target(lambda x: f(x)[1]), 0.3, line_integral=17)):
        torch.manual_seed(5)
        out.append(kernel.step(kernel.init(x0))[1].accept_prob)
    assert (out[0] - out[1]).abs().max() < 5e-3


def test_score_only_targets_need_the_line_integral_for_an_exact_test():
    so = ps.mcmc.score_target(lambda x: -x)
    for kernel in (ps.mcmc.MALA, ps.mcmc.HMC):
        with pytest.raises(ValueError, match="score-only .* pass line_integral=K"):
            kernel(so, 0.1)
    for kernel in (ps.mcmc.ULA, ps.mcmc.UHMC):  # unadjusted: fine, with the free two-point rule for diagnostics
        assert kernel(so, 0.1).line_integral == 2
    with pytest.raises(ValueError, match="line_integral must be an integer >= 2"):
        ps.mcmc.MALA(so, 0.1, line_integral=1)
    with pytest.raises(TypeError, match="score must be callable"):
        ps.mcmc.score_target("score")
    # a product of score-only models (trained score networks) is a score-only target
    models = [ScoreModel(2, hidden=8, layers=1, seed=0), ScoreModel(2, hidden=8, layers=1, seed=1)]
    prod = ps.mcmc.operator_target(models, 0.3)
    assert getattr(prod, "score_only", False)
    with pytest.raises(ValueError, match="MALA: the target is score-only"):
        ps.mcmc.MALA(prod, 0.05)
    state = ps.mcmc.MALA(prod, 0.05, line_integral=3).init(torch.randn(10, 2))
    with torch.no_grad():
        assert torch.allclose(state.grad, models[0].score(state.x, 0.3) + models[1].score(state.x, 0.3))
    with pytest.raises(ValueError, match="line_integral must be an integer"):
        ps.mcmc.Rejuvenation("mala", line_integral=0)
