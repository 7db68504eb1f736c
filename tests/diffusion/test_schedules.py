import math

import pytest
import torch

from pyro_sculpt.diffusion import (
    TabulatedVESchedule,
    TabulatedVPSchedule,
    VESchedule,
    VPSchedule,
    schedule_from_config,
)

CONTINUOUS = [
    VPSchedule(),
    VPSchedule("cosine"),
    VPSchedule(beta_min=0.5, beta_max=5.0),
    VESchedule(0.02, 5.0),
]
ALL = CONTINUOUS + [
    TabulatedVPSchedule.linear(100),
    TabulatedVPSchedule.cosine(100),
    TabulatedVESchedule(torch.logspace(-2, 1, 50)),
]


@pytest.mark.parametrize("sched", CONTINUOUS, ids=repr)
def test_sde_coefficients_are_the_derivatives_of_the_kernel(sched):
    t = torch.linspace(0.01, 0.99, 37, dtype=torch.float64).requires_grad_(True)
    log_alpha, sigma2 = sched.log_alpha(t) + 0 * t, sched.sigma2(t)  # (+ 0 t: VE's log alpha is constant)
    (dlog_alpha,) = torch.autograd.grad(log_alpha.sum(), t)
    (dsigma2,) = torch.autograd.grad(sigma2.sum(), t)
    with torch.no_grad():
        f = sched.drift(t)
        assert torch.allclose(f, dlog_alpha, rtol=1e-10, atol=1e-10)
        assert torch.allclose(sched.diffusion2(t), dsigma2 - 2 * f * sigma2, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("sched", ALL, ids=repr)
def test_noise_increases_and_vp_preserves_variance(sched):
    t = torch.linspace(sched.t_min, 1.0, 301, dtype=torch.float64)
    alpha, sigma = sched.marginal(t)
    snr = alpha**2 / sigma**2
    assert (snr[1:] < snr[:-1]).all()
    assert (sched.diffusion2(t) > 0).all()
    if "VP" in type(sched).__name__:
        assert torch.allclose(alpha**2 + sigma**2, torch.ones_like(t), atol=1e-12)
        assert abs(sched.prior_std() - 1.0) < 1e-12
    else:
        assert torch.allclose(alpha, torch.ones_like(t))


def test_tabulated_vp_reproduces_ddpm_alpha_bar_and_its_sde():
    sched = TabulatedVPSchedule.linear(1000)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    assert torch.allclose(sched.alpha(t) ** 2, abar, rtol=1e-10)
    # the piecewise-constant beta(t) integrates to -log(1 - beta_n) over every interval
    mid = (torch.arange(1000, dtype=torch.float64) + 0.5) / 1000
    assert torch.allclose(sched.diffusion2(mid) / 1000, -torch.log1p(-betas), rtol=1e-10)
    assert sched.t_min == pytest.approx(1e-3)
    assert torch.allclose(sched.default_times(999), t.flip(0))


def test_continuous_linear_vp_discretises_to_ddpm_betas():
    sched = VPSchedule()
    t = torch.arange(0, 1001, dtype=torch.float64) / 1000
    abar = sched.alpha(t) ** 2
    betas = 1 - abar[1:] / abar[:-1]
    mid = (torch.arange(1000, dtype=torch.float64) + 0.5) / 1000
    ddpm = sched.beta(mid) / 1000  # 1e-4 + 1e-5 ... 0.02 - 1e-5: DDPM's linear betas at the interval midpoints
    assert torch.allclose(betas, ddpm, rtol=0, atol=float(ddpm.max() ** 2))
    assert ddpm[0].item() == pytest.approx(1e-4, rel=0.1) and ddpm[-1].item() == pytest.approx(0.02, rel=1e-3)


def test_cosine_schedule_reaches_min_alpha_bar():
    sched = VPSchedule("cosine", min_alpha_bar=1e-4)
    assert sched.alpha(torch.tensor(1.0, dtype=torch.float64)).item() ** 2 == pytest.approx(1e-4, rel=1e-9)
    assert sched.alpha(0.0).item() == pytest.approx(1.0)
    # Nichol & Dhariwal's alpha_bar shape: cos^2 of the rescaled time
    t = torch.tensor(0.5, dtype=torch.float64)
    phi = math.pi / 2 * (sched._tau * 0.5 + 0.008) / 1.008
    ref = math.cos(phi) ** 2 / math.cos(math.pi / 2 * 0.008 / 1.008) ** 2
    assert sched.alpha(t).item() ** 2 == pytest.approx(ref, rel=1e-12)


def test_ve_sigma_is_geometric():
    sched = VESchedule(0.01, 10.0)
    assert sched.sigma(0.0).item() == pytest.approx(0.01)
    assert sched.sigma(1.0).item() == pytest.approx(10.0)
    assert sched.sigma(0.5).item() == pytest.approx(math.sqrt(0.01 * 10.0))
    tab = TabulatedVESchedule([0.1, 0.2, 0.4])
    assert tab.sigma(0.25).item() == pytest.approx(math.sqrt(0.1 * 0.2))


@pytest.mark.parametrize("sched", ALL, ids=repr)
def test_config_round_trip(sched):
    again = schedule_from_config(sched.config())
    assert again == sched
    t = torch.linspace(sched.t_min, 1, 11, dtype=torch.float64)
    assert torch.allclose(again.sigma(t), sched.sigma(t))


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: VESchedule(sigma_min=1.0, sigma_max=0.5), "sigma_max"),
        (lambda: VESchedule(sigma_min=1.0, sigma_max=1.0), "sigma_max"),
        (lambda: VESchedule(sigma_min=0.0, sigma_max=1.0), "sigma_min"),
        (lambda: VPSchedule(beta_min=-0.1), "beta_min"),
        (lambda: VPSchedule(beta_max=0.0), "beta_max"),
        (lambda: VPSchedule(beta_max=float("nan")), "beta_max"),
        (lambda: VPSchedule("cosine", min_alpha_bar=1.5), "min_alpha_bar"),
        (lambda: VPSchedule("quadratic"), "kind"),
        (lambda: VPSchedule(t_min=0.0), "t_min"),
        (lambda: TabulatedVPSchedule([0.01, 0.0, 0.02]), r"betas\[1\]"),
        (lambda: TabulatedVPSchedule([0.01, -0.02]), r"betas\[1\]"),
        (lambda: TabulatedVESchedule([0.1, 0.3, 0.3, 1.0]), r"sigmas\[1\]"),
        (lambda: TabulatedVESchedule([0.1, 0.05]), "sigmas"),
        (lambda: TabulatedVESchedule([[0.1, 0.2]]), "sigmas"),
    ],
)
def test_non_increasing_noise_is_rejected(build, name):
    with pytest.raises(ValueError, match=name):
        build()


def test_unknown_config_is_rejected():
    with pytest.raises(ValueError, match="schedule"):
        schedule_from_config({"type": "Nope"})
