"""The interface every diffusion model implements: a noise schedule and a score :math:`\\nabla_x \\log
p_t(x)`."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from pyro_sculpt.diffusion.schedules import NoiseSchedule, TimeLike


class DiffusionModel(ABC):
    """Abstract base class of a diffusion model on :math:`\\mathbb R^D`.

    A diffusion model is a :class:`~pyro_sculpt.diffusion.NoiseSchedule` and a score function :math:`s(x, t)
    \\approx \\nabla_x \\log p_t(x)` of the noised data density :math:`p_t = p_0 * \\mathcal N(0,
    \\sigma_t^2)` (after scaling by :math:`\\alpha_t`). The samplers of :mod:`pyro_sculpt.diffusion.samplers`
    and :func:`~pyro_sculpt.diffusion.probability_flow_log_prob` only use :meth:`score`, so a trained
    :class:`~pyro_sculpt.diffusion.ScoreModel`, an exact :class:`~pyro_sculpt.diffusion.GaussianMixtureOracle`
    and a composed model are interchangeable.

    Subclasses set :attr:`schedule`, :attr:`dim` and :attr:`device` and implement :meth:`score` (or
    :meth:`eps`).
    """

    schedule: NoiseSchedule
    dim: int

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @abstractmethod
    def score(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """:math:`\\nabla_x \\log p_t(x)` at ``x`` of shape ``(..., D)``; ``t`` is a float or a tensor that
        broadcasts against ``x.shape[:-1]``. Returns a tensor of ``x``'s shape."""

    def eps(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """The noise prediction :math:`\\hat\\epsilon(x, t) = -\\sigma_t\\, s(x, t)`."""
        sigma = self.schedule.sigma(time_like(t, x)).unsqueeze(-1)
        return -sigma * self.score(x, t)

    def denoise(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """Tweedie's posterior mean :math:`\\mathbb E[x_0 \\mid x_t] = (x_t + \\sigma_t^2 s(x_t, t)) /
        \\alpha_t`."""
        tt = time_like(t, x)
        alpha = self.schedule.alpha(tt).unsqueeze(-1)
        sigma2 = self.schedule.sigma2(tt).unsqueeze(-1)
        return (x + sigma2 * self.score(x, t)) / alpha

    def check_input(self, x: torch.Tensor, name: str = "x") -> None:
        """Raise a :class:`ValueError` naming ``name`` unless ``x`` is a floating tensor of shape
        ``(..., dim)``."""
        check_points(x, self.dim, name)


def time_like(t: TimeLike, x: torch.Tensor) -> torch.Tensor:
    """``t`` as a tensor of ``x``'s dtype and device, broadcast to ``x.shape[:-1]``."""
    tt = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    try:
        return tt.expand(x.shape[:-1]) if tt.dim() else tt
    except RuntimeError:
        raise ValueError(
            f"t of shape {tuple(tt.shape)} does not broadcast against the batch shape {tuple(x.shape[:-1])} of x"
        ) from None


def check_points(x: torch.Tensor, dim: int, name: str = "x") -> None:
    """Raise a :class:`ValueError` naming ``name`` unless ``x`` is a floating tensor of shape
    ``(..., dim)``."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a tensor of shape (..., {dim}), got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() < 1 or x.shape[-1] != dim:
        raise ValueError(f"{name} must have shape (..., {dim}) (data dimension {dim}), got {tuple(x.shape)}")
