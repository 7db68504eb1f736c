"""Resampling schemes of sequential Monte Carlo: each maps ``N`` log-weights to ``N`` ancestor indices."""

from __future__ import annotations

from typing import Callable

import torch


def systematic(log_weights: torch.Tensor) -> torch.Tensor:
    """Systematic resampling (one uniform, ``N`` evenly spaced points through the weights' CDF).

    Example::

        idx = ps.infer.systematic(torch.tensor([0.0, 0.0, -10.0]))  # (3,) indices
    """
    n = log_weights.shape[0]
    cdf = torch.cumsum(torch.softmax(log_weights.double(), 0), 0)
    u = torch.rand((), device=log_weights.device, dtype=torch.float64) + torch.arange(n, device=log_weights.device)
    return torch.searchsorted(cdf, (u / n).clamp(max=cdf[-1].item() - 1e-12)).clamp(max=n - 1)


def multinomial(log_weights: torch.Tensor) -> torch.Tensor:
    """Multinomial resampling (``N`` independent draws).

    Example::

        idx = ps.infer.multinomial(torch.tensor([0.0, 0.0, -10.0]))  # (3,) indices, mostly 0 and 1
    """
    probs = torch.softmax(log_weights.double(), 0)
    return torch.multinomial(probs, log_weights.shape[0], replacement=True)


SCHEMES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"systematic": systematic, "multinomial": multinomial}


def get_scheme(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A resampling scheme by name (``"systematic"`` or ``"multinomial"``)."""
    if name not in SCHEMES:
        raise ValueError(f"resampling must be one of {sorted(SCHEMES)}, got {name!r}")
    return SCHEMES[name]
