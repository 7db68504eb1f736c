"""Embeddings of a diffusion time."""

from __future__ import annotations

import math

import torch
from torch import nn

from pyro_sculpt.utils import DeviceLike, as_device, check_positive_int


class SinusoidalTimeEmbedding(nn.Module):
    """The transformer-style embedding of a diffusion time :math:`t \\in [0, 1]`:

    .. math::

        e(t) = \\big(\\sin(\\omega_j\\, s t),\\ \\cos(\\omega_j\\, s t)\\big)_{j < d/2}, \\qquad
        \\omega_j = P^{-j / (d/2)},

    with scale :math:`s` (default 1000, DDPM's step count) and maximal period :math:`P`.

    :param dim: embedding size (even).
    :param scale: :math:`s`.
    :param max_period: :math:`P`.
    :param device: where the frequencies live.

    Example::

        embed = ps.nn.SinusoidalTimeEmbedding(dim=32)
        embed(torch.rand(10)).shape  # torch.Size([10, 32])
    """

    def __init__(self, dim: int = 32, scale: float = 1000.0, max_period: float = 10_000.0, device: DeviceLike = None):
        super().__init__()
        check_positive_int("dim", dim, 2)
        if dim % 2:
            raise ValueError(f"dim must be even, got {dim}")
        self.dim, self.scale, self.max_period = dim, float(scale), float(max_period)
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half) / half)
        self.register_buffer("freqs", freqs.to(as_device(device)), persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        arg = (self.scale * t).unsqueeze(-1) * self.freqs.to(t.dtype)
        return torch.cat([torch.sin(arg), torch.cos(arg)], -1)
