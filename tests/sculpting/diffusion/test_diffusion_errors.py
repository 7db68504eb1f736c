"""Bad input to diffusion sculpting: every error names the argument and what was expected."""

import math

import pyro
import pytest
import torch

import pyro_sculpt as ps
from pyro_sculpt.diffusion import (
    AncestralSampler,
    DDIMSampler,
    DiffusionModel,
    GaussianMixtureOracle,
    NonFiniteScoreError,
    TabulatedVESchedule,
    TabulatedVPSchedule,
    VESchedule,
    VPSchedule,
)
from pyro_sculpt.sculpting.diffusion import GaussianMixtureClassifier
from tests.conftest import exact_bases


def oracle(dim=2, schedule=None, shift=0.0):
    means = torch.zeros(2, dim)
    means[0, 0], means[1, 0] = -1.0 + shift, 1.0 + shift
    return GaussianMixtureOracle(means, stds=0.5, schedule=schedule)


@pytest.fixture
def pair():
    p1, p2 = oracle(), oracle(shift=0.5)
    return p1, p2, GaussianMixtureClassifier([p1, p2], 2, quadrature_points=4)


def test_data_dimension_mismatch_between_bases(pair):
    p1, _, clf = pair
    s1, s3 = DDIMSampler(p1, 5), DDIMSampler(oracle(3), 5)
    msg = r"bases\[1\] has data dimension 3, but bases\[0\] has 2: every base must live in one space"
    with pytest.raises(ValueError, match=msg):
        ps.mixture(s1, s3)
    with pytest.raises(ValueError, match=msg):
        ps.harmonic_mean(s1, s3, clf)
    with pytest.raises(ValueError, match=msg):
        ps.DiffusionObservationClassifier.for_bases([AncestralSampler(p1, 5), AncestralSampler(oracle(3), 5)], 2)
    with pytest.raises(ValueError, match=msg):
        ps.SculptedDiffusionModel([p1, oracle(3)], clf, (0, 1))


def test_bases_with_other_schedules_or_samplers(pair):
    p1, p2, clf = pair
    with pytest.raises(ValueError, match=r"bases\[1\] has schedule .* every base must share one noise schedule"):
        ps.mixture(DDIMSampler(p1, 5), DDIMSampler(oracle(schedule=VPSchedule("cosine")), 5))
    with pytest.raises(ValueError, match=r"bases\[1\] has sampler .* every base needs one sampler"):
        ps.contrast(DDIMSampler(p1, 5), DDIMSampler(p2, 6), clf)
    with pytest.raises(ValueError, match=r"bases\[1\] has sampler .* every base needs one sampler"):
        ps.mixture(DDIMSampler(p1, 5), AncestralSampler(p2, 5))
    with pytest.raises(TypeError, match=r"bases\[1\] must be a diffusion sampler"):
        ps.mixture(DDIMSampler(p1, 5), p2)  # a model, not a sampler
    with pytest.raises(TypeError, match=r"bases\[0\] must be a diffusion sampler"):
        ps.mixture(ps.mixture(DDIMSampler(p1, 5), DDIMSampler(p2, 5)), DDIMSampler(p2, 5))
    with pytest.raises(ValueError, match="bases must hold at least two base models, got 1"):
        ps.mixture(DDIMSampler(p1, 5))
    gfn = exact_bases(ps.HyperGrid(2, 4), 1)[0]
    with pytest.raises(TypeError, match=r"bases\[1\] must be a diffusion sampler"):
        ps.mixture(DDIMSampler(p1, 5), gfn)


def test_classifier_for_another_dimension_or_number_of_models(pair):
    p1, p2, clf = pair
    s1, s2 = DDIMSampler(p1, 5), DDIMSampler(p2, 5)
    clf3d = GaussianMixtureClassifier([oracle(3), oracle(3, shift=1.0)], 2, quadrature_points=2)
    with pytest.raises(ValueError, match="classifier is for data dimension 3, but the bases have dimension 2"):
        ps.harmonic_mean(s1, s2, clf3d)
    learned3d = ps.DiffusionObservationClassifier(3, 2, 2, hidden=8)
    with pytest.raises(ValueError, match="classifier is for data dimension 3, but the bases have dimension 2"):
        ps.harmonic_mean(s1, s2, learned3d)
    clf_m3 = GaussianMixtureClassifier([p1, p2, oracle(shift=2.0)], 2, quadrature_points=2)
    with pytest.raises(ValueError, match="classifier was trained for 3 base models, but 2 bases were given"):
        ps.contrast(s1, s2, clf_m3)
    with pytest.raises(ValueError, match="classifier was trained for 3 base models, but 2 bases were given"):
        ps.contrast(s1, s2, ps.DiffusionObservationClassifier(2, 3, 2, hidden=8))
    with pytest.raises(ValueError, match="classifier was trained for 2 observations, but y has 3 entries"):
        ps.sculpt([s1, s2], clf, (0, 1, 1))
    other = ps.DiffusionObservationClassifier(2, 2, 2, schedule=VPSchedule("cosine"), hidden=8)
    with pytest.raises(ValueError, match="classifier is for schedule VPSchedule\\(kind='cosine'"):
        ps.harmonic_mean(s1, s2, other)
    gfn_clf = ps.ObservationClassifier(ps.HyperGrid(2, 4), 2, 2, hidden=8)
    with pytest.raises(TypeError, match="classifier must be a diffusion observation classifier"):
        ps.harmonic_mean(s1, s2, gfn_clf)
    # the handler checks its classifier against the mixture it guides
    mix = ps.mixture(s1, s2).process
    with pytest.raises(ValueError, match="classifier is for data dimension 3"):
        with ps.sculpt_guidance(classifier=clf3d, y=(0, 1)):
            ps.run("x", mix, num_particles=4)
    with pytest.raises(TypeError, match="guides GFlowNets, but .* is a diffusion mixture"):
        with ps.sculpt_guidance(classifier=gfn_clf, y=(0, 1)):
            ps.run("x", mix, num_particles=4)
    a, b = exact_bases(ps.HyperGrid(2, 4), 2)
    with pytest.raises(
        TypeError,
        match="site 'x_0': classifier GaussianMixtureClassifier guides diffusion models, but .* is a GFlowNet ",
    ):
        with ps.sculpt_guidance(classifier=clf, y=(0, 1)):
            ps.run("x", ps.mixture(a, b).process, num_particles=4)
    with pytest.raises(TypeError, match="classifier must be an observation Classifier"):
        ps.sculpt_guidance(classifier="clf", y=(0, 1))


def test_y_alpha_and_gamma_out_of_range(pair):
    p1, p2, clf = pair
    s1, s2 = DDIMSampler(p1, 5), DDIMSampler(p2, 5)
    with pytest.raises(ValueError, match=r"y\[1\] must be a base index in \[0, 1\] or None, got 2"):
        ps.sculpt([s1, s2], clf, (0, 2))
    with pytest.raises(ValueError, match=r"y\[0\] must be a base index in \[0, 1\] or None, got -1"):
        ps.sculpt([s1, s2], clf, (-1, 0))
    for bad in (0.0, 1.0, 1.5, -0.2, float("nan")):
        with pytest.raises(ValueError, match=r"alpha must lie in \(0, 1\)"):
            ps.harmonic_mean(s1, s2, clf, alpha=bad)
        with pytest.raises(ValueError, match=r"alpha must lie in \(0, 1\)"):
            with ps.sculpt_guidance(classifier=clf, y=(0, 1), alpha=bad):
                ps.run("x", ps.mixture(s1, s2).process, num_particles=4)
    with pytest.raises(ValueError, match="alpha needs a classifier conditioned on alpha"):
        ps.harmonic_mean(s1, s2, ps.DiffusionObservationClassifier(2, 2, 2, hidden=8), alpha=0.3)
    s3 = DDIMSampler(oracle(shift=2.0), 5)
    with pytest.raises(ValueError, match="alpha is defined for two base models, got 3 bases"):
        ps.sculpt([s1, s2, s3], GaussianMixtureClassifier([p1, p2, s3.model], 2, quadrature_points=2), (0, 1), 0.5)
    with pytest.raises(ValueError, match="weights must have one entry per base"):
        ps.mixture(s1, s2, weights=(1.0,))
    for bad in (-1.0, float("nan"), float("inf"), "big"):
        with pytest.raises(ValueError, match="gamma must be a finite number >= 0"):
            ps.harmonic_mean(s1, s2, clf, gamma=bad)
        with pytest.raises(ValueError, match="gamma must be a finite number >= 0"):
            ps.sculpt_guidance(classifier=clf, y=(0, 1), gamma=bad)
    a, b = exact_bases(ps.HyperGrid(2, 4), 2)
    with pytest.raises(ValueError, match="gamma applies to diffusion bases only"):
        ps.harmonic_mean(a, b, ps.ExactClassifier([a, b], 2), gamma=2.0)


class NaNAt(DiffusionModel):
    """An oracle whose score is NaN at diffusion times below ``t_bad``."""

    def __init__(self, base, t_bad):
        self.base, self.t_bad = base, t_bad
        self.schedule, self.dim = base.schedule, base.dim

    def score(self, x, t):
        s = self.base.score(x, t)
        return s * math.nan if float(t) < self.t_bad else s


def test_non_finite_scores_name_the_step(pair):
    p1, p2, clf = pair
    bad = NaNAt(p2, 0.5)
    s1, s2 = DDIMSampler(p1, 10), DDIMSampler(bad, 10)
    # the first step at t < 0.5 is sampler step 7 (t = 0.4006): site x_7 of the sculpted sampler, x_8 of the mixture
    with pytest.raises(NonFiniteScoreError, match=r"non-finite score \(NaN or inf\) at step 7 of 10"):
        ps.harmonic_mean(s1, s2, clf).sample((8,))
    with pytest.raises(NonFiniteScoreError, match=r"DiffusionMixtureProcess step 8 \(sampler step 7\)"):
        ps.mixture(s1, s2, weights=(0.01, 0.99)).sample((64,))
    with pytest.raises(NonFiniteScoreError, match=r"DiffusionMixtureProcess step 8 \(sampler step 7\)"):
        with ps.sculpt_guidance(classifier=clf, y=(0, 1)):
            ps.run("x", ps.mixture(s1, s2).process, num_particles=8)
    # a non-finite classifier gradient is caught the same way
    learned = ps.DiffusionObservationClassifier(2, 2, 2, hidden=8, max_time=1.0)
    with torch.no_grad():
        learned.net[-1].bias.fill_(math.inf)
    with pytest.raises(NonFiniteScoreError, match="at step 1 of 10"):
        ps.harmonic_mean(DDIMSampler(p1, 10), DDIMSampler(p2, 10), learned).sample((4,))


def test_schedules_with_non_increasing_noise_are_rejected(pair):
    with pytest.raises(ValueError, match="sigma_max must be > sigma_min"):
        VESchedule(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match=r"sigmas must strictly increase .* sigmas\[1\] = 0.5"):
        TabulatedVESchedule([0.1, 0.5, 0.5, 1.0])
    with pytest.raises(ValueError, match=r"betas must lie in \(0, 1\) .* betas\[2\] = 0.0"):
        TabulatedVPSchedule([0.1, 0.2, 0.0])
    with pytest.raises(ValueError, match="beta_max must be > 0"):
        VPSchedule(beta_max=-1.0)
    # samplers on a time grid that does not decrease are rejected before any composition
    p1, p2, _ = pair
    with pytest.raises(ValueError, match="times must strictly decrease"):
        ps.mixture(DDIMSampler(p1, times=[1.0, 0.5, 0.5, 0.1]), DDIMSampler(p2, times=[1.0, 0.5, 0.5, 0.1]))


def test_mixture_step_api_errors(pair):
    p1, p2, _ = pair
    mix = ps.mixture(DDIMSampler(p1, 5), DDIMSampler(p2, 5)).process
    with pytest.raises(ValueError, match=r"step t must be an integer in \[0, 6\], got 7"):
        mix.step_kind(7)
    with pytest.raises(ValueError, match=r"step 1 \(prior\) evaluates no score"):
        mix.score_time(1)
    with pytest.raises(ValueError, match=r"score must have the state's shape \(3, 2\)"):
        mix.step_from_score(torch.zeros(3, 2), 2, torch.zeros(3, 1))
    pyro.set_rng_seed(0)
    assert mix.step_kind(0) == "component" and mix.step_kind(1) == "prior" and mix.step_kind(2) == "ode"


def test_a_classifier_for_other_bases_or_another_order_is_refused(pair):
    p1, p2, clf = pair
    s1, s2 = AncestralSampler(p1, 5), AncestralSampler(p2, 5)
    ps.contrast(s1, s2, clf)  # its own oracles, wrapped in samplers
    ps.contrast(AncestralSampler(p1, 5), AncestralSampler(p2, 5), clf)  # samplers rebuilt around the same models
    for bases in ((s2, s1), (s2, AncestralSampler(oracle(shift=2.0), 5))):  # a base of its own at another position
        with pytest.raises(ValueError, match="classifier was made for other bases"):
            ps.contrast(*bases, clf)
    with pytest.raises(ValueError, match="classifier was made for other bases"):
        with ps.sculpt_guidance(classifier=clf, y=(0, 1)):
            ps.run("x", ps.mixture(s2, s1).process, num_particles=2)
