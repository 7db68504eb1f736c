"""The shared training loop: re-initialisation from a seed, non-finite losses, history, callback, time limit,
learning-rate decay, moving averages."""

import math

import pytest
import torch
from torch import nn

from pyro_sculpt.train import EMA, fit_loop, reset_parameters_


class Quadratic(nn.Module):
    """A toy model: minimise ``|w - 1|^2 + |b|^2``."""

    def __init__(self, dim=3):
        super().__init__()
        self.lin = nn.Linear(dim, 1)
        self.history = []

    def loss(self, state):
        return ((self.lin.weight - 1.0) ** 2).sum() + self.lin.bias.pow(2).sum()


def test_reset_parameters_names_parameters_it_cannot_reset():
    class Raw(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(3))
            self.lin = nn.Linear(3, 3)
            self.history = []

        def forward(self, x):
            return self.lin(x) * self.scale

    model = Raw()
    before = model.lin.weight.clone()
    with pytest.raises(ValueError, match=r"cannot re-initialise parameter\(s\) \['scale'\]"):
        reset_parameters_(model)
    assert torch.equal(model.lin.weight, before)  # nothing was changed
    with pytest.raises(ValueError, match="scale"):
        fit_loop(model, lambda s: model(torch.ones(3)).sum(), param_groups=[{"params": model.parameters(), "lr": 0.1}],
                 steps=1, seed=0, progress_bar=False)  # fmt: skip
    assert torch.equal(model.lin.weight, before)
    torch.manual_seed(123)
    reset_parameters_(model, [model.lin.weight, model.lin.bias])  # only the parameters asked for
    assert not torch.equal(model.lin.weight, before)


def test_a_seed_re_initialises_only_the_trained_parameters():
    class WithFrozen(Quadratic):
        def __init__(self):
            super().__init__()
            self.frozen = nn.Linear(2, 2)

    model = WithFrozen()
    frozen = model.frozen.weight.clone()
    fit_loop(model, model.loss, param_groups=[{"params": model.lin.parameters(), "lr": 0.1}], steps=1, seed=0,
             progress_bar=False)  # fmt: skip
    assert torch.equal(model.frozen.weight, frozen)


# ----- the loop -----


def test_non_finite_loss_stops_with_the_step_and_leaves_the_weights():
    model = Quadratic()

    def loss(state):
        value = model.loss(state)
        return value * (float("nan") if state.step == 3 else 1.0)

    with pytest.raises(FloatingPointError, match="toy loss became non-finite at step 3"):
        fit_loop(model, loss, param_groups=[{"params": model.parameters(), "lr": 0.1}], steps=10,
                 progress_bar=False, desc="toy")  # fmt: skip
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not model.training  # evaluation mode after the run, even a failed one


def test_history_callback_and_record_every():
    model = Quadratic()
    calls = []
    fit_loop(model, lambda s: (model.loss(s), {"loss": model.loss(s), "lr": s.optimizer.param_groups[0]["lr"]}),
             param_groups=[{"params": model.parameters(), "lr": 0.05}], steps=25, record_every=10,
             callback=lambda step, m: calls.append((step, m is model)), callback_every=7,
             progress_bar=False)  # fmt: skip
    assert [r["step"] for r in model.history] == [10, 20, 25]
    assert set(model.history[0]) == {"step", "loss", "lr", "time"}
    assert calls == [(7, True), (14, True), (21, True), (25, True)]
    assert model.history[-1]["loss"] < model.history[0]["loss"]


def test_time_limit_stops_and_records_the_last_step():
    model = Quadratic()
    calls = []
    fit_loop(model, model.loss, param_groups=[{"params": model.parameters(), "lr": 0.05}], steps=10**6,
             time_limit=0.05, callback=lambda step, m: calls.append(step), progress_bar=False)  # fmt: skip
    last = model.history[-1]["step"]
    assert 1 <= last < 10**6 and calls[-1] == last


def test_cosine_decay_of_every_parameter_group():
    model = Quadratic()
    seen = []

    def loss(state):
        seen.append([g["lr"] for g in state.optimizer.param_groups])
        return model.loss(state)

    groups = [{"params": [model.lin.weight], "lr": 0.1}, {"params": [model.lin.bias], "lr": 0.01}]
    fit_loop(model, loss, param_groups=groups, steps=5, lr_final_factor=0.1, progress_bar=False)
    assert seen[0] == [0.1, 0.01]
    for k, (a, b) in enumerate(seen):  # lr at step k + 1 = f + (1 - f) (1 + cos(pi k / 5)) / 2 times the base
        factor = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / 5))
        assert a == pytest.approx(0.1 * factor) and b == pytest.approx(0.01 * factor)


def test_ema_warmup_and_transient_target():
    model = Quadratic()
    targets = []
    ema = EMA(model.lin, 0.9)

    def loss(state):
        targets.append(state.ema)
        return model.loss(state)

    fit_loop(model, loss, param_groups=[{"params": model.parameters(), "lr": 0.1}], steps=3, ema=ema,
             progress_bar=False)  # fmt: skip
    assert targets[0] is targets[-1] and targets[0] is not model.lin
    assert not any(p.requires_grad for p in targets[0].parameters())
    assert EMA(model.lin, 0.999, warmup=True).decay_at(1) == pytest.approx(2 / 11)
    assert EMA(model.lin, 0.5, warmup=True).decay_at(100) == 0.5


def test_loop_argument_errors():
    model = Quadratic()
    groups = [{"params": model.parameters(), "lr": 0.1}]
    with pytest.raises(ValueError, match="lr_logz must be a finite number > 0, got -1"):
        fit_loop(model, model.loss, param_groups=[{"params": model.parameters(), "lr": -1, "name": "lr_logz"}],
                 steps=1, progress_bar=False)  # fmt: skip
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        fit_loop(model, model.loss, param_groups=groups, steps=0, progress_bar=False)
    with pytest.raises(ValueError, match="ema_decay must lie in"):
        EMA(model.lin, 1.0)
    with pytest.raises(ValueError, match=r"lr_final_factor must lie in \(0, 1\]"):
        fit_loop(model, model.loss, param_groups=groups, steps=1, lr_final_factor=0.0, progress_bar=False)
    with pytest.raises(TypeError, match="distributed must be None, True, False or a ps.train.Distributed"):
        fit_loop(model, model.loss, param_groups=groups, steps=1, distributed=object(), progress_bar=False)
