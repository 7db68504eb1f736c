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
    assert len(fig.axes) == 2 and fig.axes[1].get_legend() is None  # no divergent move to mark
    fig.savefig(tmp_path / "levels.png")
    assert (tmp_path / "levels.png").stat().st_size > 0


def test_divergent_corrector_moves_are_counted_per_level():
    # ULA far above its stability limit, not adapted: every level's moves diverge, and the records say so
    dist = _product()
    with (
        pytest.warns(ps.mcmc.DivergenceWarning),
        ps.mcmc.corrector(kernel="ula", num_steps=3, step_size=50.0, adapt=False, sites=False) as corr,
    ):
        ps.run("x", dist.process, num_particles=200)
    counts = [r["num_divergent"] for r in corr.history]
    assert len(counts) == 10 and all(500 < c <= 3 * 200 for c in counts)  # nearly every move of every level
    idata = ps.mcmc.level_diagnostics(corr)
    assert idata.sample_stats["num_divergent"].values[0].tolist() == counts
    fig = ps.mcmc.plot_level_diagnostics(idata)
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == ["divergent moves"]
    with ps.mcmc.corrector(kernel="mala", num_steps=3, sites=False) as calm:
        ps.run("x", dist.process, num_particles=200)
    assert [r["num_divergent"] for r in calm.history] == [0] * 10
    # records without the count (written by hand, or by older versions) are still read
    old = [{k: v for k, v in r.items() if k != "num_divergent"} for r in calm.history]
    assert "num_divergent" not in ps.mcmc.level_diagnostics(old).sample_stats


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
