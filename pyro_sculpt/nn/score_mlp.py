"""A noise-prediction MLP for low-dimensional data (vectors, or small events that it flattens)."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from pyro_sculpt.nn.embeddings import SinusoidalTimeEmbedding
from pyro_sculpt.utils import DeviceLike, as_device, check_positive_int


class ScoreMLP(nn.Module):
    """An MLP :math:`\\hat\\epsilon(x, t)` on ``[x, e(t)]`` (:class:`SinusoidalTimeEmbedding`) with SiLU
    activations, predicting the noise of :math:`x_t = \\alpha_t x_0 + \\sigma_t \\epsilon`.

    :param dim: data dimension :math:`D` (the number of entries of one input).
    :param hidden: hidden width.
    :param layers: hidden layers (>= 1).
    :param time_embedding_dim: size of :math:`e(t)`.
    :param device: where the weights live.
    :param event_shape: the shape of one input, of ``dim`` entries, which the network flattens (default the vector
        ``(dim,)``); inputs are ``batch_shape + event_shape``, ``t`` broadcasts against ``batch_shape``. Meant for
        small events: an image model wants a convolutional network.

    Example::

        net = ScoreMLP(2)
        eps = net(torch.randn(10, 2), torch.rand(10))
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
        mods.append(nn.Linear(d, self._output_size()))
        self.net = nn.Sequential(*mods)
        self.to(as_device(device))

    def _output_size(self) -> int:
        """Outputs per point: one per entry of ``x`` (subclasses with another head override this and
        :meth:`_output_shape`)."""
        return self.dim

    def _output_shape(self, batch: torch.Size) -> torch.Size:
        return batch + self.event_shape

    def config(self) -> dict:
        cfg = {
            "type": type(self).__name__,
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
        return self.net(h.reshape(-1, h.shape[-1])).reshape(self._output_shape(batch))
