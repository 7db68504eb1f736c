"""The ``pyro-sculpt gaussians`` experiment's classifier-free rows (composed process alone, and SMC), the product and
the negation, and Reduce, Reuse, Recycle's ring product, on tiny configurations."""

import math

import pytest
import torch

from pyro_sculpt.diffusion import GaussianMixtureOracle
from pyro_sculpt.experiments import gaussians
from pyro_sculpt.experiments.exact_targets import gaussian_mixture_product, operator_log_density, rrr_ring_product_task
from pyro_sculpt.metrics import grid_mode_weights
from pyro_sculpt.sculpting.log_operators import Base, Product


def tiny_schedule(**changes) -> gaussians.Schedule:
    settings = dict(
        particles=150, sampler_steps=6, chain_steps=4, quadrature_points=3, cf_sampler_steps=10,
        score=dict(steps=20, batch_size=64, lr=2e-3),
        classifier=dict(steps=4, batch_size=32, lr=1e-3, ramp=2, lr_final_factor=0.1, num_chains=32,
                        refresh_every=None, states_per_chain=2),
        classifier_net=dict(hidden=16, layers=2), compare_max_times=(), three_models=False,
        rrr_steps=16, rrr_plain=(200, 2), rrr_smc=((200, 0.9, 2),),
    )  # fmt: skip
    settings.update(changes)
    return gaussians.Schedule(**settings)


def test_every_operation_has_classifier_free_rows_in_every_variant():
    schedule = tiny_schedule(variants=("oracle", "trained", "energy"))
    oracles = gaussians.base_oracles()[:2]
    models = [gaussians.ScoreModel(2, o.schedule, seed=k) for k, o in enumerate(oracles)]  # untrained: shapes only
    energy = [gaussians.EnergyScoreModel(2, o.schedule, seed=k) for k, o in enumerate(oracles)]
    out = gaussians._run_setting("2 models", oracles, gaussians.TWO_MODEL_OPS, schedule, 0, False, lambda *a: None,
                                 models, energy)  # fmt: skip
    rows = out["rows"]
    assert set(out["classifier_seconds"]) == {"trained", "energy"}
    for variant in ("oracle", "trained", "energy"):
        for op, y in gaussians.TWO_MODEL_OPS:
            methods = {r["method"] for r in rows if r["variant"] == variant and r["op"] == op}
            expected = {gaussians.CF_GUIDED, gaussians.CF_SMC} | ({gaussians.CLASSIFIER} if y is not None else set())
            assert methods == expected, (variant, op, methods)
    for r in rows:
        assert 0.0 <= r["tv"] <= 1.0 + 1e-9 and r["tv_null"] > 0 and math.isfinite(r["energy"])
        assert r["sample_seconds"] > 0
        if r["method"] == gaussians.CF_SMC:
            assert 0.0 <= r["tv_weighted"] <= 1.0 + 1e-9 and 1.0 <= r["min_ess"] <= 150 and 1.0 <= r["ess"] <= 150
            assert r["resamples"] >= 0 and r["densities"] == ("exact" if r["variant"] == "oracle" else "tracked")
        assert (r["variant"], r["method"], r["op"]) in out["samples"]
    # every row of one operation is measured against one exact target
    hm = [r for r in rows if r["op"] == "harmonic mean"]
    assert len({tuple(r["target_weights"]) for r in hm}) == 1 and len({r["energy_null"] for r in hm}) == 1
    table = gaussians.markdown_table(
        {
            "machine": "test",
            "schedule": gaussians.asdict(schedule),
            "two_models": rows,
            "total_seconds": 1.0,
            "trained_seconds": 1.0,
        }  # fmt: skip
    )
    assert "classifier-free SMC" in table and "| oracle | negation |" in table and "| trained | product |" in table
    assert "| energy | y=" not in table and "| energy | contrast |" in table


def test_final_moves_add_a_row_per_classifier_free_operation():
    # --final-moves: the SMC run again with independence moves from the particles after it, for every variant with
    # classifier-free rows (exact leaf densities for the oracles, probability-flow densities for score networks)
    schedule = tiny_schedule(variants=("oracle", "trained"), final_moves=2, final_moves_ode_steps=4)
    oracles = gaussians.base_oracles()[:2]
    models = [gaussians.ScoreModel(2, o.schedule, seed=k) for k, o in enumerate(oracles)]  # untrained: shapes only
    ops = [("harmonic mean", (0, 1)), ("negation", None)]
    out = gaussians._run_setting("2 models", oracles, ops, schedule, 0, False, lambda *a: None, models)
    moved = [r for r in out["rows"] if r["method"] == gaussians.CF_MOVES]
    assert {(r["variant"], r["op"]) for r in moved} == {(v, op) for v in ("oracle", "trained") for op, _ in ops}
    for r in moved:
        assert r["moves"] == 2 and len(r["acceptance"]) == 2 and all(0.0 <= a <= 1.0 for a in r["acceptance"])
        assert 0.0 <= r["tv"] <= 1.0 + 1e-9 and r["densities"] == ("exact" if r["variant"] == "oracle" else "tracked")
        assert (r["variant"], gaussians.CF_MOVES, r["op"]) in out["samples"]
        assert "2 moves, acceptance" in gaussians._format({**r, "setting": "2 models"})
    results = {"machine": "test", "schedule": gaussians.asdict(schedule), "two_models": out["rows"],
               "total_seconds": 1.0, "trained_seconds": 1.0}  # fmt: skip
    table = gaussians.markdown_table(results)
    assert "SMC + moves (acceptance first -> last)" in table and " / moves) |" in table
    line = next(x for x in table.splitlines() if x.startswith("| trained | negation |"))
    assert line.count("|") == 11 and "->" in line  # one cell more than without moves
    no_moves = gaussians.markdown_table({**results, "two_models": [r for r in out["rows"] if r not in moved]})
    assert "SMC + moves" not in no_moves


def test_smc_beats_reverse_diffusion_alone_on_the_oracle_product():
    """The product P1 P2 of the lattice oracles: the summed scores alone put the wrong mass on its modes (mode TV
    about 20x its null at 10,000 particles, docs/diffusion.md); SMC's weights correct most of it. Measured (3,000
    particles, 50 steps, seeds 0, 1, 2): alone 0.117, 0.119, 0.113; SMC 0.032, 0.047, 0.010 (weighted)."""
    schedule = tiny_schedule(particles=3000, cf_sampler_steps=50)
    oracles = gaussians.base_oracles()[:2]
    plain, weighted, resampled = [], [], []
    for seed in (0, 1):
        (guided, smc_row), _ = gaussians.classifier_free_rows(oracles, oracles, "product", None, schedule, seed,
                                                              "exact")  # fmt: skip
        assert guided["tv"] > 6 * guided["tv_null"], guided["tv"]  # the proposal alone is far off
        plain.append(guided["tv"])
        weighted.append(smc_row["tv_weighted"])
        resampled.append(smc_row["tv"])
    assert sum(weighted) < sum(plain) / 2 and sum(resampled) < sum(plain) / 2, (plain, weighted, resampled)


def test_the_closed_form_product_of_gaussian_mixtures():
    ring, gauss, exact = rrr_ring_product_task()
    assert exact.num_components == 8
    x = torch.randn(200, 2, dtype=torch.float64)
    d = exact.log_prob(x) - ring.log_prob(x).double() - gauss.log_prob(x).double()
    assert torch.allclose(d, d[0].expand_as(d), atol=1e-9)  # the product, normalised
    f = operator_log_density([ring, gauss], Product(Base(0, 2), Base(1, 2)))
    on_grid = grid_mode_weights(f, [(-2, 2), (-2, 2)], ring.means, resolution=400)
    assert torch.allclose(on_grid, exact.weights.double(), atol=1e-4)
    # full covariances, three factors
    a = GaussianMixtureOracle(torch.tensor([[0.0, 0.0], [1.0, 1.0]]), [[[1.0, 0.3], [0.3, 0.5]], [[0.4, 0.0],
                              [0.0, 0.9]]], [0.3, 0.7])  # fmt: skip
    b = GaussianMixtureOracle(torch.tensor([[0.5, -0.5]]), stds=0.8)
    c = GaussianMixtureOracle(torch.tensor([[-1.0, 0.0], [0.0, 2.0], [1.0, 0.0]]), stds=[0.5, 1.0, 0.7])
    abc = gaussian_mixture_product(a, b, c)
    d = abc.log_prob(x) - sum(o.log_prob(x).double() for o in (a, b, c))
    assert abc.num_components == 6 and torch.allclose(d, d[0].expand_as(d), atol=1e-9)
    with pytest.raises(ValueError, match="at least two oracles"):
        gaussian_mixture_product(a)


def test_rrr_ring_product_rows():
    res = gaussians.rrr_product(tiny_schedule(rrr_plain=(300, 2), rrr_smc=((300, 0.9, 1), (300, 1.0, 1))), seed=0,
                                log=lambda *a: None)  # fmt: skip
    assert len(res["plain"]["tv"]) == 2 and [r["resample_threshold"] for r in res["smc"]] == [0.9, 1.0]
    assert abs(sum(res["target_weights"]) - 1) < 1e-3
    for r in [res["plain"], *res["smc"]]:
        assert 0 <= r["mean_tv"] <= 1 and r["tv_null"] > 0
    assert all(0 < r["mean_ess"] <= 300 for r in res["smc"])


def test_operator_of_each_operation():
    assert isinstance(gaussians.operator_of("product", None, 2), Product)
    with pytest.raises(ValueError, match="negation reads 2 bases"):
        gaussians.operator_of("negation", None, 3)
    with pytest.raises(ValueError, match="needs its observations y"):
        gaussians.operator_of("harmonic mean", None, 2)


@pytest.mark.slow
def test_final_moves_on_the_trained_models_probability_flow_beat_the_classifier_on_y333():
    """The trained 3-model conjunction y = (3, 3, 3), the command's score networks (seed 0): classifier-free SMC with
    tracked densities, then 10 independence moves from the particles' density estimate targeting the composition of
    the models' probability-flow densities (50 RK4 steps), refitted to the population. Measured (2-core AMD EPYC,
    2026-12-02, seeds 0 / 1): SMC alone 0.044 / 0.018 (mean over 20 seeds 0.051), with the moves 0.020 / 0.012
    (seeds 0-4: mean 0.014, null 0.012; a proposal fitted once: 0.016 / 0.007, mean 0.013); the trained
    classifier's guided DDIM rows average 0.025 over 20 seeds."""
    import pyro_sculpt as ps
    from pyro_sculpt.diffusion import EulerMaruyamaSampler
    from pyro_sculpt.sculpting import compose

    schedule = gaussians.Schedule()
    oracles = gaussians.base_oracles()
    models, _ = gaussians._train_bases(oracles, schedule, 0, False, lambda *a: None)
    operator = gaussians.operator_of("sculpt", (2, 2, 2), 3)
    ref = gaussians.Reference(operator_log_density(oracles, operator), 4000, 7)
    dist = compose([EulerMaruyamaSampler(m, 100) for m in models], operator)
    tvs = []
    for seed in (0, 1):
        moves = ps.mcmc.IndependenceRejuvenation(10, proposal="particles", bandwidth=0.5, ode_steps=50)
        res = ps.infer.smc(dist, 4000, seed=seed, resample_threshold=0.9, densities="tracked", moves=moves)
        assert min(moves.history) > 0.4, moves.history
        tvs.append(gaussians.mode_weight_tv(res.x.double(), ref.target, gaussians.LATTICE))
    assert sum(tvs) / 2 <= 0.02, tvs


@pytest.mark.slow
def test_final_moves_bring_the_trained_negation_to_the_models_own_target():
    """The trained negation P1 (P1 / P2): its target is set by P2's learned tails, so the composition of the trained
    models' probability-flow densities is itself 0.217 (mode TV) from the truth, the tracked densities' 0.41; SMC
    alone stays at 0.41, the composed process alone is at 0.305. Twenty independence moves from the particles,
    refitted to the other half of the population at every step, reach the probability-flow composition (measured on a
    2-core AMD EPYC, 2026-12-02, seed 0: 0.222, acceptance 0.73-0.84, 189 s); a proposal fitted once to the SMC
    population reached only 0.33 after 20 moves (acceptance falling to 0.23) and 0.30 after 100."""
    import pyro_sculpt as ps
    from pyro_sculpt.diffusion import EulerMaruyamaSampler
    from pyro_sculpt.sculpting import compose

    schedule = gaussians.Schedule()
    oracles = gaussians.base_oracles()[:2]
    models, _ = gaussians._train_bases(oracles, schedule, 0, False, lambda *a: None)
    operator = gaussians.operator_of("negation", None, 2)
    ref = gaussians.Reference(operator_log_density(oracles, operator), 4000, 7)
    dist = compose([EulerMaruyamaSampler(m, 100) for m in models], operator)
    moves = ps.mcmc.IndependenceRejuvenation(20, proposal="particles", bandwidth=0.5, ode_steps=50)
    res = ps.infer.smc(dist, 4000, seed=0, resample_threshold=0.9, densities="tracked", moves=moves)
    assert min(moves.history) > 0.6, moves.history
    tv = gaussians.mode_weight_tv(res.x.double(), ref.target, gaussians.LATTICE)
    assert tv <= 0.25, tv  # the probability-flow composition's own error is 0.217; guided 0.305, SMC alone 0.41


def test_bad_arguments_of_the_command_are_refused_before_any_work(tmp_path):
    for variants in (["foo"], [], ["oracle", "Trained"]):
        with pytest.raises(ValueError, match="variants must be among"):
            gaussians.main(tmp_path / "bad", variants=variants)
    for moves in (-1, 1.5, True):
        with pytest.raises(ValueError, match="final_moves must be an integer >= 0"):
            gaussians.main(tmp_path / "bad", final_moves=moves)
    assert not (tmp_path / "bad").exists()
