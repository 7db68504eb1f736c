"""The vectorised pieces of the fragment environment's hot path: packed tree keys, grouping by sorts, the doubling
path keys of the canonical form, and the remembered masks."""

import pytest
import torch

pytest.importorskip("rdkit")

from pyro_sculpt.gflownets.envs.fragments import FragmentEnv  # noqa: E402
from pyro_sculpt.gflownets.envs.fragments.trees import (  # noqa: E402
    canonical_rows,
    pack_rows,
    sites_from_rows,
    unique_inverse,
)
from tests.gflownets.envs.fragments.fragment_helpers import canon, tree_from_rows  # noqa: E402

ENV = FragmentEnv(max_fragments=6)


def _walk(env, batch, steps, seed):
    g = torch.Generator().manual_seed(seed)
    s = env.initial_state().expand(batch, env.state_dim)
    out = [s]
    for _ in range(steps):
        mask = env.forward_mask(s)
        mask[:, -1] = ~mask[:, :-1].any(-1)
        s = env.step(s, torch.multinomial(mask.double(), 1, generator=g).squeeze(-1))
        out.append(s)
    return torch.cat(out)


def test_packed_keys_group_trees_exactly_like_torch_unique():
    states = _walk(ENV, 48, 5, seed=1)
    states = torch.cat([states, states[torch.randperm(len(states))[:100]]])  # many repeats
    rows = states.reshape(-1, ENV.max_fragments, 4)
    keys = pack_rows(rows, ENV.num_fragments, ENV.num_sites)
    assert keys.shape[1] < rows.shape[1] * 4  # packed: fewer columns than the rows
    inverse, first = unique_inverse(keys)
    ref, ref_inverse = torch.unique(states, dim=0, return_inverse=True)
    assert len(first) == len(ref)
    assert torch.equal(states[first][inverse], states)  # every row is its group's first row
    # the same partition as torch.unique (groups are numbered in the same lexicographic order of different keys)
    assert torch.equal(ref_inverse[first][inverse], ref_inverse)
    uniq, inv = ENV.unique(states)
    assert torch.equal(uniq[inv], states) and len(uniq) == len(ref)


def test_canonical_rows_of_relabelled_trees_agree_with_the_brute_force_canonical_form():
    """Shuffle the nodes of random trees (the root moves too): the canonical rows do not change and decode to the
    brute-force model's canonical form."""
    states = _walk(ENV, 64, 5, seed=2)[-64:]
    rows = states.reshape(-1, ENV.max_fragments, 4)
    frag, sites = sites_from_rows(rows)
    g = torch.Generator().manual_seed(3)
    perm = torch.stack([torch.randperm(ENV.max_fragments, generator=g) for _ in range(len(rows))])
    frag_p = frag.gather(1, perm)
    sites_p = sites.gather(1, perm.unsqueeze(-1).expand_as(sites)).gather(2, perm.unsqueeze(1).expand_as(sites))
    again, _ = canonical_rows(frag_p, sites_p, ENV.num_sites)
    assert torch.equal(again, rows)
    for r in rows.tolist()[:16]:
        f, b = tree_from_rows(r)
        f2, b2 = tree_from_rows(canonical_rows(*sites_from_rows(torch.tensor([r])), ENV.num_sites)[0][0].tolist())
        assert canon(f, b) == canon(f2, b2)


def test_masks_are_remembered_by_value_and_never_shared():
    env = FragmentEnv(max_fragments=4)
    s = _walk(env, 16, 2, seed=4)[-16:].clone()
    m1 = env.forward_mask(s)
    fresh = env._forward_mask(s)
    assert torch.equal(m1, fresh)
    m1[:] = False  # the caller's copy: the remembered mask is unchanged
    assert torch.equal(env.forward_mask(s), fresh)
    s2 = s.clone()
    s2[0] = 0  # an in-place change of the batch: a new mask
    s.copy_(s2)
    assert torch.equal(env.forward_mask(s), env._forward_mask(s2))
    assert env.forward_mask(s)[0, : env.num_fragments].all()  # the empty tree places a first fragment


def test_inverse_cdf_sampling_follows_the_probabilities_and_never_draws_a_masked_action():
    from pyro_sculpt.processes import FastCategorical, sample_inverse_cdf

    p = torch.tensor([0.2, 0.0, 0.5, 0.0, 0.3], dtype=torch.float64)
    torch.manual_seed(0)
    x = sample_inverse_cdf(p.expand(200_000, 5))
    freq = torch.bincount(x, minlength=5).double() / len(x)
    assert freq[1] == 0 and freq[3] == 0 and (freq - p).abs().max() < 0.005
    d = FastCategorical(logits=torch.tensor([[0.0, float("-inf")], [float("-inf"), 0.0]])).expand((3, 2))
    a = d.sample((7,))
    assert a.shape == (7, 3, 2) and (a == torch.tensor([0, 1])).all()


def test_candidate_additions_cover_every_duplicate_child():
    """Dropping the candidate filter (every addition canonicalised) gives the same masks on random trees of the
    default vocabulary."""
    env = FragmentEnv(max_fragments=6)
    states = _walk(env, 64, 5, seed=5)
    fast = env._forward_mask(states)
    full = FragmentEnv(max_fragments=6)
    full._candidates = lambda frag, sites: torch.ones(
        (len(frag), full.max_fragments, full.num_sites, full.num_pairs), dtype=torch.bool
    )
    assert torch.equal(full._forward_mask(states), fast)
