"""From fragment trees to RDKit molecules and SMILES, and back by search (RDKit calls, off the sampling hot path)."""

from __future__ import annotations

import torch

from pyro_sculpt.utils import require_rdkit


def tree_to_mol(vocabulary, rows):
    """The RDKit molecule of one tree given as rows ``[[frag + 1, parent + 1, parent site + 1, own site + 1], ...]``
    (``None`` for the empty tree).

    Each bond joins the site atoms of a node and its parent by a single bond and takes one hydrogen from each (an
    explicit hydrogen, as on ``[nH]``, when the atom has one).

    :raises ValueError: if RDKit cannot sanitise the result (a vocabulary that breaks its own site rules).
    """
    Chem = require_rdkit()
    rows = [list(r) for r in rows if r[0] > 0]
    if not rows:
        return None
    mol = Chem.RWMol()
    offsets = []
    for r in rows:
        frag = vocabulary[r[0] - 1].mol
        offsets.append(mol.GetNumAtoms())
        mol.InsertMol(frag)
    for u, r in enumerate(rows):
        if r[1] == 0:
            continue
        p = r[1] - 1
        a = offsets[u] + vocabulary[r[0] - 1].sites[r[3] - 1]
        b = offsets[p] + vocabulary[rows[p][0] - 1].sites[r[2] - 1]
        mol.AddBond(a, b, Chem.BondType.SINGLE)
        for atom_idx in (a, b):
            atom = mol.GetAtomWithIdx(atom_idx)
            if atom.GetNumExplicitHs() > 0:
                atom.SetNumExplicitHs(atom.GetNumExplicitHs() - 1)
    out = mol.GetMol()
    try:
        Chem.SanitizeMol(out)
    except Exception as err:  # RDKit raises several exception types
        raise ValueError(f"the fragment tree {rows} does not make a valid molecule: {err}") from None
    return out


def mol_to_smiles(mol) -> str:
    """Canonical SMILES of a molecule (``""`` for ``None``, the empty tree)."""
    if mol is None:
        return ""
    return require_rdkit().MolToSmiles(mol)


def search_tree(env, smiles: str, device=None, max_frontier: int = 20_000) -> torch.Tensor:
    """A state of ``env`` whose molecule has the canonical SMILES of ``smiles``, found level by level among the
    trees whose molecules are substructures of it.

    :raises ValueError: for a SMILES that RDKit cannot parse, a molecule that no tree of ``env`` builds, or a search
        that grows beyond ``max_frontier`` trees in a level.
    """
    Chem = require_rdkit()
    if not isinstance(smiles, str):
        raise ValueError(f"smiles must be a string, got {type(smiles).__name__}")
    target = Chem.MolFromSmiles(smiles)
    if target is None or target.GetNumAtoms() == 0:
        raise ValueError(f"smiles: RDKit cannot parse {smiles!r} as a molecule")
    canon = Chem.MolToSmiles(target)
    n_atoms = target.GetNumAtoms()
    level = env.initial_state(device).unsqueeze(0)
    for _ in range(env.max_fragments):
        kids = env.valid_children(level)[2]
        if len(kids) == 0:
            break
        kids = torch.unique(kids, dim=0)
        mols = env.to_mols(kids)
        keep = []
        for i, m in enumerate(mols):
            if m.GetNumAtoms() > n_atoms or not target.HasSubstructMatch(m):
                continue
            if Chem.MolToSmiles(m) == canon:
                return kids[i]
            keep.append(i)
        if not keep:
            break
        if len(keep) > max_frontier:
            raise ValueError(
                f"smiles: the search for {smiles!r} grew beyond {max_frontier} partial trees; it is meant for small "
                "molecules"
            )
        level = kids[torch.tensor(keep, dtype=torch.long, device=kids.device)]
    raise ValueError(
        f"smiles {smiles!r} is not a molecule of {env!r}: no tree of at most {env.max_fragments} fragments of its "
        "vocabulary builds it"
    )
