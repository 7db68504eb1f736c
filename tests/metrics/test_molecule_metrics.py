"""Molecule metrics against hand-computed values and brute force."""

import itertools

import numpy as np
import pytest

pytest.importorskip("rdkit")

from pyro_sculpt.metrics import molecules as mm  # noqa: E402


def test_bins_validity_uniqueness():
    scores = {"qed": [0.2, 0.3, 0.8, np.nan], "sa": [0.9, 0.5, 0.85, 0.9]}
    high = mm.bin_shares(scores, mm.HIGH_BINS)
    assert high == {"qed": 0.5, "sa": 0.75, "all": 0.25}
    strict = mm.bin_shares(scores, mm.STRICT_BINS)
    assert strict == {"qed": 0.25, "sa": 0.75, "all": 0.25}
    assert mm.HIGH_BINS["mw"] == pytest.approx((300 - 500) / 700 + 1)  # 500 Da
    with pytest.raises(ValueError, match="thresholds has no value for \\['logp'\\]"):
        mm.bin_shares({"logp": [1.0]})
    with pytest.raises(ValueError, match="one value per sample"):
        mm.bin_shares({"qed": [1.0], "sa": [1.0, 2.0]})
    smiles = ["CCO", "OCC", "c1ccccc1", "C1CC", ""]
    assert mm.validity(smiles) == pytest.approx(3 / 5)
    assert mm.uniqueness(smiles) == pytest.approx(2 / 3)  # CCO and OCC are one molecule
    props = mm.molecule_properties(smiles)
    assert np.isnan(props["qed"][3]) and props["mw"][0] == 1.0
    with pytest.raises(ValueError, match="unknown names 'logp'"):
        mm.molecule_properties(smiles, ["logp"])


def test_diversity_and_emd_against_brute_force():
    a = ["CCO", "c1ccccc1", "CCN", "CC(=O)O"]
    b = ["CCO", "c1ccncc1", "CCCC"]
    sim = mm.tanimoto_similarity(a, a)
    assert np.allclose(np.diag(sim), 1.0)
    pairs = [1 - sim[i, j] for i, j in itertools.combinations(range(4), 2)]
    assert mm.diversity(a) == pytest.approx(np.mean(pairs))
    assert mm.earth_movers_distance(a, a) == pytest.approx(0.0, abs=1e-12)
    # equal sizes: the best of all permutations
    cost = 1 - mm.tanimoto_similarity(a[:3], b)
    best = min(np.mean([cost[i, p[i]] for i in range(3)]) for p in itertools.permutations(range(3)))
    assert mm.earth_movers_distance(a[:3], b) == pytest.approx(best, abs=1e-12)
    # unequal sizes (4 and 3): the same as equal sizes after repeating each sample (12 and 12)
    cost = 1 - mm.tanimoto_similarity(a * 3, b * 4)
    from scipy.optimize import linear_sum_assignment

    r, c = linear_sum_assignment(cost)
    assert mm.earth_movers_distance(a, b) == pytest.approx(cost[r, c].mean(), abs=1e-9)
    a2, b2 = ["CCO", "CCN", "CCC"], ["CCCO", "CCCN", "CCCC"]
    inverse = 1 / mm.tanimoto_similarity(a2, b2) - 1
    best = min(np.mean([inverse[i, p[i]] for i in range(3)]) for p in itertools.permutations(range(3)))
    assert mm.earth_movers_distance(a2, b2, ground="inverse") == pytest.approx(best, abs=1e-12)
    with pytest.raises(ValueError, match="ground cost is infinite"):
        mm.earth_movers_distance(["c1ccccc1"], ["CCCC"], ground="inverse")
    with pytest.raises(ValueError, match="ground must be"):
        mm.earth_movers_distance(a, b, ground="l2")
    with pytest.raises(ValueError, match="is not a valid molecule"):
        mm.earth_movers_distance(["C1CC"], b)
    with pytest.raises(ValueError, match="at least two molecules"):
        mm.diversity(["CC"])
