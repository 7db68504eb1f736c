"""The tutorials (docs/tutorials/, jupytext percent-format scripts) run at their tiny size, so that they cannot rot;
and every public name has a docstring with an example (issue 12)."""

import inspect
import os
import runpy
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest

import pyro_sculpt as ps

ROOT = Path(__file__).parents[1]
TUTORIALS = sorted((ROOT / "docs" / "tutorials").glob("*.py"))


def test_tutorials_are_found():
    assert {p.stem for p in TUTORIALS} >= {
        "sculpting_gflownets",
        "model_of_origin",
        "composing_diffusion",
        "energy_composition",
    }


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_runs_at_tiny_size(path, tmp_path):
    """Each tutorial as a fresh process (as a reader runs it), at PYRO_SCULPT_TUTORIAL_SIZE=tiny, from a scratch
    directory; it writes its figures to a temporary directory at that size, never into docs/."""
    env = dict(os.environ, PYRO_SCULPT_TUTORIAL_SIZE="tiny", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    figures = ROOT / "docs" / "tutorials" / "figures"
    before = {p: p.stat().st_mtime for p in figures.glob("*")} if figures.exists() else {}
    proc = subprocess.run(
        [sys.executable, str(path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.strip(), "a tutorial prints its results"
    after = {p: p.stat().st_mtime for p in figures.glob("*")} if figures.exists() else {}
    assert after == before, "the tiny size must not overwrite the full-size figures of the pages"


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_rejects_an_unknown_size(path, monkeypatch):
    monkeypatch.setenv("PYRO_SCULPT_TUTORIAL_SIZE", "huge")
    with pytest.raises(ValueError, match="PYRO_SCULPT_TUTORIAL_SIZE must be 'tiny' or 'full'"):
        runpy.run_path(str(path), run_name="__main__")


def _public_names():
    modules = [ps] + [getattr(ps, n) for n in ps.__all__ if isinstance(getattr(ps, n), types.ModuleType)]
    for module in modules:
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            # modules have their own test; a type alias (``processes.State``) cannot carry a docstring
            if not isinstance(obj, types.ModuleType) and typing.get_origin(obj) is None:
                yield f"{module.__name__}.{name}", obj


def test_every_public_name_has_a_docstring_with_an_example():
    """Every name in ``pyro_sculpt.__all__`` and in its subpackages' ``__all__`` (modules excepted) has a docstring
    with an ``Example::`` section."""
    missing = sorted(qualname for qualname, obj in _public_names() if "Example::" not in (inspect.getdoc(obj) or ""))
    assert not missing, f"{len(missing)} public names without an 'Example::' section: {missing}"


def test_every_public_module_has_a_docstring():
    modules = [ps] + [getattr(ps, n) for n in ps.__all__ if isinstance(getattr(ps, n), types.ModuleType)]
    assert [m.__name__ for m in modules if not (m.__doc__ or "").strip()] == []
