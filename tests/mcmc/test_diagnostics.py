"""Per-level diagnostics of correctors and SMC rejuvenation moves as ArviZ InferenceData, and their plot."""

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

import pyro_sculpt as ps  # noqa: E402
from pyro_sculpt.diffusion import AncestralSampler, GaussianMixtureOracle  # noqa: E402


def _product(steps=10):
    a = GaussianMixtureOracle(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]), stds=0.4)
    b = GaussianMixtureOracle(torch.tensor([[0.5, 0.5]]), stds=0.8)
    return ps.product(AncestralSampler(a, steps), AncestralSampler(b, steps))


def test_corrector_levels_as_inference_data(tmp_path):
    dist = _product()
    with ps.mcmc.corrector(kernel="mala", num_steps=3, sites=False) as corr:
        ps.run("x", dist.process, num_particles=200)
    idata = ps.mcmc.level_diagnostics(corr)
    stats = idata.sample_stats
    assert stats["accept_rate"].shape == (1, 10) and stats["step_size"].shape == (1, 10)
    levels = [r["level"] for r in corr.history]
    assert levels == sorted(levels, reverse=True) and list(stats["level"].values) == pytest.approx(levels)
    assert list(stats["accept_rate"].values[0]) == pytest.approx([r["accept_rate"] for r in corr.history])
    assert "smc" not in idata.groups()
    fig = ps.mcmc.plot_level_diagnostics(idata, title="MALA correctors")
    assert len(fig.axes) == 2
    fig.savefig(tmp_path / "levels.png")
    assert (tmp_path / "levels.png").stat().st_size > 0


def test_smc_with_moves_adds_the_ess_per_level(tmp_path):
    dist = _product()
    moves = ps.mcmc.Rejuvenation("hmc", num_steps=2, num_leapfrog=2, when="step")
    twist = dist.process.twist(moves=moves)
    res = ps.infer.smc(twist, 300, seed=0)
    lv = [twist.level(t) for t in range(len(res.ess_history))]
    idata = ps.mcmc.level_diagnostics(moves, res, smc_levels=lv)
    assert idata.smc["ess"].shape == (len(res.ess_history),)
    assert list(idata.smc["ess_frac"].values) == pytest.approx([e / 300 for e in res.ess_history])
    assert idata.smc.attrs["num_particles"] == 300 and list(idata.smc["level"].values) == pytest.approx(lv)
    assert idata.sample_stats["step_size"].shape == (1, len(moves.history))
    fig = ps.mcmc.plot_level_diagnostics(idata)
    assert len(fig.axes) == 3
    with pytest.raises(ValueError, match="smc_levels has 2 entries"):
        ps.mcmc.level_diagnostics(moves, res, smc_levels=[1.0, 0.5])
    with pytest.raises(ValueError, match="axes must hold 3 axes"):
        ps.mcmc.plot_level_diagnostics(idata, axes=fig.axes[:2])


def test_bad_histories():
    with pytest.raises(TypeError, match="source must be a CorrectorMessenger"):
        ps.mcmc.level_diagnostics(3)
    with pytest.raises(ValueError, match=r"history\[0\] must be a dict with keys"):
        ps.mcmc.level_diagnostics([{"level": 0.5}])
    with pytest.raises(TypeError, match="smc must be an SMC result"):
        ps.mcmc.level_diagnostics([], smc=object())
