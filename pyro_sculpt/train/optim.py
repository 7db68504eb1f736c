"""Pieces shared by the training loops: the learning-rate decay and the moving-average target network."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn


def cosine_decay(optimizer: torch.optim.Optimizer, steps: int, final_factor: float):
    """A cosine decay of every learning rate of ``optimizer`` to ``final_factor`` times its value at ``steps``.

    :returns: the scheduler (call ``.step()`` after each optimiser step), or ``None`` when ``final_factor`` is 1
        (constant rates).
    :raises ValueError: unless ``final_factor`` lies in (0, 1].

    Example::

        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        scheduler = ps.train.cosine_decay(opt, steps=1000, final_factor=0.05)
    """
    if not 0.0 < final_factor <= 1.0:
        raise ValueError(f"lr_final_factor must lie in (0, 1], got {final_factor!r}")
    if final_factor == 1.0:
        return None
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda k: final_factor + (1 - final_factor) * 0.5 * (1 + math.cos(math.pi * min(k, steps) / steps))
    )


def check_ema_decay(decay: float) -> float:
    """Raise a :class:`ValueError` unless ``decay`` lies in [0, 1).

    Example::

        ps.train.check_ema_decay(0.995)  # 0.995; 1.0 raises
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"ema_decay must lie in [0, 1), got {decay!r}")
    return float(decay)


@torch.no_grad()
def ema_update_(target: nn.Module, source: nn.Module, decay: float) -> None:
    """:math:`\\bar\\theta \\leftarrow \\text{decay}\\, \\bar\\theta + (1 - \\text{decay})\\, \\theta`, in place, for
    every parameter; buffers (running statistics) are copied from ``source``.

    Example::

        ps.train.ema_update_(average_net, net, decay=0.995)
    """
    for pt, p in zip(target.parameters(), source.parameters(), strict=True):
        pt.lerp_(p.detach(), 1 - decay)
    for bt, b in zip(target.buffers(), source.buffers(), strict=True):
        bt.copy_(b)


def step_scheduler(scheduler: Optional[torch.optim.lr_scheduler.LRScheduler]) -> None:
    """``scheduler.step()`` if there is one.

    Example::

        ps.train.step_scheduler(scheduler)  # does nothing when scheduler is None
    """
    if scheduler is not None:
        scheduler.step()
