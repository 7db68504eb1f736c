"""The Itô density estimator along stochastic reverse-diffusion paths (docs/math.md §1.6), against the exact
log-densities of Gaussian-mixture oracles."""

import math

import pytest
import torch

import pyro_sculpt as ps
from pyro_sculpt.diffusion import (
    AncestralSampler,
    DDIMSampler,
    DiffusionModel,
    EulerMaruyamaSampler,
    GaussianMixtureOracle,
    NonFiniteScoreError,
    PathDensityTracker,
    PredictorCorrectorSampler,
    ProbabilityFlowSampler,
    VESchedule,
    VPSchedule,
    sample_with_log_density,
)
from pyro_sculpt.diffusion.model import batch_shape_of, check_points, time_like

F64 = torch.float64


def five_modes(shift: float = 0.0, dtype=F64, schedule=None) -> GaussianMixtureOracle:
    """Five modes on a circle of radius 2, unequal widths and weights; ``shift`` rotates them (a second model)."""
    ang = torch.arange(5, dtype=F64) * 2 * math.pi / 5 + shift
    means = 2.0 * torch.stack([ang.cos(), ang.sin()], -1)
    return GaussianMixtureOracle(
        means.to(dtype),
        stds=torch.tensor([0.3, 0.4, 0.25, 0.5, 0.35], dtype=dtype),
        weights=[0.1, 0.3, 0.2, 0.15, 0.25],
        schedule=schedule,
    )


def errors(sampler, models, n=400, seed=0, **kwargs):
    """Tracked minus exact log-densities at the samples, shape ``(n, m)``."""
    x, log_q = sample_with_log_density(sampler, n, models, seed=seed, **kwargs)
    assert log_q.shape == (n, len(models)) and log_q.dtype == F64
    t0 = float(sampler.times[-1])
    exact = torch.stack([mod.log_prob(x, t0) for mod in models], -1).to(F64)
    return log_q - exact


class ImageOracle(DiffusionModel):
    """A vector oracle seen as images of shape ``event_shape``."""

    def __init__(self, oracle: GaussianMixtureOracle, event_shape):
        self.oracle, self.schedule, self.event_shape = oracle, oracle.schedule, event_shape

    @property
    def dtype(self):
        return self.oracle.dtype

    def score(self, x, t):
        check_points(x, self.event_shape)
        flat = x.reshape(batch_shape_of(x, self.event_shape) + (self.dim,))
        return self.oracle.score(flat, time_like(t, x, self.event_shape)).reshape(x.shape)


def sixteen_dim_oracle() -> GaussianMixtureOracle:
    g = torch.Generator().manual_seed(0)
    means = 1.5 * torch.randn(3, 16, generator=g, dtype=F64)
    return GaussianMixtureOracle(means, stds=torch.tensor([0.4, 0.5, 0.6], dtype=F64), weights=[0.2, 0.3, 0.5])


# ----- accuracy against the exact log-densities -----


def test_euler_maruyama_with_exact_second_order_matches_the_oracle_log_density():
    o = five_modes()
    err = errors(EulerMaruyamaSampler(o, 500), [o], second_order="exact")
    assert err.abs().mean() <= 0.02  # measured 0.0069 (trapezoid, the default; the left rule 0.015)
    assert abs(err.mean()) <= 0.005


def test_ancestral_with_exact_second_order_matches_the_oracle_log_density():
    o = five_modes()
    err = errors(AncestralSampler(o, 500), [o], second_order="exact")
    assert err.abs().mean() <= 0.02  # measured 0.0065 (the left rule 0.015)
    assert abs(err.mean()) <= 0.005


def test_the_error_decreases_with_the_number_of_steps():
    o = five_modes()
    exact = [errors(EulerMaruyamaSampler(o, k), [o], n=300, second_order="exact").abs().mean() for k in (250, 1000)]
    plain = [errors(EulerMaruyamaSampler(o, k), [o], n=300, second_order="none").abs().mean() for k in (250, 1000)]
    # O(dt) with the second-order term (trapezoid: measured 0.015 -> 0.0034; the left rule 0.029 -> 0.0073), O(sqrt(dt))
    # without (0.62 -> 0.31)
    assert exact[1] < 0.4 * exact[0]
    assert plain[1] < 0.65 * plain[0]
    assert plain[0] > 10 * exact[0]


def test_the_trapezoidal_rule_is_more_accurate_and_less_biased_between_modes():
    # measured (1,000 particles, seed 0): at 100 Euler-Maruyama steps mean |error| 0.080 (left) -> 0.037 (trapezoid),
    # spread of the per-mode mean error 0.078 -> 0.031 (a power of a density, e.g. y = (3, 3, 3), turns that spread
    # into wrong mode weights); at 500 steps 0.015 -> 0.0067, mean error 0.001 -> 0.00005
    o = five_modes()
    out = {}
    for steps in (100, 500):
        for rule in ("left", "trapezoid"):
            x, log_q = sample_with_log_density(EulerMaruyamaSampler(o, steps), 1000, [o], seed=0, rule=rule)
            err = log_q[:, 0] - o.log_prob(x, o.schedule.t_min)
            mode = torch.cdist(x.double(), o.means.double()).argmin(-1)
            bias = torch.stack([err[mode == k].mean() for k in range(5)])
            out[steps, rule] = (err.abs().mean(), err.mean(), bias.max() - bias.min())
    assert out[100, "trapezoid"][0] < 0.6 * out[100, "left"][0]
    assert out[100, "trapezoid"][2] < 0.6 * out[100, "left"][2]
    assert out[500, "trapezoid"][0] <= 0.01 and out[500, "trapezoid"][0] < 0.6 * out[500, "left"][0]
    assert abs(out[500, "trapezoid"][1]) <= 0.002


def test_a_model_that_is_not_the_drift_is_tracked_along_the_same_path():
    o1, o2 = five_modes(), five_modes(shift=0.6)
    err = errors(EulerMaruyamaSampler(o1, 500), [o1, o2], second_order="exact")
    mae = err.abs().mean(0)
    assert mae[0] <= 0.02
    assert mae[1] <= 0.06  # measured 0.016 (left rule 0.04): the path crosses o2's low-density regions


def test_any_drift_through_the_tracker_api_a_product_of_two_models():
    o1, o2 = five_modes(), five_modes(shift=0.6)
    sampler = AncestralSampler(o1, 500)
    tracker = PathDensityTracker([o1, o2], second_order="exact")
    torch.manual_seed(0)
    n = 400
    with torch.no_grad():
        x = sampler.prior(torch.Size([n])).sample()
        log_q = tracker.init(x, float(sampler.times[0]))
        for k in range(1, sampler.max_steps):
            t, t_next = float(sampler.times[k - 1]), float(sampler.times[k])
            scores = tracker.scores(x, t)
            assert scores.shape == (n, 2, 2)
            x_next = sampler.step_from_score(x, k, scores.sum(1)).sample()  # the summed-score (product) drift
            log_q = tracker.update(log_q, x, x_next, t, t_next, scores)
            x = x_next
    t0 = float(sampler.times[-1])
    exact = torch.stack([o1.log_prob(x, t0), o2.log_prob(x, t0)], -1)
    assert (log_q - exact).abs().mean() <= 0.03  # measured 0.020 and 0.022


def test_hutchinson_second_order_is_unbiased_and_between_exact_and_plain():
    # One Rademacher probe adds a zero-mean error (1/2) g^2 dt (z'Hz - tr H) = g^2 dt z1 z2 H12 per step in 2D, of the
    # same order as the fluctuation the correction removes, but only its off-diagonal part: measured mean |error|
    # 0.048 (model 1) and 0.094 (model 2, larger off-diagonal curvature) against 0.007 / 0.016 exact and 0.44 plain
    # (the left rule: 0.043 / 0.11 against 0.015 / 0.04).
    o1, o2 = five_modes(), five_modes(shift=0.6)
    err = errors(EulerMaruyamaSampler(o1, 500), [o1, o2], n=300, second_order="hutchinson")
    mae = err.abs().mean(0)
    assert mae[0] <= 0.08 and mae[1] <= 0.17
    assert err.mean(0).abs().max() <= 0.03  # unbiased: the mean error is at the noise level of 300 particles
    more = errors(EulerMaruyamaSampler(o1, 500), [o2], n=300, second_order="hutchinson", num_probes=8)
    assert more.abs().mean() < 0.7 * mae[1]


def test_predictor_corrector_steps_are_tracked_with_the_second_order_term():
    o = five_modes()
    for predictor in ("ancestral", "euler_maruyama"):
        sampler = PredictorCorrectorSampler(o, 250, corrector_steps=1, predictor=predictor)
        err = errors(sampler, [o], second_order="exact")
        assert err.abs().mean() <= 0.07  # measured 0.018 / 0.019 (left rule 0.046 / 0.049)
    with pytest.raises(ValueError, match="corrector"):
        sample_with_log_density(PredictorCorrectorSampler(o, 10), 10, second_order="none")


def test_ddim_with_partial_noise_needs_the_second_order_term():
    o = five_modes()
    err = errors(DDIMSampler(o, 500, eta=0.5), [o], second_order="exact")
    assert err.abs().mean() <= 0.02  # measured 0.011 (left rule 0.010): either rule holds for any noise level
    with pytest.raises(ValueError, match="eta=0.5"):
        sample_with_log_density(DDIMSampler(o, 10, eta=0.5), 10, second_order="none")


def test_float32_models_and_the_first_order_sum():
    o = five_modes(dtype=torch.float32)
    err = errors(AncestralSampler(o, 500), [o], second_order="exact")
    assert err.abs().mean() <= 0.02
    err = errors(AncestralSampler(o, 500), [o], second_order="none")
    assert 0.2 <= err.abs().mean() <= 0.6  # measured 0.44 (the O(sqrt(dt)) fluctuation)


def test_image_shaped_models_track_as_the_flat_model_does():
    flat = sixteen_dim_oracle()
    img = ImageOracle(flat, (1, 4, 4))
    assert PathDensityTracker([img]).second_order == "hutchinson"  # 16 entries > 8: auto
    x_img, lq_img = sample_with_log_density(AncestralSampler(img, 30), 100, second_order="exact", seed=1)
    x_flat, lq_flat = sample_with_log_density(AncestralSampler(flat, 30), 100, second_order="exact", seed=1)
    assert x_img.shape == (100, 1, 4, 4) and lq_img.shape == (100, 1)
    assert torch.allclose(x_img.reshape(100, 16), x_flat)
    assert torch.allclose(lq_img, lq_flat, atol=1e-8)
    sampler = AncestralSampler(img, 200)
    x, lq = sample_with_log_density(sampler, 200, seed=2)  # auto: Hutchinson
    err = lq[:, 0] - flat.log_prob(x.reshape(200, 16), float(sampler.times[-1]))
    # measured 0.13 (trapezoid with Hutchinson's trace; the left rule 0.29, exact 0.21, plain Itô sum 3.2)
    assert err.abs().mean() <= 0.4


def test_variance_exploding_schedule():
    o = five_modes(schedule=VESchedule(0.01, 20.0))
    err = [errors(AncestralSampler(o, k), [o], n=200, second_order="exact").abs().mean() for k in (100, 400)]
    # a stiff time parameterisation (log sigma linear in t): a first-order-in-time bias, measured 0.064 -> 0.014
    # (the left rule 0.36 -> 0.093)
    assert err[1] < 0.35 * err[0]


# ----- the tracker's API -----


def test_init_is_the_exact_prior_log_density_for_each_model():
    o1, o2 = five_modes(), five_modes(shift=0.6)
    tracker = PathDensityTracker([o1, o2])
    x = torch.randn(7, 2, dtype=F64) * 1.3
    lq = tracker.init(x, 1.0)
    assert lq.shape == (7, 2) and lq.dtype == F64
    std = o1.schedule.prior_std()
    want = torch.distributions.Normal(0.0, std).log_prob(x).sum(-1)
    assert torch.allclose(lq, want.unsqueeze(-1).expand(7, 2))


def test_update_computes_the_scores_when_not_given_and_reuses_them_when_given():
    o1, o2 = five_modes(), five_modes(shift=0.6)
    tracker = PathDensityTracker([o1, o2], second_order="exact")
    x = torch.randn(5, 2, dtype=F64)
    x_next = x + 0.1 * torch.randn(5, 2, dtype=F64)
    lq = tracker.init(x, 0.5)
    a = tracker.update(lq, x, x_next, 0.5, 0.49)
    b = tracker.update(lq, x, x_next, 0.5, 0.49, tracker.scores(x, 0.5))
    assert torch.allclose(a, b)
    c = tracker.update(lq, x, x_next, 0.5, 0.49, torch.zeros(5, 2, 2, dtype=F64))  # the given scores are used
    assert not torch.allclose(a, c)


class CountingModel(DiffusionModel):
    """A model that counts its score evaluations."""

    def __init__(self, oracle: GaussianMixtureOracle):
        self.oracle, self.schedule, self.event_shape, self.calls = oracle, oracle.schedule, oracle.event_shape, 0

    def score(self, x, t):
        self.calls += 1
        return self.oracle.score(x, t)


def test_the_trapezoid_keeps_the_end_of_a_step_as_the_start_of_the_next():
    model = CountingModel(five_modes())
    tracker = PathDensityTracker([model], second_order="exact")
    assert tracker.rule == "trapezoid"
    x = torch.randn(6, 2, dtype=F64)
    lq = tracker.init(x, 0.5)
    x1 = x + 0.1 * torch.randn(6, 2, dtype=F64)
    lq = tracker.update(lq, x, x1, 0.5, 0.49)
    calls = model.calls
    s = tracker.scores(x1, 0.49)  # the step's end: no evaluation
    assert model.calls == calls and torch.allclose(s[:, 0], model.oracle.score(x1, 0.49))
    x2 = x1 + 0.1 * torch.randn(6, 2, dtype=F64)
    tracker.update(lq, x1, x2, 0.49, 0.48, s)
    assert model.calls == calls + 1  # the new end only
    tracker.scores(x1, 0.49)  # another point: evaluated
    assert model.calls == calls + 2
    s_other = tracker.scores(x2, 0.47)  # the kept end at another time: evaluated, at that time
    assert model.calls == calls + 3 and torch.allclose(s_other[:, 0], model.oracle.score(x2, 0.47))
    calls = model.calls
    x2.add_(1.0)  # changed in place: not the kept end any more
    s2 = tracker.scores(x2, 0.48)
    assert model.calls == calls + 1 and torch.allclose(s2[:, 0], model.oracle.score(x2, 0.48))


def test_inference_mode_tensors_are_tracked_without_reusing_the_step_end():
    # inference tensors have no version counter: the tracker cannot tell an unchanged end, so it evaluates again
    model = CountingModel(five_modes())
    x = torch.randn(6, 2, dtype=F64)
    x1 = x + 0.1 * torch.randn(6, 2, dtype=F64)
    want = PathDensityTracker([model.oracle]).update(torch.zeros(6, 1, dtype=F64), x, x1, 0.5, 0.49)
    tracker = PathDensityTracker([model])
    with torch.inference_mode():
        xi, x1i = x.clone(), x1.clone()
        got = tracker.update(torch.zeros(6, 1, dtype=F64), xi, x1i, 0.5, 0.49)
        calls = model.calls
        tracker.scores(x1i, 0.49)
        assert model.calls == calls + 1
    assert torch.allclose(got, want)


def test_the_rule_is_chosen_from_the_second_order_and_checked():
    o = five_modes()
    assert PathDensityTracker([o]).rule == "trapezoid"
    assert PathDensityTracker([o], second_order="none").rule == "left"
    assert PathDensityTracker([o], rule="left").rule == "left"
    with pytest.raises(ValueError, match="rule must be one of"):
        PathDensityTracker([o], rule="simpson")
    with pytest.raises(ValueError, match="rule='trapezoid' needs"):
        PathDensityTracker([o], second_order="none", rule="trapezoid")


def test_one_step_against_the_exact_change_of_a_gaussian():
    # q_t = N(alpha_t mu, (alpha_t^2 v + sigma_t^2) I): log q_t is quadratic in x, so at a fixed time (a Langevin step)
    # the second-order expansion is exact, and the time part alone (x_next = x) has a one-step error O(dt^2)
    o = GaussianMixtureOracle(torch.tensor([[0.5, -1.0]], dtype=F64), stds=0.7)
    tracker = PathDensityTracker([o], second_order="exact")
    x = torch.randn(50, 2, dtype=F64)
    x_next = x + 0.3 * torch.randn(50, 2, dtype=F64)
    lq = tracker.update(o.log_prob(x, 0.5).unsqueeze(-1), x, x_next, 0.5, 0.5)
    assert torch.allclose(lq[:, 0], o.log_prob(x_next, 0.5), atol=1e-10)
    errs = []
    for dt in (1e-2, 5e-3):
        lq = tracker.update(o.log_prob(x, 0.5).unsqueeze(-1), x, x, 0.5, 0.5 - dt)
        errs.append((lq[:, 0] - o.log_prob(x, 0.5 - dt)).abs().max())
    assert errs[0] < 5e-3 and errs[1] < 0.3 * errs[0]


# ----- bad input -----


def test_deterministic_samplers_are_refused_with_a_pointer_to_the_ode_likelihood():
    o = five_modes()
    for sampler in (DDIMSampler(o, 10, eta=0.0), ProbabilityFlowSampler(o, 10)):
        with pytest.raises(ValueError, match="deterministic.*probability_flow_log_prob"):
            sample_with_log_density(sampler, 10)


def test_models_with_different_schedules_or_shapes_are_refused():
    o = five_modes()
    other = five_modes(schedule=VPSchedule(beta_max=10.0))
    with pytest.raises(ValueError, match="models must share one noise schedule"):
        PathDensityTracker([o, other])
    with pytest.raises(ValueError, match="schedule .* differs"):
        PathDensityTracker([o], VPSchedule(beta_max=10.0))
    with pytest.raises(ValueError, match="models must share one event shape"):
        PathDensityTracker([o, ImageOracle(sixteen_dim_oracle(), (1, 4, 4))])
    with pytest.raises(ValueError, match="the sampler uses"):
        sample_with_log_density(AncestralSampler(o, 10), 10, [other])
    with pytest.raises(ValueError, match="models must be a non-empty sequence"):
        PathDensityTracker([])
    with pytest.raises(ValueError, match="models must be a non-empty sequence"):
        PathDensityTracker(o)
    with pytest.raises(TypeError, match=r"models\[1\] must be a DiffusionModel"):
        PathDensityTracker([o, "o2"])
    with pytest.raises(ValueError, match="second_order must be one of"):
        PathDensityTracker([o], second_order="exactly")
    with pytest.raises(ValueError, match="num_probes"):
        PathDensityTracker([o], num_probes=0)
    with pytest.raises(TypeError, match="sampler must be a ReverseDiffusionProcess"):
        sample_with_log_density(o, 10)
    with pytest.raises(ValueError, match="num_particles"):
        sample_with_log_density(AncestralSampler(o, 10), 0)


def test_wrong_shapes_and_times_are_refused_with_the_argument_named():
    o1, o2 = five_modes(), five_modes(shift=0.6)
    tracker = PathDensityTracker([o1, o2], second_order="none")
    x = torch.randn(4, 2, dtype=F64)
    lq = tracker.init(x, 1.0)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 2\)"):
        tracker.init(torch.randn(4, 3), 1.0)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 2\)"):
        tracker.init(torch.randn(2, 4, 2), 1.0)
    with pytest.raises(ValueError, match="x must be a floating-point tensor"):
        tracker.scores(torch.zeros(4, 2, dtype=torch.long), 0.5)
    with pytest.raises(ValueError, match="x_next must have the shape of x"):
        tracker.update(lq, x, x[:3], 0.5, 0.4)
    with pytest.raises(ValueError, match=r"log_q must have shape \(N, m\) = \(4, 2\)"):
        tracker.update(lq[:, :1], x, x, 0.5, 0.4)
    with pytest.raises(ValueError, match=r"scores must have shape \(N, m, \*event_shape\) = \(4, 2, 2\)"):
        tracker.update(lq, x, x, 0.5, 0.4, torch.zeros(4, 2))
    with pytest.raises(ValueError, match="t_next must be <= t"):
        tracker.update(lq, x, x, 0.4, 0.5)
    with pytest.raises(ValueError, match=r"t must lie in \[t_min, t_max\]"):
        tracker.scores(x, 1.5)
    with pytest.raises(ValueError, match="Langevin corrector step"):
        tracker.update(lq, x, x, 0.5, 0.5)


def test_a_seed_makes_the_run_reproducible():
    o = five_modes()
    a = sample_with_log_density(AncestralSampler(o, 20), 50, second_order="hutchinson", seed=3)
    b = sample_with_log_density(AncestralSampler(o, 20), 50, second_order="hutchinson", seed=3)
    c = sample_with_log_density(AncestralSampler(o, 20), 50, second_order="hutchinson", seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_the_path_is_the_samplers_own_step_with_its_clipping():
    # modes at +-3, predictions clipped to [-1, 1]: the sampler's samples stay near [-1, 1], and so must the path
    o = GaussianMixtureOracle(torch.tensor([[-3.0], [3.0]], dtype=F64), stds=0.3)
    s = AncestralSampler(o, 50, clip_denoised=(-1.0, 1.0))
    x, log_q = sample_with_log_density(s, 500, seed=0)
    torch.manual_seed(0)
    ref = ps.ProcessDistribution(s).sample((500,))
    assert float(ref.abs().max()) < 1.3 and float(x.abs().max()) < 1.3  # unclipped steps reach |x| ~ 3.9
    assert abs(float(x.abs().mean()) - float(ref.abs().mean())) < 0.1
    assert torch.isfinite(log_q).all()


class _NaNScore(DiffusionModel):
    """An oracle whose score is NaN where x_0 > 0.5 late in the path (a broken network)."""

    def __init__(self, oracle):
        self.oracle, self.schedule, self.event_shape = oracle, oracle.schedule, oracle.event_shape

    def score(self, x, t):
        s = self.oracle.score(x, t)
        if float(torch.as_tensor(t).max()) < 0.5:
            s = torch.where(x[..., :1] > 0.5, torch.full_like(s, float("nan")), s)
        return s


def test_a_non_finite_score_raises_instead_of_returning_nan():
    good = five_modes()
    bad = _NaNScore(five_modes(shift=1.0))
    with pytest.raises(NonFiniteScoreError, match="step"):
        sample_with_log_density(EulerMaruyamaSampler(bad, 30), 100, seed=0)  # the drift
    with pytest.raises(NonFiniteScoreError, match="models\\[1\\] gives a non-finite"):
        sample_with_log_density(EulerMaruyamaSampler(good, 30), 100, [good, bad], seed=0)  # tracked only


class _PartialNoiseSampler(ps.diffusion.ReverseDiffusionProcess):
    """A user's sampler of the reverse SDEs that share the forward marginals, :math:`dx = [f x - (1 + l^2)/2\\, g^2
    s]\\, dt + l\\, g\\, dw` (Euler steps): its noise is the forward diffusion's only at ``l = 1``."""

    def __init__(self, model, num_steps, noise_scale):
        self.noise_scale = noise_scale
        super().__init__(model, num_steps)

    def _build(self):
        sched, l2 = self.schedule, self.noise_scale**2
        for k in range(self.num_steps):
            t, s = float(self.times[k]), float(self.times[k + 1])
            tt = torch.tensor(t, dtype=F64)
            f, g2 = float(sched.drift(tt)), float(sched.diffusion2(tt))
            dt = t - s
            self._add_step("predictor", t, 1.0 - f * dt, 0.5 * (1 + l2) * g2 * dt, math.sqrt(l2 * g2 * dt))


class _DeclaredForwardNoise(_PartialNoiseSampler):
    forward_noise = True


def test_a_new_sampler_is_tracked_to_first_order_only_if_it_declares_forward_noise():
    o = five_modes()
    half = _PartialNoiseSampler(o, 500, 0.5)
    assert not half.forward_noise
    assert EulerMaruyamaSampler(o, 10).forward_noise and AncestralSampler(o, 10).forward_noise
    assert not DDIMSampler(o, 10, eta=0.5).forward_noise and PredictorCorrectorSampler(o, 10).forward_noise
    with pytest.raises(ValueError, match="forward_noise is False"):  # was tracked silently, 8 nats off on average
        sample_with_log_density(half, 10, second_order="none")
    err = errors(half, [o], second_order="exact")
    assert err.abs().mean() <= 0.02  # the second-order term holds for any noise level
    declared = _DeclaredForwardNoise(o, 500, 1.0)
    err = errors(declared, [o], second_order="none")  # accepted: the plain Itô sum at its usual O(sqrt(dt)) error
    assert err.abs().mean() <= 0.6


class _TwoScoreSampler(EulerMaruyamaSampler):
    """A sampler whose own step evaluates the score twice (a Heun-like predictor), which one-score composition
    cannot express."""

    def step_dist(self, state, t):
        if t == 0:
            return super().step_dist(state, t)
        s1 = self.score(state, t)
        return self.step_from_score(state, t, 0.5 * (s1 + self.model.score(state, self.score_time(t) * 0.99)))


def test_a_sampler_with_its_own_step_dist_is_refused_where_steps_are_rebuilt_from_one_score():
    o1, o2 = five_modes(), five_modes(0.5)
    a, b = _TwoScoreSampler(o1, 20), _TwoScoreSampler(o2, 20)
    for build in (lambda: ps.mixture(a, b), lambda: ps.product(a, b), lambda: sample_with_log_density(a, 10)):
        with pytest.raises(TypeError, match="overrides step_dist"):
            build()
    assert ps.ProcessDistribution(a).sample((5,)).shape == (5, 2)  # alone it runs its own steps


def test_a_deterministic_sampler_without_a_log_prob_says_so():
    o = five_modes()
    ode = _PartialNoiseSampler(o, 10, 0.0)
    with pytest.raises(NotImplementedError, match="is deterministic.*probability_flow_log_prob"):
        ps.ProcessDistribution(ode).log_prob(torch.zeros(3, 2, dtype=F64))
