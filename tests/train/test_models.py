"""The four trainable models through the shared loop: seeds give the same weights whatever the random state when
the model was built, ``fit`` trains in place and returns the model, networks given to the models are checked, and a
non-finite loss names the step."""

import pytest
import torch
from torch import nn

import pyro_sculpt as ps
from pyro_sculpt.diffusion import AncestralSampler, GaussianMixtureOracle, ScoreModel
from pyro_sculpt.gflownets import TabularGFlowNet

ENV = ps.HyperGrid(2, 4)


def gaussian_pair():
    means = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])
    return GaussianMixtureOracle(means[:1], stds=0.4), GaussianMixtureOracle(means, stds=0.4)


# ----- seeds: bit-identical weights whatever the random state when the model was built -----


def _fit_gflownet(build_seed):
    torch.manual_seed(build_seed)
    return ps.GFlowNet(ENV, "original", hidden=16).fit(steps=10, batch_size=8, seed=0, progress_bar=False)


def _fit_score_model(build_seed):
    torch.manual_seed(build_seed)
    model = ScoreModel(2, hidden=16, layers=2)
    return model.fit(gaussian_pair()[1].sample, steps=10, batch_size=16, seed=0, progress_bar=False)


def _fit_classifier(build_seed):
    bases = [TabularGFlowNet.from_reward(ENV, r) for r in (ps.rewards.original(), ps.rewards.diagonal_sigmoid())]
    torch.manual_seed(build_seed)
    clf = ps.ObservationClassifier.for_bases(bases, 2, hidden=16)
    return clf.fit(steps=10, batch_size=8, ramp=5, seed=0, progress_bar=False)


def _fit_diffusion_classifier(build_seed):
    samplers = [AncestralSampler(p, 10) for p in gaussian_pair()]
    torch.manual_seed(build_seed)
    clf = ps.DiffusionObservationClassifier.for_bases(samplers, 2, hidden=16, layers=1)
    return clf.fit(steps=10, batch_size=8, ramp=5, num_chains=32, seed=0, progress_bar=False)


@pytest.mark.parametrize(
    "fit", [_fit_gflownet, _fit_score_model, _fit_classifier, _fit_diffusion_classifier], ids=lambda f: f.__name__
)
def test_a_seed_gives_the_same_weights_whatever_the_state_at_build_time(fit):
    a, b = fit(1), fit(2)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert a.history[-1]["step"] == 10


def test_without_a_seed_training_continues_from_the_current_weights():
    torch.manual_seed(1)
    gfn = ps.GFlowNet(ENV, "original", hidden=16)
    with torch.no_grad():
        gfn.log_z.fill_(3.0)
    gfn.fit(steps=1, batch_size=4, lr_logz=1e-3, progress_bar=False)
    assert abs(gfn.log_z.item() - 3.0) < 0.01  # one small step from 3, not from a fresh 0
    gfn.fit(steps=1, batch_size=4, lr_logz=1e-3, seed=0, progress_bar=False)
    assert abs(gfn.log_z.item()) < 0.01  # a seed re-initialised log Z to 0


def test_a_seed_resets_the_kept_moving_average_to_the_fresh_weights():
    model = ScoreModel(2, hidden=8, layers=1)
    data = gaussian_pair()[0].sample
    model.fit(data, steps=1, batch_size=4, ema_decay=0.0, seed=5, progress_bar=False)
    # ema_decay=0 makes the average the weights after the step; a second seeded run of 1 step must match it exactly
    first = {k: v.clone() for k, v in model.ema_network.state_dict().items()}
    with torch.no_grad():
        for p in model.ema_network.parameters():
            p.add_(1.0)
    model.fit(data, steps=1, batch_size=4, ema_decay=0.0, seed=5, progress_bar=False)
    for k, v in model.ema_network.state_dict().items():
        assert torch.equal(v, first[k])


def test_gflownet_non_finite_trajectory_balance_loss_names_the_step():
    huge = ps.GFlowNet(ENV, lambda env, s: torch.full(s.shape[:-1], 1e30), hidden=8)  # (log Z - 1e30)^2 = inf
    with pytest.raises(FloatingPointError, match="GFlowNet TB loss became non-finite at step 1"):
        huge.fit(steps=5, batch_size=4, seed=0, progress_bar=False)


# ----- the naming convention -----


def test_fit_trains_in_place_and_returns_the_model():
    gfn = ps.GFlowNet(ENV, "original", hidden=8)
    assert gfn.fit(steps=2, batch_size=4, progress_bar=False) is gfn
    model = ScoreModel(2, hidden=8, layers=1)
    assert model.fit(gaussian_pair()[0].sample, steps=2, batch_size=4, progress_bar=False) is model
    bases = [TabularGFlowNet.from_reward(ENV, r) for r in (ps.rewards.original(), ps.rewards.diagonal_sigmoid())]
    clf = ps.ObservationClassifier.for_bases(bases, 2, hidden=8)
    assert clf.bases == bases and clf.fit(steps=2, batch_size=4, progress_bar=False) is clf
    other = ps.ObservationClassifier(ENV, 2, 2, hidden=8)
    with pytest.raises(ValueError, match=r"fit needs bases: build the classifier with ObservationClassifier.for_bases"):
        other.fit(steps=1)
    assert other.fit(bases, steps=2, batch_size=4, progress_bar=False) is other and other.bases == bases
    samplers = [AncestralSampler(p, 10) for p in gaussian_pair()]
    dclf = ps.DiffusionObservationClassifier.for_bases(samplers, 2, hidden=8, layers=1)
    assert dclf.fit(steps=2, batch_size=4, num_chains=8, progress_bar=False) is dclf
    with pytest.raises(ValueError, match="fit needs bases"):
        ps.DiffusionObservationClassifier(2, hidden=8).fit(steps=1)
    assert not hasattr(ps.ObservationClassifier, "optimize")
    assert not hasattr(ps.DiffusionObservationClassifier, "optimize")


# ----- networks given to the models -----


def test_gflownet_policy_of_the_wrong_input_size():
    with pytest.raises(ValueError, match=r"policy must map \(batch, env.feature_dim=8\) features"):
        ps.GFlowNet(ENV, policy=nn.Linear(5, ENV.n_actions))


def test_classifiers_accept_a_network_of_the_right_sizes(tmp_path):
    bases = [TabularGFlowNet.from_reward(ENV, r) for r in (ps.rewards.original(), ps.rewards.diagonal_sigmoid())]
    in_dim = ENV.feature_dim + 1
    net = nn.Sequential(nn.Linear(in_dim, 16), nn.Tanh(), nn.Linear(16, 2 + 4))
    clf = ps.ObservationClassifier.for_bases(bases, 2, network=net)
    assert clf.net is net
    clf.fit(steps=3, batch_size=4, seed=0, progress_bar=False)
    clf.save(tmp_path / "clf.pt")
    with pytest.raises(ValueError, match="saved with a custom network: pass network="):
        ps.ObservationClassifier.load(tmp_path / "clf.pt")
    fresh = nn.Sequential(nn.Linear(in_dim, 16), nn.Tanh(), nn.Linear(16, 2 + 4))
    again = ps.ObservationClassifier.load(tmp_path / "clf.pt", network=fresh)
    x = ENV.all_states()
    assert torch.equal(again.terminal_logits(x), clf.terminal_logits(x))
    with pytest.raises(ValueError, match=r"network must map features of shape \(B, 10\) to outputs of shape \(B, 6\)"):
        ps.ObservationClassifier.for_bases(bases, 2, alpha_conditioned=True, network=nn.Linear(in_dim, 6))
    with pytest.raises(ValueError, match=r"network must map features of shape \(B, 9\) to outputs of shape \(B, 10\)"):
        ps.ObservationClassifier.for_bases(bases, 3, network=nn.Linear(in_dim, 6))
    samplers = [AncestralSampler(p, 10) for p in gaussian_pair()]
    d_in = 2 + 32 + 1
    dclf = ps.DiffusionObservationClassifier.for_bases(samplers, 2, network=nn.Linear(d_in, 6))
    dclf.fit(steps=2, batch_size=4, num_chains=8, seed=0, progress_bar=False)
    with pytest.raises(ValueError, match=r"network must map features of shape \(B, 35\) to outputs of shape \(B, 6\)"):
        ps.DiffusionObservationClassifier.for_bases(samplers, 2, network=nn.Linear(d_in + 1, 6))
    with pytest.raises(ValueError, match=r"network must map features of shape \(B, 35\) to outputs of shape \(B, 6\)"):
        ps.DiffusionObservationClassifier.for_bases(samplers, 2, network=nn.Linear(d_in, 5))
