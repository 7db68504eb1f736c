"""Small networks used by GFlowNets and classifiers."""

from __future__ import annotations

import torch
from torch import nn

from pyro_sculpt.utils import check_positive_int


class MLP(nn.Sequential):
    """A multilayer perceptron with LeakyReLU activations.

    :param in_dim: input size.
    :param out_dim: output size.
    :param hidden: width of the hidden layers.
    :param layers: number of hidden layers.

    Example::

        net = ps.nn.MLP(in_dim=4, out_dim=3, hidden=64, layers=2)
        net(torch.randn(10, 4)).shape  # torch.Size([10, 3])
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 256, layers: int = 2):
        check_positive_int("in_dim", in_dim)
        check_positive_int("out_dim", out_dim)
        check_positive_int("hidden", hidden)
        check_positive_int("layers", layers, 0)
        mods: list[nn.Module] = []
        d = in_dim
        for _ in range(layers):
            mods += [nn.Linear(d, hidden), nn.LeakyReLU()]
            d = hidden
        mods.append(nn.Linear(d, out_dim))
        super().__init__(*mods)
        self.in_dim, self.out_dim, self.hidden, self.layers = in_dim, out_dim, hidden, layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape[:-1]
        return super().forward(x.reshape(-1, x.shape[-1])).reshape(shape + (self.out_dim,))
