"""The grid experiment's rows: classifier-guided and classifier-free columns against the exact composition."""

import pyro_sculpt as ps
from pyro_sculpt.experiments import grid
from tests.conftest import exact_bases


def test_grid_rows_have_classifier_free_columns_at_the_floor():
    env = ps.HyperGrid(2, 8)
    bases = exact_bases(env, 2, seed=31)
    clf = ps.ExactClassifier(bases, num_observations=2)
    n = 20_000
    row, target, _ = grid._evaluate(bases, clf, (0, 0), None, n, seed=0)
    assert row["exact_l1"] < 1e-5  # exact classifier: the guided policy is exact
    assert row["cf_intermediate"] in ("plain", "distinct", "ramp")  # chosen by pilot runs: a repeated observation
    assert row["cf_smc_empirical_l1"] < 1.3 * row["floor_l1"] * n / row["cf_smc_min_ess"]
    assert row["cf_guided_empirical_l1"] > row["cf_smc_empirical_l1"]  # the weights correct the guided policy
    assert row["cf_smc_seconds"] > 0 and row["cf_guided_seconds"] > 0
    row["op"] = "contrast"
    table = grid.markdown_table({"two_models": [row]})
    assert "classifier-free SMC" in table and f"{row['cf_smc_empirical_l1']:.4f}" in table
