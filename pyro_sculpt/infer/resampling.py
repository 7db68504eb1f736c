"""Resampling schemes of sequential Monte Carlo: each maps ``N`` log-weights to ancestor indices (``N`` of them, or
``num_samples``)."""

from __future__ import annotations

from typing import Callable, Optional

import torch

from pyro_sculpt.utils import check_positive_int


def _count(log_weights: torch.Tensor, num_samples: Optional[int]) -> int:
    return log_weights.shape[0] if num_samples is None else check_positive_int("num_samples", num_samples)


def systematic(log_weights: torch.Tensor, num_samples: Optional[int] = None) -> torch.Tensor:
    """Systematic resampling (one uniform, ``num_samples`` evenly spaced points through the weights' CDF; default
    ``N``). Each particle is drawn :math:`\\lfloor n w_i \\rfloor` or :math:`\\lceil n w_i \\rceil` times, so equal
    weights with ``num_samples = N`` return every particle once. The indices come sorted.

    Example::

        idx = ps.infer.systematic(torch.tensor([0.0, 0.0, -10.0]))  # (3,) indices
    """
    n = log_weights.shape[0]
    k = _count(log_weights, num_samples)
    cdf = torch.cumsum(torch.softmax(log_weights.double(), 0), 0)
    u = torch.rand((), device=log_weights.device, dtype=torch.float64) + torch.arange(k, device=log_weights.device)
    return torch.searchsorted(cdf, (u / k).clamp(max=cdf[-1].item() - 1e-12)).clamp(max=n - 1)


def multinomial(log_weights: torch.Tensor, num_samples: Optional[int] = None) -> torch.Tensor:
    """Multinomial resampling (``num_samples`` independent draws; default ``N``).

    Example::

        idx = ps.infer.multinomial(torch.tensor([0.0, 0.0, -10.0]))  # (3,) indices, mostly 0 and 1
    """
    probs = torch.softmax(log_weights.double(), 0)
    return torch.multinomial(probs, _count(log_weights, num_samples), replacement=True)


SCHEMES: dict[str, Callable[..., torch.Tensor]] = {"systematic": systematic, "multinomial": multinomial}


def get_scheme(name: str) -> Callable[..., torch.Tensor]:
    """A resampling scheme by name (``"systematic"`` or ``"multinomial"``)."""
    if name not in SCHEMES:
        raise ValueError(f"resampling must be one of {sorted(SCHEMES)}, got {name!r}")
    return SCHEMES[name]
