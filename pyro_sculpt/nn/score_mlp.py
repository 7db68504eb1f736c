"""A noise-prediction MLP for low-dimensional data."""

from __future__ import annotations

import torch
from torch import nn

from pyro_sculpt.nn.embeddings import SinusoidalTimeEmbedding
from pyro_sculpt.utils import DeviceLike, as_device, check_positive_int


class ScoreMLP(nn.Module):
    """An MLP :math:`\\hat\\epsilon(x, t)` on ``[x, e(t)]`` (:class:`SinusoidalTimeEmbedding`) with SiLU
    activations, predicting the noise of :math:`x_t = \\alpha_t x_0 + \\sigma_t \\epsilon`.

    :param dim: data dimension :math:`D`.
    :param hidden: hidden width.
    :param layers: hidden layers (>= 1).
    :param time_embedding_dim: size of :math:`e(t)`.
    :param device: where the weights live.

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
    ):
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        self.hidden = check_positive_int("hidden", hidden)
        self.layers = check_positive_int("layers", layers)
        self.time_embedding_dim = check_positive_int("time_embedding_dim", time_embedding_dim, 2)
        self.embed = SinusoidalTimeEmbedding(time_embedding_dim)
        mods: list[nn.Module] = []
        d = dim + time_embedding_dim
        for _ in range(layers):
            mods += [nn.Linear(d, hidden), nn.SiLU()]
            d = hidden
        mods.append(nn.Linear(d, dim))
        self.net = nn.Sequential(*mods)
        self.to(as_device(device))

    def config(self) -> dict:
        return {
            "type": "ScoreMLP",
            "dim": self.dim,
            "hidden": self.hidden,
            "layers": self.layers,
            "time_embedding_dim": self.time_embedding_dim,
        }

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[:-1])
        h = torch.cat([x, self.embed(t)], -1)
        shape = h.shape[:-1]
        return self.net(h.reshape(-1, h.shape[-1])).reshape(shape + (self.dim,))
