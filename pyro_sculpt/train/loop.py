"""The training loop shared by every model: models hold their loss, this module holds the loop.

A model's ``fit`` checks its own arguments, prepares what its loss needs, and calls :func:`fit_loop` with a
function computing ONE step's loss from a batch the model draws. The loop owns everything else: the seed (and the
re-initialisation it implies), Adam with parameter groups, the optional cosine learning-rate decay, the optional
moving average of a network, the check for a non-finite loss, the history, the callback, the time limit and the
progress bar.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from pyro_sculpt.train.optim import check_ema_decay, cosine_decay, ema_update_, step_scheduler
from pyro_sculpt.utils import check_positive_int, progress, set_seed

#: what a step's loss function returns: the loss, or the loss and the values to record in the history at this step
#: (tensors or numbers, read with ``float`` only on the steps that are recorded)
StepOutput = Union[torch.Tensor, tuple[torch.Tensor, Mapping[str, Any]]]


@dataclass
class EMA:
    """An exponential moving average :math:`\\bar\\theta \\leftarrow d\\, \\bar\\theta + (1 - d)\\, \\theta` of the
    weights of ``source``, updated after every optimiser step (buffers are copied).

    :param source: the trained network.
    :param decay: :math:`d \\in [0, 1)`.
    :param target: the averaged network, a copy of ``source`` that the model keeps (for instance the EMA weights a
        diffusion model samples with); ``None``: a fresh copy of ``source`` made at the start of every
        :func:`fit_loop` (a bootstrapping target network, read by the loss through :attr:`TrainState.ema`).
    :param warmup: use :math:`\\min(d, (1 + k) / (10 + k))` at step :math:`k`, so that short runs average recent
        weights rather than the initialisation.

    Example::

        net = ps.nn.MLP(4, 1)
        ema = ps.train.EMA(net, decay=0.995)  # an averaged copy of net, updated after each step
    """

    source: nn.Module
    decay: float
    target: Optional[nn.Module] = None
    warmup: bool = False

    def __post_init__(self) -> None:
        self.decay = check_ema_decay(self.decay)

    def decay_at(self, step: int) -> float:
        """The decay used after optimiser step ``step`` (1-based)."""
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay


@dataclass
class TrainState:
    """What a step's loss function may read.

    :ivar step: the current step, from 1 to :attr:`steps`.
    :ivar steps: the number of steps of the run.
    :ivar ema: the averaged network (:attr:`EMA.target`, or the fresh copy), ``None`` without an :class:`EMA`.
    :ivar optimizer: the Adam optimiser.

    Example::

        def loss(state: ps.train.TrainState):
            return model.loss(batch_size=128), {"lr": state.optimizer.param_groups[0]["lr"]}
    """

    step: int
    steps: int
    ema: Optional[nn.Module]
    optimizer: torch.optim.Optimizer


def reset_parameters_(module: nn.Module, params: Optional[Iterable[nn.Parameter]] = None) -> None:
    """Re-initialise the parameters ``params`` of ``module`` (default: all of them) by calling ``reset_parameters()``
    on each submodule that holds one of them and defines it, in the order of :meth:`torch.nn.Module.modules` (the
    order in which a model builds its layers, so that re-initialising right after :func:`torch.manual_seed` gives
    the weights of a model built right after it). Submodules without such parameters (frozen networks, moving
    averages) are left alone.

    Each ``reset_parameters()`` re-initialises its module's own parameters (the convention of :mod:`torch.nn`); a
    model with parameters of its own (not in a submodule) defines one for them.

    :raises ValueError: naming the parameters that no ``reset_parameters()`` covers (checked before anything is
        changed).

    Example::

        ps.train.reset_parameters_(net)  # fresh initial weights (seed the generators first to reproduce them)
    """
    resets = _reset_plan(module, params)
    with torch.no_grad():
        for reset in resets:
            reset()


def _reset_plan(module: nn.Module, params: Optional[Iterable[nn.Parameter]]) -> list:
    """The ``reset_parameters`` methods :func:`reset_parameters_` calls, in order (raises if some are missing)."""
    wanted = {id(p) for p in (module.parameters() if params is None else params)}
    covered: set[int] = set()
    resets = []
    for m in module.modules():
        own = {id(p) for p in m.parameters(recurse=False)} & wanted
        reset = getattr(m, "reset_parameters", None)
        if own and callable(reset):
            resets.append(reset)
            covered |= own
    missing = [name for name, p in module.named_parameters() if id(p) in wanted and id(p) not in covered]
    if missing:
        raise ValueError(
            f"cannot re-initialise parameter(s) {missing} from the seed: their module defines no reset_parameters(); "
            "give it one, or fit without a seed (which continues from the current weights)"
        )
    return resets


def _number(value: Any) -> float:
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


def _check_param_groups(param_groups: Sequence[dict]) -> list[dict]:
    groups = []
    for k, g in enumerate(param_groups):
        name = g.get("name", f"param_groups[{k}]['lr']")
        lr = g.get("lr")
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {lr!r}")
        groups.append({**g, "params": list(g["params"]), "lr": float(lr)})
    return groups


def fit_loop(
    model: nn.Module,
    loss: Callable[[TrainState], StepOutput],
    *,
    param_groups: Sequence[dict],
    steps: int,
    lr_final_factor: float = 1.0,
    ema: Optional[EMA] = None,
    seed: Optional[int] = None,
    progress_bar: bool = True,
    desc: str = "training",
    callback: Optional[Callable[[int, Any], None]] = None,
    callback_every: int = 1000,
    time_limit: Optional[float] = None,
    record_every: int = 100,
    distributed: None = None,
) -> nn.Module:
    """Train ``model`` in place with Adam and return it.

    Every step: ``loss(state)`` draws a batch and computes the loss; a non-finite loss stops training with a
    :class:`FloatingPointError` naming the step (before the weights are touched); then the gradient step, the
    learning-rate decay and the moving-average update. ``model.history`` gets a record ``{"step", <the values
    returned by loss>, "time"}`` every ``record_every`` steps and at the last step (also when the time limit
    stops the run). The model is in training mode during the run and in evaluation mode after it.

    A seed starts a fresh, reproducible run; without a seed, training continues from the current weights. With a
    ``seed``, the global generators are seeded (:func:`pyro_sculpt.utils.set_seed`), every parameter in
    ``param_groups`` is re-initialised (:func:`reset_parameters_`; a kept moving average is reset to the fresh
    weights) and the generators are seeded again before the first step, so that the weights after training depend
    only on the seed and the arguments, never on the state of the generators when the model was built.

    :param model: the model (an :class:`~torch.nn.Module` with a ``history`` list).
    :param loss: ``loss(state) -> loss`` or ``(loss, values to record)``, for a :class:`TrainState`.
    :param param_groups: Adam's parameter groups, dictionaries with ``"params"`` and ``"lr"`` (and optionally
        ``"name"``, the argument named in errors about this group's learning rate).
    :param steps: optimisation steps.
    :param lr_final_factor: every learning rate follows a cosine decay from its value to this fraction of it at
        the last step, in (0, 1]; 1 keeps them constant.
    :param ema: a moving average of a network (:class:`EMA`).
    :param seed: see above.
    :param progress_bar: show a progress bar.
    :param desc: the progress bar's label.
    :param callback: called as ``callback(step, model)`` every ``callback_every`` steps and at the last step.
    :param callback_every: see ``callback``.
    :param time_limit: stop after the step during which this many seconds have passed.
    :param record_every: steps between history records.
    :param distributed: reserved for data-parallel training (not yet supported: must be ``None``).
    :returns: ``model``.
    :raises FloatingPointError: when the loss becomes NaN or infinite.

    Example::

        net = ps.nn.MLP(1, 1)
        net.history = []
        x = torch.randn(256, 1)

        def loss(state):
            return ((net(x) - 2 * x) ** 2).mean()

        groups = [{"params": net.parameters(), "lr": 1e-2}]
        ps.train.fit_loop(net, loss, param_groups=groups, steps=200, progress_bar=False)
    """
    check_positive_int("steps", steps)
    check_positive_int("callback_every", callback_every)
    check_positive_int("record_every", record_every)
    if time_limit is not None and not time_limit > 0:
        raise ValueError(f"time_limit must be a number of seconds > 0 or None, got {time_limit!r}")
    if distributed is not None:
        raise NotImplementedError(
            f"distributed training is not supported yet: distributed must be None, got {distributed!r}"
        )
    groups = _check_param_groups(param_groups)
    if seed is not None:
        resets = _reset_plan(model, [p for g in groups for p in g["params"]])  # raises before anything changes
        set_seed(seed)
        with torch.no_grad():
            for reset in resets:
                reset()
        if ema is not None and ema.target is not None:
            ema.target.load_state_dict(ema.source.state_dict())
        set_seed(seed)
    average = None
    if ema is not None:
        average = ema.target if ema.target is not None else copy.deepcopy(ema.source).requires_grad_(False)
    opt = torch.optim.Adam(groups)
    sched = cosine_decay(opt, steps, lr_final_factor)
    history = model.history
    state = TrainState(step=0, steps=steps, ema=average, optimizer=opt)
    bar = progress(range(1, steps + 1), enabled=progress_bar, total=steps, desc=desc)
    start = time.perf_counter()
    model.train()
    try:
        for step in bar:
            state.step = step
            out = loss(state)
            value, record = (out, {"loss": out}) if isinstance(out, torch.Tensor) else out
            if not math.isfinite(float(value.detach())):
                raise FloatingPointError(f"{desc} loss became non-finite at step {step}")
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            step_scheduler(sched)
            if ema is not None:
                ema_update_(average, ema.source, ema.decay_at(step))
            last = step == steps or (time_limit is not None and time.perf_counter() - start > time_limit)
            if step % record_every == 0 or last:
                history.append(
                    {"step": step, **{k: _number(v) for k, v in record.items()}, "time": time.perf_counter() - start}
                )
            if callback is not None and (step % callback_every == 0 or last):
                callback(step, model)
            if last:
                break
    finally:
        close = getattr(bar, "close", None)
        if close is not None:
            close()
        model.eval()
    return model
