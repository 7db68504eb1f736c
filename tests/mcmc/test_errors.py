"""Bad input to kernels, adapters, targets and rejuvenation moves: clear errors."""

import numpy
import pytest
import torch

import pyro_sculpt as ps


def gauss(x):
    return -0.5 * (x**2).sum(-1), -x


KERNELS = [ps.mcmc.ULA, ps.mcmc.MALA, ps.mcmc.UHMC, ps.mcmc.HMC]


@pytest.mark.parametrize("kernel", KERNELS)
def test_step_size_must_be_positive(kernel):
    for bad in (0.0, -0.1, float("nan"), float("inf"), torch.tensor([0.1, 0.0])):
        with pytest.raises(ValueError, match="step_size must be finite and > 0"):
            kernel(gauss, bad)
    with pytest.raises(ValueError, match="step_size must be a positive number"):
        kernel(gauss, "big")
    k = kernel(gauss, 0.1)
    state = k.init(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="step_size must be finite and > 0"):
        k.step(state, step_size=-1.0)
    with pytest.raises(ValueError, match=r"step_size must have shape \(\) or \(4,\)"):
        k.step(state, step_size=torch.full((3,), 0.1))
    with pytest.raises(ValueError, match=r"step_size must have shape \(\) or \(5,\)"):
        kernel(gauss, torch.full((4,), 0.1)).init(torch.zeros(5, 2))


def test_mismatched_dimensions():
    msg = r"returned a log-density of shape \(4, 1\) for x of shape \(4, 2\): expected \(4,\)"
    with pytest.raises(ValueError, match=msg):
        ps.mcmc.MALA(lambda x: (x[:, :1], -x), 0.1).init(torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"returned a gradient of shape \(4, 3\) for x of shape \(4, 2\)"):
        ps.mcmc.HMC(lambda x: (x.sum(-1), torch.zeros(4, 3)), 0.1).init(torch.zeros(4, 2))
    with pytest.raises(TypeError, match="must return a pair"):
        ps.mcmc.MALA(lambda x: x.sum(-1), 0.1).init(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="x must be a floating tensor"):
        ps.mcmc.MALA(gauss, 0.1).init(torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="log_prob_and_grad must be callable"):
        ps.mcmc.MALA("gauss", 0.1)
    hmc = ps.mcmc.HMC(gauss, 0.1)
    with pytest.raises(ValueError, match="state has no momentum"):
        hmc.step(ps.mcmc.MALA(gauss, 0.1).init(torch.zeros(4, 2)))
    with pytest.raises(TypeError, match="state must be an MCMCState"):
        hmc.step(torch.zeros(4, 2))
    adapter = ps.mcmc.StepSizeAdapter(torch.full((4,), 0.1), 0.5, per_particle=True)
    _, info = ps.mcmc.MALA(gauss, 0.1).step(ps.mcmc.MALA(gauss, 0.1).init(torch.zeros(5, 2)))
    with pytest.raises(ValueError, match="info has 5 particles but the adapter has 4 step sizes"):
        adapter.update(info)


def test_target_accept_and_options():
    for bad in (0.0, 1.0, -0.5, 1.5, "high", True):
        with pytest.raises(ValueError, match="target_accept must"):
            ps.mcmc.StepSizeAdapter(0.1, bad)
        with pytest.raises(ValueError, match="target_accept must"):
            ps.mcmc.Rejuvenation("mala", target_accept=bad)
    with pytest.raises(ValueError, match="rate must be a finite number > 0"):
        ps.mcmc.StepSizeAdapter(0.1, 0.5, rate=0.0)
    with pytest.raises(ValueError, match="decay must lie in"):
        ps.mcmc.StepSizeAdapter(0.1, 0.5, decay=2.0)
    with pytest.raises(ValueError, match="num_leapfrog must be an integer >= 1"):
        ps.mcmc.HMC(gauss, 0.1, num_leapfrog=0)
    with pytest.raises(ValueError, match=r"persistence must lie in \[0, 1\)"):
        ps.mcmc.UHMC(gauss, 0.1, persistence=1.0)
    with pytest.raises(ValueError, match="kernel must be one of"):
        ps.mcmc.Rejuvenation("nuts")
    with pytest.raises(TypeError, match="kernel must be one of"):
        ps.mcmc.Rejuvenation(int)
    with pytest.raises(ValueError, match="num_steps must be an integer >= 1"):
        ps.mcmc.Rejuvenation("mala", num_steps=0)
    with pytest.raises(ValueError, match="step_size must be finite and > 0"):
        ps.mcmc.Rejuvenation("mala", step_size=0.0)
    with pytest.raises(ValueError, match="when must be one of"):
        ps.mcmc.Rejuvenation("mala", when="always")
    with pytest.raises(ValueError, match="num_leapfrog must be an integer"):
        ps.mcmc.Rejuvenation("hmc", num_leapfrog=-2)
    x = torch.randn(4, 2)
    for bad in (-1, 2.5, True, None):
        with pytest.raises(ValueError, match=rf"num_steps\(0.3\) must return an integer >= 0, got {bad!r}"):
            ps.mcmc.Rejuvenation("mala", num_steps=lambda t, bad=bad: bad).move(x, gauss, level=0.3)
    assert ps.mcmc.Rejuvenation("mala", num_steps=lambda t: numpy.int64(2)).steps_at(0.3) == 2  # any integer type
    with pytest.raises(ValueError, match="num_steps is a function of the noise level, but these moves were given no"):
        ps.mcmc.Rejuvenation("mala", num_steps=lambda t: 1).move(x, gauss)


def test_operator_target_needs_exact_densities():
    class ScoreOnly:
        def score(self, x, t):
            return -x

    # an operator of score-only models needs their log-densities; their product is a score-only target, which an
    # exact Metropolis test refuses without the line integral (tests/mcmc/test_line_integral.py)
    with pytest.raises(TypeError, match=r"models\[0\] \(ScoreOnly\) has no exact log_prob\(x, t\)"):
        ps.mcmc.operator_target([ScoreOnly()], 0.5, operator=lambda log_q: log_q.sum(-1))
    with pytest.raises(ValueError, match="score-only"):
        ps.mcmc.MALA(ps.mcmc.operator_target([ScoreOnly()], 0.5), 0.1)
    with pytest.raises(ValueError, match="models must hold at least one"):
        ps.mcmc.operator_target([], 0.5)


def test_mismatched_dimensions_of_models_and_segments():
    from pyro_sculpt.diffusion import EnergyScoreModel, GaussianMixtureOracle

    a = GaussianMixtureOracle(torch.zeros(1, 2), stds=1.0)
    b = GaussianMixtureOracle(torch.zeros(1, 3), stds=1.0)
    with pytest.raises(ValueError, match=r"models\[1\] has event shape \(3,\) but models\[0\] has \(2,\)"):
        ps.mcmc.operator_target([a, b], 0.5)
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match=r"x_new must have the shape of x \(4, 2\), got \(4, 3\)"):
        ps.mcmc.trapezoid_log_ratio(gauss, x, torch.zeros(4, 3), x, x, 3)
    with pytest.raises(ValueError, match=r"grad_new must have the shape of x"):
        ps.mcmc.trapezoid_log_ratio(gauss, x, x, x, torch.zeros(3, 2), 3)
    # a score-only target whose score has the wrong shape: the kernel names it
    with pytest.raises(ValueError, match=r"returned a gradient of shape \(4, 3\) for x of shape \(4, 2\)"):
        ps.mcmc.MALA(ps.mcmc.score_target(lambda z: torch.zeros(4, 3)), 0.1, line_integral=3).init(x)

    class PerEntry(torch.nn.Module):
        def forward(self, x, t):
            return x**2

    with pytest.raises(ValueError, match="energy must map x of shape .* to one value per point"):
        EnergyScoreModel(2, network=PerEntry())
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 2\)"):
        EnergyScoreModel(2, hidden=4, layers=1).log_prob(torch.zeros(4, 3), 0.5)


def test_corrector_bad_input():
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="step_size must be finite and > 0"):
            ps.mcmc.corrector(kernel="hmc", step_size=bad)
    for bad in (0.0, 1.0, 2.0):
        with pytest.raises(ValueError, match="target_accept must lie in"):
            ps.mcmc.corrector(target_accept=bad)
    with pytest.raises(ValueError, match="num_steps must be an integer >= 1"):
        ps.mcmc.corrector(num_steps=0)
    with pytest.raises(ValueError, match="line_integral must be an integer >= 2"):
        ps.mcmc.corrector(kernel="mala", line_integral=1)


class _NoNoise(ps.mcmc.NoiseSource):
    """Zero Gaussian draws: deterministic moves."""

    def normal(self, like, name):
        return torch.zeros_like(like)


@pytest.mark.parametrize("kernel, step", [(ps.mcmc.ULA, 0.25), (ps.mcmc.UHMC, 0.5)])
def test_unadjusted_kernels_reject_a_non_finite_move_alone(kernel, step):
    # log pi = -|x|: its gradient is NaN at 0 exactly; without noise both kernels move (0.125, 0) to 0 exactly (ULA:
    # x + h/2 grad; UHMC, one leapfrog step from zero momentum: x + eps^2/2 grad), where an unadjusted kernel used to
    # move to NaN, "accepted"
    target = ps.mcmc.log_density_target(lambda x: -(x**2).sum(-1).sqrt())
    x = torch.tensor([[0.125, 0.0], [0.0, -0.125], [1.0, 1.0]], dtype=torch.float64)
    with ps.mcmc.noise_source(_NoNoise()):
        k = kernel(target, step)
        state, info = k.step(k.init(x))
    assert torch.isfinite(state.x).all() and torch.equal(state.x[:2], x[:2])
    assert info.accepted.tolist() == [False, False, True]


def test_rejuvenation_and_corrector_options_are_checked():
    with pytest.raises(ValueError, match="adapt must be True or False, got 'no'"):
        ps.mcmc.Rejuvenation("mala", 2, adapt="no")
    with pytest.raises(ValueError, match=r"kernel MALA does not take the options \['num_leapfrog'\]"):
        ps.mcmc.Rejuvenation("mala", 2, num_leapfrog=3)
    with pytest.raises(ValueError, match="a corrector .* takes no when"):
        ps.mcmc.corrector(kernel="mala", num_steps=2, when="step")


def test_operator_targets_refuse_unnormalised_log_densities_where_they_do_not_cancel():
    from pyro_sculpt.diffusion import GaussianMixtureOracle
    from pyro_sculpt.sculpting.log_operators import Base, Mixture

    class Shifted(GaussianMixtureOracle):
        log_prob_normalised = False  # log_prob up to a constant per level (an energy model)

    a = Shifted(torch.tensor([[-1.0]]), stds=0.3)
    b = GaussianMixtureOracle(torch.tensor([[1.0]]), stds=0.3)
    ps.mcmc.operator_target([a, b], 0.1)  # the product: the constant cancels
    with pytest.raises(ValueError, match=r"models\[0\] \(Shifted\) has log_prob\(x, t\) only up to a constant"):
        ps.mcmc.operator_target([a, b], 0.1, Mixture([Base(0, 2), Base(1, 2)], [0.5, 0.5]))


def _count(x, calls):
    calls.append(x.shape[0])
    return -0.5 * (x**2).sum(-1)


def test_evaluations_count_the_line_integral_points():
    from pyro_sculpt.diffusion import GaussianMixtureOracle

    o = GaussianMixtureOracle(torch.tensor([[-1.0], [1.0]]), stds=0.5)
    calls = []

    def score_only(x):
        calls.append(x.shape[0])
        return o.score(x, 0.1)

    target = ps.mcmc.score_target(score_only)
    for options, per_step in (({"line_integral": 5}, 4), ({"num_leapfrog": 3, "line_integral": 9}, 10), ({}, 1)):
        kernel = "hmc" if "num_leapfrog" in options else "mala"
        moves = ps.mcmc.Rejuvenation(kernel, 10, 0.05, adapt=False, **options)
        calls.clear()
        moves.move(torch.randn(7, 1), target if options else ps.mcmc.log_density_target(lambda x: _count(x, calls)))
        assert moves.num_evaluations == 1 + 10 * per_step == sum(calls) / 7, (options, sum(calls) / 7)  # per particle


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_pole_in_the_target_is_named_not_accepted(kernel):
    # log pi = +inf inside |x| < 0.3: MALA and HMC accepted every move onto it and stuck there, in silence; now the
    # accepted move is named; the unadjusted kernels, which keep finite moves only, never enter it
    def pole(x):
        lp, g = gauss(x)
        return torch.where(x.norm(dim=-1) < 0.3, torch.full_like(lp, float("inf")), lp), g

    torch.manual_seed(0)
    k = kernel(pole, 0.5)
    state = k.init(torch.full((200, 2), 2.0))
    if kernel.exact:
        with pytest.raises(ValueError, match=r"returned \+inf at particle \d+'s accepted move: a log-density must be"):
            for _ in range(30):
                state, _ = k.step(state)
    else:
        for _ in range(30):
            state, _ = k.step(state)
        assert torch.isfinite(state.log_prob).all() and bool((state.x.norm(dim=-1) >= 0.3).all())


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_start_with_a_non_finite_gradient_is_refused(kernel):
    def nan_grad(x):
        lp, g = gauss(x)
        return lp, torch.where(x[:, :1] > 0, torch.full_like(g, float("nan")), g)

    with pytest.raises(ValueError, match="gradient has NaN or infinite entries at particle 1"):
        kernel(nan_grad, 0.1).init(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))


def test_the_public_leapfrog_checks_its_arguments():
    x = torch.zeros(3, 2)
    p, g = torch.ones(3, 2), torch.zeros(3, 2)
    for bad in (float("nan"), float("inf"), 0.0, -0.1):
        with pytest.raises(ValueError, match="step_size must be finite and > 0"):
            ps.mcmc.leapfrog(gauss, x, p, g, bad, 3)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="num_steps must be an integer >= 1"):
            ps.mcmc.leapfrog(gauss, x, p, g, 0.1, bad)
    x1, p1, lp1, g1 = ps.mcmc.leapfrog(gauss, x, p, g, 0.1, 3)
    assert x1.shape == (3, 2) and lp1.shape == (3,)


def test_an_infinite_bandwidth_is_refused():
    with pytest.raises(ValueError, match="bandwidth must be a finite number > 0, got inf"):
        ps.mcmc.GaussianKDE(torch.randn(10, 2), bandwidth=float("inf"))
    with pytest.raises(ValueError, match="bandwidth must be a finite number > 0"):
        ps.mcmc.PopulationIndependenceMH(lambda x: -x.pow(2).sum(-1), bandwidth=float("inf"))
