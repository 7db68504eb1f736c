import pytest
import torch

import pyro_sculpt as ps
from pyro_sculpt.diffusion import AncestralSampler, GaussianMixtureOracle, ScoreModel, TabulatedVPSchedule, VESchedule
from pyro_sculpt.metrics import mode_weight_tv
from pyro_sculpt.nn import ScoreMLP, SinusoidalTimeEmbedding


def _oracle():
    means = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    return GaussianMixtureOracle(means, stds=0.3, weights=[0.2, 0.3, 0.5])


def test_time_embedding_and_network_shapes():
    emb = SinusoidalTimeEmbedding(8, scale=1.0, max_period=100.0)
    t = torch.tensor([0.0, 0.5])
    e = emb(t)
    assert e.shape == (2, 8)
    assert torch.allclose(e[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    assert torch.allclose(e[1, 1], torch.sin(torch.tensor(0.5 * 100 ** (-1 / 4))))
    net = ScoreMLP(3, hidden=16, layers=2, time_embedding_dim=8)
    assert net(torch.randn(4, 5, 3), torch.rand(4, 5)).shape == (4, 5, 3)
    assert net(torch.randn(4, 3), torch.tensor(0.3)).shape == (4, 3)
    with pytest.raises(ValueError, match="dim must be even"):
        SinusoidalTimeEmbedding(7)


def test_score_is_minus_eps_over_sigma():
    model = ScoreModel(2, hidden=16, layers=1)
    x, t = torch.randn(6, 2), 0.4
    sigma = model.schedule.sigma(torch.tensor(t))
    assert torch.allclose(model.score(x, t), -model.eps(x, t) / sigma)


def test_fit_learns_reproducibly_with_an_ema():
    oracle = _oracle()
    a = ScoreModel(2, hidden=32, layers=2, seed=1).fit(
        oracle.sample, steps=300, batch_size=128, seed=3, progress_bar=False
    )
    b = ScoreModel(2, hidden=32, layers=2, seed=1).fit(
        oracle.sample, steps=300, batch_size=128, seed=3, progress_bar=False
    )
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)
    assert a.history[-1]["loss"] < 0.8 * a.history[0]["loss"]
    assert a.history[-1]["step"] == 300
    ema, raw = list(a.ema_network.parameters()), list(a.network.parameters())
    assert not torch.equal(ema[0], raw[0])
    # the EMA update rule
    before = [p.clone() for p in ema]
    a.update_ema(0.9)
    for pe, pb, pr in zip(ema, before, raw, strict=True):
        assert torch.allclose(pe, 0.9 * pb + 0.1 * pr)
    # a tensor data set works too
    c = ScoreModel(2, hidden=16, layers=1).fit(oracle.sample(500), steps=20, batch_size=64, seed=0, progress_bar=False)
    assert len(c.history) == 1


def test_trained_model_is_better_than_chance_against_the_exact_score():
    oracle = _oracle()
    model = ScoreModel(2, hidden=64, layers=3, seed=0).fit(
        oracle.sample, steps=1500, batch_size=256, seed=0, progress_bar=False
    )
    x = oracle.sample(2000, 0.5, generator=torch.Generator().manual_seed(1))
    err = (model.score(x, 0.5) - oracle.score(x, 0.5)).norm(dim=-1).mean()
    assert err < 0.2 * oracle.score(x, 0.5).norm(dim=-1).mean()


def test_checkpoint_round_trip(tmp_path):
    model = ScoreModel(2, TabulatedVPSchedule.linear(50), hidden=16, layers=2)
    model.fit(_oracle().sample, steps=30, batch_size=32, seed=0, progress_bar=False)
    path = tmp_path / "m.pt"
    model.save(path)
    again = ScoreModel.load(path)
    assert again.schedule == model.schedule and again.dim == 2
    x = torch.randn(7, 2)
    assert torch.equal(again.score(x, 0.3), model.score(x, 0.3))
    again.use_ema = model.use_ema = False
    assert torch.equal(again.score(x, 0.3), model.score(x, 0.3))
    assert again.history == model.history


def test_checkpoints_of_other_models_are_rejected(tmp_path):
    model = ScoreModel(2, VESchedule(), hidden=8, layers=1)
    path = tmp_path / "m.pt"
    model.save(path)
    with pytest.raises(ValueError, match="dimension 2, but dim=3"):
        ScoreModel.load(path, dim=3)
    data = torch.load(path, weights_only=True)
    data["version"] = 99
    torch.save(data, tmp_path / "v.pt")
    with pytest.raises(ValueError, match="version 99"):
        ScoreModel.load(tmp_path / "v.pt")
    data["version"], data["format"] = 1, "pyro_sculpt.GFlowNet"
    torch.save(data, tmp_path / "g.pt")
    with pytest.raises(ValueError, match="not a pyro_sculpt ScoreModel checkpoint.*GFlowNet"):
        ScoreModel.load(tmp_path / "g.pt")
    gfn = ps.GFlowNet(ps.HyperGrid(ndim=2, height=4), reward="original", hidden=8, layers=1)
    gfn.save(tmp_path / "gfn.pt")
    with pytest.raises(ValueError, match="not a pyro_sculpt ScoreModel checkpoint"):
        ScoreModel.load(tmp_path / "gfn.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable"):
        ScoreModel.load(tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="does not match the network"):
        ScoreModel.load(path, network=ScoreMLP(2, hidden=4, layers=1))


def test_bad_inputs():
    model = ScoreModel(2, hidden=8, layers=1)
    with pytest.raises(ValueError, match=r"data must have shape \(\.\.\., 2\)"):
        model.fit(torch.randn(10, 3), steps=1, progress_bar=False)
    with pytest.raises(ValueError, match=r"data\(4\) must return"):
        model.fit(lambda b: torch.randn(b, 3), steps=1, batch_size=4, progress_bar=False)
    with pytest.raises(ValueError, match="ema_decay"):
        model.fit(torch.randn(10, 2), steps=1, ema_decay=1.0, progress_bar=False)
    with pytest.raises(ValueError, match="steps"):
        model.fit(torch.randn(10, 2), steps=0, progress_bar=False)
    with pytest.raises(ValueError, match="data must be finite"):
        model.fit(torch.full((10, 2), float("nan")), steps=1, progress_bar=False)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 2\)"):
        model.score(torch.randn(4, 3), 0.5)
    with pytest.raises(ValueError, match="network must map"):
        ScoreModel(2, network=ScoreMLP(3, hidden=4, layers=1))


@pytest.mark.slow  # end-to-end training quality; 25-60 s on the slower 2-core machine of 2026-12-02
def test_trained_model_reproduces_the_mixture():
    """End to end: train on exact samples, sample with DDPM, compare mode weights (about 10 s)."""
    oracle = _oracle()
    model = ScoreModel(2, seed=0).fit(oracle.sample, steps=4000, batch_size=256, seed=0, progress_bar=False)
    torch.manual_seed(0)
    x = ps.sample(AncestralSampler(model, 500), (4000,))
    assert mode_weight_tv(x, oracle.weights, oracle.means) <= 0.05


def test_truncated_snr_weighting():
    # the weighted loss is the per-row noise-prediction error times min(max(1, 1/SNR(t)), c), at the same random draws
    model = ScoreModel(dim=2, hidden=16, layers=1, seed=0)
    x0 = torch.randn(512, 2)
    sched = model.schedule
    torch.manual_seed(3)
    t = sched.t_min + (sched.t_max - sched.t_min) * torch.rand(512)
    eps = torch.randn_like(x0)
    alpha, sigma = sched.alpha(t), sched.sigma(t)
    with torch.no_grad():
        err = ((model.network(alpha[:, None] * x0 + sigma[:, None] * eps, t) - eps) ** 2).sum(-1)
    weight = ((sigma / alpha) ** 2).clamp(1.0, 20.0)
    for cap, expected in ((None, err.mean()), (20.0, (weight * err).mean())):
        torch.manual_seed(3)
        with torch.no_grad():
            got = model.loss(x0, snr_truncation=cap)
        assert torch.allclose(got, expected, rtol=1e-5), (cap, got, expected)
    assert float(weight.max()) == 20.0 and float(weight.min()) == 1.0  # both ends of the truncation are reached
    # training with it runs and records its (weighted) loss
    model.fit(x0, steps=20, batch_size=64, seed=0, progress_bar=False, snr_truncation=20.0)
    assert len(model.history) > 0 and all(torch.isfinite(torch.tensor(h["loss"])) for h in model.history)
    for bad in (0.5, -1.0, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="snr_truncation must be None or a finite number >= 1"):
            model.fit(x0, steps=1, progress_bar=False, snr_truncation=bad)
        with pytest.raises(ValueError, match="snr_truncation must be None or a finite number >= 1"):
            model.loss(x0, snr_truncation=bad)


class _DropoutNet(torch.nn.Module):
    """A custom score network with dropout: its outputs are random in training mode."""

    def __init__(self):
        super().__init__()
        self.inner, self.drop, self.out = torch.nn.Linear(3, 32), torch.nn.Dropout(0.5), torch.nn.Linear(32, 2)

    def forward(self, x, t):
        return self.out(self.drop(torch.relu(self.inner(torch.cat([x, t.reshape(-1, 1).expand(len(x), 1)], -1)))))


def test_a_loaded_model_is_in_evaluation_mode_as_after_fit(tmp_path):
    model = ScoreModel(2, network=_DropoutNet(), seed=0)
    model.fit(torch.randn(64, 2), steps=5, batch_size=16, seed=0, progress_bar=False)
    model.save(tmp_path / "m.pt")
    again = ScoreModel.load(tmp_path / "m.pt", network=_DropoutNet())
    assert not again.training and not again.ema_network.training and not again.network.training
    x = torch.randn(4, 2)
    assert torch.equal(again.eps(x, 0.5), again.eps(x, 0.5)) and torch.allclose(again.eps(x, 0.5), model.eps(x, 0.5))


def test_a_continued_fit_continues_the_average_instead_of_restarting_its_warm_up(tmp_path):
    data = torch.randn(256, 2) * 0.3 + 1.0
    model = ScoreModel(2, hidden=32, layers=2, seed=0)
    model.fit(data, steps=300, batch_size=32, lr=1e-2, ema_decay=0.99, seed=0, progress_bar=False)
    model.save(tmp_path / "m.pt")

    def flat(module):
        return torch.cat([p.detach().flatten() for p in module.parameters()])

    for m in (model, ScoreModel.load(tmp_path / "m.pt")):  # in memory, and after a checkpoint
        before = flat(m.ema_network)
        m.fit(data, steps=1, batch_size=32, lr=1e-12, ema_decay=0.99, progress_bar=False)  # raw weights ~unchanged
        raw, after = flat(m.network), flat(m.ema_network)
        decay = float((after - raw) @ (before - raw) / ((before - raw) @ (before - raw)))
        # the 301st update's warm-up min(0.99, 302 / 311); a restarted warm-up gave (1 + 1) / (10 + 1) = 0.18
        assert abs(decay - 302 / 311) < 1e-3


def test_float64_networks_train_and_points_of_another_dtype_are_scored():
    model = ScoreModel(2, hidden=16, layers=2, seed=0).double()  # fit cast the data to float32: a dtype error
    assert model.dtype == torch.float64
    model.fit(torch.randn(64, 2, dtype=torch.float64), steps=3, batch_size=8, progress_bar=False, seed=0)
    assert model.score(torch.zeros(3, 2, dtype=torch.float64), 0.5).dtype == torch.float64
    small = ScoreModel(2, hidden=16, layers=2, seed=0)  # float32 network, float64 points: the points' dtype out
    out = small.score(torch.zeros(3, 2, dtype=torch.float64), 0.5)
    assert out.dtype == torch.float64 and torch.allclose(out.float(), small.score(torch.zeros(3, 2), 0.5))


def test_times_outside_the_diffusion_are_named():
    model = ScoreModel(2, hidden=16, layers=2, seed=0)
    oracle = GaussianMixtureOracle(torch.zeros(1, 2), stds=1.0)
    for t in (float("nan"), -0.1, 1.7, float("inf")):  # -0.1 and 1.7 gave finite scores, NaN a Cholesky error
        for f in (model.score, oracle.score):
            with pytest.raises(ValueError, match=r"t must be a diffusion time in \[0, 1\]"):
                f(torch.zeros(3, 2), t)
    with pytest.raises(ValueError, match=r"t must be a diffusion time in \[0, 1\]"):
        model.score(torch.zeros(3, 2), torch.tensor([0.5, -1.0, 0.5]))


def test_nan_points_are_named_by_the_log_densities():
    oracle = GaussianMixtureOracle(torch.zeros(1, 2), stds=1.0)
    x = torch.tensor([[float("nan"), 0.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="x must be finite, got 1 NaN or infinite entries"):
        oracle.log_prob(x)
    with pytest.raises(ValueError, match="x must be finite, got 1 NaN or infinite entries"):
        ps.diffusion.probability_flow_log_prob(oracle, x)
