"""The bases' log-densities along a reverse-diffusion path, per particle (docs/math.md §1.6).

A classifier-free composition of diffusion models needs, for every particle :math:`x_t` and every leaf :math:`i`,
:math:`\\log q_{i,t}(x_t)`: the posterior over bases :math:`\\rho_i \\propto w_i q_{i,t}` of its proposal and the
intermediate targets :math:`\\exp \\Phi(\\log q_{1,t}, \\dots, \\log q_{m,t})` of its SMC weights. Two sources share one
protocol (:class:`PathDensities`, that of :class:`pyro_sculpt.diffusion.density.PathDensityTracker`):

* :class:`ExactDensities`: models with an exact ``log_prob(x, t)`` (the Gaussian-mixture oracles);
* :func:`tracked_densities`: the Itô density estimator (Skreta et al., ICLR 2025), carried along the path from the
  exact prior with the scores the sampler computes anyway; it needs a stochastic sampler.

Log-densities are float64, ``(N, m)``; scores ``(N, m) + event_shape`` in the states' dtype.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import torch

from pyro_sculpt.diffusion.model import DiffusionModel

#: the density sources a composition accepts
DENSITY_MODES = ("auto", "exact", "tracked")


class PathDensities(Protocol):
    """Per-particle log-densities :math:`\\log q_{i,t}(x_t)` of m models along a path."""

    def init(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """``(N, m)`` float64 :math:`\\log q_{i,t}(x)` at the path's start."""

    def scores(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """``(N, m) + event_shape`` the models' scores at ``x`` and time ``t``."""

    def update(
        self,
        log_q: torch.Tensor,
        x: torch.Tensor,
        x_next: torch.Tensor,
        t: float,
        t_next: float,
        scores: torch.Tensor = None,
    ) -> torch.Tensor:
        """``(N, m)`` float64 :math:`\\log q_{i,t'}(x')` after the step from ``(x, t)`` to ``(x_next, t_next)``
        (``scores``: the models' scores at ``(x, t)`` if already computed)."""


def has_exact_log_prob(model: Any) -> bool:
    """Whether ``model`` has an exact ``log_prob(x, t)`` (e.g. a
    :class:`~pyro_sculpt.diffusion.GaussianMixtureOracle`)."""
    return callable(getattr(model, "log_prob", None))


class ExactDensities:
    """:class:`PathDensities` of models with an exact ``log_prob(x, t)``: every value is the model's own, computed in
    float64, and independent of the path.

    :param models: diffusion models with ``log_prob(x, t)``.

    Example::

        dens = ExactDensities([oracle1, oracle2])
        log_q = dens.init(x, 1.0)          # (N, 2)
    """

    def __init__(self, models: Sequence[DiffusionModel]):
        models = list(models)
        for k, m in enumerate(models):
            if not has_exact_log_prob(m):
                raise TypeError(
                    f"models[{k}] ({type(m).__name__}) has no exact log_prob(x, t): use densities='tracked' (the Itô "
                    "estimator along a stochastic sampler's path)"
                )
        self.models = models
        self.event_shape = models[0].event_shape

    def _log_q(self, x: torch.Tensor, t: float) -> torch.Tensor:
        xd = x.double()
        return torch.stack([m.log_prob(xd, t).double() for m in self.models], -1)

    def init(self, x: torch.Tensor, t: float) -> torch.Tensor:
        return self._log_q(x, t)

    def scores(self, x: torch.Tensor, t: float) -> torch.Tensor:
        return torch.stack([m.score(x, t) for m in self.models], -1 - len(self.event_shape))

    def update(self, log_q, x, x_next, t, t_next, scores=None) -> torch.Tensor:
        return self._log_q(x_next, t_next)


class ScoreOnlyDensities(ExactDensities):
    """Scores only: for operators whose proposal and targets need no log-density (none is computed; every
    log-density reads 0). Used by plain sampling of linear operators (products, negations) of models without an
    exact ``log_prob``."""

    def __init__(self, models: Sequence[DiffusionModel]):
        self.models = list(models)
        self.event_shape = self.models[0].event_shape

    def _log_q(self, x: torch.Tensor, t: float) -> torch.Tensor:
        batch = x.shape[: x.dim() - len(self.event_shape)]
        return torch.zeros(batch + (len(self.models),), dtype=torch.float64, device=x.device)


class AnyBatch:
    """:class:`PathDensities` over states of any batch shape (a composed process sampled with shape ``()`` or ``(4,
    5)``, or in nested plates) on a source that takes ``(N, *event_shape)`` only, such as the Itô tracker: states
    are flattened to one batch dimension and the results reshaped back. A state seen again gets the same flat view,
    so the source's reuse of the last step's end (its scores and traces) still applies.

    :param source: the :class:`PathDensities` to wrap.
    :param event_shape: the models' event shape.
    """

    def __init__(self, source: PathDensities, event_shape: torch.Size):
        self.source = source
        self.event_shape = torch.Size(event_shape)
        self._views: list = []  # (state, its flat view) of the last two states

    def _batch(self, x: torch.Tensor) -> torch.Size:
        return x.shape[: x.dim() - len(self.event_shape)]

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 1 + len(self.event_shape):
            return x
        for state, flat in self._views:
            if state is x:
                return flat
        flat = x.reshape((-1,) + tuple(self.event_shape))
        self._views = [(x, flat)] + self._views[:1]
        return flat

    def init(self, x: torch.Tensor, t: float) -> torch.Tensor:
        log_q = self.source.init(self._flat(x), t)
        return log_q.reshape(self._batch(x) + log_q.shape[1:])

    def scores(self, x: torch.Tensor, t: float) -> torch.Tensor:
        scores = self.source.scores(self._flat(x), t)
        return scores.reshape(self._batch(x) + scores.shape[1:])

    def update(self, log_q, x, x_next, t, t_next, scores=None) -> torch.Tensor:
        batch = self._batch(x)
        if scores is not None:
            scores = scores.reshape((-1,) + scores.shape[len(batch) :])
        log_q = log_q.expand(batch + log_q.shape[-1:]).reshape(-1, log_q.shape[-1])
        out = self.source.update(log_q, self._flat(x), self._flat(x_next), t, t_next, scores=scores)
        return out.reshape(batch + out.shape[1:])


def tracker_available() -> bool:
    """Whether :class:`pyro_sculpt.diffusion.density.PathDensityTracker` (the Itô density estimator) is installed."""
    try:
        from pyro_sculpt.diffusion.density import PathDensityTracker  # noqa: F401
    except ImportError:
        return False
    return True


def tracked_densities(models: Sequence[DiffusionModel], sampler: Any) -> PathDensities:
    """The Itô density estimator of ``models`` along ``sampler``'s path
    (:class:`pyro_sculpt.diffusion.density.PathDensityTracker`).

    :param sampler: the reverse-diffusion sampler whose steps the particles follow; every step after the initial
        noise must be stochastic (:math:`c > 0`): a deterministic sampler does not follow the forward SDE's diffusion.
    :raises ValueError: for a deterministic step.
    :raises NotImplementedError: if the density tracker is not available.
    """
    for t in range(1, sampler.max_steps):
        if sampler.step_coefficients(t)[2] == 0.0:
            raise ValueError(
                f"densities='tracked' needs a stochastic sampler, but step {t} of {sampler!r} is deterministic "
                "(the Itô density estimator follows paths with the forward SDE's noise): use AncestralSampler, "
                "EulerMaruyamaSampler or DDIMSampler(eta > 0) bases, or models with an exact log_prob "
                "(densities='exact')"
            )
    try:
        from pyro_sculpt.diffusion.density import PathDensityTracker
    except ImportError:
        raise NotImplementedError(
            "densities='tracked' needs pyro_sculpt.diffusion.density.PathDensityTracker (the Itô density estimator), "
            "which is not available in this installation; use models with an exact log_prob (densities='exact')"
        ) from None
    return PathDensityTracker(list(models), models[0].schedule)
