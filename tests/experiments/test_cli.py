"""Bad command-line values are usage errors (exit code 2, the option named on stderr), raised before any work."""

import pytest

from pyro_sculpt.experiments import cli


@pytest.fixture(autouse=True)
def _no_work(monkeypatch):
    """Every command fails the test if it gets as far as running: the checks must come first."""

    def fail(*args, **kwargs):
        raise AssertionError("the command started running")

    from pyro_sculpt.experiments import gaussians, grid, mnist, molecules, train_grid

    for mod in (train_grid, grid, gaussians, molecules, mnist):
        monkeypatch.setattr(mod, "main", fail)


def _usage_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "usage: pyro-sculpt" in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("command", ["train", "grid", "gaussians", "molecules", "mnist"])
@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_threads_must_be_positive(command, value, capsys):
    err = _usage_error([command, "--threads", value], capsys)
    assert "argument --threads" in err and "expected" in err


@pytest.mark.parametrize("value", ["1", "0", "-4"])
def test_height_must_be_a_grid_side(value, capsys):
    err = _usage_error(["train", "--height", value], capsys)
    assert "argument --height" in err and ">= 2" in err and value in err


@pytest.mark.parametrize("value", ["0", "-10"])
def test_steps_must_be_positive(value, capsys):
    err = _usage_error(["train", "--steps", value], capsys)
    assert "argument --steps" in err and value in err


@pytest.mark.parametrize("command", ["train", "grid", "gaussians", "molecules", "mnist"])
def test_out_must_not_be_a_file(command, tmp_path, capsys):
    f = tmp_path / "results.txt"
    f.write_text("not a directory")
    err = _usage_error([command, "--out", str(f)], capsys)
    assert "argument --out" in err and "existing file" in err and str(f) in err
    err = _usage_error([command, "--out", str(f / "sub")], capsys)
    assert "argument --out" in err and "existing file" in err


@pytest.mark.parametrize("value", ["-1", "ten"])
def test_final_moves_must_be_a_count(value, capsys):
    err = _usage_error(["gaussians", "--final-moves", value], capsys)
    assert "argument --final-moves" in err and "expected" in err


def test_final_moves_reach_the_command(monkeypatch):
    from pyro_sculpt.experiments import gaussians

    seen = {}
    monkeypatch.setattr(gaussians, "main", lambda *args: seen.setdefault("args", args))
    assert cli.main(["gaussians", "--final-moves", "20", "--no-progress"]) == 0
    assert seen["args"][-2:] == (20, True)  # final_moves, ring_product
    seen.clear()
    assert cli.main(["gaussians", "--no-ring-product", "--no-progress"]) == 0
    assert seen["args"][-2:] == (0, False)


@pytest.mark.parametrize(("command", "value"), [("grid", "-1"), ("gaussians", "-1"), ("gaussians", "1")])
def test_particles_range(command, value, capsys):
    err = _usage_error([command, "--particles", value], capsys)
    assert "argument --particles" in err and value in err


def test_good_values_reach_the_command(tmp_path, monkeypatch):
    from pyro_sculpt.experiments import grid

    seen = {}
    monkeypatch.setattr(grid, "main", lambda *args: seen.setdefault("args", args))
    out = tmp_path / "new" / "dir"
    assert cli.main(["grid", "--out", str(out), "--particles", "0", "--threads", "1", "--all-ops"]) == 0
    assert seen["args"] == (out, False, 0, True, 0, False, True)  # particles 0: skip the empirical L1s


@pytest.mark.parametrize("argv", [["molecules", "--size", "huge"], ["molecules", "--particles", "0"]])
def test_molecules_options(argv, capsys):
    err = _usage_error(argv, capsys)
    assert f"argument {argv[1]}" in err


@pytest.mark.parametrize(
    ("option", "value"), [("--size", "huge"), ("--particles", "0"), ("--gamma", "x"), ("--time-limit", "0")]
)
def test_mnist_options(option, value, capsys):
    err = _usage_error(["mnist", option, value], capsys)
    assert f"argument {option}" in err


def test_mnist_values_reach_the_command(tmp_path, monkeypatch):
    from pyro_sculpt.experiments import mnist

    seen = {}
    monkeypatch.setattr(mnist, "main", lambda *args: seen.setdefault("args", args))
    argv = ["mnist", "--out", str(tmp_path), "--size", "tiny", "--device", "cpu", "--gamma", "1", "5", "--two-only"]
    assert cli.main(argv + ["--data", "here", "--particles", "7", "--time-limit", "60"]) == 0
    assert seen["args"] == (tmp_path, "tiny", 0, True, "cpu", "here", [1.0, 5.0], 7, True, 60)


@pytest.mark.parametrize("command", ["train", "grid", "gaussians", "molecules", "mnist"])
@pytest.mark.parametrize("value", ["-1", "4294967296", "one"])
def test_seed_must_be_what_numpy_and_pyro_accept(command, value, capsys):
    err = _usage_error([command, "--seed", value], capsys)
    assert "argument --seed" in err and "expected" in err


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "ten"])
def test_guidance_scales_are_checked_before_anything_is_trained(value, capsys):
    err = _usage_error(["mnist", "--gamma", "1", value], capsys)
    assert "argument --gamma" in err and "expected" in err


def test_train_offers_only_grid_rewards(capsys):
    err = _usage_error(["train", "--reward", "qed"], capsys)  # a molecule reward: a traceback after argparse before
    assert "argument --reward: invalid choice: 'qed'" in err and "symmetric_shubert" in err
