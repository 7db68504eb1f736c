"""The fragment-tree environment: molecules built from a vocabulary of fragments (Bengio et al. 2021)."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch.distributions import constraints

from pyro_sculpt.gflownets.env import DiscreteEnv
from pyro_sculpt.gflownets.envs.fragments import decode
from pyro_sculpt.gflownets.envs.fragments.trees import (
    FRAG,
    OWN_SITE,
    PARENT,
    PARENT_SITE,
    ROW,
    canonical_positions,
    canonical_rows,
    degrees,
    pack_rows,
    sites_from_rows,
    unique_inverse,
    used_sites,
)
from pyro_sculpt.gflownets.envs.fragments.vocabulary import Vocabulary, make_vocabulary
from pyro_sculpt.gflownets.registry import register_env, registered_env_name
from pyro_sculpt.utils import check_positive_int


@register_env
class FragmentEnv(DiscreteEnv):
    """Molecules as trees of at most ``max_fragments`` fragments joined by single bonds at attachment sites.

    **States** are canonical fragment trees (docs/molecules.md, "States"): two build orders that make the same tree
    (the same fragments, bonds and sites at both ends of every bond, up to renaming the nodes) reach the same state,
    so the terminal distribution of a GFlowNet is a distribution over trees. A state is the integer vector of the
    tree's canonical rows (:mod:`~pyro_sculpt.gflownets.envs.fragments.trees`), ``4 * max_fragments`` entries, the
    empty tree being all zeros. A molecule with symmetric sites (the two sites of a ``CH2``, the ortho positions of
    a benzene ring) can be the molecule of several trees; rewards are functions of the molecule.

    **Actions** (``n_actions`` is fixed by the vocabulary and ``max_fragments``):

    - ``f < F``: place fragment ``f`` as the first node (only at the empty tree, where it is the only choice);
    - ``F + (i * S + k) * T + t``: bond site ``k`` of the node at canonical position ``i`` to site ``j`` of a new
      fragment ``f``, where ``(f, j)`` is the ``t``-th of the ``T`` (fragment, site) pairs of the vocabulary and
      ``S`` the largest number of sites of a fragment;
    - the last action stops (not at the empty tree).

    The forward mask allows an addition when the site is free and the tree has fewer than ``max_fragments``
    nodes (every site is one hydrogen of its atom, so the valence always allows it), and keeps ONE action for each
    distinct child: actions that make the same tree (at sites related by a symmetry of the tree, or by copying a
    leaf) are masked but the one with the smallest index. Hence the parents of a tree are exactly the distinct trees
    left by removing one of its leaves, :meth:`num_parents` counts them exactly, and the backward policy is uniform
    over them.

    :param vocabulary: ``None`` (the default vocabulary of 72 fragments), a
        :class:`~pyro_sculpt.gflownets.envs.fragments.Vocabulary`, a vocabulary file, or a list of
        ``(smiles, sites)``.
    :param max_fragments: the largest number of fragments of a molecule (>= 1).
    :param max_enumerable_states: the environment is enumerable (exact dynamic programming) when a bound on its
        number of states is at most this.

    Example::

        env = FragmentEnv(max_fragments=4)
        x = ps.GFlowNet(env, reward="qed").as_distribution().sample((8,))
        env.to_smiles(x)
    """

    def __init__(self, vocabulary=None, max_fragments: int = 9, max_enumerable_states: int = 200_000):
        self.vocabulary: Vocabulary = make_vocabulary(vocabulary)
        self.max_fragments = check_positive_int("max_fragments", max_fragments, 1)
        self.max_enumerable_states = check_positive_int("max_enumerable_states", max_enumerable_states, 1)
        nsites = self.vocabulary.num_sites
        self.num_fragments = len(nsites)
        self.num_sites = max(nsites)
        pairs = [(f, j) for f, n in enumerate(nsites) for j in range(n)]
        self.num_pairs = len(pairs)
        n = self.max_fragments
        if (self.num_sites + 1) ** (n - 1) >= 2**62:
            raise ValueError(
                f"max_fragments={n} is too large for fragments with {self.num_sites} sites (path keys overflow)"
            )
        self.num_add_actions = (n - 1) * self.num_sites * self.num_pairs
        self.n_actions = self.num_fragments + self.num_add_actions + 1
        self.state_dim = ROW * n
        self.max_steps = n + 1
        self.feature_dim = n * (self.num_fragments + 1 + n + 2 * (self.num_sites + 1)) + n + 1
        pair_index = torch.full((self.num_fragments, self.num_sites), -1, dtype=torch.long)
        for t, (f, j) in enumerate(pairs):
            pair_index[f, j] = t
        self._cpu = {
            "nsites": torch.tensor(nsites, dtype=torch.long),
            "pair_f": torch.tensor([p[0] for p in pairs], dtype=torch.long),
            "pair_j": torch.tensor([p[1] for p in pairs], dtype=torch.long),
            "pair_index": pair_index,
        }
        self._on: dict = {}
        self._smiles_cache: dict = {}

    def __repr__(self) -> str:
        return f"FragmentEnv({len(self.vocabulary)} fragments, max_fragments={self.max_fragments})"

    def config(self) -> dict:
        return {
            "type": registered_env_name(type(self)),
            "vocabulary": self.vocabulary.to_list(),
            "max_fragments": self.max_fragments,
            "max_enumerable_states": self.max_enumerable_states,
        }

    def _t(self, name: str, device) -> torch.Tensor:
        device = torch.device(device)
        key = (name, device)
        if key not in self._on:
            self._on[key] = self._cpu[name].to(device)
        return self._on[key]

    @property
    def support(self) -> constraints.Constraint:
        return constraints.independent(constraints.nonnegative_integer, 1)

    def initial_state(self, device=None) -> torch.Tensor:
        return torch.zeros(self.state_dim, dtype=torch.long, device=device)

    # ----- structure -----

    def _rows(self, flat: torch.Tensor) -> torch.Tensor:
        return flat.reshape(-1, self.max_fragments, ROW)

    def _decode_add(self, actions: torch.Tensor):
        s, t_count = self.num_sites, self.num_pairs
        idx = (actions - self.num_fragments).clamp(0, max(self.num_add_actions - 1, 0))
        i = idx // (s * t_count)
        k = (idx // t_count) % s
        t = idx % t_count
        return i, k, t

    def _free_slots(self, frag: torch.Tensor, sites: torch.Tensor) -> torch.Tensor:
        """``(B, N, S)``: node present, site in range for its fragment, not bonded, and the tree not full."""
        nsites = self._t("nsites", frag.device)
        present = frag > 0
        n = present.sum(1)
        in_range = torch.arange(self.num_sites, device=frag.device) < nsites[(frag - 1).clamp(min=0)].unsqueeze(-1)
        free = in_range & ~used_sites(sites, self.num_sites) & present.unsqueeze(-1)
        return free & (n < self.max_fragments).view(-1, 1, 1)

    @staticmethod
    def _append_leaf(rows: torch.Tensor, i, k, f, j) -> torch.Tensor:
        """``rows`` ``(K, N, 4)`` with fragment ``f`` bonded by its site ``j`` to site ``k`` of node ``i``, as a new
        last row (the same tree as :meth:`_add_leaf`'s, not in canonical order)."""
        new = rows.clone()
        pos = (rows[..., FRAG] > 0).sum(1)
        ar = torch.arange(len(rows), device=rows.device)
        new[ar, pos] = torch.stack([f + 1, i + 1, k + 1, j + 1], -1)
        return new

    def _add_leaf(self, rows: torch.Tensor, i, k, f, j) -> torch.Tensor:
        """Canonical rows of ``rows`` (canonical, ``(K, N, 4)``) with fragment ``f`` bonded by its site ``j`` to
        site ``k`` of node ``i``."""
        frag, sites = sites_from_rows(self._append_leaf(rows, i, k, f, j))
        return canonical_rows(frag, sites, self.num_sites)[0]

    def _candidates(self, frag: torch.Tensor, sites: torch.Tensor) -> torch.Tensor:
        """``(B, N, S, T)``: the additions (pair ``t`` at site ``k`` of node ``i``) that may make the same tree as an
        addition at a slot outside their symmetry orbit.

        If adding leaf ``l`` at slot ``a`` and at slot ``b`` (not related by a symmetry of the tree) make the same
        tree, the isomorphism maps the new leaf of the first to an old leaf ``m`` of the tree, with the same
        (fragment, site) pair, hence the node of ``a`` to ``m``'s neighbour and the site of ``a`` to the site where
        ``m`` is bonded: ``a`` copies the attachment of a leaf (docs/molecules.md, "Masks"). For a one-node tree the
        new leaf may be the root's copy instead (the same fragment).
        """
        b, n = frag.shape
        device = frag.device
        pair_f, pair_index = self._t("pair_f", device), self._t("pair_index", device)
        s_count, t_count = self.num_sites, self.num_pairs
        nodes = (frag > 0).sum(1)
        leaf = (degrees(sites) == 1) & (frag > 0)
        nb, leaf_site, nb_site = _leaf_bonds(sites)
        pair = pair_index[(frag - 1).clamp(min=0), leaf_site]  # the leaf's (fragment, site) pair
        ok = leaf & (pair >= 0) & (nb_site >= 0)
        code = torch.where(ok, nb_site.clamp(min=0) * t_count + pair.clamp(min=0), s_count * t_count)
        attach = torch.zeros((b, n, s_count * t_count + 1), dtype=torch.float32, device=device)
        attach.scatter_(2, code.unsqueeze(-1), 1.0)
        nb_frag = frag.gather(1, nb)
        same = ((frag.unsqueeze(2) == nb_frag.unsqueeze(1)) & ok.unsqueeze(1)).to(torch.float32)  # (B, i, m)
        cand = torch.bmm(same, attach)[..., : s_count * t_count] > 0
        cand = cand.reshape(b, n, s_count, t_count)
        single = (nodes == 1).unsqueeze(-1) & (pair_f.unsqueeze(0) == (frag[:, :1] - 1))  # (B, T)
        return cand | single[:, None, None, :]

    #: how many recent (states, mask) pairs :meth:`forward_mask` keeps: the policies of several base models, the
    #: composition and the sampler ask for the mask of the same batch in one step
    mask_cache_size: int = 4

    def forward_mask(self, states: torch.Tensor) -> torch.Tensor:
        """The valid actions of ``states`` (see the class docstring); the masks of the last few batches are
        remembered (compared by value), so asking again for the same batch costs one comparison."""
        cache = self.__dict__.setdefault("_mask_cache", [])
        for i, (old, mask) in enumerate(cache):
            if old.shape == states.shape and old.device == states.device and torch.equal(old, states):
                if i:
                    cache.insert(0, cache.pop(i))
                return mask.clone()
        mask = self._forward_mask(states)
        cache.insert(0, (states.detach().clone(), mask.clone()))
        del cache[self.mask_cache_size :]
        return mask

    def unique(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Distinct states of a batch (sorted by packed integer keys, not :func:`torch.unique` over rows)."""
        flat = states.reshape(-1, self.state_dim)
        inverse, first = unique_inverse(pack_rows(self._rows(flat), self.num_fragments, self.num_sites))
        return flat[first], inverse.reshape(states.shape[:-1])

    def _forward_mask(self, states: torch.Tensor) -> torch.Tensor:
        shape = states.shape[:-1]
        flat = states.reshape(-1, self.state_dim)
        b, big_n, s, t_count, nf = flat.shape[0], self.max_fragments, self.num_sites, self.num_pairs, self.num_fragments
        rows = self._rows(flat)
        frag, sites = sites_from_rows(rows)
        n = (frag > 0).sum(1)
        mask = torch.zeros((b, self.n_actions), dtype=torch.bool, device=flat.device)
        mask[:, :nf] = (n == 0).unsqueeze(-1)
        mask[:, -1] = n > 0
        if big_n > 1 and b > 0:
            slots = self._free_slots(frag, sites)
            _, orbit = canonical_rows(frag, sites, s, with_orbits=True)
            slots = slots & (orbit == torch.arange(big_n, device=flat.device)).unsqueeze(-1)
            slots = slots[:, : big_n - 1]
            add = slots.unsqueeze(-1).expand(b, big_n - 1, s, t_count).clone()
            cand = add & self._candidates(frag, sites)[:, : big_n - 1]
            bi, ii, ki, ti = cand.nonzero(as_tuple=True)
            if len(bi):
                pf, pj = self._t("pair_f", flat.device), self._t("pair_j", flat.device)
                kids = self._add_leaf(rows[bi], ii, ki, pf[ti], pj[ti])
                action = (ii * s + ki) * t_count + ti
                key = torch.cat([bi.unsqueeze(-1), pack_rows(kids, nf, s)], 1)
                inv, _ = unique_inverse(key)
                first = torch.full((int(inv.max()) + 1,), self.num_add_actions, dtype=torch.long, device=flat.device)
                first.scatter_reduce_(0, inv, action, reduce="amin")
                drop = action != first[inv]
                add[bi[drop], ii[drop], ki[drop], ti[drop]] = False
            mask[:, nf : nf + self.num_add_actions] = add.reshape(b, -1)
        return mask.reshape(shape + (self.n_actions,))

    def step(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        batch = torch.broadcast_shapes(states.shape[:-1], actions.shape)
        flat = states.expand(batch + (self.state_dim,)).reshape(-1, self.state_dim)
        a = actions.expand(batch).reshape(-1)
        rows = self._rows(flat)
        frag, sites = sites_from_rows(rows)
        n = (frag > 0).sum(1)
        out = rows.clone()
        first = (a >= 0) & (a < self.num_fragments) & (n == 0)
        out[first, 0, FRAG] = a[first] + 1
        is_add = (a >= self.num_fragments) & (a < self.num_fragments + self.num_add_actions)
        i, k, t = self._decode_add(a)
        slots = self._free_slots(frag, sites)
        ar = torch.arange(len(a), device=a.device)
        ok = is_add & (i < self.max_fragments - 1) & slots[ar, i.clamp(max=self.max_fragments - 1), k]
        if bool(ok.any()):
            pf, pj = self._t("pair_f", a.device), self._t("pair_j", a.device)
            out[ok] = self._add_leaf(rows[ok], i[ok], k[ok], pf[t[ok]], pj[t[ok]])
        return out.reshape(batch + (self.state_dim,))

    def valid_children(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The children of the valid additions of a flat batch of states, built for those only (sparse)."""
        mask = self.forward_mask(states)
        mask[..., -1] = False
        parent, action = mask.nonzero(as_tuple=True)
        return parent, action, self.step(states[parent], action)

    def children_log_backward(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:math:`\\log P_B` of the valid children of a flat batch of states (see
        :meth:`DiscreteEnv.children_log_backward`), counted from the parent without building the children.

        A child :math:`c` adds leaf :math:`L` at node :math:`i` of its parent :math:`p`: its leaves are :math:`L`
        and those of :math:`p` but :math:`i`, each with the removal key of :meth:`num_parents` it has in :math:`p`.
        Where no two of them share a key, every leaf gives a parent of its own and :math:`|\\mathrm{Pa}(c)|` is their
        number (a child of a one-fragment tree: 1 if both fragments are the same, else 2); only the few children where
        two keys meet are built (their rows appended, not canonicalised) and counted by :meth:`num_parents`. On the
        children of 6-fragment molecules (millions per SMC step) this replaces building every child. States are
        taken :attr:`children_chunk` at a time (bounds the memory of the per-child tensors).
        """
        mask = self.forward_mask(states)
        mask[..., -1] = False
        step = self.children_chunk
        if states.shape[0] <= step:
            return self._children_log_backward(states, mask)
        parts = [
            self._children_log_backward(states[i : i + step], mask[i : i + step])
            for i in range(0, states.shape[0], step)
        ]
        parent = torch.cat([p + i * step for i, (p, _, _) in enumerate(parts)])
        return parent, torch.cat([a for _, a, _ in parts]), torch.cat([lp for _, _, lp in parts])

    #: states whose children :meth:`children_log_backward` counts at a time
    children_chunk: int = 2048

    def _children_log_backward(
        self, states: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        parent, action = mask.nonzero(as_tuple=True)
        log_pb = torch.zeros(len(parent), dtype=torch.get_default_dtype(), device=states.device)
        add = torch.nonzero(action >= self.num_fragments).flatten()
        if not len(add):
            return parent, action, log_pb
        device = states.device
        rows = self._rows(states)
        frag, sites = sites_from_rows(rows)
        n = (frag > 0).sum(1)
        leaf = (degrees(sites) == 1) & (frag > 0)
        key = self._removal_keys(frag, sites)
        big_n = self.max_fragments
        meet = (key.unsqueeze(2) == key.unsqueeze(1)) & leaf.unsqueeze(2) & leaf.unsqueeze(1)
        meet &= ~torch.eye(big_n, dtype=torch.bool, device=device)
        # two leaves of p other than node i share a key: all such ordered pairs less those that involve i
        meet_without = (meet.sum((1, 2)).unsqueeze(1) - 2 * meet.sum(2)) > 0  # (B, N)
        b = parent[add]
        i, k, t = self._decode_add(action[add])
        f, j = self._t("pair_f", device)[t], self._t("pair_j", device)[t]
        f_i = frag[b, i] - 1
        key_new = self._removal_key(f, j, f_i, k)
        others = leaf[b] & (torch.arange(big_n, device=device) != i.unsqueeze(1))  # p's leaves that stay leaves
        hit = ((key[b] == key_new.unsqueeze(1)) & others).any(1) | meet_without[b, i]
        count = others.sum(1) + 1
        count = torch.where(n[b] == 1, 1 + (f != f_i).long(), count)
        slow = torch.nonzero(hit & (n[b] > 1)).flatten()
        if len(slow):
            kids = self._append_leaf(rows[b[slow]], i[slow], k[slow], f[slow], j[slow])
            count[slow] = self.num_parents(kids.reshape(-1, self.state_dim))
        log_pb[add] = -torch.log(count.to(log_pb.dtype))
        return parent, action, log_pb

    def children(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = states.shape[:-1]
        flat = states.reshape(-1, self.state_dim)
        parent, action, kids = self.valid_children(flat)
        dense = flat.unsqueeze(1).expand(flat.shape[0], self.n_actions, self.state_dim).clone()
        dense[parent, action] = kids
        return dense.reshape(shape + (self.n_actions, self.state_dim)), self.forward_mask(states)

    def num_fragments_of(self, states: torch.Tensor) -> torch.Tensor:
        """Number of fragments of each state, shape ``(...)``."""
        return (states.reshape(states.shape[:-1] + (self.max_fragments, ROW))[..., FRAG] > 0).sum(-1)

    #: trees canonicalised at a time by :meth:`num_parents` (bounds its memory: the children of a batch of molecules
    #: are millions)
    num_parents_chunk: int = 16_384

    def num_parents(self, states: torch.Tensor) -> torch.Tensor:
        """The number of distinct trees left by removing one leaf (1 for a one-fragment tree, 0 for the empty one).

        Removing a leaf of fragment :math:`f`, bonded by its site :math:`j` to site :math:`k` of a node of fragment
        :math:`g`, takes :math:`f` out of the tree's fragments and the pairs :math:`(f, j)` and :math:`(g, k)` out of
        its bonded (fragment, site) pairs; two removals can leave the same tree only if they take out the same of both.
        So only leaves whose key :math:`(f, \\{(f, j), (g, k)\\})` another leaf shares are compared, by the canonical
        form of what is left; every other leaf gives a parent of its own.
        """
        shape = states.shape[:-1]
        flat = states.reshape(-1, self.state_dim)
        step = self.num_parents_chunk
        if flat.shape[0] > step:
            return torch.cat([self._num_parents(flat[i : i + step]) for i in range(0, flat.shape[0], step)]).reshape(
                shape
            )
        return self._num_parents(flat).reshape(shape)

    def _num_parents(self, flat: torch.Tensor) -> torch.Tensor:
        b = flat.shape[0]
        frag, sites = sites_from_rows(self._rows(flat))
        n = (frag > 0).sum(1)
        leaf = (degrees(sites) == 1) & (frag > 0)
        # leaves whose key (the docstring) another leaf of the tree also has: only their removals can give one tree
        key = self._removal_keys(frag, sites)
        shared = leaf & (((key.unsqueeze(2) == key.unsqueeze(1)) & leaf.unsqueeze(1)).sum(-1) > 1)
        count = (leaf & ~shared).sum(1)
        bi, li = shared.nonzero(as_tuple=True)
        if len(bi):
            rows2, _ = canonical_rows(*_without_leaves(frag, sites, bi, li), self.num_sites)
            key = torch.cat([bi.unsqueeze(-1), pack_rows(rows2, self.num_fragments, self.num_sites)], 1)
            _, first = unique_inverse(key)
            count = count + torch.bincount(bi[first], minlength=b)
        return torch.where(n == 1, 1, count)

    def _removal_keys(self, frag: torch.Tensor, sites: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` integer key of removing each node as a leaf (meaningful for leaves): its fragment and the
        unordered pair of the (fragment, site) pairs at the two ends of its bond (see :meth:`num_parents`)."""
        nb, own, at_nb = _leaf_bonds(sites)
        g = frag.gather(1, nb).sub(1).clamp(min=0)
        return self._removal_key((frag - 1).clamp(min=0), own, g, at_nb.clamp(min=0))

    def _removal_key(self, f: torch.Tensor, j: torch.Tensor, g: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The removal key of a leaf of fragment ``f`` (0-based) bonded by its site ``j`` to site ``k`` of a node of
        fragment ``g``: ``f`` and the unordered pair of ``(f, j)`` and ``(g, k)``, packed into one integer."""
        pairs = self.num_fragments * self.num_sites
        a, c = f * self.num_sites + j, g * self.num_sites + k
        return (f * pairs + torch.minimum(a, c)) * pairs + torch.maximum(a, c)

    def parents(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The distinct trees left by removing one leaf (the empty tree for a one-fragment tree), each with the one
        action of its forward mask that rebuilds the state (see :meth:`DiscreteEnv.parents`)."""
        flat = states.reshape(-1, self.state_dim)
        device = flat.device
        frag, sites = sites_from_rows(self._rows(flat))
        n = (frag > 0).sum(1)
        bi, li = ((degrees(sites) == 1) & (frag > 0) & (n > 1).unsqueeze(1)).nonzero(as_tuple=True)
        index = [torch.nonzero(n == 1).flatten()]
        rows = [torch.zeros((len(index[0]), self.state_dim), dtype=flat.dtype, device=device)]
        actions = [frag[index[0], 0] - 1]
        if len(bi):
            rows2, pos = canonical_positions(*_without_leaves(frag, sites, bi, li), self.num_sites)
            key = torch.cat([bi.unsqueeze(-1), pack_rows(rows2, self.num_fragments, self.num_sites)], 1)
            _, first = unique_inverse(key)
            owner, leaf, par = bi[first], li[first], rows2[first].reshape(len(first), self.state_dim)
            # the addition that undoes the removal: the leaf's (fragment, own site) at its neighbour's site, the
            # neighbour at its canonical position in the parent
            s_leaf = sites[owner, leaf]  # (P, N): the leaf's site towards each node (one bond)
            nb = (s_leaf >= 0).to(torch.uint8).argmax(-1)
            ar = torch.arange(len(owner), device=device)
            t = self._t("pair_index", device)[frag[owner, leaf] - 1, s_leaf[ar, nb]]
            k = sites[owner, nb, leaf]
            i = pos[first, nb]
            action = self.num_fragments + (i * self.num_sites + k) * self.num_pairs + t
            # the mask can only drop the undoing action where the child repeats a fragment: a symmetry of the parent
            # (its node not the representative of its orbit) needs two nodes of one fragment, and an addition is
            # compared with others only where it copies the attachment of a leaf of its fragment (_candidates); so
            # only those parents' masks are computed
            present = frag > 0
            repeats = (((frag.unsqueeze(2) == frag.unsqueeze(1)) & present.unsqueeze(1)).sum(-1) > 1) & present
            check = torch.nonzero(repeats.any(-1)[owner]).flatten()
            valid = torch.ones(len(owner), dtype=torch.bool, device=device)
            if len(check):
                valid[check] = self.forward_mask(par[check]).gather(1, action[check].unsqueeze(-1)).squeeze(-1)
            if not bool(valid.all()):  # a symmetric addition whose representative the mask keeps instead
                redo = torch.nonzero(~valid).flatten()
                action[redo] = self._rebuilding_actions(par[redo], frag[owner[redo], leaf[redo]] - 1, flat[owner[redo]])
            index.append(owner)
            rows.append(par)
            actions.append(action)
        index_, rows_, actions_ = torch.cat(index), torch.cat(rows), torch.cat(actions)
        order = torch.argsort(index_, stable=True)
        return index_[order], rows_[order], actions_[order]

    def _rebuilding_actions(self, parents: torch.Tensor, leaf_frag: torch.Tensor, kids: torch.Tensor) -> torch.Tensor:
        """For each parent ``(P, state_dim)``, the one valid action that adds a leaf of fragment ``leaf_frag`` ``(P,)``
        and makes ``kids[p]``: the children of the valid additions of that fragment only, built and compared."""
        nf, t_count = self.num_fragments, self.num_pairs
        mask = self.forward_mask(parents)[:, nf : nf + self.num_add_actions]
        pair_f = self._t("pair_f", parents.device)
        frag_of_action = pair_f[torch.arange(self.num_add_actions, device=parents.device) % t_count]
        src, col = (mask & (frag_of_action.unsqueeze(0) == leaf_frag.unsqueeze(1))).nonzero(as_tuple=True)
        action = col + nf
        hit = (self.step(parents[src], action) == kids[src]).all(-1)
        if int(hit.sum()) != len(parents) or torch.bincount(src[hit], minlength=len(parents)).ne(1).any():
            raise RuntimeError("FragmentEnv.parents: a parent without exactly one valid action to its child")
        return action[hit][torch.argsort(src[hit])]

    def policy_network(
        self, hidden: int = 64, layers: int = 3, conditional: bool = False, outputs: int = 1
    ) -> torch.nn.Module:
        """A :class:`~pyro_sculpt.gflownets.envs.fragments.policy.FragmentTreePolicy` of this environment (message
        passing over the tree; ``GFlowNet(env, policy="env")`` builds it; ``outputs > 1`` values per action for a
        per-action classifier head)."""
        from pyro_sculpt.gflownets.envs.fragments.policy import FragmentTreePolicy

        return FragmentTreePolicy(self, hidden=hidden, layers=layers, conditional=conditional, outputs=outputs)

    def encode(self, states: torch.Tensor) -> torch.Tensor:
        """One-hot features of every row (fragment, parent position, both sites) and of the number of fragments."""
        rows = states.reshape(states.shape[:-1] + (self.max_fragments, ROW))
        n = self.max_fragments
        parts = [
            F.one_hot(rows[..., FRAG], self.num_fragments + 1),
            F.one_hot(rows[..., PARENT], n),
            F.one_hot(rows[..., PARENT_SITE], self.num_sites + 1),
            F.one_hot(rows[..., OWN_SITE], self.num_sites + 1),
        ]
        nodes = torch.cat(parts, -1).flatten(-2)
        count = F.one_hot((rows[..., FRAG] > 0).sum(-1), n + 1)
        return torch.cat([nodes, count], -1).to(torch.get_default_dtype())

    def validate_states(self, states: torch.Tensor, name: str = "states") -> None:
        """Raise a :class:`ValueError` naming ``name`` unless every row is a canonical tree of this environment."""
        super().validate_states(states, name)
        if states.dtype != torch.long:
            raise ValueError(
                f"{name} must be an int64 (torch.long) tensor, as step builds them, got dtype {states.dtype}"
            )
        flat = states.reshape(-1, self.state_dim)
        if flat.shape[0] == 0:
            return
        rows = self._rows(flat)
        frag = rows[..., FRAG]
        nsites = self._t("nsites", flat.device)
        problem = None
        if (rows < 0).any() or (frag > self.num_fragments).any():
            problem = f"fragment ids must lie in [0, {self.num_fragments}] and no entry may be negative"
        else:
            present = frag > 0
            pos = torch.arange(self.max_fragments, device=flat.device)
            ns = nsites[(frag - 1).clamp(min=0)]
            parent = rows[..., PARENT]
            par_ns = nsites[(frag.gather(1, (parent - 1).clamp(min=0)) - 1).clamp(min=0)]
            nonroot = present & (pos > 0)
            if (present[:, 1:] & ~present[:, :-1]).any():
                problem = "the fragments must fill the first rows (absent rows last)"
            elif (rows[~present] != 0).any() or (rows[:, 0, 1:] != 0).any():
                problem = "absent rows and the root's bond columns must be zero"
            elif (
                (nonroot & ((parent < 1) | (parent > pos))).any()
                or (nonroot & ((rows[..., OWN_SITE] < 1) | (rows[..., OWN_SITE] > ns))).any()
                or (nonroot & ((rows[..., PARENT_SITE] < 1) | (rows[..., PARENT_SITE] > par_ns))).any()
            ):
                problem = "a bond names a parent after its child or a site its fragment does not have"
            else:
                f, sites = sites_from_rows(rows)
                onehot = F.one_hot(sites + 1, self.num_sites + 1)[..., 1:]
                if (onehot.sum(2) > 1).any():
                    problem = "a site holds two bonds"
                elif not torch.equal(canonical_rows(f, sites, self.num_sites)[0], rows):
                    problem = "the rows are not in canonical form (build states with step)"
        if problem is not None:
            raise ValueError(f"{name} are not states of {self!r}: {problem}")

    # ----- molecules -----

    def to_mols(self, states: torch.Tensor) -> list:
        """RDKit molecules of a batch of states (flattened to a list; ``None`` for the empty tree).

        :raises ValueError: naming ``states`` for rows that are not states of this environment."""
        self.validate_states(states)
        flat = states.reshape(-1, self.state_dim).cpu()
        return [decode.tree_to_mol(self.vocabulary, row) for row in flat.view(-1, self.max_fragments, ROW).tolist()]

    def to_smiles(self, states: torch.Tensor) -> list[str]:
        """Canonical SMILES of a batch of states (flattened to a list; ``""`` for the empty tree), cached by state.

        :raises ValueError: naming ``states`` for rows that are not states of this environment (checked for the rows
            not in the cache)."""
        if not isinstance(states, torch.Tensor):
            raise ValueError(f"states must be a tensor of shape (..., {self.state_dim}), got {type(states).__name__}")
        flat = states.reshape(-1, self.state_dim).cpu()
        rows = flat.tolist()
        out = []
        cache = self._smiles_cache
        new = [k for k, row in enumerate(rows) if tuple(row) not in cache]
        if new:
            self.validate_states(flat[new])
        for row in rows:
            key = tuple(row)
            smi = cache.get(key)
            if smi is None:
                smi = decode.mol_to_smiles(decode.tree_to_mol(self.vocabulary, _chunks(row)))
                if len(cache) > 1_000_000:
                    cache.clear()
                cache[key] = smi
            out.append(smi)
        return out

    def from_smiles(self, smiles: str, device=None) -> torch.Tensor:
        """A state whose molecule is ``smiles`` (a search over trees, for small molecules and tests).

        :raises ValueError: for a SMILES that RDKit cannot parse, or that no tree of this environment builds.
        """
        return decode.search_tree(self, smiles, device)

    # ----- enumeration -----

    def _state_bound(self) -> float:
        total, level = 1.0, float(self.num_fragments)
        for m in range(1, self.max_fragments + 1):
            total += level
            level *= m * self.num_sites * self.num_pairs
        return total

    @property
    def is_enumerable(self) -> bool:
        return self._state_bound() <= self.max_enumerable_states

    def _enumeration(self, device) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        device = torch.device(device) if device is not None else torch.device("cpu")
        cache = self.__dict__.setdefault("_enum_cache", {})
        if device not in cache:
            if not self.is_enumerable:
                raise NotImplementedError(
                    f"{self!r} is not enumerable (more than max_enumerable_states={self.max_enumerable_states} "
                    "states may exist)"
                )
            level = self.initial_state(device).unsqueeze(0)
            out = [level]
            for _ in range(self.max_fragments):
                kids = self.valid_children(level)[2]
                if len(kids) == 0:
                    break
                level = torch.unique(kids, dim=0)
                out.append(level)
            states = torch.cat(out)
            radix = max(self.num_fragments + 1, self.max_fragments, self.num_sites + 1)
            if self.state_dim * math.log2(radix) < 62:
                weights = radix ** torch.arange(self.state_dim - 1, -1, -1, device=device)
                keys = (states * weights).sum(-1)
                sorted_keys, order = torch.sort(keys)
                cache[device] = (states, weights, (sorted_keys, order))
            else:
                cache[device] = (states, None, None)
        return cache[device]

    def all_states(self, device=None) -> torch.Tensor:
        """Every canonical tree, level by level (parents before children)."""
        return self._enumeration(device)[0]

    @property
    def num_states(self) -> int:
        return int(self.all_states().shape[0])

    def levels(self, states: torch.Tensor) -> torch.Tensor:
        return self.num_fragments_of(states)

    def index(self, states: torch.Tensor) -> torch.Tensor:
        """Position of each state in :meth:`all_states`.

        :raises ValueError: for a row that is not a state of this environment.
        """
        all_states, weights, lookup = self._enumeration(states.device)
        flat = states.reshape(-1, self.state_dim)
        if lookup is not None:
            sorted_keys, order = lookup
            keys = (flat * weights).sum(-1)
            pos = torch.searchsorted(sorted_keys, keys).clamp(max=len(sorted_keys) - 1)
            idx = order[pos]
        else:
            both = torch.cat([all_states, flat])
            _, inv = torch.unique(both, dim=0, return_inverse=True)
            where = torch.full((int(inv.max()) + 1,), -1, dtype=torch.long, device=flat.device)
            where[inv[: len(all_states)]] = torch.arange(len(all_states), device=flat.device)
            idx = where[inv[len(all_states) :]].clamp(min=0)
        if not torch.equal(all_states[idx], flat):
            raise ValueError(f"states are not states of {self!r} (not canonical trees of its vocabulary)")
        return idx.reshape(states.shape[:-1])


def _leaf_bonds(sites: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(neighbour, own_site, neighbour_site)`` ``(B, N)`` of every node as a leaf (meaningful for nodes of one
    bond): the node it is bonded to, its site of that bond (0 for a node without bonds) and the neighbour's site."""
    b, n = sites.shape[:2]
    nb = (sites >= 0).to(torch.uint8).argmax(-1)
    own = sites.amax(-1).clamp(min=0)
    at_nb = sites[torch.arange(b, device=sites.device).unsqueeze(1), nb, torch.arange(n, device=sites.device)]
    return nb, own, at_nb


def _without_leaves(
    frag: torch.Tensor, sites: torch.Tensor, tree: torch.Tensor, leaf: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(frag, sites)`` of trees ``tree`` ``(K,)`` of a batch, each without its node ``leaf`` ``(K,)``."""
    f2, s2 = frag[tree].clone(), sites[tree].clone()
    ar = torch.arange(len(tree), device=frag.device)
    f2[ar, leaf] = 0
    s2[ar, leaf, :] = -1
    s2[ar, :, leaf] = -1
    return f2, s2


def _chunks(row: list[int]) -> list[list[int]]:
    return [row[i : i + ROW] for i in range(0, len(row), ROW)]
