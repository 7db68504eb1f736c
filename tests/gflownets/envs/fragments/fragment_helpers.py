"""An independent, plain-Python model of fragment trees: the brute-force oracle of the fragment tests."""

TINY = [("CC", [0, 1]), ("N", [0, 0]), ("F", [0])]  # a symmetric linker, a two-site atom and a cap
PAIR = [("CC", [0, 1]), ("N", [0, 0])]


def tree_from_rows(rows):
    """``(frag, bonds)`` of a state's rows: frag[u] (0-based), bonds as {(u, site_u, v, site_v)} both ways."""
    frag, bonds = [], set()
    for u, r in enumerate(rows):
        if r[0] == 0:
            break
        frag.append(r[0] - 1)
        if r[1] > 0:
            p = r[1] - 1
            bonds.add((u, r[3] - 1, p, r[2] - 1))
            bonds.add((p, r[2] - 1, u, r[3] - 1))
    return frag, bonds


def canon(frag, bonds):
    """Canonical form: the smallest rooted encoding over all roots (nested tuples, children in site order)."""
    nodes = [u for u in range(len(frag)) if frag[u] is not None]
    if not nodes:
        return ()
    adj = {u: [] for u in nodes}
    for u, su, v, sv in bonds:
        adj[u].append((su, v, sv))

    def enc(u, came_from, arrival):
        kids = sorted((su, enc(v, u, sv)) for su, v, sv in adj[u] if v != came_from)
        return (frag[u], arrival, tuple(kids))

    return min(enc(r, None, -1) for r in nodes)


def leaves(frag, bonds):
    deg = {u: 0 for u in range(len(frag)) if frag[u] is not None}
    for u, _, _, _ in bonds:
        deg[u] += 1
    return [u for u, d in deg.items() if d == 1]


def remove(frag, bonds, leaf):
    f = list(frag)
    f[leaf] = None
    return f, {b for b in bonds if b[0] != leaf and b[2] != leaf}


def children(frag, bonds, nsites, max_fragments):
    """Canonical forms of every tree made by one addition (all slots, all fragments, all their sites)."""
    out = set()
    present = [u for u in range(len(frag)) if frag[u] is not None]
    if not present:
        return {canon([f], set()) for f in range(len(nsites))}
    if len(present) >= max_fragments:
        return out
    used = {(u, su) for u, su, _, _ in bonds}
    new = len(frag)
    for u in present:
        for k in range(nsites[frag[u]]):
            if (u, k) in used:
                continue
            for f in range(len(nsites)):
                for j in range(nsites[f]):
                    b = set(bonds) | {(u, k, new, j), (new, j, u, k)}
                    out.add(canon(list(frag) + [f], b))
    return out


def decode_canon(c):
    """A (frag, bonds) tree from a canonical form."""
    frag, bonds = [], set()

    def walk(node, parent, parent_site):
        f, arrival, kids = node
        u = len(frag)
        frag.append(f)
        if parent is not None:
            bonds.add((u, arrival, parent, parent_site))
            bonds.add((parent, parent_site, u, arrival))
        for site, kid in kids:
            walk(kid, u, site)

    if c:
        walk(c, None, None)
    return frag, bonds


def all_trees(nsites, max_fragments):
    """Every canonical tree, by brute force, level by level."""
    levels = [{()}]
    for _ in range(max_fragments):
        nxt = set()
        for c in levels[-1]:
            nxt |= children(*decode_canon(c), nsites, max_fragments)
        levels.append(nxt)
    return levels


__all__ = ["PAIR", "TINY", "all_trees", "canon", "children", "decode_canon", "leaves", "remove", "tree_from_rows"]
