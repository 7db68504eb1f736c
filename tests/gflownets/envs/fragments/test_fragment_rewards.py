"""Molecule rewards: values from RDKit, R^beta, the cache, and bad input."""

import math

import pytest
import torch

pytest.importorskip("rdkit")

import pyro_sculpt as ps  # noqa: E402
from pyro_sculpt.gflownets.envs.fragments import FragmentEnv  # noqa: E402
from pyro_sculpt.gflownets.envs.fragments import rewards as fr  # noqa: E402
from tests.gflownets.envs.fragments.fragment_helpers import TINY  # noqa: E402

ENV = FragmentEnv(TINY, max_fragments=3)


def test_rewards_are_rdkit_properties_raised_to_beta():
    from rdkit import Chem
    from rdkit.Chem import QED, Descriptors
    from rdkit.Contrib.SA_Score import sascorer

    states = ENV.all_states()[1:]
    smiles = ENV.to_smiles(states)
    mols = [Chem.MolFromSmiles(s) for s in smiles]
    expected = {
        "qed": [QED.qed(m) for m in mols],
        "sa": [(10 - sascorer.calculateScore(m)) / 9 for m in mols],
        "mw": [min(max((300 - Descriptors.MolWt(m)) / 700 + 1, 0), 1) for m in mols],
    }
    for name, values in expected.items():
        reward = ps.gflownets.get_reward(name, beta=3.0)
        got = reward.values(ENV, states)
        assert torch.allclose(got, torch.tensor(values, dtype=torch.float64), atol=1e-12)
        assert ((got >= 0) & (got <= 1)).all()
        log_r = reward(ENV, states)
        assert torch.allclose(log_r.double(), 3.0 * got.log(), atol=1e-5)
        assert torch.allclose(reward.log_reward(ENV, states, beta=0.5).double(), 0.5 * got.log(), atol=1e-5)
        assert ps.gflownets.reward_from_config(reward.config()).config() == reward.config()
    # the empty tree gets the floor, so that exact tables are finite
    empty = fr.MoleculeReward("qed", beta=2.0)(ENV, ENV.initial_state().unsqueeze(0))
    assert empty.item() == pytest.approx(2.0 * math.log(1e-6))


def test_values_are_cached_by_canonical_smiles(monkeypatch):
    states = ENV.all_states()[1:6]
    reward = fr.MoleculeReward("sa")
    first = reward.values(ENV, states)
    calls = []
    monkeypatch.setattr(fr, "molecule_property", lambda name, smi: calls.append(smi) or 0.0)
    assert torch.equal(reward.values(ENV, states), first)
    assert calls == []  # all from the cache
    assert fr.property_values("sa", ["C" * 30]) == [0.0] and calls == ["C" * 30]


def test_bad_reward_input():
    with pytest.raises(ValueError, match=r"unknown objective 'logp'; expected one of \['mw', 'qed', 'sa'\]"):
        fr.MoleculeReward("logp")
    with pytest.raises(ValueError, match="unknown reward name 'logp'"):
        ps.gflownets.get_reward("logp")
    for beta in (0, -1.0, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="beta must be a finite number > 0"):
            fr.MoleculeReward("qed", beta=beta)
    reward = fr.MoleculeReward("qed")
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        reward.log_reward(ENV, ENV.all_states()[1:3], beta=0.0)
    with pytest.raises(ValueError, match="min_reward must lie in"):
        fr.MoleculeReward("qed", min_reward=0.0)
    with pytest.raises(ValueError, match="molecule rewards need a FragmentEnv"):
        reward(ps.HyperGrid(2, 4), torch.zeros(1, 2, dtype=torch.long))
