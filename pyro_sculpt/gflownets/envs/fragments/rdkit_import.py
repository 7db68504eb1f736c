"""Lazy access to RDKit, an optional dependency (the ``mol`` extra)."""

from __future__ import annotations

from types import ModuleType


def require_rdkit() -> ModuleType:
    """The ``rdkit.Chem`` module.

    :raises ImportError: naming the ``mol`` extra when RDKit is not installed.
    """
    try:
        from rdkit import Chem, RDLogger
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "fragment molecules need RDKit: install it with `pip install pyro-sculpt[mol]` (or `pip install rdkit`)"
        ) from err
    RDLogger.DisableLog("rdApp.*")
    return Chem
