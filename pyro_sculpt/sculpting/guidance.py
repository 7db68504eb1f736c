"""What a guided step needs to know, and the protocol through which a process makes its own guided step.

The guidance handler (:class:`~pyro_sculpt.sculpting.SculptGuidanceMessenger`) is family-agnostic: at every step
site it asks the site's process for the guided distribution, through :class:`GuidableProcess`. Each family's
mixture process implements it (GFlowNets: the guided policy of docs/math.md §1.1; diffusion: the guided score of §1.3).
"""

from __future__ import annotations

import math
import weakref
from typing import Any, Callable, Optional, Protocol, Sequence, runtime_checkable

from pyro.distributions import TorchDistribution

from pyro_sculpt.processes.process import State


def check_gamma(gamma: Any) -> float:
    """Raise a :class:`ValueError` naming ``gamma`` unless it is a finite number >= 0."""
    try:
        g = float(gamma)
    except (TypeError, ValueError):
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}") from None
    if not math.isfinite(g) or g < 0:
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")
    return g


class Guidance:
    """The observations to condition on, the classifier that answers them, and the guidance scale.

    :param classifier: an observation classifier of the bases (any family: it has ``num_models`` and
        ``num_observations``).
    :param y: observed base indices (0-based), ``None`` for unobserved.
    :param alpha: prior :math:`(\\alpha, 1-\\alpha)` of :math:`y_{2..n}` (two bases).
    :param gamma: guidance scale (diffusion only; GFlowNet guidance is exact and needs 1).

    Example::

        guidance = ps.sculpting.Guidance(clf, y=(0, 1))  # what sculpt_guidance carries to each step
    """

    def __init__(self, classifier: Any, y: Sequence[Optional[int]], alpha: Optional[float] = None, gamma: float = 1.0):
        for attr in ("num_models", "num_observations"):
            if not hasattr(classifier, attr):
                raise TypeError(
                    f"classifier must be an observation Classifier (with num_models and num_observations), got "
                    f"{type(classifier).__name__}"
                )
        self.classifier = classifier
        self.y = tuple(y)
        self.alpha = alpha
        self.gamma = check_gamma(gamma)
        self._cache: dict = {}

    def cached(self, process: Any, build: Callable[[], Any]) -> Any:
        """``build()`` once per process (the observations and checks of a process are computed at its first step)."""
        key = id(process)
        entry = self._cache.get(key)
        if entry is None or entry[0]() is not process:
            # weak references: a handler reused over many model calls (an SVI loop building a mixture each time)
            # keeps no dead process alive; their entries go when the next process is added
            self._cache = {k: v for k, v in self._cache.items() if v[0]() is not None}
            entry = self._cache[key] = (weakref.ref(process), build())
        return entry[1]

    def __repr__(self) -> str:
        return (
            f"Guidance(y={self.y}, alpha={self.alpha}, gamma={self.gamma}, classifier={type(self.classifier).__name__})"
        )


@runtime_checkable
class GuidableProcess(Protocol):
    """A process whose steps the guidance handler can replace by guided ones.

    Example::

        mix = ps.mixture(p1, p2).process  # a GuidableProcess
        isinstance(mix, ps.sculpting.GuidableProcess)  # True
    """

    def guided_step_dist(self, state: State, t: int, guidance: Guidance) -> Optional[TorchDistribution]:
        """The guided distribution of step ``t`` from ``state`` (batch shape of the state), or ``None`` to keep the
        step as it is (e.g. a diffusion mixture's choice of base or its initial noise)."""
