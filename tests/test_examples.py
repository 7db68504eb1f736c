import importlib.util
from pathlib import Path


def test_quickstart_runs():
    path = Path(__file__).parents[1] / "examples" / "quickstart.py"
    spec = importlib.util.spec_from_file_location("quickstart", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main(height=6, gfn_steps=150, clf_steps=150)
    assert set(out) == {"harmonic mean", "contrast", "reverse contrast", "importance_ess"}
    assert out["importance_ess"] > 1


def test_cli_help_and_train(tmp_path, capsys):
    import pytest

    from pyro_sculpt.experiments.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "grid" in capsys.readouterr().out
    assert (
        main(
            [
                "train",
                "--reward",
                "original",
                "--height",
                "5",
                "--steps",
                "50",
                "--out",
                str(tmp_path),
                "--no-progress",
            ]
        )
        == 0
    )
    assert (tmp_path / "gfn_original.png").exists() and (tmp_path / "gfn_original.json").exists()
