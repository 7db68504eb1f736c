"""The interface every diffusion model implements: a noise schedule and a score :math:`\\nabla_x \\log
p_t(x)`, on events of any shape (vectors ``(D,)``, images ``(C, H, W)``)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from pyro_sculpt.diffusion.schedules import NoiseSchedule, TimeLike
from pyro_sculpt.utils import check_positive_int

#: an event shape: a sequence of positive sizes, or an int ``D`` for a vector ``(D,)``
EventShapeLike = Union[int, Sequence[int], torch.Size]


class DiffusionModel(ABC):
    """Abstract base class of a diffusion model on events of shape :attr:`event_shape`.

    A diffusion model is a :class:`~pyro_sculpt.diffusion.NoiseSchedule` and a score function :math:`s(x, t)
    \\approx \\nabla_x \\log p_t(x)` of the noised data density :math:`p_t = p_0 * \\mathcal N(0,
    \\sigma_t^2)` (after scaling by :math:`\\alpha_t`). The samplers of :mod:`pyro_sculpt.diffusion.samplers`
    and :func:`~pyro_sculpt.diffusion.probability_flow_log_prob` only use :meth:`score`, so a trained
    :class:`~pyro_sculpt.diffusion.ScoreModel`, an exact :class:`~pyro_sculpt.diffusion.GaussianMixtureOracle`
    and a composed model are interchangeable.

    **Shapes.** One data point is a tensor of shape :attr:`event_shape`: ``(D,)`` for vector data, ``(C, H, W)``
    for images. A batch of points has shape ``batch_shape + event_shape``: the leading dimensions are batch
    dimensions (particles, plates), the trailing ``len(event_shape)`` ones are the event. :attr:`dim` is the number
    of entries of one event, :math:`D = \\prod_k` ``event_shape[k]``, the dimension of the data space
    :math:`\\mathbb R^D` (for a vector model the same as ``event_shape[0]``).

    Subclasses set :attr:`schedule` and either :attr:`event_shape` (any shape) or :attr:`dim` (a vector model of
    event shape ``(dim,)``), implement :meth:`score` (or :meth:`eps`), and may override :attr:`device` and
    :attr:`dtype` (a model that wraps another should return the wrapped one's).

    Example::

        class MyImageModel(DiffusionModel):
            def __init__(self, net):
                self.schedule, self.event_shape, self.net = VPSchedule(), (3, 28, 28), net

            def score(self, x, t):
                check_points(x, self.event_shape)
                tt = time_like(t, x, self.event_shape)
                return -self.net(x, tt) / per_batch(self.schedule.sigma(tt), self.event_shape)
    """

    schedule: NoiseSchedule

    @property
    def event_shape(self) -> torch.Size:
        """The shape of one data point (``(D,)`` for a vector model)."""
        shape = self.__dict__.get("_event_shape")
        if shape is None:  # a subclass that defines ``dim`` itself (a class attribute or a property)
            return torch.Size([check_positive_int("dim", self.dim)])
        return shape

    @event_shape.setter
    def event_shape(self, value: EventShapeLike) -> None:
        self._event_shape = as_event_shape(value)

    @property
    def dim(self) -> int:
        """The number of entries of one data point, :math:`D = \\prod` ``event_shape``; setting it makes the model a
        vector model of event shape ``(dim,)``."""
        shape = self.__dict__.get("_event_shape")
        if shape is None:
            raise AttributeError(f"{type(self).__name__} sets neither event_shape nor dim")
        return shape.numel()

    @dim.setter
    def dim(self, value: int) -> None:
        self._event_shape = torch.Size([check_positive_int("dim", value)])

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """The floating-point type of the model's states: the samplers draw their noise, hence every state, in it.
        Torch's default dtype unless a subclass says otherwise (a float64 oracle or network: float64)."""
        return torch.get_default_dtype()

    @abstractmethod
    def score(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """:math:`\\nabla_x \\log p_t(x)` at ``x`` of shape ``batch_shape + event_shape``; ``t`` is a float or a
        tensor that broadcasts against ``batch_shape``. Returns a tensor of ``x``'s shape."""

    def eps(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """The noise prediction :math:`\\hat\\epsilon(x, t) = -\\sigma_t\\, s(x, t)`."""
        sigma = per_batch(self.schedule.sigma(time_like(t, x, self.event_shape)), self.event_shape)
        return -sigma * self.score(x, t)

    def denoise(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """Tweedie's posterior mean :math:`\\mathbb E[x_0 \\mid x_t] = (x_t + \\sigma_t^2 s(x_t, t)) /
        \\alpha_t`."""
        tt = time_like(t, x, self.event_shape)
        alpha = per_batch(self.schedule.alpha(tt), self.event_shape)
        sigma2 = per_batch(self.schedule.sigma2(tt), self.event_shape)
        return (x + sigma2 * self.score(x, t)) / alpha

    def check_input(self, x: torch.Tensor, name: str = "x") -> None:
        """Raise a :class:`ValueError` naming ``name`` unless ``x`` is a floating tensor of shape
        ``batch_shape + event_shape``."""
        check_points(x, self.event_shape, name)


def as_event_shape(value: Any, name: str = "event_shape") -> torch.Size:
    """``value`` as an event shape: an int ``D`` is the vector shape ``(D,)``; a sequence of ints >= 1 (at least one)
    is taken as is.

    :raises ValueError: naming ``name`` for anything else.
    """
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return torch.Size([check_positive_int(name, value)])
    if isinstance(value, (str, bytes, torch.Tensor)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{name} must be a shape such as (3, 28, 28) or an int D for vectors, got {value!r}")
    dims = tuple(value)
    if not dims or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in dims):
        raise ValueError(
            f"{name} must be a non-empty tuple of integers >= 1 such as (3, 28, 28) (or an int D for vectors), "
            f"got {dims!r}"
        )
    return torch.Size(int(v) for v in dims)


def resolve_event_shape(dim: Optional[int], event_shape: Optional[EventShapeLike]) -> torch.Size:
    """The event shape of a model built with ``dim`` (vector data, event shape ``(dim,)``), ``event_shape``, or both
    (then ``dim`` must be the number of entries of ``event_shape``).

    :raises ValueError: naming the argument, for neither, a bad value, or inconsistent values.
    """
    if event_shape is None:
        if dim is None:
            raise ValueError("give dim (vector data) or event_shape (e.g. (3, 28, 28) for images)")
        return torch.Size([check_positive_int("dim", dim)])
    shape = as_event_shape(event_shape)
    if dim is not None and check_positive_int("dim", dim) != shape.numel():
        raise ValueError(f"dim={dim} is not the number of entries {shape.numel()} of event_shape={tuple(shape)}")
    return shape


def describe_event(event_shape: EventShapeLike) -> str:
    """``"data dimension D"`` for a vector event ``(D,)``, ``"event shape (C, H, W)"`` otherwise (for messages)."""
    shape = as_event_shape(event_shape)
    return f"data dimension {shape[0]}" if len(shape) == 1 else f"event shape {tuple(shape)}"


def batch_shape_of(x: torch.Tensor, event_shape: EventShapeLike) -> torch.Size:
    """The batch shape of ``x`` (its leading dimensions, before the ``len(event_shape)`` event dimensions)."""
    return x.shape[: x.dim() - len(as_event_shape(event_shape))]


def per_batch(values: torch.Tensor, event_shape: EventShapeLike) -> torch.Tensor:
    """Per-point ``values`` of shape ``batch_shape`` (or a scalar) reshaped to ``batch_shape + (1,) * k`` (``k =
    len(event_shape)``), so that they broadcast against points ``batch_shape + event_shape``."""
    return values.reshape(values.shape + (1,) * len(as_event_shape(event_shape)))


def sum_event(x: torch.Tensor, event_shape: EventShapeLike) -> torch.Tensor:
    """``x`` summed over its trailing ``len(event_shape)`` (event) dimensions."""
    return x.flatten(x.dim() - len(as_event_shape(event_shape))).sum(-1)


def time_like(t: TimeLike, x: torch.Tensor, event_shape: Optional[EventShapeLike] = None) -> torch.Tensor:
    """``t`` as a tensor of ``x``'s dtype and device, broadcast to the batch shape of ``x`` (its dimensions before the
    event dimensions of ``event_shape``; default a vector event, ``x.shape[:-1]``). A scalar ``t`` stays 0-d."""
    batch = x.shape[:-1] if event_shape is None else batch_shape_of(x, event_shape)
    if isinstance(t, (int, float)) or (isinstance(t, torch.Tensor) and t.device.type == "cpu"):
        # (a CUDA time is not checked here: reading it back would wait for the device at every step)
        bad = not math.isfinite(t) if isinstance(t, (int, float)) else not bool(torch.isfinite(t).all())
        # (rounding: a grid's t0 + k h may end a hair past 1)
        if bad or bool(torch.any(torch.as_tensor(t) < -1e-9)) or bool(torch.any(torch.as_tensor(t) > 1 + 1e-9)):
            raise ValueError(f"t must be a diffusion time in [0, 1], got {t!r}")
    tt = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    try:
        return tt.expand(batch) if tt.dim() else tt
    except RuntimeError:
        raise ValueError(
            f"t of shape {tuple(tt.shape)} does not broadcast against the batch shape {tuple(batch)} of x"
        ) from None


def check_points(x: torch.Tensor, event_shape: EventShapeLike, name: str = "x") -> None:
    """Raise a :class:`ValueError` naming ``name`` unless ``x`` is a floating tensor of shape ``batch_shape +
    event_shape`` (any batch shape, possibly empty).

    :param event_shape: the shape of one point, or an int ``D`` for vectors ``(D,)``.
    """
    shape = as_event_shape(event_shape)
    want = ", ".join(str(s) for s in shape)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a tensor of shape (..., {want}), got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    k = len(shape)
    if x.dim() < k or x.shape[x.dim() - k :] != shape:
        raise ValueError(f"{name} must have shape (..., {want}) ({describe_event(shape)}), got {tuple(x.shape)}")
