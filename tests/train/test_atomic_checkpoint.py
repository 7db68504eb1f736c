"""Checkpoints are written atomically, and every model saves and loads through one mixin."""

import os

import pytest
import torch

import pyro_sculpt as ps
from pyro_sculpt.diffusion import ScoreModel
from pyro_sculpt.train import Checkpointable, atomic_torch_save, load_checkpoint, save_checkpoint


def test_a_failing_write_leaves_no_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    with pytest.raises(Exception):  # noqa: B017 - pickle raises AttributeError or PicklingError by Python version
        save_checkpoint(path, "Thing", 1, {"x": torch.arange(3), "f": lambda: 0})  # a lambda cannot be pickled
    assert os.listdir(tmp_path) == []


def test_an_unwritable_path_is_named_in_the_error(tmp_path):
    """The error names the file asked for (not the temporary file the bytes went to first)."""
    path = tmp_path / "missing_dir" / "ckpt.pt"
    with pytest.raises(FileNotFoundError) as info:
        atomic_torch_save({"x": torch.zeros(2)}, path)
    assert info.value.filename == str(path) and str(path) in str(info.value) and ".tmp" not in str(info.value)


def test_a_write_interrupted_midway_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, "Thing", 1, {"x": torch.arange(3)})
    real_save = torch.save

    def broken_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(10)  # half a file on disk, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, "Thing", 1, {"x": torch.arange(5)})
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # no temporary file left behind
    assert torch.equal(load_checkpoint(path, "Thing", 1)["x"], torch.arange(3))  # the old file, intact
    path.unlink()
    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"x": 1}, path)
    assert os.listdir(tmp_path) == []


def test_models_save_through_the_mixin_atomically(tmp_path, monkeypatch):
    models = [
        ps.GFlowNet(ps.HyperGrid(2, 4), "original", hidden=8),
        ScoreModel(2, hidden=8, layers=1),
        ps.ObservationClassifier(ps.HyperGrid(2, 4), 2, 2, hidden=8),
        ps.DiffusionObservationClassifier(2, hidden=8, layers=1),
    ]

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    for model in models:
        assert isinstance(model, Checkpointable)
        path = tmp_path / f"{model.checkpoint_format}.pt"
        model.save(path)
        again = type(model).load(path)
        for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
            assert torch.equal(a, b), k
        path.unlink()
        monkeypatch.setattr(torch, "save", failing_save)
        with pytest.raises(OSError, match="disk full"):
            model.save(path)
        monkeypatch.undo()
        assert os.listdir(tmp_path) == []


def test_loading_another_models_checkpoint_names_the_formats(tmp_path):
    ps.GFlowNet(ps.HyperGrid(2, 4), "original", hidden=8).save(tmp_path / "gfn.pt")
    with pytest.raises(ValueError, match="not a pyro_sculpt ObservationClassifier checkpoint.*'pyro_sculpt.GFlowNet'"):
        ps.ObservationClassifier.load(tmp_path / "gfn.pt")
