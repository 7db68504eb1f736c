"""Energy networks: a scalar :math:`E(x, t)` per point, and the module whose output is its gradient
:math:`\\nabla_x E(x, t)` (the noise prediction of an energy-parameterised diffusion model; docs/math.md §2)."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from pyro_sculpt.nn.embeddings import SinusoidalTimeEmbedding
from pyro_sculpt.utils import DeviceLike, as_device, check_positive_int


class EnergyMLP(nn.Module):
    """An MLP :math:`E(x, t)` on ``[x, e(t)]`` (:class:`SinusoidalTimeEmbedding`) with SiLU activations (smooth, so
    that :math:`\\nabla_x E` is continuous and trainable by double back-propagation) and one scalar output per point.

    :param dim: data dimension :math:`D` (the number of entries of one input).
    :param hidden: hidden width.
    :param layers: hidden layers (>= 1).
    :param time_embedding_dim: size of :math:`e(t)`.
    :param device: where the weights live.
    :param event_shape: the shape of one input, of ``dim`` entries, which the network flattens (default ``(dim,)``).

    Example::

        net = ps.nn.EnergyMLP(2)
        e = net(torch.randn(10, 2), torch.rand(10))    # (10,)
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 128,
        layers: int = 3,
        time_embedding_dim: int = 32,
        device: DeviceLike = None,
        *,
        event_shape: Optional[Sequence[int]] = None,
    ):
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        shape = torch.Size([dim]) if event_shape is None else torch.Size(event_shape)
        if shape.numel() != dim or not len(shape) or min(shape) < 1:
            raise ValueError(f"event_shape must be a shape of dim={dim} entries, got {tuple(event_shape)}")
        self.event_shape = shape
        self.hidden = check_positive_int("hidden", hidden)
        self.layers = check_positive_int("layers", layers)
        self.time_embedding_dim = check_positive_int("time_embedding_dim", time_embedding_dim, 2)
        self.embed = SinusoidalTimeEmbedding(time_embedding_dim)
        mods: list[nn.Module] = []
        d = dim + time_embedding_dim
        for _ in range(layers):
            mods += [nn.Linear(d, hidden), nn.SiLU()]
            d = hidden
        mods.append(nn.Linear(d, 1))
        self.net = nn.Sequential(*mods)
        self.to(as_device(device))

    def config(self) -> dict:
        cfg = {
            "type": "EnergyMLP",
            "dim": self.dim,
            "hidden": self.hidden,
            "layers": self.layers,
            "time_embedding_dim": self.time_embedding_dim,
        }
        if len(self.event_shape) > 1:
            cfg["event_shape"] = list(self.event_shape)
        return cfg

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        batch = x.shape[: x.dim() - len(self.event_shape)]
        x = x.reshape(batch + (self.dim,))
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(batch)
        h = torch.cat([x, self.embed(t)], -1)
        return self.net(h.reshape(-1, h.shape[-1])).reshape(batch)


class EnergyGradient(nn.Module):
    """The gradient :math:`\\nabla_x E(x, t)` of a scalar energy network, as a module of the shape of a noise
    predictor ``(x (B,) + event_shape, t (B,)) -> (B,) + event_shape``.

    An energy-parameterised diffusion model uses it as its noise predictor, :math:`\\hat\\epsilon = \\nabla_x E`, so
    that its score :math:`-\\hat\\epsilon / \\sigma_t = \\nabla_x(-E/\\sigma_t)` is the gradient of a log-density
    (docs/math.md §2). When gradients are enabled and the weights or ``x`` require them (training, or a caller that
    differentiates the score) the gradient is built with ``create_graph=True``, so that a loss on it reaches them
    (double back-propagation); otherwise (under :func:`torch.no_grad`, or frozen weights such as EMA copies) it is
    returned detached.

    :param energy: a module ``energy(x, t) -> (B,)`` (e.g. :class:`EnergyMLP`).

    Example::

        net = ps.nn.EnergyGradient(ps.nn.EnergyMLP(2))
        eps = net(torch.randn(10, 2), torch.rand(10))     # (10, 2) = grad_x E
        e = net.energy(torch.randn(10, 2), torch.rand(10))  # (10,)
    """

    def __init__(self, energy: nn.Module):
        super().__init__()
        if not isinstance(energy, nn.Module):
            raise TypeError(f"energy must be a torch module (x, t) -> (B,), got {type(energy).__name__}")
        self.energy = energy

    def config(self) -> Optional[dict]:
        """The energy network's configuration (``None`` for a custom one)."""
        cfg = getattr(self.energy, "config", None)
        return cfg() if callable(cfg) else None

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        build_graph = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
        with torch.enable_grad():
            xr = x if (x.requires_grad and build_graph) else x.detach().requires_grad_(True)
            e = self.energy(xr, t)
            batch = x.shape[:1]
            if e.shape != batch:
                raise ValueError(
                    f"energy must map x of shape {tuple(x.shape)} to one value per point {tuple(batch)}, got "
                    f"{tuple(e.shape)}"
                )
            (grad,) = torch.autograd.grad(e.sum(), xr, create_graph=build_graph)
        return grad
