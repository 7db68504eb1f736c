"""Energy networks: a scalar :math:`E(x, t)` per point, and the module whose output is its gradient
:math:`\\nabla_x E(x, t)` (the noise prediction of an energy-parameterised diffusion model; docs/math.md §2)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from pyro_sculpt.nn.score_mlp import ScoreMLP


class EnergyMLP(ScoreMLP):
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

    def _output_size(self) -> int:
        return 1

    def _output_shape(self, batch: torch.Size) -> torch.Size:
        return batch


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
