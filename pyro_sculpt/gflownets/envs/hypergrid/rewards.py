"""Rewards on the HyperGrid (Bengio et al. 2021; Garipov et al. 2023, Appendix on the 2D grid).

The grid
rewards read states through :meth:`HyperGrid.unit_coordinates` :math:`u = s / (H - 1) \\in [0, 1]^D`; the sculpting
rewards use :math:`x = 2u - 1 \\in [-1, 1]^D`.
"""

from __future__ import annotations

import math

import torch

from pyro_sculpt.gflownets.registry import get_reward, register_reward, reward_from_config, reward_names
from pyro_sculpt.gflownets.rewards import Reward
from pyro_sculpt.utils import check_number


class GridReward(Reward):
    """A reward of grid coordinates: subclasses implement :meth:`log_reward_unit` of
    :math:`u = s / (H - 1) \\in [0, 1]^D`."""

    def log_reward(self, env, states: torch.Tensor) -> torch.Tensor:
        return self.log_reward_unit(env.unit_coordinates(states))

    def log_reward_unit(self, u: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


@register_reward("original")
class OriginalReward(GridReward):
    """The HyperGrid reward of Bengio et al. (2021):

    .. math::

        R(s) = R_0 + R_1 \\prod_d \\mathbb{1}[0.25 < a_d \\le 0.5] + R_2 \\prod_d \\mathbb{1}[0.3 < a_d < 0.4],
        \\qquad a_d = |u_d - 0.5|.
    """

    def __init__(self, r0: float = 0.1, r1: float = 0.5, r2: float = 2.0):
        self.r0 = check_number("r0", r0, 0, strict=True)
        self.r1, self.r2 = check_number("r1", r1, 0, strict=False), check_number("r2", r2, 0, strict=False)

    def params(self) -> dict:
        return {"r0": self.r0, "r1": self.r1, "r2": self.r2}

    def log_reward_unit(self, u: torch.Tensor) -> torch.Tensor:
        a = (u - 0.5).abs()
        band = ((a > 0.25) & (a <= 0.5)).all(-1)
        core = ((a > 0.3) & (a < 0.4)).all(-1)
        r = self.r0 + self.r1 * band.to(u.dtype) + self.r2 * core.to(u.dtype)
        return r.log()


@register_reward("symmetric_shubert")
class SymmetricShubert(GridReward):
    """The symmetric Shubert reward of the sculpting paper's grid experiments, at a temperature :math:`T`:

    .. math::

        u_d = -9.45 + 2.3 (|x_d| / 2 + 0.5), \\quad
        r = \\frac{\\prod_d \\sum_{i=1}^5 i \\cos((i+1) u_d + i) - m}{M - m}, \\quad \\log R = \\log(r + 10^{-3}) / T

    with :math:`m = -186.6157949555621`, :math:`M = 210.27662470796076` (the 2D range).
    """

    MN = -186.6157949555621
    MX = 210.27662470796076

    def __init__(self, temperature: float = 0.5):
        self.temperature = check_number("temperature", temperature, 0, strict=True)

    def params(self) -> dict:
        return {"temperature": self.temperature}

    def log_reward_unit(self, u: torch.Tensor) -> torch.Tensor:
        x = 2 * u - 1
        ud = -9.45 + (x.abs() / 2 + 0.5) * 2.3
        i = torch.arange(1, 6, dtype=u.dtype, device=u.device)
        terms = (i * torch.cos((i + 1) * ud.unsqueeze(-1) + i)).sum(-1)
        r = (terms.prod(-1) - self.MN) / (self.MX - self.MN)
        return torch.log(r + 1e-3) / self.temperature


@register_reward("diagonal_sigmoid")
class DiagonalSigmoid(GridReward):
    """:math:`r = \\sigma(5 \\sum_d x_d)`, :math:`\\log R = \\log(r + 10^{-5})`
    (in 2D, :math:`\\sigma(5(x_0 + x_1))`)."""

    def log_reward_unit(self, u: torch.Tensor) -> torch.Tensor:
        x = 2 * u - 1
        return torch.log(torch.sigmoid(5 * x.sum(-1)) + 1e-5)


_H, _HM = 0.3, 0.32
_S3 = math.sqrt(3.0)
_CIRCLES = {
    1: dict(centre=(-_H, 0.0), offsets=[(0.0, 0.0)], std=0.30, scale=2.5, base=6.5),
    2: dict(
        centre=(_H / 2, _H * _S3 / 2),
        offsets=[(-_HM * _S3 / 2, _HM / 2), (_HM * _S3 / 2, -_HM / 2)],
        std=0.21,
        scale=3.5,
        base=10.5,
    ),
    3: dict(
        centre=(_H / 2, -_H * _S3 / 2),
        offsets=[(-_HM, 0.0), (_HM / 2, _HM * _S3 / 2), (_HM / 2, -_HM * _S3 / 2)],
        std=0.18,
        scale=2.5,
        base=5.5,
    ),
}


@register_reward("circle")
class Circle(GridReward):
    """One of the three circle rewards of the sculpting paper's 3-model grid experiment (2D only).

    Outside the disc of radius 0.6 around the centre :math:`c`, :math:`r = 0.1`; inside,
    :math:`r = \\text{scale} \\cdot g(x) + \\text{base}`, where :math:`g` is the equal-weight mixture of
    :math:`\\mathcal N(c + o_k, \\text{std}^2 I)` densities; :math:`\\log R = \\log(r + 10^{-8})`.

    :param index: 1, 2 or 3.
    """

    RADIUS = 0.6

    def __init__(self, index: int = 1):
        if index not in _CIRCLES:
            raise ValueError(f"index must be 1, 2 or 3, got {index!r}")
        self.index = int(index)

    def params(self) -> dict:
        return {"index": self.index}

    def log_reward_unit(self, u: torch.Tensor) -> torch.Tensor:
        if u.shape[-1] != 2:
            raise ValueError(f"the circle rewards are defined on 2D grids, got ndim={u.shape[-1]}")
        spec = _CIRCLES[self.index]
        x = 2 * u - 1
        c = torch.tensor(spec["centre"], dtype=u.dtype, device=u.device)
        means = c + torch.tensor(spec["offsets"], dtype=u.dtype, device=u.device)
        var = spec["std"] ** 2
        sq = ((x.unsqueeze(-2) - means) ** 2).sum(-1)
        g = (torch.exp(-sq / (2 * var)) / (2 * math.pi * var)).mean(-1)
        inside = ((x - c) ** 2).sum(-1) <= self.RADIUS**2
        r = torch.where(inside, spec["scale"] * g + spec["base"], torch.full_like(g, 0.1))
        return torch.log(r + 1e-8)


def original(r0: float = 0.1, r1: float = 0.5, r2: float = 2.0) -> OriginalReward:
    """The original HyperGrid reward (see :class:`OriginalReward`)."""
    return OriginalReward(r0, r1, r2)


def symmetric_shubert(temperature: float = 0.5) -> SymmetricShubert:
    """The symmetric Shubert reward (see :class:`SymmetricShubert`)."""
    return SymmetricShubert(temperature)


def diagonal_sigmoid() -> DiagonalSigmoid:
    """The diagonal sigmoid reward (see :class:`DiagonalSigmoid`)."""
    return DiagonalSigmoid()


def circle(index: int) -> Circle:
    """Circle reward ``index`` (1, 2 or 3) of the 3-model experiment (see :class:`Circle`)."""
    return Circle(index)


# the registry, re-exported for ps.rewards.get(...) and friends
get = get_reward
from_config = reward_from_config
names = reward_names
