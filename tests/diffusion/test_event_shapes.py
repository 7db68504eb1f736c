"""Diffusion models on events of any shape: "images" ``(3, 2, 2)`` against exact answers.

The image oracle is a :class:`GaussianMixtureOracle` on :math:`D = 12` seen through a reshape: its score is the
flattened oracle's score reshaped, its log-density exact. A sampler of the image oracle draws the same random numbers
as the sampler of the flat oracle, so its samples and log-probabilities are those of the flat sampler, reshaped."""

import math

import pyro
import pyro.poutine as poutine
import pytest
import torch
from torch import nn

import pyro_sculpt as ps
from pyro_sculpt.diffusion import (
    AncestralSampler,
    DDIMSampler,
    DiffusionModel,
    EulerMaruyamaSampler,
    GaussianMixtureOracle,
    PredictorCorrectorSampler,
    ProbabilityFlowSampler,
    ScoreModel,
    probability_flow_log_prob,
)
from pyro_sculpt.diffusion.likelihood import check_divergence
from pyro_sculpt.diffusion.model import as_event_shape, batch_shape_of, check_points, resolve_event_shape, time_like
from pyro_sculpt.processes import step_sites

F64 = torch.float64
EVENT = (3, 2, 2)
D = 12
SAMPLERS = [AncestralSampler, DDIMSampler, EulerMaruyamaSampler, PredictorCorrectorSampler, ProbabilityFlowSampler]


class ImageOracle(DiffusionModel):
    """A Gaussian-mixture oracle on :math:`\\mathbb R^{12}` seen as images of shape ``(3, 2, 2)``."""

    def __init__(self, oracle: GaussianMixtureOracle, event_shape=EVENT):
        self.oracle, self.schedule, self.event_shape = oracle, oracle.schedule, event_shape

    @property
    def device(self):
        return self.oracle.device

    @property
    def dtype(self):
        return self.oracle.dtype

    def _flat(self, x):
        return x.reshape(batch_shape_of(x, self.event_shape) + (self.dim,))

    def score(self, x, t):
        check_points(x, self.event_shape)
        return self.oracle.score(self._flat(x), time_like(t, x, self.event_shape)).reshape(x.shape)

    def log_prob(self, x, t=None):
        check_points(x, self.event_shape)
        return self.oracle.log_prob(self._flat(x), t)


def flat_oracle(modes=(0, 1), weights=None, dtype=torch.float32, seed=0):
    """Components ``modes`` of four well separated modes in :math:`\\mathbb R^{12}`, each with a correlated
    covariance (eigenvalues in [0.04, 0.3])."""
    g = torch.Generator().manual_seed(seed)
    means = 2.5 * torch.randn(4, D, generator=g, dtype=F64)
    q, _ = torch.linalg.qr(torch.randn(4, D, D, generator=g, dtype=F64))
    eig = 0.04 + 0.26 * torch.rand(4, D, generator=g, dtype=F64)
    covs = q @ torch.diag_embed(eig) @ q.transpose(-1, -2)
    covs = 0.5 * (covs + covs.transpose(-1, -2))
    idx = list(modes)
    return GaussianMixtureOracle(means[idx].to(dtype), covs[idx].to(dtype), weights)


def image_oracle(modes=(0, 1), weights=None, dtype=torch.float32, seed=0):
    return ImageOracle(flat_oracle(modes, weights, dtype, seed))


# ----- the model interface -----


def test_event_shape_and_dim_of_vector_and_image_models():
    img = image_oracle()
    assert img.event_shape == torch.Size(EVENT) and img.dim == D
    vec = img.oracle
    assert vec.event_shape == torch.Size([D]) and vec.dim == D
    x = torch.randn(5, 4, *EVENT)
    assert img.score(x, 0.3).shape == x.shape
    assert img.eps(x, torch.full((5, 4), 0.3)).shape == x.shape
    # eps and Tweedie's denoiser broadcast the per-point noise level over the event
    sigma = img.schedule.sigma(torch.tensor(0.3))
    assert torch.allclose(img.eps(x, 0.3), -sigma * img.score(x, 0.3))
    alpha, s2 = img.schedule.alpha(torch.tensor(0.3)), img.schedule.sigma2(torch.tensor(0.3))
    assert torch.allclose(img.denoise(x, 0.3), (x + s2 * img.score(x, 0.3)) / alpha)
    assert time_like(torch.rand(5, 4), x, EVENT).shape == (5, 4)
    assert time_like(0.3, x, EVENT).shape == ()
    with pytest.raises(ValueError, match=r"t of shape \(3,\) does not broadcast against the batch shape \(5, 4\)"):
        time_like(torch.rand(3), x, EVENT)
    msg = r"x must have shape \(\.\.\., 3, 2, 2\) \(event shape \(3, 2, 2\)\), got \(5, 12\)"
    with pytest.raises(ValueError, match=msg):
        img.score(torch.randn(5, D), 0.3)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 12\) \(data dimension 12\), got \(5, 3, 2, 2\)"):
        vec.score(torch.randn(5, *EVENT), 0.3)
    assert as_event_shape(4) == (4,) and as_event_shape([3, 2, 2]) == EVENT
    for bad in ((), (3, 0), "3", 2.5, (2, True)):
        with pytest.raises(ValueError, match="event_shape must be"):
            as_event_shape(bad)
    assert resolve_event_shape(12, EVENT) == EVENT and resolve_event_shape(5, None) == (5,)
    with pytest.raises(ValueError, match=r"dim=10 is not the number of entries 12 of event_shape=\(3, 2, 2\)"):
        resolve_event_shape(10, EVENT)
    with pytest.raises(ValueError, match="give dim .* or event_shape"):
        resolve_event_shape(None, None)


# ----- samplers -----


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_draws_images_as_the_flat_sampler_does(sampler):
    img = image_oracle()
    s = sampler(img, 10)
    assert s.event_shape == EVENT and s.state_event_dims == 3 and s.dim == D
    assert s.support.event_dim == 3 and s.prior(torch.Size([4])).event_shape == EVENT
    d = ps.ProcessDistribution(s)
    assert d.event_shape == EVENT and d.support.event_dim == 3
    torch.manual_seed(0)
    x = d.sample((7,))
    torch.manual_seed(0)
    ref = ps.ProcessDistribution(sampler(img.oracle, 10)).sample((7,))
    assert x.shape == (7, *EVENT)
    assert torch.equal(x.reshape(7, D), ref)
    assert ps.sample(s, (0, 2)).shape == (0, 2, *EVENT)  # an empty batch
    with pytest.raises(ValueError, match=r"model has event shape \(3, 2, 2\), this sampler has data dimension 12"):
        sampler(img.oracle, 10).with_model(img)


def test_run_has_one_site_per_step_with_image_values_under_plates():
    img = image_oracle()

    def model(m):
        with pyro.plate("outer", 2, dim=-2):
            return ps.run("x", AncestralSampler(m, 6), num_particles=3)

    pyro.set_rng_seed(0)
    tr = poutine.trace(model).get_trace(img)
    pyro.set_rng_seed(0)
    ref = poutine.trace(model).get_trace(img.oracle)
    tr.compute_log_prob()
    ref.compute_log_prob()
    steps = step_sites(tr, "x")
    assert [s["name"] for s in steps] == [f"x_{t}" for t in range(7)]  # the prior draw and 6 steps
    for site, flat in zip(steps, step_sites(ref, "x"), strict=True):
        assert site["fn"].event_shape == EVENT and site["fn"].batch_shape == (2, 3)
        assert site["value"].shape == (2, 3, *EVENT) and site["log_prob"].shape == (2, 3)
        assert torch.equal(site["value"].reshape(2, 3, D), flat["value"])
        assert torch.allclose(site["log_prob"], flat["log_prob"], rtol=1e-5, atol=1e-4)
    # the trace's log-probability is that of the prior draw and the Gaussian steps
    x0 = steps[0]["value"]
    s = AncestralSampler(img, 6).step_coefficients(0)[2]
    expect = torch.distributions.Normal(0.0, s).log_prob(x0).flatten(-3).sum(-1)
    assert torch.allclose(steps[0]["log_prob"], expect)


# ----- log-densities -----


def test_ddim_log_prob_of_images_is_the_exact_log_density():
    img = image_oracle(dtype=F64)
    sampler = DDIMSampler(img, 20, log_prob_steps=20, divergence="exact")
    x = img.oracle.sample(6, generator=torch.Generator().manual_seed(1)).reshape(6, *EVENT)
    lp = ps.ProcessDistribution(sampler).log_prob(x)
    t0 = float(sampler.times[-1])
    exact = img.log_prob(x, t0)
    assert lp.shape == (6,)
    flat = ps.ProcessDistribution(DDIMSampler(img.oracle, 20, log_prob_steps=20, divergence="exact"))
    assert torch.allclose(lp, flat.log_prob(x.reshape(6, D)), atol=1e-10)
    # the samplers' Gaussian prior at t_max misses alpha_{t_max} mu (0.066 nats at most here) ...
    assert (lp - exact).abs().max() < 0.1, lp - exact
    # ... and with the exact prior only the RK4 error is left (1.3e-4 at 50 steps)
    lp = probability_flow_log_prob(img, x, t0=t0, num_steps=50, prior_log_prob=lambda y: img.log_prob(y, 1.0))
    assert (lp - exact).abs().max() < 2e-3, lp - exact


def test_ddim_log_prob_of_images_with_hutchinson_divergence_is_unbiased():
    img = image_oracle(dtype=F64)
    x = img.oracle.sample(6, generator=torch.Generator().manual_seed(1)).reshape(6, *EVENT)
    exact = ps.ProcessDistribution(DDIMSampler(img, 20, log_prob_steps=20, divergence="exact")).log_prob(x)
    sampler = DDIMSampler(img, 20, log_prob_steps=20, divergence="hutchinson", num_probes=2)
    assert sampler.divergence == "hutchinson"
    reps = 40
    torch.manual_seed(0)
    est = ps.ProcessDistribution(sampler).log_prob(x.repeat(reps, 1, 1, 1)).reshape(reps, 6)
    err, se = est.mean(0) - exact, est.std(0) / math.sqrt(reps)
    assert (err.abs() < 4 * se).all(), (err, se)
    assert (est.std(0) > 1e-3).all()


def test_hutchinson_divergence_is_unbiased_against_the_exact_one(full_cov_oracle):
    oracle = full_cov_oracle
    x = oracle.sample(4, generator=torch.Generator().manual_seed(0))
    exact = probability_flow_log_prob(oracle, x, num_steps=20, divergence="exact")
    reps = 400
    torch.manual_seed(0)
    one = probability_flow_log_prob(oracle, x.repeat(reps, 1), num_steps=20, divergence="hutchinson")
    one = one.reshape(reps, 4)
    four = probability_flow_log_prob(oracle, x.repeat(reps, 1), num_steps=20, divergence="hutchinson", num_probes=4)
    four = four.reshape(reps, 4)
    for est in (one, four):
        err = est.mean(0) - exact
        se = est.std(0) / math.sqrt(reps)
        assert (err.abs() < 4 * se).all(), (err, se)
    assert (one.std(0) > 1e-3).all()  # the estimate is random (a correlated covariance: non-diagonal Jacobian)
    ratio = four.std(0) / one.std(0)  # four probes: half the standard deviation
    assert ((ratio > 0.35) & (ratio < 0.7)).all(), ratio


def test_divergence_defaults_to_exact_for_small_events_and_checks_its_options():
    assert check_divergence(None, torch.Size([16])) == "exact"
    assert check_divergence(None, torch.Size([17])) == "hutchinson"
    assert check_divergence(None, torch.Size([1, 28, 28])) == "hutchinson"
    assert DDIMSampler(image_oracle(), 5).divergence == "exact"
    big = ImageOracle(GaussianMixtureOracle(torch.zeros(1, 18), stds=1.0), (2, 3, 3))
    assert ProbabilityFlowSampler(big, 5).divergence == "hutchinson"
    with pytest.raises(ValueError, match="divergence must be 'exact', 'hutchinson' or None"):
        DDIMSampler(image_oracle(), 5, divergence="trace")
    with pytest.raises(ValueError, match="num_probes must be an integer >= 1"):
        probability_flow_log_prob(image_oracle(), torch.zeros(2, *EVENT), divergence="hutchinson", num_probes=0)
    with pytest.raises(ValueError, match=r"prior_log_prob must return a tensor of shape \(2,\)"):
        probability_flow_log_prob(image_oracle(), torch.zeros(2, *EVENT), num_steps=1, prior_log_prob=lambda y: y)


# ----- a score model with a convolutional network -----


class TinyConvNet(nn.Module):
    """``eps(x, t)`` for images ``(B, 3, H, W)``: two 3x3 convolutions on the image and a constant time channel."""

    def __init__(self, channels=3, hidden=16):
        super().__init__()
        self.inp = nn.Conv2d(channels + 1, hidden, 3, padding=1)
        self.out = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x, t):
        t = t.expand(x.shape[:1]).reshape(-1, 1, 1, 1).expand(x.shape[0], 1, *x.shape[2:])
        return self.out(torch.nn.functional.silu(self.inp(torch.cat([x, t], 1))))


def test_score_model_with_a_conv_net_trains_and_samples_images():
    img = image_oracle()
    model = ScoreModel(event_shape=EVENT, network=TinyConvNet(), seed=0)
    assert model.event_shape == EVENT and model.dim == D and "event_shape=(3, 2, 2)" in repr(model)
    x0 = img.oracle.sample(512, generator=torch.Generator().manual_seed(2)).reshape(512, *EVENT)
    torch.manual_seed(0)
    before = float(model.loss(x0).detach())
    model.fit(lambda b: img.oracle.sample(b).reshape(b, *EVENT), steps=150, batch_size=128, seed=0, progress_bar=False)
    torch.manual_seed(0)
    after = float(model.loss(x0).detach())
    assert after < 0.7 * before, (before, after)
    model.fit(x0, steps=5, batch_size=32, seed=0, progress_bar=False)  # a tensor data set of images
    x = torch.randn(4, 5, *EVENT)
    assert model.score(x, torch.full((4, 5), 0.5)).shape == x.shape
    samples = ps.ProcessDistribution(AncestralSampler(model, 20)).sample((64,))
    assert samples.shape == (64, *EVENT) and torch.isfinite(samples).all()


class Flattening(nn.Module):
    """A network of the wrong output shape: it flattens the image."""

    def forward(self, x, t):
        return x.flatten(1)


def test_score_model_checks_image_shapes():
    msg = r"network must map x of shape \(B, 3, 2, 2\) and t of shape \(B,\) to \(B, 3, 2, 2\), got \(3, 12\)"
    with pytest.raises(ValueError, match=msg):
        ScoreModel(event_shape=EVENT, network=Flattening())
    model = ScoreModel(event_shape=EVENT, hidden=8, layers=1)  # the default MLP flattens small events
    assert model.network.event_shape == EVENT
    assert model.score(torch.randn(2, 3, *EVENT), 0.4).shape == (2, 3, *EVENT)
    assert ScoreModel(12, event_shape=EVENT, hidden=8, layers=1).event_shape == EVENT
    with pytest.raises(ValueError, match="dim=10 is not the number of entries 12"):
        ScoreModel(10, event_shape=EVENT)
    with pytest.raises(ValueError, match="give dim"):
        ScoreModel()
    with pytest.raises(ValueError, match=r"data must have shape \(\.\.\., 3, 2, 2\)"):
        model.fit(torch.randn(10, D), steps=1, progress_bar=False)
    with pytest.raises(ValueError, match=r"data\(4\) must return a tensor of shape \(4, 3, 2, 2\), got \(4, 12\)"):
        model.fit(lambda b: torch.randn(b, D), steps=1, batch_size=4, progress_bar=False)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3, 2, 2\)"):
        model.eps(torch.randn(4, D), 0.5)


def test_image_models_and_classifiers_round_trip_through_checkpoints(tmp_path):
    model = ScoreModel(event_shape=EVENT, hidden=8, layers=1, seed=0)  # the default MLP flattens the event
    model.save(tmp_path / "m.pt")
    loaded = ScoreModel.load(tmp_path / "m.pt")
    assert loaded.event_shape == EVENT
    x = torch.randn(5, *EVENT)
    assert torch.equal(loaded.score(x, 0.3), model.score(x, 0.3))
    conv = ScoreModel(event_shape=EVENT, network=TinyConvNet(), seed=0)
    conv.save(tmp_path / "c.pt")
    again = ScoreModel.load(tmp_path / "c.pt", network=TinyConvNet())
    assert again.event_shape == EVENT and torch.equal(again.score(x, 0.3), conv.score(x, 0.3))
    clf = ps.DiffusionObservationClassifier(event_shape=EVENT, hidden=8, layers=1)
    clf.save(tmp_path / "clf.pt")
    back = ps.DiffusionObservationClassifier.load(tmp_path / "clf.pt")
    assert back.event_shape == EVENT
    assert torch.equal(back.terminal_logits(x), clf.terminal_logits(x))
