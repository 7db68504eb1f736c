"""Sculpting diffusion models of "images" ``(3, 2, 2)``: the mixture against its exact mode weights and density, and
sculpted compositions with a learned classifier, guided and by SMC, against the same compositions of the flat
(``D = 12``) oracles, which draw the same random numbers."""

import pyro
import pyro.poutine as poutine
import pytest
import torch

import pyro_sculpt as ps
from pyro_sculpt.diffusion import AncestralSampler, DDIMSampler
from pyro_sculpt.processes import step_sites
from pyro_sculpt.processes.runner import expand_state
from pyro_sculpt.sculpting import Observations
from pyro_sculpt.sculpting.diffusion import composed_score, guidance_terms
from tests.diffusion.test_event_shapes import EVENT, D, flat_oracle, image_oracle

F64 = torch.float64
MODES = flat_oracle((0, 1, 2, 3)).means  # the four modes (flat)
MIX_WEIGHTS = [0.4, 0.6]
# p1 = 0.3 A + 0.7 B, p2 = 0.2 B + 0.3 C + 0.5 D: the mixture 0.4 p1 + 0.6 p2 weighs the modes
EXACT_MODE_WEIGHTS = torch.tensor([0.4 * 0.3, 0.4 * 0.7 + 0.6 * 0.2, 0.6 * 0.3, 0.6 * 0.5], dtype=F64)


def bases(dtype=torch.float32):
    return image_oracle((0, 1), [0.3, 0.7], dtype), image_oracle((1, 2, 3), [0.2, 0.3, 0.5], dtype)


def mode_weights(x):
    nearest = torch.cdist(x.reshape(x.shape[0], D).double(), MODES.double()).argmin(-1)
    return torch.bincount(nearest, minlength=len(MODES)).double() / x.shape[0]


def test_mixture_of_two_image_oracles_has_the_exact_mode_weights():
    p1, p2 = bases()
    mix = ps.mixture(AncestralSampler(p1, 50), AncestralSampler(p2, 50), weights=MIX_WEIGHTS)
    assert mix.event_shape == EVENT and mix.process.state_event_dims == (3, 1)
    torch.manual_seed(0)
    x = mix.sample((3000,))
    assert x.shape == (3000, *EVENT)
    tv = 0.5 * (mode_weights(x) - EXACT_MODE_WEIGHTS).abs().sum()
    assert tv < 0.03, (mode_weights(x), EXACT_MODE_WEIGHTS)
    # the same random numbers as the mixture of the flat oracles
    torch.manual_seed(0)
    flat = ps.mixture(AncestralSampler(p1.oracle, 50), AncestralSampler(p2.oracle, 50), weights=MIX_WEIGHTS)
    assert torch.equal(x[:50].reshape(50, D), flat.sample((3000,))[:50])


def test_mixture_runs_one_site_per_step_with_image_states():
    p1, p2 = bases()
    mix = ps.mixture(AncestralSampler(p1, 5), AncestralSampler(p2, 5)).process
    pyro.set_rng_seed(0)
    tr = poutine.trace(lambda: ps.run("x", mix, num_particles=8, return_state=True)).get_trace()
    x, (state_x, k) = tr.nodes["_RETURN"]["value"]
    assert x.shape == state_x.shape == (8, *EVENT) and k.shape == (8, 1)
    again = expand_state(mix.init(), torch.Size([2, 3]), mix.state_event_dims)  # per-leaf event dimensions
    assert again[0].shape == (2, 3, *EVENT) and again[1].shape == (2, 3, 1)
    with pytest.raises(ValueError, match=r"state_event_dims \(3, 1\) must have one entry per leaf .*3 leaves"):
        expand_state((state_x, k, k), torch.Size([2]), mix.state_event_dims)
    tr.compute_log_prob()
    sites = step_sites(tr, "x")
    assert len(sites) == mix.max_steps == 7  # the component, the prior draw and 5 steps
    assert sites[0]["value"].shape == (8,) and sites[0]["log_prob"].shape == (8,)
    for site in sites[1:]:
        assert site["value"].shape == (8, *EVENT) and site["log_prob"].shape == (8,)
    # every particle follows its own base: the last step's mean is its base's
    last = sites[-1]
    prev = sites[-2]["value"]
    a, b, _ = mix.step_coefficients(mix.max_steps - 1)
    tau = mix.score_time(mix.max_steps - 1)
    own = torch.where(k.reshape(8, 1, 1, 1) == 0, p1.score(prev, tau), p2.score(prev, tau))
    assert torch.allclose(last["fn"].base_dist.mean, a * prev + b * own)


def test_mixture_log_prob_of_images_is_the_exact_mixture_density():
    p1, p2 = bases(F64)
    samplers = [DDIMSampler(p, 10, log_prob_steps=12) for p in (p1, p2)]
    mix = ps.mixture(*samplers, weights=MIX_WEIGHTS)
    x = torch.cat([p1.oracle.sample(2), p2.oracle.sample(2)]).reshape(4, *EVENT)
    lp = mix.log_prob(x)
    flat = ps.mixture(*[DDIMSampler(p.oracle, 10, log_prob_steps=12) for p in (p1, p2)], weights=MIX_WEIGHTS)
    assert torch.allclose(lp, flat.log_prob(x.reshape(4, D)), atol=1e-10)
    t0 = float(samplers[0].times[-1])
    w = torch.tensor(MIX_WEIGHTS, dtype=F64).log()
    exact = torch.logsumexp(torch.stack([p1.log_prob(x, t0), p2.log_prob(x, t0)], -1) + w, -1)
    assert (lp - exact).abs().max() < 0.1, lp - exact  # the samplers' prior at t_max and 12 RK4 steps


def test_bases_and_classifiers_of_another_event_shape_are_refused():
    p1, p2 = bases()
    with pytest.raises(ValueError, match=r"bases\[1\] has event shape \(12,\), but bases\[0\] has \(3, 2, 2\)"):
        ps.mixture(AncestralSampler(p1, 5), AncestralSampler(p2.oracle, 5))
    flat_clf = ps.DiffusionObservationClassifier(D, 2, 2, hidden=8)
    s1, s2 = AncestralSampler(p1, 5), AncestralSampler(p2, 5)
    with pytest.raises(ValueError, match=r"classifier is for event shape \(12,\), but the bases have event shape"):
        ps.harmonic_mean(s1, s2, flat_clf)
    with pytest.raises(ValueError, match=r"bases have event shape \(3, 2, 2\), but the classifier has data dimension"):
        flat_clf.fit([s1, s2], steps=1, progress_bar=False)


@pytest.fixture(scope="module")
def learned():
    """A learned classifier of the image bases (a few steps) and the same network as a classifier of the flat
    bases."""
    p1, p2 = bases()
    samplers = [AncestralSampler(p1, 20), AncestralSampler(p2, 20)]
    clf = ps.DiffusionObservationClassifier.for_bases(samplers, 2, hidden=32, layers=2).fit(
        steps=30, batch_size=16, num_chains=64, seed=0, progress_bar=False
    )
    assert clf.event_shape == EVENT and clf.dim == D
    flat = ps.DiffusionObservationClassifier(D, 2, 2, schedule=clf.schedule, hidden=32, layers=2)
    flat.net.load_state_dict(clf.net.state_dict())
    return p1, p2, clf, flat


def test_learned_classifier_and_guided_score_of_images(learned):
    p1, p2, clf, flat = learned
    x = torch.randn(2, 4, *EVENT)
    t = torch.rand(2, 4) * 0.6
    joint = clf.log_joint(x, t)
    assert joint.shape == (2, 4, 2, 2)
    assert torch.allclose(joint, flat.log_joint(x.reshape(2, 4, D), t))
    assert torch.allclose(clf.terminal_logits(x), flat.terminal_logits(x.reshape(2, 4, D)))
    obs = Observations.build((0, 1), 2)
    log_q1, log_q_y, grad = guidance_terms(clf, obs, x, 0.3)
    assert log_q1.shape == (2, 4, 2) and log_q_y.shape == (2, 4) and grad.shape == x.shape
    score = composed_score([p1, p2], clf, obs, x, 0.3, gamma=2.0)
    ref = composed_score([p1.oracle, p2.oracle], flat, obs, x.reshape(2, 4, D), 0.3, gamma=2.0)
    assert score.shape == x.shape and torch.allclose(score.reshape(2, 4, D), ref, atol=1e-5)
    # beyond max_time: the prior weights and no guidance term, per particle
    t = torch.tensor([[0.2, 0.9, 0.2, 0.9], [0.9, 0.9, 0.2, 0.2]])
    log_q1, log_q_y, grad = guidance_terms(clf, obs, x, t)
    beyond = t > clf.max_time
    assert torch.allclose(log_q1[beyond], torch.full((4, 2), 0.5).log())
    assert (grad[beyond] == 0).all() and (grad[~beyond] != 0).any()


def test_sculpted_image_composition_samples_as_the_flat_one(learned):
    p1, p2, clf, flat = learned
    hm = ps.harmonic_mean(AncestralSampler(p1, 20), AncestralSampler(p2, 20), clf)
    assert hm.event_shape == EVENT
    torch.manual_seed(0)
    x = hm.sample((64,))
    torch.manual_seed(0)
    ref = ps.harmonic_mean(AncestralSampler(p1.oracle, 20), AncestralSampler(p2.oracle, 20), flat).sample((64,))
    assert x.shape == (64, *EVENT) and torch.allclose(x.reshape(64, D), ref, atol=1e-4)
    # guidance of the mixture process, one site per step
    mix = ps.mixture(AncestralSampler(p1, 20), AncestralSampler(p2, 20)).process
    with ps.sculpt_guidance(classifier=clf, y=(0, 1)):
        tr = poutine.trace(lambda: ps.run("x", mix, num_particles=16)).get_trace()
    tr.compute_log_prob()
    sites = step_sites(tr, "x")
    assert len(sites) == mix.max_steps
    assert all(s["value"].shape == (16, *EVENT) and s["log_prob"].shape == (16,) for s in sites[1:])
    assert torch.isfinite(tr.nodes["_RETURN"]["value"]).all()


def test_smc_on_an_image_composition_is_that_of_the_flat_one(learned):
    p1, p2, clf, flat = learned
    hm = ps.harmonic_mean(AncestralSampler(p1, 20), AncestralSampler(p2, 20), clf, gamma=2.0)
    res = ps.infer.smc(hm, 128, seed=0)
    ref = ps.infer.smc(
        ps.harmonic_mean(AncestralSampler(p1.oracle, 20), AncestralSampler(p2.oracle, 20), flat, gamma=2.0), 128, seed=0
    )
    assert res.x.shape == (128, *EVENT) and res.log_weights.shape == (128,)
    assert torch.allclose(res.x.reshape(128, D), ref.x, atol=1e-4)
    assert torch.allclose(res.log_weights, ref.log_weights, atol=1e-4)
    assert res.num_resamples == ref.num_resamples and res.num_resamples > 0  # gamma = 2: the weights matter
    # the plain processes too (unweighted): a sampler, and the mixture with its (image, base) state
    for proc in (AncestralSampler(p1, 5), ps.mixture(AncestralSampler(p1, 5), AncestralSampler(p2, 5))):
        assert ps.infer.smc(proc, 32, seed=0).x.shape == (32, *EVENT)
