"""Small shared helpers: seeding, devices, progress bars and argument checks."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from typing import Any, Union

import numpy as np
import torch

#: a device argument: a name, a :class:`torch.device`, or ``None`` (CPU)
DeviceLike = Union[str, torch.device, None]


def set_seed(seed: int | None) -> None:
    """Seed Python, NumPy, torch and Pyro's global generators.

    :param seed: the seed, or ``None`` to leave the generators alone.
    """
    if seed is None:
        return
    import pyro

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    pyro.set_rng_seed(seed)


def as_device(device: str | torch.device | None) -> torch.device:
    """Normalise a device argument (``None`` means CPU)."""
    if device is None:
        return torch.device("cpu")
    return torch.device(device)


def progress(iterable: Iterable, *, enabled: bool, total: int | None = None, desc: str | None = None) -> Any:
    """Wrap ``iterable`` in a :mod:`tqdm` progress bar when ``enabled``."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """Raise a :class:`ValueError` naming ``name`` unless ``value`` is an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_probability(name: str, value: Any, *, open_interval: bool = True) -> float:
    """Raise a :class:`ValueError` naming ``name`` unless ``value`` lies in (0, 1) (or [0, 1])."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}") from None
    ok = (0.0 < v < 1.0) if open_interval else (0.0 <= v <= 1.0)
    if not ok or math.isnan(v):
        interval = "(0, 1)" if open_interval else "[0, 1]"
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    return v


def logit(p: float) -> float:
    """:math:`\\log p - \\log(1 - p)`."""
    return math.log(p) - math.log1p(-p)
