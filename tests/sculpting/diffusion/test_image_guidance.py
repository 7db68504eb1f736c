"""Sculpting image diffusion models (3x28x28, U-Net score models, a CNN observation classifier) at a tiny size: one
classifier training step, one guided sampling pass of every operator, the guidance scale, the classifier-free path."""

import pytest
import torch

import pyro_sculpt as ps
from pyro_sculpt.diffusion import AncestralSampler, EulerMaruyamaSampler, ScoreModel
from pyro_sculpt.nn import ConvClassifierNet, UNet, observation_output_size
from pyro_sculpt.sculpting import Observations
from pyro_sculpt.sculpting.diffusion import composed_score, guidance_terms

EVENT = (3, 28, 28)
TDIM = 8


def models(m=2):
    return [ScoreModel(event_shape=EVENT, network=UNet(EVENT, channels=(4, 8), time_embedding_dim=8), seed=k)
            for k in range(m)]  # fmt: skip


def classifier(samplers, n_obs):
    net = ConvClassifierNet(EVENT, TDIM + 1, observation_output_size(len(samplers), n_obs), channels=(4,), hidden=8)
    return ps.DiffusionObservationClassifier.for_bases(samplers, n_obs, time_embedding_dim=TDIM, network=net)


@pytest.fixture(scope="module")
def two():
    samplers = [AncestralSampler(m, 3) for m in models()]
    clf = classifier(samplers, 2).fit(steps=1, batch_size=2, num_chains=2, ramp=1, states_per_chain=2, seed=0,
                                      progress_bar=False)  # fmt: skip
    return samplers, clf


def test_one_classifier_training_step_on_image_chains(two):
    _, clf = two
    (record,) = clf.history
    assert record["step"] == 1 and all(torch.isfinite(torch.tensor(record[k])) for k in ("loss_terminal",))


@pytest.mark.parametrize("op", [ps.harmonic_mean, ps.contrast, ps.reverse_contrast])
def test_one_guided_sampling_pass_of_each_operator(two, op):
    samplers, clf = two
    torch.manual_seed(0)
    x = op(samplers[0], samplers[1], clf, gamma=2.0).sample((4,))
    assert x.shape == (4, *EVENT) and torch.isfinite(x).all()
    torch.manual_seed(0)
    mix = ps.mixture(*samplers).sample((4,))
    assert mix.shape == (4, *EVENT)


def test_the_guidance_scale_multiplies_the_classifier_gradient(two):
    samplers, clf = two
    models_ = [s.model for s in samplers]
    obs = Observations.build((0, 1), 2)
    x = torch.randn(3, *EVENT)
    _, _, grad = guidance_terms(clf, obs, x, 0.4)
    with torch.no_grad():
        s0 = composed_score(models_, clf, obs, x, 0.4, gamma=0.0)
        s3 = composed_score(models_, clf, obs, x, 0.4, gamma=3.0)
    assert grad.abs().sum() > 0 and torch.allclose(s3 - s0, 3.0 * grad, atol=1e-5)
    # beyond the classifier's max_time (0.7) it does not guide
    _, _, late = guidance_terms(clf, obs, x, 0.9)
    assert torch.equal(late, torch.zeros_like(x))


def test_three_models_y_123():
    samplers = [AncestralSampler(m, 2) for m in models(3)]
    clf = classifier(samplers, 3)
    torch.manual_seed(0)
    x = ps.sculpt(samplers, clf, (0, 1, 2), gamma=5.0).sample((3,))
    assert x.shape == (3, *EVENT) and torch.isfinite(x).all()
    with pytest.raises(ValueError, match="3 observations, but y has 2 entries"):
        ps.sculpt(samplers, clf, (0, 1))


def test_classifier_free_harmonic_mean_of_images_runs():
    samplers = [EulerMaruyamaSampler(m, 3) for m in models()]
    torch.manual_seed(0)
    hm = ps.harmonic_mean(samplers[0], samplers[1])
    x = hm.sample((3,))
    assert x.shape == (3, *EVENT) and torch.isfinite(x).all()
    res = ps.infer.smc(hm, 4, seed=0)
    assert res.x.shape == (4, *EVENT) and torch.isfinite(res.log_weights).all()
