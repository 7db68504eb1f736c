"""Energy-parameterised diffusion models: score = gradient of the log-density (finite differences), training through
the shared loop, checkpoints, the oracles' energy interface, and trained energies as the leaf densities of the
classifier-free product SMC."""

import pyro
import pytest
import torch

import pyro_sculpt as ps
from pyro_sculpt.diffusion import AncestralSampler, EnergyScoreModel, GaussianMixtureOracle, ScoreModel
from pyro_sculpt.metrics import assign_modes, grid_mode_weights
from pyro_sculpt.nn import EnergyGradient, EnergyMLP


def _oracle():
    means = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    return GaussianMixtureOracle(means, stds=0.3, weights=[0.2, 0.3, 0.5])


def _central_differences(f, x, h):
    """The gradient of ``f`` (``(N, D) -> (N,)``) at ``x`` by central differences, ``(N, D)``."""
    cols = []
    for d in range(x.shape[-1]):
        e = torch.zeros_like(x)
        e[:, d] = h
        cols.append((f(x + e) - f(x - e)) / (2 * h))
    return torch.stack(cols, -1)


def test_score_is_the_gradient_of_log_prob_by_finite_differences():
    model = EnergyScoreModel(3, hidden=16, layers=2, seed=0).double()
    model.use_ema = False
    x = torch.randn(20, 3, dtype=torch.float64)
    for t in (0.05, 0.4, 0.9):
        fd = _central_differences(lambda z, t=t: model.log_prob(z, t), x, 1e-5)
        assert torch.allclose(model.score(x, t), fd, atol=1e-6, rtol=1e-5)
        sigma = model.schedule.sigma(torch.tensor(t, dtype=torch.float64))
        assert torch.allclose(model.log_prob(x, t), -model.energy(x, t) / sigma)
        fd_e = _central_differences(lambda z, t=t: model.energy(z, t), x, 1e-5)
        assert torch.allclose(model.eps(x, t), fd_e, atol=1e-6)
    # per-point times and batch shapes beyond one dimension
    tt = torch.rand(4, 5, dtype=torch.float64) * 0.9 + 0.05
    xb = torch.randn(4, 5, 3, dtype=torch.float64)
    assert model.log_prob(xb, tt).shape == (4, 5) and model.score(xb, tt).shape == (4, 5, 3)
    assert torch.allclose(model.log_prob(xb, tt)[1, 2], model.log_prob(xb[1, 2:3], tt[1, 2]).squeeze())
    # float32 model, float64 points: values come back in the points' dtype
    m32 = EnergyScoreModel(3, hidden=8, layers=1, seed=0)
    assert m32.log_prob(x, 0.5).dtype == torch.float64 and m32.score(x, 0.5).dtype == torch.float64
    assert not EnergyScoreModel.log_prob_normalised and not hasattr(ScoreModel(2, hidden=4, layers=1), "log_prob")


def test_oracle_energy_interface():
    oracle = _oracle()
    x = torch.randn(30, 2, dtype=torch.float64) * 2
    for t in (0.02, 0.5):
        sigma = oracle.schedule.sigma(torch.tensor(t))
        assert torch.allclose(oracle.energy(x, t), -sigma * oracle.log_prob(x, t))
        fd = _central_differences(lambda z, t=t: oracle.log_prob(z, t), x, 1e-5)
        assert torch.allclose(oracle.score(x, t), fd, atol=1e-5, rtol=1e-5)
        fd_e = _central_differences(lambda z, t=t: oracle.energy(z, t), x, 1e-5)
        assert torch.allclose(oracle.eps(x, t), fd_e, atol=1e-5)
    assert oracle.log_prob_normalised
    with pytest.raises(ValueError, match="t must be a noise level"):
        oracle.energy(x, None)


class _PerEntry(torch.nn.Module):
    def forward(self, x, t):
        return x**2


def test_energy_gradient_keeps_the_graph_only_when_needed():
    net = EnergyGradient(EnergyMLP(2, hidden=8, layers=1))
    x, t = torch.randn(5, 2), torch.rand(5)
    assert net(x, t).requires_grad  # trainable weights: double back-propagation
    with torch.no_grad():
        assert not net(x, t).requires_grad
    for p in net.parameters():
        p.requires_grad_(False)
    assert not net(x, t).requires_grad  # frozen (EMA) weights
    xr = x.clone().requires_grad_(True)
    (hess_row,) = torch.autograd.grad(net(xr, t)[:, 0].sum(), xr)  # a caller that differentiates the score
    assert hess_row.shape == (5, 2)
    with pytest.raises(TypeError, match="energy must be a torch module"):
        EnergyGradient(lambda x, t: x.sum(-1))
    with pytest.raises(ValueError, match="one value per point"):
        EnergyGradient(_PerEntry())(x, t)


class _Quadratic(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.randn(2))

    def forward(self, x, t):
        return 0.5 * ((x - self.a) ** 2).sum(-1) * (1 + t)


def test_fit_trains_the_energy_through_the_shared_loop(tmp_path):
    oracle = _oracle()
    model = EnergyScoreModel(2, hidden=64, layers=3, seed=0).fit(
        oracle.sample, steps=1500, batch_size=256, seed=0, progress_bar=False
    )
    assert model.history[-1]["loss"] < 0.8 * model.history[0]["loss"]
    x = oracle.sample(2000, 0.5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        err = (model.score(x, 0.5) - oracle.score(x, 0.5)).norm(dim=-1).mean()
    assert err < 0.2 * oracle.score(x, 0.5).norm(dim=-1).mean()
    # checkpoints: round trip, and a ScoreModel checkpoint is another format
    path = tmp_path / "e.pt"
    model.save(path)
    again = EnergyScoreModel.load(path)
    xs = torch.randn(7, 2)
    assert torch.equal(again.energy(xs, 0.3), model.energy(xs, 0.3))
    assert torch.equal(again.score(xs, 0.3), model.score(xs, 0.3))
    with pytest.raises(ValueError, match="not a pyro_sculpt ScoreModel checkpoint"):
        ScoreModel.load(path)
    custom = EnergyScoreModel(2, network=_Quadratic())
    custom.save(tmp_path / "c.pt")
    with pytest.raises(ValueError, match="custom network"):
        EnergyScoreModel.load(tmp_path / "c.pt")
    loaded = EnergyScoreModel.load(tmp_path / "c.pt", network=_Quadratic())
    assert torch.equal(loaded.score(xs, 0.3), custom.score(xs, 0.3))


def _weighted_modes(x, log_w, means):
    w = torch.softmax(log_w.double(), 0)
    return torch.zeros(len(means), dtype=torch.float64).index_add_(0, assign_modes(x.double(), means), w)


class _Shifted(EnergyScoreModel):
    """The same energy plus :math:`\\sigma_t c(t)`: the log-density shifted by a constant per level."""

    def energy(self, x, t):
        tt = torch.as_tensor(t, dtype=x.dtype)
        return super().energy(x, t) + self.schedule.sigma(tt) * (3.0 + 10.0 * tt**2)


def test_trained_energy_models_as_the_leaves_of_the_product_smc():
    """Two tiny trained energy models; the product SMC with their log-densities (up to a constant per level) targets
    the product of the densities they define: exp(-E_1/sigma - E_2/sigma) at the last level, normalised on a grid."""
    a = GaussianMixtureOracle(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]), stds=0.35)
    b = GaussianMixtureOracle(torch.tensor([[0.7, 0.0]]), stds=0.7)
    ma = EnergyScoreModel(2, hidden=32, layers=2, seed=0).fit(a.sample, 600, 256, seed=0, progress_bar=False)
    mb = EnergyScoreModel(2, hidden=32, layers=2, seed=1).fit(b.sample, 600, 256, seed=1, progress_bar=False)
    dist = ps.product(AncestralSampler(ma, 40), AncestralSampler(mb, 40))
    res = ps.infer.smc(dist, 3000, seed=0, densities="exact")
    t_min = float(dist.process.sampler.times[-1])
    means = a.means.double()

    def log_target(x):
        with torch.no_grad():
            return ma.log_prob(x.float(), t_min).double() + mb.log_prob(x.float(), t_min).double()

    exact = grid_mode_weights(log_target, [(-4, 4), (-4, 4)], means, resolution=200)
    smc_tv = 0.5 * float((_weighted_modes(res.x, res.log_weights, means) - exact).abs().sum())
    torch.manual_seed(0)
    plain = dist.sample((3000,))
    plain_tv = 0.5 * float((_weighted_modes(plain, torch.zeros(3000), means) - exact).abs().sum())
    assert smc_tv < 0.04 and smc_tv < 0.5 * plain_tv
    # the energies give MALA correctors their exact Metropolis test at every level. Correctors (no weights) keep the
    # mode weights of the last level they move, t = 0.026, where these tiny models' product still puts 0.18 on the
    # left mode against 0.003 at the last level (a late drift of the learned energies; docs/mcmc.md): compare there
    pyro.set_rng_seed(0)
    with torch.no_grad(), ps.mcmc.corrector(kernel="mala", num_steps=10) as corr:
        corrected = ps.run("x", dist.process, num_particles=3000)
    t_last = corr.history[-1]["level"]
    alpha = float(ma.schedule.alpha(torch.tensor(t_last)))

    def log_level(x):
        with torch.no_grad():
            return ma.log_prob(x.float(), t_last).double() + mb.log_prob(x.float(), t_last).double()

    at_last = grid_mode_weights(log_level, [(-4, 4), (-4, 4)], alpha * means, resolution=200)

    def tv_last(x):
        return 0.5 * float((_weighted_modes(x, torch.zeros(3000), means) - at_last).abs().sum())

    tvs = (tv_last(corrected), tv_last(plain))  # measured with 20 steps per level: 0.005 and 0.044
    assert tvs[0] < 0.04 and tvs[0] < 0.5 * tvs[1], tvs
    assert 0.3 < sum(r["accept_rate"] for r in corr.history) / len(corr.history) < 0.9
    # a constant per level changes nothing (the same seed gives the same particles and normalised weights)
    shifted = _Shifted(2, hidden=32, layers=2)
    shifted.load_state_dict(ma.state_dict())
    res2 = ps.infer.smc(ps.product(AncestralSampler(shifted, 40), AncestralSampler(mb, 40)), 3000, seed=0,
                        densities="exact")  # fmt: skip
    assert torch.allclose(res2.x, res.x, atol=1e-5)
    assert torch.allclose(res2.log_weights, res.log_weights, atol=1e-6)
    # a mixture needs normalised log-densities
    with pytest.raises(ValueError, match="only up to a constant per noise level"):
        ps.infer.smc(ps.sculpt([AncestralSampler(ma, 40), AncestralSampler(mb, 40)], y=(0, 1)), 100, densities="exact")
