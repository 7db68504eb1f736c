"""Fragment vocabularies: SMILES with attachment sites, the default one, and the file formats a user may give.

A fragment is a small molecule (a SMILES that RDKit parses) with an ordered list of *sites*, the heavy-atom indices
(0-based, in the order of the SMILES) where a single bond to another fragment may be made. An atom may appear
several times (it then takes several bonds), at most as many times as it has hydrogens: a bond replaces one hydrogen,
so every tree of fragments is a valid molecule (docs/molecules.md).

File formats (:func:`load_vocabulary`):

- text (any suffix but ``.json``): one fragment a line, ``SMILES site site ...``; a ``#`` at the start of a line or
  after white space starts a comment (a ``#`` inside a SMILES is a triple bond)::

      c1ccccc1 0 1 2 3   # benzene: ipso, ortho, meta, para
      C(=O)O 0 2         # carboxyl
- JSON (``.json``): a list of ``{"smiles": "...", "sites": [...], "name": "..."}`` (``name`` optional).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence, Union

from pyro_sculpt.utils import require_rdkit

#: The default vocabulary, written for this project in the style of Bengio et al. (2021): aromatic and saturated
#: rings, linkers and functional groups. Sites are heavy-atom indices; comments name the fragment.
DEFAULT_VOCABULARY_TEXT = """\
# --- aromatic rings ---
c1ccccc1           0 1 2 3   # benzene: ipso, ortho, meta, para
c1ccncc1           0 1 2     # pyridine: 4-, 3-, 2-positions
c1cncnc1           0 3       # pyrimidine: 5-, 2-positions
c1cnccn1           0 1       # pyrazine
c1ncncn1           0 2       # 1,3,5-triazine
c1ccsc1            0 2       # thiophene
c1ccoc1            0 2       # furan
c1cc[nH]c1         3 0 2     # pyrrole: N, 3-, 2-positions
c1cnc[nH]1         4 3 0     # imidazole
c1cn[nH]c1         3 0       # pyrazole
c1cscn1            3 1       # thiazole
c1cocn1            3 1       # oxazole
c1nc[nH]n1         3 0       # 1,2,4-triazole
c1c[nH]nn1         2 0       # 1,2,3-triazole
c1nnn[nH]1         0 4       # tetrazole
O=c1cc[nH]cc1      4 2       # 4-pyridone
c1ccc2ccccc2c1     0 2 5     # naphthalene
c1ccc2[nH]ccc2c1   4 5 1     # indole
c1ccc2[nH]cnc2c1   4 5 1     # benzimidazole
c1ccc2ncccc2c1     5 7 1     # quinoline
c1ccc2cnccc2c1     4 7 1     # isoquinoline
c1cnc2ccccc2n1     0 5       # quinoxaline
c1ccc2occc2c1      5 1       # benzofuran
c1ccc2sccc2c1      5 1       # benzothiophene
c1nc2ccccc2s1      0 4       # benzothiazole
c1nc2ccccc2o1      0 4       # benzoxazole
c1ccc2c(c1)OCO2    0 1       # 1,3-benzodioxole
c1ccc2c(c1)CCC2    1 6       # indane
# --- saturated rings ---
C1CC1              0 1       # cyclopropane
C1CCC1             0 2       # cyclobutane
C1CCCC1            0 1 2     # cyclopentane
C1CCCCC1           0 2 3     # cyclohexane: 1,3- and 1,4-
C1CCCCCC1          0 3       # cycloheptane
C1CNC1             2 0       # azetidine
C1COC1             0 0       # oxetane: 3,3-disubstituted
C1CCNC1            3 1       # pyrrolidine
C1CCOC1            0 2       # tetrahydrofuran
C1CCNCC1           3 0 1     # piperidine: N, 4-, 3-positions
C1CCOCC1           0 2       # tetrahydropyran
C1CNCCN1           2 5       # piperazine
C1COCCN1           5 0       # morpholine
O=C1CCCN1          5 3       # 2-pyrrolidinone
O=C1CCCCN1         6 3       # 2-piperidinone
O=C1CCCC1          2 3       # cyclopentanone
O=C1CCCCC1         4 2       # cyclohexanone: 4-, 2-positions
# --- chains and linkers ---
C                  0 0 0     # methyl / methylene / methine
CC                 0 1       # ethyl / ethylene
CCC                0 2 1     # propyl / propylene
CC(C)C             1 0       # tert-butyl / isobutyl
C=C                0 1       # vinyl / vinylene
C#C                0 1       # ethynyl
C#N                0         # nitrile
# --- heteroatoms and functional groups ---
O                  0 0       # hydroxyl / ether oxygen
N                  0 0 0     # amine
S                  0 0       # thiol / thioether
CO                 0 1       # methoxy / hydroxymethyl
CN                 0 1 1     # methylamine / N-methyl
CS                 0 1       # methylthio
CNC                1 0       # dimethylamine / N-methyl linker
CCO                0 2       # hydroxyethyl / ethoxy
C=O                0 0       # carbonyl: aldehyde, ketone
CC=O               1 0       # acetyl
C(=O)O             0 2       # carboxylic acid / ester
NC=O               0 1       # amide
NC(N)=O            0 2       # urea
NC(=O)O            0 3       # carbamate
NS(=O)=O           0 1       # sulfonamide
CS(=O)=O           1         # methylsulfonyl
FC(F)F             1         # trifluoromethyl
F                  0         # fluoro
Cl                 0         # chloro
Br                 0         # bromo
"""


@dataclass(frozen=True)
class Fragment:
    """One fragment: a SMILES, its attachment sites (heavy-atom indices) and an optional name."""

    smiles: str
    sites: tuple[int, ...]
    name: str = ""
    #: the parsed molecule (RDKit), filled in by :func:`make_vocabulary`
    mol: object = field(default=None, compare=False, repr=False)


class Vocabulary:
    """A validated, ordered list of :class:`Fragment`.

    :param fragments: ``(smiles, sites)`` pairs, ``(smiles, sites, name)`` triples, dicts with keys ``smiles``,
        ``sites`` (and ``name``) or :class:`Fragment`.
    :param source: where the fragments come from (for error messages).
    :raises ValueError: for an empty vocabulary, a SMILES that RDKit cannot parse, a fragment without sites, a site
        that is not an atom index of its fragment, an atom used by more sites than it has hydrogens, or two fragments
        with the same canonical SMILES.
    """

    def __init__(self, fragments: Iterable, source: str = "vocabulary"):
        Chem = require_rdkit()
        items = list(fragments)
        if not items:
            raise ValueError(f"{source} must hold at least one fragment, got none")
        out: list[Fragment] = []
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            smiles, sites, name = _unpack(item, f"{source}[{i}]")
            where = f"{source}[{i}] ({smiles!r})"
            mol = Chem.MolFromSmiles(smiles)
            if mol is None or mol.GetNumAtoms() == 0:
                raise ValueError(f"{where}: RDKit cannot parse the SMILES {smiles!r}")
            if len(Chem.GetMolFrags(mol)) > 1:
                raise ValueError(
                    f"{where}: a fragment must be one connected molecule, got {len(Chem.GetMolFrags(mol))} "
                    "disconnected parts (its trees would decode to several molecules)"
                )
            n_atoms = mol.GetNumAtoms()
            if not sites:
                raise ValueError(f"{where}: a fragment needs at least one attachment site, got none")
            for s in sites:
                if not 0 <= s < n_atoms:
                    raise ValueError(
                        f"{where}: attachment site {s} is out of range: the fragment has {n_atoms} heavy atoms "
                        f"(indices 0..{n_atoms - 1})"
                    )
            for atom in set(sites):
                h = mol.GetAtomWithIdx(atom).GetTotalNumHs()
                if sites.count(atom) > h:
                    raise ValueError(
                        f"{where}: atom {atom} ({mol.GetAtomWithIdx(atom).GetSymbol()}) is used by "
                        f"{sites.count(atom)} sites but has only {h} hydrogens to replace"
                    )
            canon = Chem.MolToSmiles(mol)
            if canon in seen:
                raise ValueError(
                    f"{where}: duplicate fragment: it is the same molecule ({canon}) as {source}[{seen[canon]}]; "
                    "merge their sites into one entry"
                )
            seen[canon] = i
            out.append(Fragment(smiles, tuple(sites), name, mol))
        self.fragments: tuple[Fragment, ...] = tuple(out)
        self.source = source

    def __len__(self) -> int:
        return len(self.fragments)

    def __getitem__(self, i: int) -> Fragment:
        return self.fragments[i]

    def __iter__(self):
        return iter(self.fragments)

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} fragments from {self.source})"

    @property
    def num_sites(self) -> list[int]:
        """Number of sites of each fragment."""
        return [len(f.sites) for f in self.fragments]

    def to_list(self) -> list[list]:
        """``[[smiles, [sites...]], ...]``: JSON-serialisable, and accepted back by :class:`Vocabulary`."""
        return [[f.smiles, list(f.sites)] for f in self.fragments]

    def to_text(self) -> str:
        """The vocabulary in the text file format."""
        lines = []
        for f in self.fragments:
            line = f"{f.smiles} {' '.join(map(str, f.sites))}"
            lines.append(f"{line}  # {f.name}" if f.name else line)
        return "\n".join(lines) + "\n"


def _unpack(item, where: str) -> tuple[str, list[int], str]:
    if isinstance(item, Fragment):
        return item.smiles, list(item.sites), item.name
    if isinstance(item, dict):
        unknown = set(item) - {"smiles", "sites", "name"}
        if unknown or "smiles" not in item or "sites" not in item:
            raise ValueError(
                f"{where} must have the keys 'smiles' and 'sites' (and optionally 'name'), got {sorted(item)}"
            )
        smiles, sites, name = item["smiles"], item["sites"], item.get("name", "")
    elif isinstance(item, (list, tuple)) and len(item) in (2, 3):
        smiles, sites = item[0], item[1]
        name = item[2] if len(item) == 3 else ""
    else:
        raise ValueError(f"{where} must be (smiles, sites), (smiles, sites, name) or a dict, got {item!r}")
    if not isinstance(smiles, str) or not smiles.strip():
        raise ValueError(f"{where}: the SMILES must be a non-empty string, got {smiles!r}")
    if isinstance(sites, (str, bytes)) or not isinstance(sites, Sequence):
        raise ValueError(f"{where}: sites must be a list of atom indices, got {sites!r}")
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in sites):
        raise ValueError(f"{where}: sites must be integer atom indices, got {list(sites)!r}")
    return smiles.strip(), list(sites), str(name)


def parse_vocabulary_text(text: str, source: str = "vocabulary") -> list[tuple[str, list[int], str]]:
    """Parse the text format (see the module's docstring) into ``(smiles, sites, name)`` triples.

    :raises ValueError: naming the line for a line without sites or with a site that is not an integer.
    """
    out = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        # a comment starts at a '#' at the start of the line or after white space ('#' inside a SMILES is a triple
        # bond, and a SMILES holds no white space)
        parts = re.split(r"(?:^|\s)#", raw, maxsplit=1)
        body, comment = parts[0], (parts[1] if len(parts) > 1 else "")
        words = body.split()
        if not words:
            continue
        if len(words) < 2:
            raise ValueError(f"{source}, line {lineno}: expected 'SMILES site site ...', got {raw.strip()!r}")
        try:
            sites = [int(w) for w in words[1:]]
        except ValueError:
            raise ValueError(
                f"{source}, line {lineno}: sites must be integer atom indices, got {' '.join(words[1:])!r}"
            ) from None
        out.append((words[0], sites, comment.strip()))
    return out


def load_vocabulary(path: Union[str, Path]) -> Vocabulary:
    """Read a vocabulary file (text, or JSON for a ``.json`` suffix; formats in the module's docstring).

    :raises ValueError: for a missing file, malformed content, or a fragment that fails :class:`Vocabulary`'s
        checks; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"vocabulary file {str(path)!r} does not exist")
    text = path.read_text()
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"vocabulary file {str(path)!r} is not valid JSON: {err}") from None
        if not isinstance(data, list):
            raise ValueError(
                f"vocabulary file {str(path)!r} must hold a JSON list of {{'smiles', 'sites'}} objects, got "
                f"{type(data).__name__}"
            )
        return Vocabulary(data, source=f"vocabulary file {str(path)!r}")
    return Vocabulary(parse_vocabulary_text(text, str(path)), source=f"vocabulary file {str(path)!r}")


def default_vocabulary() -> Vocabulary:
    """The default vocabulary (:data:`DEFAULT_VOCABULARY_TEXT`)."""
    return Vocabulary(parse_vocabulary_text(DEFAULT_VOCABULARY_TEXT, "default"), source="the default vocabulary")


def make_vocabulary(vocabulary) -> Vocabulary:
    """A :class:`Vocabulary` from ``None`` (the default), a :class:`Vocabulary`, a file path or a list of
    fragments."""
    if vocabulary is None:
        return default_vocabulary()
    if isinstance(vocabulary, Vocabulary):
        return vocabulary
    if isinstance(vocabulary, (str, Path)):
        return load_vocabulary(vocabulary)
    if isinstance(vocabulary, (list, tuple)):
        return Vocabulary(vocabulary)
    raise ValueError(
        f"vocabulary must be None (the default), a Vocabulary, a file path or a list of (smiles, sites), got "
        f"{type(vocabulary).__name__}"
    )
