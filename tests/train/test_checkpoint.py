import pytest
import torch

from pyro_sculpt.train.checkpoint import load_checkpoint, save_checkpoint


def test_round_trip_and_errors(tmp_path):
    save_checkpoint(tmp_path / "a.pt", "Thing", 3, {"x": torch.arange(3), "name": "a"})
    data = load_checkpoint(tmp_path / "a.pt", "Thing", 3)
    assert torch.equal(data["x"], torch.arange(3)) and data["name"] == "a"
    with pytest.raises(ValueError, match="not a pyro_sculpt Other checkpoint"):
        load_checkpoint(tmp_path / "a.pt", "Other", 3)
    with pytest.raises(ValueError, match="format version 3, expected 4"):
        load_checkpoint(tmp_path / "a.pt", "Thing", 4)
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a readable pyro_sculpt Thing checkpoint"):
        load_checkpoint(tmp_path / "junk.pt", "Thing", 3)
