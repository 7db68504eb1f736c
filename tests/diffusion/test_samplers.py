import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.distributions import Delta

import pyro_sculpt as ps
from pyro_sculpt.diffusion import (
    AncestralSampler,
    DDIMSampler,
    DiffusionModel,
    EulerMaruyamaSampler,
    GaussianMixtureOracle,
    NonFiniteScoreError,
    PredictorCorrectorSampler,
    ProbabilityFlowSampler,
    TabulatedVPSchedule,
    VESchedule,
    VPSchedule,
)
from pyro_sculpt.metrics import grid_mode_weights, mode_weight_tv

N = 4000


def _exact_mode_weights(oracle):
    """Mode weights of the sampler's target p_{t_min} (nearest-mode regions), on a fine grid."""
    t = oracle.schedule.t_min
    return grid_mode_weights(lambda z: oracle.log_prob(z, t), [(-5, 5), (-5, 5)], oracle.means, resolution=400)


@pytest.mark.parametrize(
    "schedule, steps",
    [(VPSchedule(), 500), (VPSchedule("cosine"), 500), (VESchedule(0.01, 10.0), 500)],
    ids=repr,
)
def test_ddpm_ancestral_sampler_reproduces_the_mixture(schedule, steps, make_four_modes):
    four_modes = make_four_modes
    oracle = four_modes(schedule)
    target = _exact_mode_weights(oracle)
    assert torch.allclose(target, oracle.weights.double(), atol=5e-4)  # the modes barely overlap
    pyro.set_rng_seed(0)
    x = ps.ProcessDistribution(AncestralSampler(oracle, steps)).sample((N,))
    assert x.shape == (N, 2) and torch.isfinite(x).all()
    assert mode_weight_tv(x, target, oracle.means) <= 0.03


@pytest.mark.parametrize(
    "make",
    [
        lambda o: EulerMaruyamaSampler(o, 300),
        lambda o: PredictorCorrectorSampler(o, 150, corrector_steps=1, snr=0.1),
        lambda o: PredictorCorrectorSampler(o, 150, predictor="euler_maruyama"),
        lambda o: DDIMSampler(o, 100),
        lambda o: DDIMSampler(o, 100, eta=0.5),
        lambda o: ProbabilityFlowSampler(o, 300),
    ],
    ids=["euler_maruyama", "pc_ancestral", "pc_euler", "ddim", "ddim_eta", "pf_ode"],
)
def test_every_sampler_reproduces_the_mixture(make, make_four_modes):
    four_modes = make_four_modes
    oracle = four_modes()
    pyro.set_rng_seed(1)
    x = ps.sample(make(oracle), (N,))
    assert mode_weight_tv(x, oracle.weights, oracle.means) <= 0.03
    # and the mode shapes: the spread around each mode matches the component std (0.3, 0.2, 0.4, 0.25)
    labels = torch.cdist(x, oracle.means).argmin(-1)
    for k, std in enumerate([0.3, 0.2, 0.4, 0.25]):
        spread = (x[labels == k] - oracle.means[k]).std(0)
        assert torch.allclose(spread, torch.full((2,), std), rtol=0.15)


def test_tabulated_ddpm_schedule_uses_its_own_levels(make_four_modes):
    four_modes = make_four_modes
    oracle = four_modes(TabulatedVPSchedule.linear(300))
    sampler = AncestralSampler(oracle, 299)
    assert torch.allclose(sampler.times, torch.arange(300, 0, -1, dtype=torch.float64) / 300)
    a, b, c = sampler.step_coefficients(1)  # DDPM: mean (x + beta s)/sqrt(1 - beta), var beta_tilde
    betas = oracle.schedule.betas
    beta = betas[-1].item()
    abar = torch.cumprod(1 - betas, 0)
    assert a == pytest.approx((1 - beta) ** -0.5, rel=1e-9)
    assert b == pytest.approx(beta / (1 - beta) ** 0.5, rel=1e-9)
    assert c**2 == pytest.approx(beta * (1 - abar[-2].item()) / (1 - abar[-1].item()), rel=1e-9)
    pyro.set_rng_seed(2)
    x = ps.sample(sampler, (N,))
    assert mode_weight_tv(x, oracle.weights, oracle.means) <= 0.03


def test_trace_has_one_site_per_step_and_its_values_chain(make_four_modes):
    four_modes = make_four_modes
    oracle = four_modes()
    sampler = AncestralSampler(oracle, 20)
    tr = poutine.trace(lambda: ps.run("x", sampler, num_particles=7)).get_trace()
    sites = [n for n, s in tr.nodes.items() if s["type"] == "sample" and not s["name"].endswith("_particles")]
    assert sites == [f"x_{k}" for k in range(21)] and sampler.max_steps == 21
    tr.compute_log_prob()
    for k in range(21):
        site = tr.nodes[f"x_{k}"]
        assert site["value"].shape == (7, 2)
        assert site["log_prob"].shape == (7,)
        info = site["infer"]["pyro_sculpt"]
        assert info["process"] is sampler and info["t"] == k
        assert info["diffusion"]["kind"] == ("prior" if k == 0 else "predictor")
    # step k's distribution is N(a x + b s(x), c) at the value of step k - 1
    for k in (1, 10, 20):
        prev = tr.nodes[f"x_{k - 1}"]["value"]
        a, b, c = sampler.step_coefficients(k)
        expected = a * prev + b * oracle.score(prev, sampler.score_time(k))
        fn = tr.nodes[f"x_{k}"]["fn"]
        assert torch.allclose(fn.mean, expected, atol=1e-5)
        assert torch.allclose(fn.variance, torch.full_like(expected, c**2), rtol=1e-5)
    assert sampler.score_time(1) == pytest.approx(1.0) and sampler.score_time(20) == pytest.approx(
        0.05 + 0.001 * 0.95, rel=1e-3
    )


def test_predictor_corrector_sites(make_four_modes):
    four_modes = make_four_modes
    sampler = PredictorCorrectorSampler(four_modes(), 5, corrector_steps=2)
    tr = poutine.trace(lambda: ps.run("x", sampler, num_particles=3)).get_trace()
    kinds = [tr.nodes[f"x_{k}"]["infer"]["pyro_sculpt"]["diffusion"]["kind"] for k in range(sampler.max_steps)]
    assert kinds == ["prior"] + ["predictor", "corrector", "corrector"] * 5
    assert f"x_{sampler.max_steps}" not in tr.nodes


def test_whole_chain_is_one_site_or_expanded_by_reparam(make_four_modes):
    four_modes = make_four_modes
    sampler = DDIMSampler(four_modes(), 10)

    def model():
        with pyro.plate("n", 5):
            return pyro.sample("x", ps.ProcessDistribution(sampler))

    tr = poutine.trace(model).get_trace()
    assert [n for n, s in tr.nodes.items() if s["type"] == "sample"] == ["n", "x"]
    assert tr.nodes["x"]["value"].shape == (5, 2)
    tr = poutine.trace(poutine.reparam(model, config={"x": ps.ProcessReparam()})).get_trace()
    steps = [n for n, s in tr.nodes.items() if s["type"] == "sample" and n.startswith("x_")]
    assert steps == [f"x_{k}" for k in range(11)]
    assert isinstance(tr.nodes["x_3"]["fn"].base_dist, Delta)  # eta = 0: deterministic steps (masked by run)
    assert torch.equal(tr.nodes["x"]["value"], tr.nodes["x_10"]["value"])


def test_step_from_a_modified_score_shifts_the_mean_by_b_delta(make_four_modes):
    four_modes = make_four_modes
    oracle = four_modes()
    for sampler in [
        AncestralSampler(oracle, 30),
        EulerMaruyamaSampler(oracle, 30),
        DDIMSampler(oracle, 30),
        PredictorCorrectorSampler(oracle, 30),
        ProbabilityFlowSampler(oracle, 30),
    ]:
        x = torch.randn(11, 2)
        t = 7
        s = sampler.score(x, t)
        assert torch.allclose(s, oracle.score(x, sampler.score_time(t)))
        delta = torch.randn(11, 2)
        d0, d1 = sampler.step_from_score(x, t, s), sampler.step_from_score(x, t, s + delta)
        a, b, c = sampler.step_coefficients(t)
        assert torch.allclose(d1.mean - d0.mean, b * delta, atol=1e-5)
        assert d0.batch_shape == (11,) and d0.event_shape == (2,)
        assert torch.allclose(sampler.step_dist(x, t).mean, d0.mean)


def test_ddim_eta_one_is_ancestral_and_eta_zero_is_deterministic(make_four_modes):
    four_modes = make_four_modes
    oracle = four_modes()
    anc, ddim1, ddim0 = (
        AncestralSampler(oracle, 25),
        DDIMSampler(oracle, 25, eta=1.0),
        DDIMSampler(oracle, 25),
    )
    for k in range(1, 26):
        assert anc.step_coefficients(k) == pytest.approx(ddim1.step_coefficients(k), rel=1e-12)
        assert ddim0.step_coefficients(k)[2] == 0.0
    # rerun deterministically from the same initial noise by replaying step 0
    tr = poutine.trace(lambda: ps.run("x", ddim0, num_particles=50)).get_trace()
    x0 = tr.nodes["x_0"]["value"]
    again = poutine.trace(poutine.condition(lambda: ps.run("x", ddim0, num_particles=50), data={"x_0": x0})).get_trace()
    assert torch.allclose(again.nodes["_RETURN"]["value"], tr.nodes["_RETURN"]["value"])


class _NaNModel(DiffusionModel):
    def __init__(self, oracle, below):
        self.oracle, self.schedule, self.dim, self.below = oracle, oracle.schedule, oracle.dim, below

    def score(self, x, t):
        s = self.oracle.score(x, t)
        return s * float("nan") if float(t) < self.below else s


def test_non_finite_scores_raise_an_error_naming_the_step(make_four_modes):
    four_modes = make_four_modes
    sampler = AncestralSampler(_NaNModel(four_modes(), 0.5), 10)  # times 1.0, 0.9001, ...
    with pytest.raises(NonFiniteScoreError, match=r"step 7 of 10 .*t=0\.4006"):
        ps.sample(sampler, (5,))
    with pytest.raises(NonFiniteScoreError, match="step 7"):
        poutine.trace(lambda: ps.run("x", sampler, num_particles=5)).get_trace()
    ok = AncestralSampler(four_modes(), 10)
    x = torch.zeros(3, 2)
    with pytest.raises(NonFiniteScoreError, match="step 2"):
        ok.step_from_score(x, 2, torch.full((3, 2), float("inf")))


def test_bad_inputs(make_four_modes):
    four_modes = make_four_modes
    oracle = four_modes()
    sampler = AncestralSampler(oracle, 10)
    with pytest.raises(ValueError, match="score must have the state's shape"):
        sampler.step_from_score(torch.zeros(3, 2), 2, torch.zeros(3, 3))
    with pytest.raises(ValueError, match="step t must be"):
        sampler.step_from_score(torch.zeros(3, 2), 11, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="step 0"):
        sampler.score(torch.zeros(3, 2), 0)
    with pytest.raises(ValueError, match="num_steps"):
        AncestralSampler(oracle, 0)
    with pytest.raises(ValueError, match="times must strictly decrease"):
        AncestralSampler(oracle, times=[1.0, 0.5, 0.5, 0.1])
    with pytest.raises(ValueError, match="times must lie in"):
        AncestralSampler(oracle, times=[1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="times must start at the schedule's t_max = 1.0, got 0.5"):
        AncestralSampler(oracle, times=[0.5, 0.25, 0.1])  # the prior is the law at t_max only (VE: variance 52x)
    with pytest.raises(ValueError, match="eta"):
        DDIMSampler(oracle, 10, eta=1.5)
    with pytest.raises(ValueError, match="snr"):
        PredictorCorrectorSampler(oracle, 10, snr=0.0)
    with pytest.raises(ValueError, match="predictor"):
        PredictorCorrectorSampler(oracle, 10, predictor="heun")
    with pytest.raises(TypeError, match="model"):
        AncestralSampler("oracle", 10)
    other = four_modes(VESchedule())
    with pytest.raises(ValueError, match="schedule"):
        sampler.with_model(other)
    three_d = GaussianMixtureOracle(torch.zeros(1, 3), stds=1.0)
    with pytest.raises(ValueError, match="dimension"):
        sampler.with_model(three_d)
    with pytest.raises(NotImplementedError, match="stochastic"):
        ps.ProcessDistribution(sampler).log_prob(torch.zeros(2))


def test_with_model_keeps_the_grid(make_four_modes):
    four_modes = make_four_modes
    a, b = four_modes(), GaussianMixtureOracle(torch.zeros(1, 2), stds=1.0)
    s = PredictorCorrectorSampler(a, 7, corrector_steps=2).with_model(b)
    assert s.model is b and s.max_steps == 1 + 7 * 3
    x = torch.randn(4, 2)
    assert torch.allclose(s.score(x, 3), b.score(x, s.score_time(3)))


def test_device_argument(make_four_modes):
    four_modes = make_four_modes
    oracle = four_modes()
    sampler = AncestralSampler(oracle, 5, device="cpu")
    assert sampler.init().device.type == "cpu"
    assert ps.sample(sampler, (3,)).device.type == "cpu"


def test_clip_denoised_clips_the_predicted_clean_sample():
    # modes at +-3 with a box of [-1, 1]: every step's prediction x0_hat is clipped, so the output's first coordinate
    # sits at +-1 up to the last step's noise (unclipped: at +-3); a box that contains every prediction leaves the
    # sampler unchanged
    oracle = GaussianMixtureOracle(torch.tensor([[-3.0, 0.0], [3.0, 0.0]]), stds=0.3)
    for make in (AncestralSampler, EulerMaruyamaSampler, DDIMSampler):
        plain, boxed = make(oracle, 50), make(oracle, 50, clip_denoised=(-1.0, 1.0))
        pyro.set_rng_seed(0)
        x = ps.ProcessDistribution(boxed).sample((2000,))
        r, c_last = x[:, 0].abs(), boxed.step_coefficients(boxed.max_steps - 1)[2]
        assert abs(float(r.median()) - 1) < 0.03 and float(r.quantile(0.99)) < 1 + 3 * c_last + 0.05
        wide = make(oracle, 50, clip_denoised=(-1e6, 1e6))
        pyro.set_rng_seed(1)
        a = ps.ProcessDistribution(plain).sample((500,))
        pyro.set_rng_seed(1)
        b = ps.ProcessDistribution(wide).sample((500,))
        assert torch.allclose(a, b, atol=1e-4)
        # the step's clipped score is (alpha x0_clip - x) / sigma^2
        x, t = 4 * torch.randn(7, 2), 10
        alpha, sigma2 = boxed._sched(boxed.score_time(t))
        x0 = ((x + sigma2 * boxed.score(x, t)) / alpha).clamp(-1, 1)
        a_, b_, _ = boxed.step_coefficients(t)
        mean = boxed.step_from_score(x, t, boxed.score(x, t)).mean
        assert torch.allclose(mean, a_ * x + b_ * (alpha * x0 - x) / sigma2, atol=1e-5)
        assert boxed.with_model(oracle).clip_denoised == (-1.0, 1.0)


def test_clip_denoised_bad_input():
    oracle = GaussianMixtureOracle(torch.tensor([[0.0, 0.0]]), stds=1.0)
    for bad in ((1.0, -1.0), (0.0, 0.0), (0.0, float("inf")), 3.0, (1.0, 2.0, 3.0), ("a", "b")):
        with pytest.raises(ValueError, match="clip_denoised must be"):
            AncestralSampler(oracle, 10, clip_denoised=bad)
    for sampler in (
        DDIMSampler(oracle, 10, clip_denoised=(-1, 1)),
        ProbabilityFlowSampler(oracle, 10, clip_denoised=(-1, 1)),
    ):
        with pytest.raises(ValueError, match="clips its predictions"):
            sampler.terminal_log_prob(torch.zeros(3, 2))


def test_samplers_draw_in_the_models_dtype():
    """A float64 oracle is sampled in float64 by every path (plain sampling, density tracking, composed SMC, the
    mixture); a float32 one in float32; a composition of both in float64."""
    from pyro_sculpt.diffusion import sample_with_log_density
    from pyro_sculpt.infer import smc

    f64 = GaussianMixtureOracle(torch.tensor([[-2.0, 0.0], [2.0, 0.0]], dtype=torch.float64), stds=0.5)
    f32 = GaussianMixtureOracle(torch.tensor([[0.0, 0.0]]), stds=1.0)
    assert f64.dtype == torch.float64 and f32.dtype == torch.float32
    for oracle, dtype in ((f64, torch.float64), (f32, torch.float32)):
        for cls in (AncestralSampler, EulerMaruyamaSampler, DDIMSampler, ProbabilityFlowSampler):
            sampler = cls(oracle, 10)
            assert sampler.dtype == dtype
            assert ps.ProcessDistribution(sampler).sample((3,)).dtype == dtype
        x, log_q = sample_with_log_density(AncestralSampler(oracle, 10), 3, seed=0)
        assert x.dtype == dtype
    both = (AncestralSampler(f64, 10), AncestralSampler(f32, 10))
    for composed in (ps.product(*both), ps.harmonic_mean(*both), ps.mixture(*both)):
        assert composed.sample((3,)).dtype == torch.float64
        assert smc(composed, 16).x.dtype == torch.float64
