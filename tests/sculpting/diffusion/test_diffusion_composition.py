"""Sculpting diffusion models against exact answers: Gaussian-mixture oracles (exact scores), the exact
time-conditioned classifier, and the closed-form composed densities on a fine grid."""

import math

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.distributions import Categorical, Delta
from pyro.distributions.torch_distribution import MaskedDistribution

import pyro_sculpt as ps
from pyro_sculpt.diffusion import AncestralSampler, DDIMSampler, GaussianMixtureOracle
from pyro_sculpt.metrics import energy_distance, grid_mode_weights, mode_weight_tv, mode_weights, sample_grid
from pyro_sculpt.sculpting import Observations
from pyro_sculpt.sculpting.diffusion import GaussianMixtureClassifier, composed_score

N = 4000
BOUNDS = [(-5.0, 5.0), (-4.0, 6.0)]
MODES = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]])


def two_bases(dtype=torch.float32):
    """p1 has modes A, B; p2 has A (light), B (wider) and C: every operation has non-trivial mode weights."""
    p1 = GaussianMixtureOracle(MODES[:2].to(dtype), stds=torch.tensor([0.4, 0.4], dtype=dtype))
    p2 = GaussianMixtureOracle(
        MODES.to(dtype), stds=torch.tensor([0.4, 0.5, 0.4], dtype=dtype), weights=[0.15, 0.5, 0.35]
    )
    return p1, p2


@pytest.fixture(scope="module")
def bases():
    return two_bases()


@pytest.fixture(scope="module")
def exact_clf(bases):
    # 6 Gauss-Hermite points per dimension: the guided samples below are identical to those with 8 points
    return GaussianMixtureClassifier(list(bases), 2, quadrature_points=6, chunk_size=8192)


def exact_null(log_density, n, seed=0):
    """The energy distance expected between two independent exact samples of size n (the V-statistic's mean,
    :math:`(1/n + 1/n)\\, E|X - X'|`, with :math:`E|X - X'|` from two exact samples), and one more exact sample to
    compare against. (The mean, not one draw: the null distribution is skewed, most draws lie well below it.)"""
    g = torch.Generator().manual_seed(seed)
    a, b, ref = (sample_grid(log_density, n, BOUNDS, 400, generator=g) for _ in range(3))
    return 2.0 / n * torch.cdist(a, b).mean().item(), ref


def check_against_target(x, log_density, tv_max=0.05, ed_factor=3.0):
    target = grid_mode_weights(log_density, BOUNDS, MODES, resolution=400)
    tv = mode_weight_tv(x, target, MODES)
    null, ref = exact_null(log_density, x.shape[0])
    ed = energy_distance(x, ref)
    assert tv <= tv_max, (tv, mode_weights(x, MODES), target)
    assert ed <= ed_factor * null, (ed, null)
    return tv, ed, null


# ----- the guided score is the exact score of the noised composition -----


@pytest.mark.parametrize("y, alpha", [((0, 1), None), ((0, 0), None), ((1, 1), 0.3), ((None, 1), None)])
def test_composed_score_is_the_score_of_the_noised_composition(y, alpha):
    p1, p2 = two_bases(torch.float64)
    clf = GaussianMixtureClassifier([p1, p2], 2, quadrature_points=16)
    model = ps.SculptedDiffusionModel([p1, p2], clf, y, alpha)
    x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 1.5
    obs = Observations.build(y, 2, alpha=alpha)
    prior_y2 = obs.log_priors(dtype=torch.float64)[1].exp()
    for t in (0.05, 0.3, 0.7):
        xg = x.clone().requires_grad_(True)
        mix = torch.logaddexp(p1.log_prob(xg, t), p2.log_prob(xg, t))  # uniform weights
        lq = clf.log_prob(y, xg, t, alpha=prior_y2)
        (expected,) = torch.autograd.grad((mix + lq).sum(), xg)
        assert torch.allclose(model.score(x, t), expected, atol=1e-8)


@pytest.mark.parametrize("y", [(0, 1), (0, 0)])
def test_composed_score_at_low_noise_is_the_score_of_the_exact_composition(y):
    """Independent of the classifier's quadrature: at t -> 0 the guided score is the gradient of the closed-form
    composed log-density."""
    p1, p2 = two_bases(torch.float64)
    model = ps.SculptedDiffusionModel([p1, p2], GaussianMixtureClassifier([p1, p2], 2, quadrature_points=8), y)
    x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 1.5
    xg = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(ps.composition_log_density([p1, p2], y)(xg).sum(), xg)
    got = model.score(x, 1e-4)
    assert torch.allclose(got, expected, rtol=2e-3, atol=2e-2)


def test_gamma_scales_only_the_guidance_term(bases, exact_clf):
    p1, p2 = bases
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(2))
    scores = [ps.SculptedDiffusionModel([p1, p2], exact_clf, (0, 0), gamma=g).score(x, 0.4) for g in (0.0, 1.0, 2.5)]
    assert torch.allclose(scores[2] - scores[0], 2.5 * (scores[1] - scores[0]), atol=1e-4)
    # gamma = 0 and unobserved y are the mixture score: the posterior-weighted base scores
    resp = torch.softmax(torch.stack([p1.log_prob(x, 0.4), p2.log_prob(x, 0.4)], -1), -1)
    mix = resp[:, :1] * p1.score(x, 0.4) + resp[:, 1:] * p2.score(x, 0.4)
    assert torch.allclose(scores[0], mix, atol=1e-5)
    unobserved = ps.SculptedDiffusionModel([p1, p2], exact_clf, (None, None)).score(x, 0.4)
    assert torch.allclose(unobserved, mix, atol=1e-5)


# ----- samples against the exact composed target -----


@pytest.mark.parametrize(
    "op, y", [(ps.harmonic_mean, (0, 1)), (ps.contrast, (0, 0))], ids=["harmonic_mean", "contrast"]
)
def test_oracle_composition_matches_the_exact_target(op, y, bases, exact_clf):
    p1, p2 = bases
    d = op(DDIMSampler(p1, 100), DDIMSampler(p2, 100), exact_clf)
    assert isinstance(d, ps.ProcessDistribution) and isinstance(d.process.model, ps.SculptedDiffusionModel)
    pyro.set_rng_seed(0)
    x = d.sample((N,))
    assert x.shape == (N, 2) and torch.isfinite(x).all()
    check_against_target(x, ps.composition_log_density([p1, p2], y))


def test_mixture_process_is_exact_without_a_classifier(bases):
    p1, p2 = bases
    mix = ps.mixture(AncestralSampler(p1, 300), AncestralSampler(p2, 300), weights=(0.3, 0.7))
    assert isinstance(mix.process, ps.DiffusionMixtureProcess)
    pyro.set_rng_seed(0)
    x = mix.sample((N,))
    check_against_target(x, ps.composition_log_density([p1, p2], (None,), weights=(0.3, 0.7)), tv_max=0.03)


def test_mixture_process_component_site_picks_the_base(bases):
    p1, p2 = bases
    mix = ps.mixture(DDIMSampler(p1, 40), DDIMSampler(p2, 40)).process
    n = N

    def model():
        return ps.run("x", mix, num_particles=n)

    pyro.set_rng_seed(0)
    tr = poutine.trace(poutine.condition(model, data={"x_0": torch.ones(n, dtype=torch.long)})).get_trace()
    x = tr.nodes["_RETURN"]["value"]
    target = grid_mode_weights(lambda z: p2.log_prob(z.float()), BOUNDS, MODES, resolution=400)
    assert mode_weight_tv(x, target, MODES) <= 0.03
    sites = ps.processes.step_sites(tr, "x")
    assert [s["infer"]["pyro_sculpt"]["diffusion"]["kind"] for s in sites[:3]] == ["component", "prior", "ode"]
    assert len(sites) == mix.max_steps == 42
    # the ODE mixture has a log-density: that of the bases' probability-flow ODEs, mixed
    lp = mix.terminal_log_prob(x[:5].double())
    assert lp.shape == (5,) and torch.isfinite(lp).all()


@pytest.mark.slow
@pytest.mark.parametrize(
    "y, alpha", [((0, 1), 0.2), ((1, 1), None), ((0, 0), 0.8)], ids=["hm_alpha0.2", "reverse_contrast", "c_alpha0.8"]
)
def test_oracle_composition_alpha_forms(y, alpha, bases, exact_clf):
    p1, p2 = bases
    d = ps.sculpt([DDIMSampler(p1, 100), DDIMSampler(p2, 100)], exact_clf, y, alpha)
    pyro.set_rng_seed(1)
    check_against_target(d.sample((N,)), ps.composition_log_density([p1, p2], y, alpha))


@pytest.mark.slow
def test_three_model_conjunction_and_contrast():
    p1, p2 = two_bases()
    p3 = GaussianMixtureOracle(MODES[[0, 2]], stds=torch.tensor([0.45, 0.35]), weights=[0.6, 0.4])
    clf = GaussianMixtureClassifier([p1, p2, p3], 3, quadrature_points=6, chunk_size=8192)
    # the conjunction is a single narrow mode: 200 steps keep the sampler's own error (its spread is 5 % low at 100
    # steps, as for a single Gaussian) well inside the energy-distance check
    samplers = [DDIMSampler(p, 200) for p in (p1, p2, p3)]
    for y in [(0, 1, 2), (2, 2, None)]:
        pyro.set_rng_seed(2)
        x = ps.sculpt(samplers, clf, y).sample((N,))
        check_against_target(x, ps.composition_log_density([p1, p2, p3], y))


# ----- the guidance handler and the combinator agree -----


def test_handler_rebuilds_every_score_step_from_the_guided_score(bases, exact_clf):
    p1, p2 = bases
    s1, s2 = DDIMSampler(p1, 12, eta=0.5), DDIMSampler(p2, 12, eta=0.5)
    mix = ps.mixture(s1, s2).process
    sculpted = ps.harmonic_mean(s1, s2, exact_clf, gamma=1.5).process
    n = 300

    def model():
        with pyro.plate("outer", 2, dim=-2):
            return ps.run("x", mix, num_particles=n)

    pyro.set_rng_seed(0)
    with ps.sculpt_guidance(classifier=exact_clf, y=(0, 1), gamma=1.5):
        tr = poutine.trace(model).get_trace()
    sites = ps.processes.step_sites(tr, "x")
    assert len(sites) == mix.max_steps
    assert isinstance(sites[0]["fn"], Categorical)  # the component step is left alone
    assert torch.equal(sites[1]["fn"].mean, torch.zeros(2, n, 2))  # so is the prior
    for site in sites[2:]:
        t = site["infer"]["pyro_sculpt"]["t"]
        x = site["infer"]["pyro_sculpt"]["state"][0]
        fn = site["fn"]
        assert isinstance(fn, MaskedDistribution) and fn.batch_shape == (2, n)  # mask and plate shape kept
        expected = sculpted.step_from_score(x, t - 1, sculpted.score(x, t - 1))
        assert torch.allclose(fn.base_dist.mean, expected.mean, atol=1e-5)
        assert torch.allclose(fn.base_dist.stddev, expected.stddev)
    # the trace's log-probability is that of the guided chain (finite, no silently dropped sites)
    assert math.isfinite(float(tr.log_prob_sum()))


def test_handler_sampler_and_combinator_sample_the_same_distribution(bases):
    """A (random-weight) learned classifier: cheap, and the two paths must agree whatever it says."""
    p1, p2 = bases
    clf = ps.DiffusionObservationClassifier(2, 2, 2, schedule=p1.schedule, hidden=32, layers=2, max_time=1.0)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in clf.parameters():
            p.mul_(4.0)
    s1, s2 = AncestralSampler(p1, 100), AncestralSampler(p2, 100)
    pyro.set_rng_seed(3)
    x_comb = ps.contrast(s1, s2, clf).sample((N,))
    with torch.no_grad(), ps.sculpt_guidance(classifier=clf, y=(0, 0)):
        x_hand = ps.run("x", ps.mixture(s1, s2).process, num_particles=N)
    null = 2 / N * torch.cdist(x_comb[: N // 2], x_comb[N // 2 :]).mean().item()  # E[ED] between two samples
    assert energy_distance(x_comb, x_hand) <= 3 * null
    assert 0.5 * (mode_weights(x_comb, MODES) - mode_weights(x_hand, MODES)).abs().sum() <= 0.04


def test_handler_with_unobserved_y_samples_the_mixture(bases, exact_clf):
    p1, p2 = bases
    pyro.set_rng_seed(4)
    with torch.no_grad(), ps.sculpt_guidance(classifier=exact_clf, y=(None, None)):
        x = ps.run("x", ps.mixture(DDIMSampler(p1, 100), DDIMSampler(p2, 100)).process, num_particles=N)
    target = grid_mode_weights(ps.composition_log_density([p1, p2], (None,)), BOUNDS, MODES, resolution=400)
    assert mode_weight_tv(x, target, MODES) <= 0.03


def test_composed_score_reuses_given_base_scores(bases, exact_clf):
    p1, p2 = bases
    x = torch.randn(16, 2)
    obs = Observations.build((0, 1), 2)
    fake = torch.zeros(16, 2, 2)
    guided = composed_score([p1, p2], exact_clf, obs, x, 0.5, base_scores=fake)
    _, grad = exact_clf.grad_log_prob((0, 1), x, 0.5, alpha=torch.tensor([0.5, 0.5]))
    assert torch.allclose(guided, grad, atol=1e-5)


def test_sculpted_distribution_runs_as_pyro_sites_and_chains(bases, exact_clf):
    p1, p2 = bases
    hm = ps.harmonic_mean(DDIMSampler(p1, 10), DDIMSampler(p2, 10), exact_clf)
    tr = poutine.trace(lambda: ps.run("x", hm.process, num_particles=50)).get_trace()
    sites = ps.processes.step_sites(tr, "x")
    assert len(sites) == 11 and all(isinstance(s["fn"], (Delta, MaskedDistribution)) for s in sites[1:])
    # a sculpted sampler is a diffusion sampler again: it can be a base of a new composition
    again = ps.mixture(hm, DDIMSampler(p2, 10))
    assert again.sample((7,)).shape == (7, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_diffusion_sculpting_runs_on_cuda():
    dev = torch.device("cuda")
    p1, p2 = (p.to(dev) for p in two_bases())
    exact = GaussianMixtureClassifier([p1, p2], 2, quadrature_points=4)
    s1, s2 = DDIMSampler(p1, 10), DDIMSampler(p2, 10)
    assert ps.harmonic_mean(s1, s2, exact).sample((64,)).device.type == "cuda"
    assert ps.mixture(s1, s2).sample((64,)).device.type == "cuda"
    clf = ps.DiffusionObservationClassifier.for_bases(
        [AncestralSampler(p1, 10), AncestralSampler(p2, 10)], 2, hidden=16, device=dev
    ).fit(steps=5, batch_size=8, num_chains=32, progress_bar=False)
    assert clf.device.type == "cuda"
    with torch.no_grad(), ps.sculpt_guidance(classifier=clf, y=(0, 0)):
        x = ps.run("x", ps.mixture(s1, s2).process, num_particles=64)
    assert x.device.type == "cuda" and torch.isfinite(x).all()
