"""Layer 1: the training loop shared by every model (:func:`fit_loop`: optimiser, learning-rate decay, moving
averages, seed, progress bar, time limit, history, data-parallel training), its pieces, checkpoints
(:class:`Checkpointable`), and data-parallel worlds over torch.distributed (:func:`distributed`,
:class:`Distributed`; docs/distributed.md)."""

from pyro_sculpt.train.checkpoint import (
    Checkpointable,
    atomic_torch_save,
    check_env,
    cpu_state_dict,
    load_checkpoint,
    save_checkpoint,
)
from pyro_sculpt.train.data_parallel import (
    Distributed,
    active_distributed,
    distributed,
    init_distributed,
    is_main_process,
    launched_by_torchrun,
)
from pyro_sculpt.train.loop import EMA, TrainState, fit_loop, reset_parameters_
from pyro_sculpt.train.optim import check_ema_decay, cosine_decay, ema_update_, step_scheduler

__all__ = [
    "EMA",
    "Checkpointable",
    "Distributed",
    "TrainState",
    "active_distributed",
    "atomic_torch_save",
    "check_ema_decay",
    "check_env",
    "cosine_decay",
    "cpu_state_dict",
    "distributed",
    "ema_update_",
    "fit_loop",
    "init_distributed",
    "is_main_process",
    "launched_by_torchrun",
    "load_checkpoint",
    "reset_parameters_",
    "save_checkpoint",
    "step_scheduler",
]
