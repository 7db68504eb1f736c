"""Molecule metrics (docs/math.md §5, docs/molecules.md): RDKit properties scaled to [0, 1], the shares of samples in
the paper's high bins and in strict bins, validity, uniqueness, diversity, and the earth mover's distance between two
sample sets over Morgan fingerprints.

RDKit (the ``mol`` extra) is imported when a function needs it; the earth mover's distance needs SciPy.

The properties, each in [0, 1] and larger is better:

- ``qed``: RDKit's quantitative estimate of drug-likeness (Bickerton et al. 2012);
- ``sa``: :math:`(10 - \\mathrm{SA})/9` with Ertl and Schuffenhauer's synthetic accessibility score
  :math:`\\mathrm{SA} \\in [1, 10]` (RDKit Contrib);
- ``mw``: :math:`\\mathrm{clip}((300 - \\mathrm{MolWt})/700 + 1, 0, 1)`: 1 up to 300 Da, falling linearly to 0 at
  1000 Da.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from pyro_sculpt.utils import require_rdkit

#: The paper's high bins (Bengio et al. 2021; Garipov et al. 2023); for ``mw`` a reward of 5/7, i.e. a molecular
#: weight of at most 500 Da (Lipinski's rule of five).
HIGH_BINS = {"qed": 0.25, "sa": 0.6, "mw": 5.0 / 7.0}
#: Strict bins, about the 85-90% quantiles of uniformly random fragment trees (docs/math.md §5); for ``mw`` a
#: reward of 6/7, a molecular weight of at most 400 Da.
STRICT_BINS = {"qed": 0.7, "sa": 0.8, "mw": 6.0 / 7.0}

PROPERTIES = ("qed", "sa", "mw")


def _chem():
    return require_rdkit("molecule metrics")


def to_mol(molecule):
    """An RDKit molecule from a SMILES or a molecule (``None`` if it is not a valid, non-empty molecule)."""
    Chem = _chem()
    if isinstance(molecule, str):
        mol = Chem.MolFromSmiles(molecule) if molecule else None
    else:
        mol = molecule
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    return mol


def _valid_mol(molecule, what: str):
    mol = to_mol(molecule)
    if mol is None:
        raise ValueError(f"{what}: {molecule!r} is not a valid molecule")
    return mol


def qed(molecule) -> float:
    """RDKit's QED of a molecule (a SMILES or an RDKit molecule), in [0, 1]."""
    from rdkit.Chem import QED

    return float(QED.qed(_valid_mol(molecule, "qed")))


def sa(molecule) -> float:
    """:math:`(10 - \\mathrm{SA})/9`, the synthetic accessibility score (Ertl & Schuffenhauer 2009) mapped to
    [0, 1], 1 the easiest."""
    from rdkit.Contrib.SA_Score import sascorer

    return float((10.0 - sascorer.calculateScore(_valid_mol(molecule, "sa"))) / 9.0)


def mw(molecule) -> float:
    """:math:`\\mathrm{clip}((300 - \\mathrm{MolWt})/700 + 1, 0, 1)` (docs/math.md §5)."""
    from rdkit.Chem import Descriptors

    weight = Descriptors.MolWt(_valid_mol(molecule, "mw"))
    return float(min(max((300.0 - weight) / 700.0 + 1.0, 0.0), 1.0))


_SCORERS = {"qed": qed, "sa": sa, "mw": mw}


def check_property(name: str, argument: str = "objective") -> str:
    """Return ``name`` if it is one of :data:`PROPERTIES`, else raise a :class:`ValueError` naming ``argument``."""
    if name not in _SCORERS:
        raise ValueError(f"unknown {argument} {name!r}; expected one of {sorted(_SCORERS)}")
    return name


def molecule_property(name: str, molecule) -> float:
    """Property ``name`` (``"qed"``, ``"sa"`` or ``"mw"``) of one molecule."""
    return _SCORERS[check_property(name, "property")](molecule)


def molecule_properties(molecules: Iterable, names: Sequence[str] = PROPERTIES) -> dict[str, np.ndarray]:
    """The properties ``names`` of valid molecules (SMILES or RDKit molecules), ``NaN`` for invalid ones."""
    for n in names:
        check_property(n, "names")
    mols = [to_mol(m) for m in molecules]
    return {n: np.array([_SCORERS[n](m) if m is not None else np.nan for m in mols], dtype=float) for n in names}


def bin_shares(scores: Mapping[str, Sequence[float]], thresholds: Mapping[str, float] = HIGH_BINS) -> dict:
    """Share of samples at or above each threshold, and in all of them at once (key ``"all"``).

    :param scores: property name -> one score per sample (``NaN`` for an invalid sample, which is in no bin).
    :param thresholds: property name -> threshold (:data:`HIGH_BINS`, :data:`STRICT_BINS` or your own); only the
        properties in ``scores`` are used.
    :raises ValueError: when ``scores`` is empty, holds a property without a threshold, or lists of different lengths.
    """
    if not scores:
        raise ValueError("scores must hold at least one property")
    arrays = {k: np.asarray(v, dtype=float) for k, v in scores.items()}
    lengths = {len(v) for v in arrays.values()}
    if len(lengths) != 1:
        raise ValueError(f"scores must have one value per sample for every property, got lengths {sorted(lengths)}")
    missing = [k for k in arrays if k not in thresholds]
    if missing:
        raise ValueError(f"thresholds has no value for {missing}; it has {sorted(thresholds)}")
    n = lengths.pop()
    if n == 0:
        raise ValueError("scores must hold at least one sample")
    inside = {k: np.nan_to_num(v, nan=-np.inf) >= thresholds[k] for k, v in arrays.items()}
    out = {k: float(v.mean()) for k, v in inside.items()}
    out["all"] = float(np.logical_and.reduce(list(inside.values())).mean())
    return out


def validity(molecules: Sequence) -> float:
    """Share of the samples that are valid, non-empty molecules."""
    if len(molecules) == 0:
        raise ValueError("molecules must hold at least one sample")
    return float(np.mean([to_mol(m) is not None for m in molecules]))


def _canonical(molecules: Iterable) -> list[str]:
    Chem = _chem()
    return [Chem.MolToSmiles(m) for m in (to_mol(x) for x in molecules) if m is not None]


def uniqueness(molecules: Sequence) -> float:
    """Share of distinct molecules (by canonical SMILES) among the valid samples."""
    canon = _canonical(molecules)
    if not canon:
        raise ValueError("molecules must hold at least one valid molecule")
    return len(set(canon)) / len(canon)


def morgan_fingerprints(molecules: Iterable, radius: int = 3, n_bits: int = 2048) -> list:
    """Morgan fingerprints (bit vectors) of valid molecules; :class:`ValueError` on an invalid one."""
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    return [gen.GetFingerprint(_valid_mol(m, "molecules")) for m in molecules]


def tanimoto_similarity(a: Sequence, b: Sequence, radius: int = 3, n_bits: int = 2048) -> np.ndarray:
    """``(len(a), len(b))`` Tanimoto similarities of the Morgan fingerprints of two lists of molecules."""
    from rdkit import DataStructs

    fa, fb = morgan_fingerprints(a, radius, n_bits), morgan_fingerprints(b, radius, n_bits)
    return np.array([DataStructs.BulkTanimotoSimilarity(f, fb) for f in fa], dtype=float).reshape(len(fa), len(fb))


def diversity(molecules: Sequence, radius: int = 3, n_bits: int = 2048) -> float:
    """Mean Tanimoto distance :math:`1 - T` over the pairs of distinct samples (``i < j``) of valid molecules."""
    if len(molecules) < 2:
        raise ValueError(f"diversity needs at least two molecules, got {len(molecules)}")
    sim = tanimoto_similarity(molecules, molecules, radius, n_bits)
    iu = np.triu_indices(len(molecules), k=1)
    return float((1.0 - sim[iu]).mean())


def earth_movers_distance(
    a: Sequence, b: Sequence, ground: str = "tanimoto", radius: int = 3, n_bits: int = 2048
) -> float:
    """Earth mover's distance between two sample sets, each a uniform distribution over its molecules, with a ground
    cost between Morgan fingerprints.

    :param ground: ``"tanimoto"``: :math:`d = 1 - T`; ``"inverse"``: :math:`d = 1/T - 1`, the reference's cost
        (docs/math.md §5), infinite for fingerprints with no common bit.
    :returns: :math:`\\min_\\pi \\sum_{ij} \\pi_{ij} d_{ij}` over couplings of the two uniform distributions. For
        equal sizes an optimal coupling is a permutation (Birkhoff), found by
        :func:`scipy.optimize.linear_sum_assignment`; otherwise the transport linear program is solved by
        :func:`scipy.optimize.linprog` (HiGHS).
    :raises ValueError: for an empty set, an invalid molecule, an unknown ground cost, or an infinite cost.
    """
    if ground not in ("tanimoto", "inverse"):
        raise ValueError(f"ground must be 'tanimoto' or 'inverse', got {ground!r}")
    if len(a) == 0 or len(b) == 0:
        raise ValueError(f"both sample sets must be non-empty, got sizes {len(a)} and {len(b)}")
    try:
        from scipy.optimize import linear_sum_assignment, linprog
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("earth_movers_distance needs SciPy: `pip install scipy`") from err
    sim = tanimoto_similarity(a, b, radius, n_bits)
    if ground == "tanimoto":
        cost = 1.0 - sim
    else:
        with np.errstate(divide="ignore"):
            cost = 1.0 / sim - 1.0
    if not np.isfinite(cost).all():
        raise ValueError("the ground cost is infinite for a pair of molecules with no common fingerprint bit")
    n, m = cost.shape
    if n == m:
        rows, cols = linear_sum_assignment(cost)
        return float(cost[rows, cols].mean())
    # transport polytope: row sums 1/n, column sums 1/m
    a_eq = np.zeros((n + m, n * m))
    for i in range(n):
        a_eq[i, i * m : (i + 1) * m] = 1.0
    for j in range(m):
        a_eq[n + j, j::m] = 1.0
    b_eq = np.concatenate([np.full(n, 1.0 / n), np.full(m, 1.0 / m)])
    res = linprog(cost.reshape(-1), A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    if not res.success:  # pragma: no cover - the polytope is never empty
        raise RuntimeError(f"the transport linear program failed: {res.message}")
    return float(res.fun)
