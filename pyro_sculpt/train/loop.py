"""The training loop shared by every model: models hold their loss, this module holds the loop.

A model's ``fit`` checks its own arguments, prepares what its loss needs, and calls :func:`fit_loop` with a
function computing ONE step's loss from a batch the model draws. The loop owns everything else: the seed (and the
re-initialisation it implies), Adam with parameter groups, the optional cosine learning-rate decay, the optional
moving average of a network, the check for a non-finite loss, the history, the callback, the time limit, the
progress bar, and data-parallel training over :mod:`torch.distributed` (:mod:`pyro_sculpt.train.data_parallel`,
docs/distributed.md).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from pyro_sculpt.train.data_parallel import (
    Distributed,
    DistributedLike,
    RngStreams,
    _activated,
    local_batch_size,
    resolve_distributed,
    seed_streams,
    seed_this_rank,
)
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
    :param warmup: use :math:`\\min(d, (1 + k) / (10 + k))` at the :math:`k`-th update, so that short runs average
        recent weights rather than the initialisation. A kept ``target`` counts its updates (``target.ema_updates``):
        a fit without a seed, which continues from the current weights and their average, continues the count (it
        used to restart the warm-up, replacing the average by the raw weights: decay 0.18 at the first step).

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
    :ivar batch_size: this process's share of the batch (the ``batch_size`` given to :func:`fit_loop` divided by the
        world size; the whole of it in one process), ``None`` when :func:`fit_loop` was given none.
    :ivar rank: this process's rank (0 in one process; the shard in a :meth:`Distributed.single_process` world).
    :ivar world_size: the number of processes (1 in one process).

    Example::

        def loss(state: ps.train.TrainState):
            return model.loss(batch_size=128), {"lr": state.optimizer.param_groups[0]["lr"]}
    """

    step: int
    steps: int
    ema: Optional[nn.Module]
    optimizer: torch.optim.Optimizer
    batch_size: Optional[int] = None
    rank: int = 0
    world_size: int = 1


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
    batch_size: Optional[int] = None,
    distributed: DistributedLike = None,
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
    :param lr_final_factor: every learning rate follows a cosine decay from its value towards this fraction of it,
        in (0, 1]; 1 keeps them constant. Step :math:`k` (from 1) uses the rate of :func:`cosine_decay` at
        :math:`k - 1`, so the fraction is reached after the last step (the last step's rate is one step short of
        it: with 1,500 steps, about 1e-6 of the range above it).
    :param ema: a moving average of a network (:class:`EMA`).
    :param seed: see above.
    :param progress_bar: show a progress bar.
    :param desc: the progress bar's label.
    :param callback: called as ``callback(step, model)`` every ``callback_every`` steps and at the last step.
    :param callback_every: see ``callback``.
    :param time_limit: stop after the step during which this many seconds have passed.
    :param record_every: steps between history records.
    :param batch_size: the batch size of a step, which the processes of a data-parallel run split: ``loss`` reads
        this process's share from :attr:`TrainState.batch_size` and must return the mean of a per-item loss over
        it, so that the averaged gradients are those of the full batch.
    :param distributed: data-parallel training (docs/distributed.md): ``None`` (default) follows the active
        :func:`~pyro_sculpt.train.distributed` context (one process outside one); ``False``: one process; ``True``:
        the default process group, initialised from ``torchrun``'s environment if needed; or a
        :class:`~pyro_sculpt.train.Distributed`. Every process runs this loop with the same arguments; each draws its
        batch share with its own generators (seeded from ``seed`` and its rank,
        :func:`~pyro_sculpt.train.data_parallel.rank_seed`); after every backward pass the gradients are averaged
        over the processes (one all-reduce, as DistributedDataParallel does), so the weights stay equal on every
        process. Rank 0's weights are broadcast first; only rank 0 shows the progress bar; records in the history
        are averaged over the processes; checkpoints written during the run (by ``callback``) are written by rank 0
        only. :meth:`Distributed.single_process(n) <pyro_sculpt.train.Distributed.single_process>` runs the ``n``
        shards one after another in this process: the same weights as ``n`` processes.
    :returns: ``model``.
    :raises FloatingPointError: when the loss becomes NaN or infinite (on any process).
    :raises ValueError: when the world size does not divide ``batch_size``.

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
    if batch_size is not None:
        check_positive_int("batch_size", batch_size)
    world = resolve_distributed(distributed)
    world_size = 1 if world is None else world.world_size
    local = None if batch_size is None else local_batch_size(batch_size, world_size)
    groups = _check_param_groups(param_groups)
    params = [p for g in groups for p in g["params"]]
    if seed is not None:
        resets = _reset_plan(model, params)  # raises before anything changes
        set_seed(seed)
        with torch.no_grad():
            for reset in resets:
                reset()
        if ema is not None and ema.target is not None:
            ema.target.load_state_dict(ema.source.state_dict())
        set_seed(seed)
    streams = None
    if world is not None and world.emulated:
        seeds = seed_streams(world, seed)
        streams = RngStreams([None if seed is None and k == 0 else s for k, s in enumerate(seeds)])
    elif world is not None:
        _broadcast_module(world, model)  # every process starts from rank 0's weights
        if ema is not None and ema.target is not None:
            _broadcast_module(world, ema.target)
        seed_this_rank(world, seed)
    average, ema_offset = None, 0
    if ema is not None:
        average = ema.target if ema.target is not None else copy.deepcopy(ema.source).requires_grad_(False)
        if ema.target is not None and seed is None:  # a continued fit: the warm-up goes on from the updates done
            ema_offset = int(getattr(ema.target, "ema_updates", 0))
    opt = torch.optim.Adam(groups)
    sched = cosine_decay(opt, steps, lr_final_factor)
    history = model.history
    state = TrainState(step=0, steps=steps, ema=average, optimizer=opt, batch_size=local,
                       rank=0 if world is None else world.rank, world_size=world_size)  # fmt: skip
    show = progress_bar and (world is None or world.is_main)
    bar = progress(range(1, steps + 1), enabled=show, total=steps, desc=desc)
    start = time.perf_counter()
    model.train()
    try:
        with _activated(world):
            for step in bar:
                state.step = step
                opt.zero_grad(set_to_none=True)
                if world is None:
                    record, over_time = _single_step(loss, state, desc)
                elif streams is not None:
                    record, over_time = _emulated_step(loss, state, desc, streams, params, start, time_limit)
                else:
                    record, over_time = _distributed_step(loss, state, desc, world, params, start, time_limit)
                opt.step()
                step_scheduler(sched)
                if ema is not None:
                    ema_update_(average, ema.source, ema.decay_at(ema_offset + step))
                    average.ema_updates = ema_offset + step
                if over_time is None:
                    over_time = time_limit is not None and time.perf_counter() - start > time_limit
                last = step == steps or over_time
                if step % record_every == 0 or last:
                    values = {k: _number(v) for k, v in record.items()}
                    if world is not None and not world.emulated:
                        values = _mean_over_processes(world, values)
                    history.append({"step": step, **values, "time": time.perf_counter() - start})
                if callback is not None and (step % callback_every == 0 or last):
                    callback(step, model)
                if last:
                    break
        if streams is not None and seed is None:
            streams.continue_global(0)  # rank 0 continued the global generators: they move on as a real run's do
    finally:
        close = getattr(bar, "close", None)
        if close is not None:
            close()
        model.eval()
    return model


def _split_output(out: StepOutput) -> tuple[torch.Tensor, Mapping[str, Any]]:
    return (out, {"loss": out}) if isinstance(out, torch.Tensor) else out


def _single_step(loss, state: TrainState, desc: str):
    value, record = _split_output(loss(state))
    if not math.isfinite(float(value.detach())):
        raise FloatingPointError(f"{desc} loss became non-finite at step {state.step}")
    value.backward()
    return record, None


def _emulated_step(loss, state: TrainState, desc: str, streams: RngStreams, params, start, time_limit):
    """Every shard's loss with its own generators, gradients summed by autograd and divided by the world size
    (what :func:`_distributed_step` computes with one all-reduce)."""
    records = []
    for k in range(state.world_size):
        state.rank = k
        with streams.use(k):
            value, record = _split_output(loss(state))
        if not math.isfinite(float(value.detach())):
            raise FloatingPointError(f"{desc} loss became non-finite at step {state.step} (shard {k})")
        value.backward()
        records.append({key: _number(v) for key, v in record.items()})
    state.rank = 0
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p.grad.div_(state.world_size)
    mean = {key: sum(r[key] for r in records) / len(records) for key in records[0]}
    return mean, None


def _distributed_step(loss, state: TrainState, desc: str, world: Distributed, params, start, time_limit):
    """This process's loss and backward pass, then ONE all-reduce of the gradients, the parameters that got a
    gradient somewhere, the loss (to stop every process on a non-finite loss) and the time-limit flag (so that every
    process stops at the same step)."""
    value, record = _split_output(loss(state))
    value.backward()
    device = world.device
    # reduce in the parameters' dtype (the sum autograd would accumulate in one process), float64 if they differ
    dtype = params[0].dtype if len({p.dtype for p in params}) == 1 else torch.float64
    over = time_limit is not None and time.perf_counter() - start > time_limit
    flat = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(device, dtype) for p in params]
    has = torch.tensor([p.grad is not None for p in params], dtype=dtype, device=device)
    extra = torch.stack([value.detach().to(device, dtype), torch.tensor(float(over), dtype=dtype, device=device)])
    sizes = [f.numel() for f in flat]
    buf = torch.cat(flat + [has, extra])
    world.all_reduce_(buf)
    total = float(buf[-2])
    if not math.isfinite(total):
        raise FloatingPointError(f"{desc} loss became non-finite at step {state.step} (on some process)")
    grads = buf[: sum(sizes)].div_(world.world_size).split(sizes)
    present = buf[sum(sizes) : sum(sizes) + len(params)]
    with torch.no_grad():
        for p, g, h in zip(params, grads, present):
            p.grad = g.view_as(p).to(p.dtype) if float(h) > 0 else None
    return record, bool(float(buf[-1]) > 0)


def _mean_over_processes(world: Distributed, values: dict) -> dict:
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=world.device)
    world.all_reduce_(t).div_(world.world_size)
    return {k: float(v) for k, v in zip(keys, t)}


def _broadcast_module(world: Distributed, module: nn.Module) -> None:
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            buf = t.detach().to(world.device).clone()
            t.copy_(world.broadcast_(buf).to(t.device))
