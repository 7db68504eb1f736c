"""Small shared helpers: seeding, devices, progress bars and argument checks."""

from __future__ import annotations

import math
import numbers
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
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32) or None, got {seed!r}")
    seed = int(seed)
    import pyro

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    pyro.set_rng_seed(seed)


def as_device(device: DeviceLike, name: str = "device") -> torch.device:
    """Normalise a device argument (``None`` means CPU) and check that this machine has it.

    Every model, sampler and oracle that takes a ``device`` goes through this function, so that asking for a device
    that is not there fails at once with a message naming the argument, instead of deep inside torch.

    :param device: a device name (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...), a :class:`torch.device`, or ``None``.
    :param name: the argument's name, for messages.
    :raises ValueError: naming ``name`` for a malformed device, a CUDA device when CUDA is not available (or an
        index beyond the devices present), or an MPS device when MPS is not available.
    """
    if device is None:
        return torch.device("cpu")
    if isinstance(device, bool) or not isinstance(device, (str, torch.device, int)):
        raise ValueError(
            f"{name} must be a device name such as 'cpu' or 'cuda:0', a torch.device or None, got "
            f"{type(device).__name__}"
        )
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"{name} must be a device such as 'cpu' or 'cuda:0', got {device!r} ({e})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"{name}='{dev}' asks for CUDA, but CUDA is not available on this machine (torch "
                f"{torch.__version__}); pass device='cpu' or None"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"{name}='{dev}': this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name}='{dev}' asks for MPS, but MPS is not available on this machine; pass 'cpu'")
    return dev


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


def check_number(name: str, value: Any, minimum: float, *, strict: bool) -> float:
    """Raise a :class:`ValueError` naming ``name`` unless ``value`` is a finite real number ``> minimum``
    (``strict``) or ``>= minimum``."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or (value <= minimum if strict else value < minimum):
        raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} {minimum:g}, got {value!r}")
    return float(value)


def check_finite(name: str, x: torch.Tensor) -> None:
    """Raise a :class:`ValueError` naming ``name`` if the tensor ``x`` holds NaN or infinite entries."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite, got {int((~torch.isfinite(x)).sum())} NaN or infinite entries")


def check_sample_shape(name: str, value: Any) -> torch.Size:
    """Raise a :class:`ValueError` naming ``name`` unless ``value`` is a shape: a sequence of integers >= 0 (a
    ``torch.Size`` or a tuple such as ``(1000,)``). A zero entry is allowed and gives an empty batch."""
    if isinstance(value, (str, bytes, torch.Tensor)) or not isinstance(value, Iterable):
        raise ValueError(f"{name} must be a tuple of integers >= 0 such as (1000,), got {value!r}")
    dims = tuple(value)
    for v in dims:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be a tuple of integers >= 0 such as (1000,), got {dims!r}")
    return torch.Size(int(v) for v in dims)


def check_probability(name: str, value: Any, *, open_interval: bool = True) -> float:
    """Raise a :class:`ValueError` naming ``name`` unless ``value`` lies in (0, 1) (or [0, 1])."""
    if isinstance(value, (str, bytes, bool)):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
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


def require_rdkit(purpose: str = "fragment molecules"):
    """The ``rdkit.Chem`` module (RDKit is the optional ``mol`` extra), with RDKit's console logging switched off.

    :param purpose: what needs it, for the error message.
    :raises ImportError: naming the ``mol`` extra when RDKit is not installed.

    Example::

        Chem = require_rdkit("molecule metrics")
        Chem.MolToSmiles(Chem.MolFromSmiles("c1ccccc1O"))
    """
    try:
        from rdkit import Chem, RDLogger
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"{purpose} need RDKit: install it with `pip install pyro-sculpt[mol]` (or `pip install rdkit`)"
        ) from err
    RDLogger.DisableLog("rdApp.*")
    return Chem
