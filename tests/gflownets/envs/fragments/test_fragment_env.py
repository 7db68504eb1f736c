"""The fragment-tree environment against a brute-force model of trees (fragment_helpers), and its bad inputs."""

import json
from collections import defaultdict

import pytest
import torch

pytest.importorskip("rdkit")

import pyro_sculpt as ps  # noqa: E402
from pyro_sculpt.gflownets.envs.fragments import FragmentEnv, Vocabulary, default_vocabulary  # noqa: E402
from tests.gflownets.envs.fragments.fragment_helpers import (  # noqa: E402
    PAIR,
    TINY,
    all_trees,
    canon,
    children,
    decode_canon,
    leaves,
    remove,
    tree_from_rows,
)


def _random_states(env, batch, steps, seed=0):
    """States reached by uniformly random valid actions (never stopping early)."""
    g = torch.Generator().manual_seed(seed)
    s = env.initial_state().expand(batch, env.state_dim)
    for _ in range(steps):
        mask = env.forward_mask(s)
        mask[:, -1] = False
        moving = mask.any(-1)
        mask[~moving, -1] = True
        a = torch.multinomial(mask.double(), 1, generator=g).squeeze(-1)
        s = env.step(s, a)
    return s


def test_default_vocabulary_and_action_layout():
    vocab = default_vocabulary()
    assert len(vocab) == 72
    env = FragmentEnv()
    assert env.max_fragments == 9 and env.max_steps == 10 and env.state_dim == 36
    assert env.n_actions == 72 + 8 * env.num_sites * env.num_pairs + 1
    s0 = env.initial_state()
    mask = env.forward_mask(s0)
    assert mask[:72].all() and not mask[72:].any()  # the empty tree: only a first fragment (no stop)
    one = env.step(s0, torch.tensor(0))  # benzene
    assert env.to_smiles(one) == ["c1ccccc1"]
    m1 = env.forward_mask(one)
    assert m1[-1] and not m1[:72].any()
    assert env.encode(one).shape == (env.feature_dim,)


def test_random_trees_decode_to_valid_molecules_and_are_canonical():
    from rdkit import Chem

    env = FragmentEnv()
    s = _random_states(env, 48, 9, seed=1)
    env.validate_states(s)
    assert (env.num_fragments_of(s) == 9).all()
    for smi, mol in zip(env.to_smiles(s), env.to_mols(s)):
        assert Chem.MolFromSmiles(smi) is not None and Chem.SanitizeMol(mol) == Chem.SanitizeFlags.SANITIZE_NONE
    # the molecule's size is the sum of its fragments'
    rows = s.view(-1, 9, 4)[..., 0] - 1
    sizes = torch.tensor([f.mol.GetNumAtoms() for f in env.vocabulary])
    assert [m.GetNumAtoms() for m in env.to_mols(s)] == sizes[rows].sum(-1).tolist()
    # stop and invalid actions leave states unchanged; step broadcasts an unbatched state
    assert torch.equal(env.step(s, torch.full((48,), env.stop_action)), s)
    assert env.step(env.initial_state(), torch.tensor([0, 1])).shape == (2, env.state_dim)


@pytest.mark.parametrize("vocab, n", [(PAIR, 4), (TINY, 3), (TINY, 4)])
def test_states_children_and_parent_counts_match_brute_force(vocab, n):
    env = FragmentEnv(vocab, max_fragments=n)
    nsites = env.vocabulary.num_sites
    expected = set().union(*all_trees(nsites, n))
    states = env.all_states()
    forms = [canon(*tree_from_rows(r)) for r in states.view(-1, n, 4).tolist()]
    assert len(set(forms)) == len(forms) == len(expected)  # one state per tree, every tree a state
    assert set(forms) == expected
    assert torch.equal(env.index(states), torch.arange(len(states)))
    # parents: the distinct trees left by removing one leaf
    brute = []
    for c in forms:
        frag, bonds = decode_canon(c)
        if len(frag) <= 1:
            brute.append(len(frag))
        else:
            brute.append(len({canon(*remove(frag, bonds, leaf)) for leaf in leaves(frag, bonds)}))
    assert env.num_parents(states).tolist() == brute
    assert max(brute) >= 2 and any(b < len(leaves(*decode_canon(c))) for b, c in zip(brute, forms) if len(c) > 1)
    # children: every distinct child exactly once, by one valid action
    parent, action, kids = env.valid_children(states)
    got = defaultdict(list)
    for p, k in zip(parent.tolist(), kids.view(-1, n, 4).tolist()):
        got[p].append(canon(*tree_from_rows(k)))
    for i, c in enumerate(forms):
        assert len(got[i]) == len(set(got[i]))
        assert set(got[i]) == children(*decode_canon(c), nsites, n)
    # so each state has one incoming edge per parent
    indeg = torch.bincount(env.index(kids), minlength=len(states))
    assert torch.equal(indeg[1:], env.num_parents(states)[1:])
    dense, mask = env.children(states[:5])
    assert dense.shape == (5, env.n_actions, env.state_dim) and mask.shape == (5, env.n_actions)


def test_symmetric_additions_are_masked_once():
    env = FragmentEnv(PAIR, max_fragments=3)
    s = env.step(env.initial_state(), torch.tensor(0))  # CC: sites 0 and 1 of one node
    # C(0)-(1)C and C(1)-(0)C are the same tree: one of the two actions is masked
    a01 = env.num_fragments + (0 * env.num_sites + 0) * env.num_pairs + 1  # site 0 of node 0, pair (CC, site 1)
    a10 = env.num_fragments + (0 * env.num_sites + 1) * env.num_pairs + 0  # site 1 of node 0, pair (CC, site 0)
    assert torch.equal(env.step(s, torch.tensor(a01)), env.step(s, torch.tensor(a10)))
    mask = env.forward_mask(s)
    assert bool(mask[a01]) != bool(mask[a10])


@pytest.mark.parametrize("vocab, n", [(TINY, 4), (None, 6)])
def test_children_log_backward_agrees_with_the_canonical_children(monkeypatch, vocab, n):
    """The backward probabilities of every valid child, counted from the parent's leaves (children built, not
    canonicalised, only where two removal keys meet: 24 of the 522 children of the tiny vocabulary), equal those of
    the canonical children, on every tree of a symmetric vocabulary and on random trees of every size of the default
    one; and no child is built by ``step``."""
    env = FragmentEnv(vocab, max_fragments=n)
    if vocab is None:
        states = torch.cat([_random_states(env, 40, k, seed=k) for k in range(n)])
    else:
        states = env.all_states()
    parent, action, kids = env.valid_children(states)
    expected = env.log_backward(kids)
    assert (expected < 0).any() and (expected == 0).any()

    def built(*args, **kwargs):
        raise AssertionError("children_log_backward built canonical children")

    monkeypatch.setattr(FragmentEnv, "step", built)
    monkeypatch.setattr(FragmentEnv, "_add_leaf", built)  # (the batch's mask is remembered from valid_children)
    p2, a2, log_pb = env.children_log_backward(states)
    assert torch.equal(p2, parent) and torch.equal(a2, action)
    assert torch.equal(log_pb, expected)
    env.children_chunk = 7  # in chunks of states: the same list
    assert all(torch.equal(u, v) for u, v in zip(env.children_log_backward(states), (parent, action, expected)))


def test_config_round_trip_and_registry():
    env = FragmentEnv(TINY, max_fragments=3)
    again = ps.gflownets.env_from_config(json.loads(json.dumps(env.config())))
    assert again.same_as(env) and again.n_actions == env.n_actions
    assert not FragmentEnv(PAIR, max_fragments=3).same_as(env)
    assert isinstance(ps.envs.FragmentEnv(), ps.gflownets.DiscreteEnv)


def test_from_smiles_finds_the_tree():
    env = FragmentEnv()
    s = _random_states(env, 4, 2, seed=3)
    for smi in env.to_smiles(s):
        found = env.from_smiles(smi)
        assert env.to_smiles(found) == [smi]
    with pytest.raises(ValueError, match="RDKit cannot parse"):
        env.from_smiles("C1CC")
    tiny = FragmentEnv(TINY, max_fragments=3)
    with pytest.raises(ValueError, match="is not a molecule of FragmentEnv"):
        tiny.from_smiles("c1ccccc1")
    with pytest.raises(ValueError, match="is not a molecule of FragmentEnv"):
        tiny.from_smiles("CCCCCCCC")  # four CC fragments: more than max_fragments


def test_states_not_of_the_environment_are_rejected():
    env = FragmentEnv(TINY, max_fragments=3)
    s = env.all_states()[-1].clone()
    env.validate_states(s)
    with pytest.raises(ValueError, match="must have shape"):
        env.validate_states(s[:-1])
    for dtype in (torch.double, torch.int32, torch.uint8):  # int32 / uint8 used to fail inside (index_put, masks)
        with pytest.raises(ValueError, match=r"int64 \(torch.long\) tensor"):
            env.validate_states(s.to(dtype))
    for decode in (env.to_smiles, env.to_mols):  # decoding checks its input as validate_states does
        with pytest.raises(ValueError, match=r"not states of FragmentEnv.*fragment ids"):
            decode(torch.tensor([9] + [0] * 11))
    bad = s.clone()
    bad[0] = 9
    with pytest.raises(ValueError, match=r"not states of FragmentEnv.*fragment ids"):
        env.validate_states(bad)
    # CC with F at its site 0; the same tree written from the F end is not canonical
    add_f = env.num_fragments + (0 * env.num_sites + 0) * env.num_pairs + 4  # pair 4 = (F, site 0)
    two = env.step(env.step(env.initial_state(), torch.tensor(0)), torch.tensor(add_f))
    assert two.tolist() == [1, 0, 0, 0, 3, 1, 1, 1, 0, 0, 0, 0]
    env.validate_states(two)
    with pytest.raises(ValueError, match="canonical form"):
        env.validate_states(torch.tensor([3, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="a site its fragment does not have"):
        env.validate_states(torch.tensor([1, 0, 0, 0, 3, 1, 3, 1, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="not states of FragmentEnv"):
        env.index(torch.full((12,), 1))
    with pytest.raises(NotImplementedError, match="not enumerable"):
        FragmentEnv().all_states()


def test_vocabulary_files_and_their_errors(tmp_path):
    text = tmp_path / "v.txt"
    text.write_text("# two fragments\nC#N 0   # nitrile\nc1ccccc1 0 3\n")
    env = FragmentEnv(str(text), max_fragments=2)
    assert [f.smiles for f in env.vocabulary] == ["C#N", "c1ccccc1"] and env.vocabulary[0].name == "nitrile"
    js = tmp_path / "v.json"
    js.write_text(json.dumps([{"smiles": "CC", "sites": [0, 1]}, {"smiles": "O", "sites": [0]}]))
    assert FragmentEnv(js).vocabulary.num_sites == [2, 1]
    assert Vocabulary(default_vocabulary().to_list()).to_list() == default_vocabulary().to_list()

    def bad(content, match, suffix=".txt"):
        p = tmp_path / f"bad{suffix}"
        p.write_text(content)
        with pytest.raises(ValueError, match=match):
            FragmentEnv(p)

    bad("C1CC 0\n", "RDKit cannot parse the SMILES 'C1CC'")
    bad("C.C 0 1\n", "a fragment must be one connected molecule, got 2 disconnected parts")
    bad("CC 0 2\n", "attachment site 2 is out of range: the fragment has 2 heavy atoms")
    bad("CC 0\nC-C 1\n", r"duplicate fragment: it is the same molecule \(CC\) as .*\[0\]")
    bad("F 0 0\n", r"atom 0 \(F\) is used by 2 sites but has only 1 hydrogens")
    bad("CC\n", "line 1: expected 'SMILES site site ...'")
    bad("CC 0 x\n", "line 1: sites must be integer atom indices")
    bad("\n# nothing\n", "must hold at least one fragment")
    bad("{", "is not valid JSON", ".json")
    bad('[{"smiles": "CC"}]', "must have the keys 'smiles' and 'sites'", ".json")
    with pytest.raises(ValueError, match="does not exist"):
        FragmentEnv(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="vocabulary must be None"):
        FragmentEnv(vocabulary=3)
    with pytest.raises(ValueError, match="max_fragments must be an integer >= 1"):
        FragmentEnv(TINY, max_fragments=0)
