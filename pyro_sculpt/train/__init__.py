"""Layer 1: training pieces shared by every model (learning-rate decay, moving averages) and checkpoints."""

from pyro_sculpt.train.checkpoint import check_env, load_checkpoint, save_checkpoint
from pyro_sculpt.train.optim import check_ema_decay, cosine_decay, ema_update_, step_scheduler

__all__ = [
    "check_ema_decay",
    "check_env",
    "cosine_decay",
    "ema_update_",
    "load_checkpoint",
    "save_checkpoint",
    "step_scheduler",
]
