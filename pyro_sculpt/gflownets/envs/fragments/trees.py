"""Canonical forms of fragment trees, vectorised over a batch (pure torch, no RDKit).

A fragment tree has at most ``N`` nodes; node ``u`` holds a fragment and every bond joins a *site* (an attachment
point) of one node to a site of another. A tree is given by

- ``frag`` ``(B, N)``: the fragment id plus one of each node, 0 for an absent node;
- ``sites`` ``(B, N, N)``: ``sites[b, u, v]`` is the site of ``u`` bonded to ``v`` (0-based), -1 when ``u`` and
  ``v`` are not bonded.

Two trees are the same when a bijection of their nodes keeps fragments, bonds and the sites at both ends of every bond
(docs/molecules.md, "States"). Because each site holds at most one bond, a tree rooted at a node has no
non-trivial automorphism: every node is named by its *path key*, the sequence of sites left through on the way from
the root. The canonical form is the rooting whose list of ``(path key, fragment, arrival site)`` sorted by path key is
lexicographically smallest; the roots that tie with it are exactly the images of the root under the automorphisms
of the unrooted tree.

The canonical *rows* ``(B, N, 4)`` list the nodes in the order of their path keys from the canonical root (a
depth-first preorder that visits children in site order), each as ``[fragment + 1, parent position + 1, parent's
site + 1, own site + 1]``, zeros for the root's bond and for absent nodes.
"""

from __future__ import annotations

import torch

#: columns of a canonical row
FRAG, PARENT, PARENT_SITE, OWN_SITE = 0, 1, 2, 3
ROW = 4


def sites_from_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(frag, sites)`` of trees given as rows ``(B, N, 4)`` (canonical or not, parents before children)."""
    b, n, _ = rows.shape
    frag = rows[..., FRAG]
    parent = rows[..., PARENT] - 1
    sites = torch.full((b, n, n), -1, dtype=torch.long, device=rows.device)
    has = (parent >= 0) & (frag > 0)
    bi, ui = has.nonzero(as_tuple=True)
    pi = parent[bi, ui]
    sites[bi, ui, pi] = rows[bi, ui, OWN_SITE] - 1
    sites[bi, pi, ui] = rows[bi, ui, PARENT_SITE] - 1
    return frag, sites


def _next_hops(frag: torch.Tensor, sites: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dist, nxt)``: tree distances and the neighbour of ``r`` on the path to ``u`` (``u`` itself when r == u)."""
    b, n = frag.shape
    device = frag.device
    present = frag > 0
    adj = (sites >= 0).to(torch.float32)
    inf = n + 1
    eye = torch.eye(n, dtype=torch.bool, device=device)
    front = eye & present.unsqueeze(-1)
    dist = torch.where(front, 0, inf).to(torch.long)
    for d in range(1, n):
        front = (torch.bmm(adj, front.to(torch.float32)) > 0) & (dist == inf)
        if not bool(front.any()):
            break
        dist = torch.where(front, d, dist)
    # nxt[r, u] = the neighbour w of r with dist(w, u) = dist(r, u) - 1 (unique in a tree): the sum of the indices of
    # the neighbours of r closer to u, one batched matrix product over w
    closer = (dist.unsqueeze(1) < dist.unsqueeze(2)).to(torch.float32)  # (B, r, w, u): dist(w, u) < dist(r, u)
    weighted = adj * torch.arange(n, device=device, dtype=torch.float32)  # adj[r, w] * w
    nxt = torch.einsum("brw,brwu->bru", weighted, closer).round().to(torch.long)
    ar = torch.arange(n, device=device)
    nxt = torch.where(dist == 0, ar.expand(b, n, n), nxt)
    return dist, nxt


def canonical_rows(
    frag: torch.Tensor, sites: torch.Tensor, num_sites: int, with_orbits: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Canonical rows of a batch of trees (see the module's docstring): ``(rows (B, N, 4), orbit_min (B, N) or
    None)``, the arguments as in :func:`canonical_positions`; ``with_orbits`` also returns, for each node ``i`` of the
    input, the smallest node that an automorphism of the tree maps it to (meaningful when the input is canonical)."""
    rows, orbits, _ = _canonical(frag, sites, num_sites, with_orbits)
    return rows, orbits


def canonical_positions(frag: torch.Tensor, sites: torch.Tensor, num_sites: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows (B, N, 4), positions (B, N))``: the canonical rows of the trees ``frag`` ``(B, N)`` (fragment ids plus
    one, 0: absent), ``sites`` ``(B, N, N)`` (bond sites, -1: none), and the canonical position of every input node
    (where a node that several positions could take, by a symmetry of the tree, goes in the chosen rooting)."""
    rows, _, positions = _canonical(frag, sites, num_sites)
    return rows, positions


def _canonical(
    frag: torch.Tensor, sites: torch.Tensor, num_sites: int, with_orbits: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Canonical rows of a batch of trees (see the module's docstring), and where each node goes.

    :param frag: ``(B, N)`` fragment ids plus one (0: absent node).
    :param sites: ``(B, N, N)`` bond sites (-1: no bond); the present nodes must form one tree.
    :param num_sites: an upper bound on the number of sites of a fragment.
    :param with_orbits: also return, for each node ``i`` of the input, the smallest node that an automorphism of
        the tree maps it to (meaningful when the input is itself canonical).
    :returns: ``(rows (B, N, 4), orbit_min (B, N) or None, positions (B, N))``: ``positions[b, u]`` is the
        canonical position of input node ``u``.
    """
    b, n = frag.shape
    device = frag.device
    if b == 0:
        empty = torch.zeros((0, n, ROW), dtype=torch.long, device=device)
        none = torch.zeros((0, n), dtype=torch.long, device=device)
        return empty, (none if with_orbits else None), none
    present = frag > 0
    dist, nxt = _next_hops(frag, sites)
    site_to = sites.gather(2, nxt)  # site_to[r, u]: site of r on the path from r to u (-1 when r == u)
    base = num_sites + 1
    ar = torch.arange(n, device=device)
    # path keys by doubling: after round k, key[r, u] holds the sites left through on the first 2^k steps from r to
    # u as base-(num_sites + 1) digits from the most significant of n - 1, and hop[r, u] the node reached then
    top = base ** max(n - 2, 0)
    key = torch.where(dist > 0, (site_to + 1) * top, 0)
    hop = nxt
    steps = 1
    while steps < n - 1:
        key = key + key.gather(1, hop) // base**steps
        hop = hop.gather(1, hop)
        steps *= 2
    big = base ** (n - 1)
    both = present.unsqueeze(1) & present.unsqueeze(2)
    key = torch.where(both, key, big)
    arrive = torch.where(dist > 0, site_to.transpose(1, 2) + 1, 0)  # arrive[r, u]: site of u towards r, plus one
    order = torch.argsort(key, dim=-1, stable=True)  # (B, r, position) -> node
    key_s = key.gather(2, order)
    frag_s = frag.unsqueeze(1).expand(b, n, n).gather(2, order)
    arr_s = arrive.gather(2, order)
    best = _lexicographic_min(present, key_s, frag_s, arr_s, big)
    root = best.to(torch.uint8).argmax(1)  # (B,)
    perm = order[torch.arange(b, device=device), root]  # position -> node
    inv = torch.argsort(perm, dim=1)  # node -> position
    u = perm
    par = nxt[torch.arange(b, device=device).unsqueeze(1), u, root.unsqueeze(1)]  # neighbour of u towards the root
    is_root = u == root.unsqueeze(1)
    pres = present.gather(1, u)
    bidx = torch.arange(b, device=device).unsqueeze(1)
    rows = torch.stack(
        [
            frag.gather(1, u),
            torch.where(is_root, 0, inv.gather(1, par) + 1),
            torch.where(is_root, 0, sites[bidx, par, u] + 1),
            torch.where(is_root, 0, sites[bidx, u, par] + 1),
        ],
        -1,
    )
    rows = torch.where(pres.unsqueeze(-1), rows, 0)
    orbits = None
    if with_orbits:
        # automorphic roots r map position i to node order[r, i]
        cand = torch.where(best.unsqueeze(-1), order, n)
        orbits = cand.amin(1)
        orbits = torch.where(present, orbits, ar.expand(b, n))
    return rows, orbits, inv


def _lexicographic_min(
    present: torch.Tensor, key_s: torch.Tensor, frag_s: torch.Tensor, arr_s: torch.Tensor, big: int
) -> torch.Tensor:
    """``(B, N)``: the roots ``r`` (among ``present``) whose sequence ``(key_s[r, i], frag_s[r, i], arr_s[r, i])``
    for ``i = 0..N-1`` is lexicographically smallest.

    The triple of a position is packed in one integer (mixed radix), and as many positions as fit in 62 bits in one
    word, so the comparison runs over a few words rather than ``3 N`` columns.
    """
    b, n = present.shape
    frag_radix = int(frag_s.max()) + 1 if frag_s.numel() else 1
    arr_radix = int(arr_s.max()) + 1 if arr_s.numel() else 1
    radix = (big + 1) * frag_radix * arr_radix
    per_word = max(1, 62 // max(1, (radix - 1).bit_length()))
    if radix >= 2**62:  # a position does not fit in one word: compare the three columns one by one
        cols = torch.stack([key_s, frag_s, arr_s], -1).reshape(b, n, 3 * n)
        sentinel = max(big, frag_radix, arr_radix) + 1
    else:
        v = (key_s * frag_radix + frag_s) * arr_radix + arr_s
        words = -(-n // per_word)
        v = torch.nn.functional.pad(v, (0, words * per_word - n))
        weights = radix ** torch.arange(per_word - 1, -1, -1, device=v.device)
        cols = (v.reshape(b, n, words, per_word) * weights).sum(-1)
        sentinel = 2**63 - 1
    best = present.clone()
    for t in range(cols.shape[-1]):
        c = cols[..., t]
        m = torch.where(best, c, sentinel).amin(1, keepdim=True)
        best = best & (c == m)
    return best


def degrees(sites: torch.Tensor) -> torch.Tensor:
    """Number of bonds of each node, ``(B, N)``."""
    return (sites >= 0).sum(-1)


def used_sites(sites: torch.Tensor, num_sites: int) -> torch.Tensor:
    """``(B, N, num_sites)`` boolean: whether each site of each node holds a bond."""
    onehot = torch.nn.functional.one_hot(sites + 1, num_sites + 1)[..., 1:]
    return onehot.sum(2) > 0


def pack_rows(rows: torch.Tensor, num_fragments: int, num_sites: int) -> torch.Tensor:
    """``(K, W)`` int64 words that identify trees given as rows ``(K, N, 4)``: equal words iff equal rows.

    Each node's row is one mixed-radix number (fragment, parent, both sites), and as many nodes as fit in 62 bits
    share a word, so that comparing and sorting trees costs a few integer columns instead of ``4 N``.
    """
    k, n, _ = rows.shape
    radices = (num_fragments + 1, n + 1, num_sites + 2, num_sites + 2)
    node_radix = 1
    for r in radices:
        node_radix *= r
    per_word = max(1, 62 // (node_radix - 1).bit_length())
    v = torch.zeros((k, n), dtype=torch.long, device=rows.device)
    for c, r in enumerate(radices):
        v = v * r + rows[..., c]
    words = -(-n // per_word)
    v = torch.nn.functional.pad(v, (0, words * per_word - n))
    weights = node_radix ** torch.arange(per_word - 1, -1, -1, device=rows.device)
    return (v.reshape(k, words, per_word) * weights).sum(-1)


def unique_inverse(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Group equal rows of an integer matrix ``(K, W)`` (a lexicographic sort by stable sorts over the columns).

    :returns: ``(inverse (K,), first (U,))``: row ``i`` is in group ``inverse[i]`` (groups numbered in the
        lexicographic order of their rows) and ``first[g]`` is the first row of group ``g``.
    """
    k = keys.shape[0]
    order = torch.arange(k, device=keys.device)
    for c in range(keys.shape[1] - 1, -1, -1):
        order = order[torch.argsort(keys[order, c], stable=True)]
    s = keys[order]
    new = torch.ones(k, dtype=torch.bool, device=keys.device)
    if k > 1:
        new[1:] = (s[1:] != s[:-1]).any(1)
    group = torch.cumsum(new.to(torch.long), 0) - 1
    inverse = torch.empty_like(group)
    inverse[order] = group
    first = order[new]  # stable sorts keep the first occurrence first in its group
    return inverse, first
