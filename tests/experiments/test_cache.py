"""An unusable cached model in an experiment's output directory is retrained, with a warning naming the file."""

import logging

import pytest
import torch

from pyro_sculpt.experiments import grid
from pyro_sculpt.gflownets import GFlowNet
from pyro_sculpt.gflownets.envs.hypergrid import HyperGrid, rewards
from pyro_sculpt.sculpting import ObservationClassifier

TINY = grid.Schedule(base=dict(steps=2, batch_size=4), classifier=dict(steps=2, batch_size=4))


def _base(out, name="shubert", reward=None):
    reward = reward or rewards.symmetric_shubert(0.5)
    return grid._get_base(out, name, reward, TINY, 0, False, lambda s: None)


def _unusable(tmp_path, kind):
    path = grid.base_path(tmp_path, "shubert", TINY, 0)
    if kind == "garbage":
        path.write_bytes(b"\x00\x01 not a checkpoint \xff" * 10)
    elif kind == "truncated":
        GFlowNet(HyperGrid(2, 32), rewards.symmetric_shubert(0.5)).save(path)
        path.write_bytes(path.read_bytes()[:100])
    elif kind == "other version":
        torch.save({"format": "pyro_sculpt.GFlowNet", "version": -1}, path)
    elif kind == "other kind":
        ObservationClassifier(HyperGrid(2, 32), 2, 2).save(path)
    elif kind == "other env":
        GFlowNet(HyperGrid(2, 8), rewards.symmetric_shubert(0.5)).save(path)
    elif kind == "other reward":
        GFlowNet(HyperGrid(2, 32), rewards.diagonal_sigmoid()).save(path)
    return path


@pytest.mark.parametrize("kind", ["garbage", "truncated", "other version", "other kind", "other env", "other reward"])
def test_unusable_base_is_retrained(kind, tmp_path, caplog):
    path = _unusable(tmp_path, kind)
    with caplog.at_level(logging.WARNING):
        gfn = _base(tmp_path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0] and "retraining" in warnings[0]
    assert gfn.history, "the base was not trained"
    loaded = GFlowNet.load(path, HyperGrid(2, 32))  # a fresh, valid checkpoint of the retrained model
    assert loaded.reward.config() == rewards.symmetric_shubert(0.5).config()
    for k, v in gfn.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)


def test_usable_base_is_loaded_without_training(tmp_path, caplog, monkeypatch):
    first = _base(tmp_path)
    monkeypatch.setattr(GFlowNet, "fit", lambda *a, **k: pytest.fail("retrained a usable cached base"))
    with caplog.at_level(logging.WARNING):
        again = _base(tmp_path)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    for k, v in first.state_dict().items():
        torch.testing.assert_close(again.state_dict()[k], v)


@pytest.mark.parametrize("kind", ["garbage", "other settings"])
def test_unusable_classifier_is_retrained(kind, tmp_path, caplog):
    bases = [_base(tmp_path, "shubert"), _base(tmp_path, "sigmoid", rewards.diagonal_sigmoid())]
    path = grid.classifier_path(tmp_path, "two_models_plain", TINY, 0)
    if kind == "garbage":
        path.write_bytes(b"PK\x03\x04 garbage")
    else:  # a cached alpha-conditioned classifier where a plain one is asked for
        ObservationClassifier(bases[0].env, 2, 2, alpha_conditioned=True).save(path)
    with caplog.at_level(logging.WARNING):
        clf, seconds = grid._get_classifier(tmp_path, "two_models_plain", bases, 2, False, TINY, 0, False, print)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0]
    assert seconds is not None and not clf.alpha_conditioned
    loaded = ObservationClassifier.load(path, bases[0].env)
    assert (loaded.num_models, loaded.num_observations, loaded.alpha_conditioned) == (2, 2, False)
    # and the next run loads it
    clf2, seconds2 = grid._get_classifier(tmp_path, "two_models_plain", bases, 2, False, TINY, 0, False, print)
    assert seconds2 is None
    for k, v in clf.state_dict().items():
        torch.testing.assert_close(clf2.state_dict()[k], v)


def test_default_run_has_the_main_figure_and_all_ops_has_the_rest():
    default, every = grid.reduced_schedule(), grid.reduced_schedule(all_ops=True)
    assert default.alphas == () and not default.chained and not default.three_models
    assert every.three_models and set(every.three_model_ops) == set(grid.THREE_MODEL_OPS)
    assert every.alphas == grid.ALPHAS and every.chained
    assert default.classifier == every.classifier and default.base == every.base
    paper = grid.paper_schedule()
    assert paper.alphas == grid.ALPHAS and paper.chained and set(paper.three_model_ops) == set(grid.THREE_MODEL_OPS)


def test_the_seed_fixes_the_initial_weights(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    torch.manual_seed(1)
    a = _base(tmp_path / "a")
    torch.manual_seed(2)  # another state of the global generator: no effect
    b = _base(tmp_path / "b")
    for k, v in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[k], v)


def test_runs_of_other_settings_in_one_folder_do_not_share_models(tmp_path):
    # the default run, then --full into the same --out: the paper-settings run must not load the reduced models
    default, paper = grid.reduced_schedule(), grid.paper_schedule()
    assert grid.base_path(tmp_path, "shubert", default, 0) != grid.base_path(tmp_path, "shubert", paper, 0)
    assert grid.base_path(tmp_path, "shubert", default, 0) != grid.base_path(tmp_path, "shubert", default, 1)
    assert grid.classifier_path(tmp_path, "two_models_plain", default, 0) != grid.classifier_path(
        tmp_path, "two_models_plain", paper, 0
    )
    assert grid.base_path(tmp_path, "shubert", default, 0) == grid.base_path(tmp_path, "shubert", default, 0)


def test_trained_bases_are_the_runs_bases(tmp_path):
    # what benchmarks load from a run's --out: the run's bases, with the run's seeds (base k of the run: seed + offset)
    sigmoid, circle2 = grid.trained_bases(tmp_path, ["sigmoid", "circle2"], TINY, seed=5, log=lambda s: None)
    assert sigmoid.reward.config() == rewards.diagonal_sigmoid().config()
    assert circle2.reward.config() == rewards.circle(2).config()
    assert (
        grid.base_path(tmp_path, "sigmoid", TINY, 6).exists() and grid.base_path(tmp_path, "circle2", TINY, 8).exists()
    )
    with pytest.raises(ValueError, match=r"names must be bases of the grid experiment \(shubert, .*got \['circle4'\]"):
        grid.trained_bases(tmp_path, ["circle4"], TINY)
