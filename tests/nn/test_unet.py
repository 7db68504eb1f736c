"""The image networks: the U-Net noise predictor (as a ScoreModel's network, one training step, checkpoints) and the
CNN on feature rows (as a diffusion observation classifier's network)."""

import pytest
import torch

import pyro_sculpt as ps
from pyro_sculpt.diffusion import ScoreModel
from pyro_sculpt.nn import ConvClassifierNet, UNet, observation_output_size

EVENT = (3, 28, 28)


def test_unet_maps_images_to_images_and_depends_on_time():
    torch.manual_seed(0)
    net = UNet(EVENT, channels=(4, 8, 8), time_embedding_dim=8)
    x = torch.randn(5, *EVENT)
    out = net(x, torch.full((5,), 0.3))
    assert out.shape == (5, *EVENT) and torch.isfinite(out).all()
    assert not torch.allclose(out, net(x, torch.full((5,), 0.9)))
    # each image is processed on its own (GroupNorm, no batch statistics)
    assert torch.allclose(net(x[:2], torch.full((2,), 0.3)), out[:2], atol=1e-5)
    assert net(x, 0.3).shape == (5, *EVENT)  # a scalar time broadcasts


def test_unet_rejects_bad_shapes():
    net = UNet(EVENT, channels=(4, 8))
    for bad_t in (torch.zeros(3), torch.zeros(2, 1)):  # a time per image, or one: torch's expand error before
        with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(2,\)"):
            net(torch.zeros(2, *EVENT), bad_t)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3, 28, 28\), got \(2, 1, 28, 28\)"):
        net(torch.zeros(2, 1, 28, 28), torch.zeros(2))
    with pytest.raises(ValueError, match=r"divisible by 4"):
        UNet((3, 30, 30), channels=(4, 8, 8))
    with pytest.raises(ValueError, match=r"image shape \(C, H, W\)"):
        UNet((28, 28), channels=(4,))
    with pytest.raises(ValueError, match="network must map x of shape"):
        ScoreModel(event_shape=(3, 32, 32), network=UNet(EVENT, channels=(4,)))


def test_score_model_with_a_unet_trains_one_step_reproducibly_and_round_trips(tmp_path):
    data = torch.rand(16, *EVENT) * 2 - 1

    def fit():
        model = ScoreModel(event_shape=EVENT, network=UNet(EVENT, channels=(4, 8), time_embedding_dim=8), seed=1)
        before = [p.detach().clone() for p in model.network.parameters()]
        model.fit(data, steps=1, batch_size=4, seed=3, progress_bar=False)
        return model, before

    model, before = fit()
    assert len(model.history) == 1 and torch.isfinite(torch.tensor(model.history[-1]["loss"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.network.parameters()))
    again, _ = fit()
    for a, b in zip(model.network.parameters(), again.network.parameters()):
        assert torch.equal(a, b)
    x = torch.randn(2, 4, *EVENT)  # any batch shape
    assert model.score(x, 0.5).shape == x.shape
    model.save(tmp_path / "m.pt")
    for loaded in (
        ScoreModel.load(tmp_path / "m.pt"),  # the U-Net is rebuilt from its configuration
        ScoreModel.load(tmp_path / "m.pt", network=UNet(EVENT, channels=(4, 8), time_embedding_dim=8)),
    ):
        assert isinstance(loaded.network, UNet) and loaded.network.channels == (4, 8)
        assert torch.equal(loaded.score(x, 0.5), model.score(x, 0.5))
    with pytest.raises(ValueError, match="does not match the network"):
        ScoreModel.load(tmp_path / "m.pt", network=UNet(EVENT, channels=(4, 16), time_embedding_dim=8))


def test_conv_classifier_net_reads_rows_of_image_and_conditioning():
    torch.manual_seed(0)
    net = ConvClassifierNet(EVENT, cond_dim=3, out_dim=6, channels=(4, 8), hidden=8)
    img, cond = torch.randn(2, 5, *EVENT), torch.randn(2, 5, 3)
    rows = torch.cat([img.reshape(2, 5, -1), cond], -1)
    out = net(rows)
    assert out.shape == (2, 5, 6)
    assert not torch.allclose(out, net(torch.cat([img.reshape(2, 5, -1), cond + 1], -1)))
    with pytest.raises(ValueError, match=r"rows must have 2355 features \(an image \(3, 28, 28\) flattened, then 3"):
        net(torch.zeros(4, 2352))
    plain = ConvClassifierNet(EVENT, cond_dim=0, out_dim=20, channels=(4,))
    assert plain(img.reshape(10, -1)).shape == (10, 20)
    for groups in (0, -1):
        with pytest.raises(ValueError, match="groups must be an integer >= 1"):
            ConvClassifierNet(EVENT, out_dim=2, channels=(4,), groups=groups)


def test_conv_classifier_net_is_the_network_of_a_diffusion_observation_classifier(tmp_path):
    tdim = 8
    net = ConvClassifierNet(EVENT, cond_dim=tdim + 1, out_dim=observation_output_size(2, 2), channels=(4,), hidden=8)
    clf = ps.DiffusionObservationClassifier(event_shape=EVENT, time_embedding_dim=tdim, network=net)
    x = torch.randn(3, *EVENT)
    joint = clf.log_joint(x, 0.3)
    assert joint.shape == (3, 2, 2) and torch.allclose(joint.exp().sum((-2, -1)), torch.ones(3))
    assert clf.terminal_logits(x).shape == (3, 2)
    log_q, grad = clf.grad_log_prob((0, 1), x, 0.3)
    assert log_q.shape == (3,) and grad.shape == x.shape and grad.abs().sum() > 0
    clf.save(tmp_path / "clf.pt")  # the network is rebuilt from its configuration
    again = ps.DiffusionObservationClassifier.load(tmp_path / "clf.pt")
    assert isinstance(again.net, ConvClassifierNet) and torch.equal(again.log_joint(x, 0.3), joint)
    wrong = ConvClassifierNet(EVENT, cond_dim=tdim, out_dim=6, channels=(4,))  # forgot the terminal flag
    with pytest.raises(ValueError, match=r"network must map features of shape \(B, 2361\)"):
        ps.DiffusionObservationClassifier(event_shape=EVENT, time_embedding_dim=tdim, network=wrong)
