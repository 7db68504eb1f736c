"""Noise schedules of diffusion models: the forward kernel and its stochastic differential equation.

A schedule describes the forward (noising) process in continuous time :math:`t \\in [0, 1]` by its marginal
kernel

.. math::

    q(x_t \\mid x_0) = \\mathcal N\\big(x_t;\\ \\alpha_t x_0,\\ \\sigma_t^2 I\\big),

and the equivalent Itô SDE :math:`dx = f(t)\\, x\\, dt + g(t)\\, dw` with

.. math::

    f(t) = \\frac{d \\log \\alpha_t}{dt}, \\qquad g^2(t) = \\frac{d \\sigma_t^2}{dt} - 2 f(t) \\sigma_t^2 .

The noise must grow with :math:`t`: every constructor rejects a schedule whose noise level (the
signal-to-noise ratio :math:`\\alpha_t^2 / \\sigma_t^2`, decreasing) does not strictly increase, with a
:class:`ValueError` naming the argument.

* :class:`VPSchedule` -- variance preserving (:math:`\\alpha_t^2 + \\sigma_t^2 = 1`, DDPM), with the
  ``"linear"`` and ``"cosine"`` :math:`\\beta` schedules;
* :class:`VESchedule` -- variance exploding (:math:`\\alpha_t = 1`, geometric :math:`\\sigma_t`);
* :class:`TabulatedVPSchedule` -- a VP schedule given by a sequence of DDPM :math:`\\beta_n`;
* :class:`TabulatedVESchedule` -- a VE schedule given by a sequence of noise levels :math:`\\sigma_n`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Sequence, Union

import torch

TimeLike = Union[float, torch.Tensor]


def _as_time(t: TimeLike) -> torch.Tensor:
    if isinstance(t, torch.Tensor):
        return t if t.is_floating_point() else t.to(torch.get_default_dtype())
    return torch.as_tensor(float(t), dtype=torch.get_default_dtype())


def _check_finite(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


class NoiseSchedule(ABC):
    """Abstract base class of a noise schedule on :math:`t \\in [0, 1]`.

    Subclasses implement :meth:`log_alpha`, :meth:`sigma2`, :meth:`drift` and :meth:`diffusion2` for a tensor
    of times (any shape; the result has the same shape, dtype and device), and :meth:`config`.

    Example::

        schedule = VPSchedule()  # a NoiseSchedule
        schedule.alpha(0.5), schedule.sigma(0.5)  # x_t = alpha(t) x_0 + sigma(t) eps
    """

    #: Smallest time used by samplers and training: the samplers' output is :math:`x_{t_{min}}`.
    t_min: float = 0.0
    #: Largest time; samplers start from :meth:`prior_std`-scaled noise there.
    t_max: float = 1.0

    @abstractmethod
    def log_alpha(self, t: TimeLike) -> torch.Tensor:
        """:math:`\\log \\alpha_t`."""

    @abstractmethod
    def sigma2(self, t: TimeLike) -> torch.Tensor:
        """:math:`\\sigma_t^2`."""

    @abstractmethod
    def drift(self, t: TimeLike) -> torch.Tensor:
        """:math:`f(t) = d \\log \\alpha_t / dt`, the linear drift coefficient of the forward SDE."""

    @abstractmethod
    def diffusion2(self, t: TimeLike) -> torch.Tensor:
        """:math:`g^2(t)`, the squared diffusion coefficient of the forward SDE."""

    @abstractmethod
    def config(self) -> dict:
        """A JSON-able description, inverted by :func:`schedule_from_config`."""

    def alpha(self, t: TimeLike) -> torch.Tensor:
        """:math:`\\alpha_t`."""
        return self.log_alpha(t).exp()

    def sigma(self, t: TimeLike) -> torch.Tensor:
        """:math:`\\sigma_t`."""
        return self.sigma2(t).sqrt()

    def marginal(self, t: TimeLike) -> tuple[torch.Tensor, torch.Tensor]:
        """:math:`(\\alpha_t, \\sigma_t)` of the forward kernel."""
        return self.alpha(t), self.sigma(t)

    def prior_std(self) -> float:
        """Standard deviation of the samplers' initial noise :math:`x_{t_{max}} \\sim \\mathcal N(0, s^2 I)`:
        :math:`s^2 = \\alpha_1^2 + \\sigma_1^2`, the marginal variance at :math:`t_{max}` of unit-variance
        data (1 for VP schedules, :math:`\\approx \\sigma_{max}` for VE ones)."""
        t = torch.tensor(self.t_max, dtype=torch.float64)
        return float((self.alpha(t) ** 2 + self.sigma2(t)).sqrt())

    def default_times(self, num_steps: int) -> torch.Tensor:
        """``num_steps + 1`` decreasing times from :attr:`t_max` to :attr:`t_min` (float64), uniformly
        spaced."""
        return torch.linspace(self.t_max, self.t_min, num_steps + 1, dtype=torch.float64)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NoiseSchedule) and self.config() == other.config()

    def __hash__(self) -> int:
        return hash(repr(sorted(self.config().items())))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "type")
        return f"{type(self).__name__}({args})"


class VPSchedule(NoiseSchedule):
    """Variance-preserving schedule (DDPM; Ho et al. 2020, Song et al. 2021): :math:`\\alpha_t^2 + \\sigma_t^2
    = 1`, :math:`f(t) = -\\tfrac12 \\beta(t)`, :math:`g^2(t) = \\beta(t)`.

    * ``"linear"``: :math:`\\beta(t) = \\beta_{min} + t (\\beta_{max} - \\beta_{min})`, so :math:`\\log
      \\alpha_t = -\\tfrac12 \\beta_{min} t - \\tfrac14 (\\beta_{max} - \\beta_{min}) t^2`. With 1000 steps
      the defaults discretise to DDPM's linear :math:`\\beta_n = \\beta(t_n)/1000` from :math:`10^{-4}` to
      :math:`0.02` (to second order in :math:`\\beta_n`).
    * ``"cosine"`` (Nichol & Dhariwal 2021): :math:`\\alpha_t^2 = \\cos^2\\phi(t) / \\cos^2\\phi(0)`,
      :math:`\\phi(t) = \\frac{\\pi}{2} \\frac{\\tau t + s}{1 + s}`, with :math:`\\tau \\le 1` chosen so that
      :math:`\\alpha_1^2 =` ``min_alpha_bar`` (the cosine reaches zero, and :math:`\\beta` infinity, only at
      :math:`\\tau = 1`).

    :param kind: ``"linear"`` or ``"cosine"``.
    :param beta_min: :math:`\\beta(0)` of the linear schedule, :math:`\\ge 0`.
    :param beta_max: :math:`\\beta(1)` of the linear schedule, :math:`> 0`.
    :param s: offset of the cosine schedule, :math:`\\ge 0`.
    :param min_alpha_bar: :math:`\\alpha_1^2` of the cosine schedule, in (0, 1).
    :param t_min: smallest time used by samplers and training (the output's noise is
        :math:`\\sigma_{t_{min}}`).

    Example::

        sched = VPSchedule("cosine")
        alpha, sigma = sched.marginal(torch.tensor([0.1, 0.5]))
    """

    def __init__(
        self,
        kind: str = "linear",
        *,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        s: float = 0.008,
        min_alpha_bar: float = 4e-5,
        t_min: float = 1e-3,
    ):
        if kind not in ("linear", "cosine"):
            raise ValueError(f"kind must be 'linear' or 'cosine', got {kind!r}")
        self.kind = kind
        self.beta_min = _check_finite("beta_min", beta_min)
        self.beta_max = _check_finite("beta_max", beta_max)
        self.s = _check_finite("s", s)
        self.min_alpha_bar = _check_finite("min_alpha_bar", min_alpha_bar)
        self.t_min = _check_finite("t_min", t_min)
        if not 0.0 < self.t_min < 1.0:
            raise ValueError(f"t_min must lie in (0, 1) for a VP schedule (sigma_0 = 0), got {t_min!r}")
        if kind == "linear":
            if self.beta_min < 0:
                raise ValueError(
                    f"beta_min must be >= 0 (beta(t) > 0 makes the noise increase), got beta_min={beta_min!r}"
                )
            if self.beta_max <= 0:
                raise ValueError(
                    f"beta_max must be > 0 (beta(t) > 0 makes the noise increase), got beta_max={beta_max!r}"
                )
        else:
            if self.s < 0:
                raise ValueError(f"s must be >= 0, got s={s!r}")
            if not 0.0 < self.min_alpha_bar < 1.0:
                raise ValueError(f"min_alpha_bar must lie in (0, 1), got min_alpha_bar={min_alpha_bar!r}")
            phi0 = math.pi / 2 * self.s / (1 + self.s)
            phi1 = math.acos(math.sqrt(self.min_alpha_bar) * math.cos(phi0))
            self._phi0 = phi0
            self._tau = (phi1 * 2 / math.pi) * (1 + self.s) - self.s
            if not 0.0 < self._tau <= 1.0:
                raise ValueError(f"min_alpha_bar={min_alpha_bar!r} is unreachable by the cosine schedule with s={s!r}")

    def _phi(self, t: torch.Tensor) -> torch.Tensor:
        return (math.pi / 2) * (self._tau * t + self.s) / (1 + self.s)

    def beta(self, t: TimeLike) -> torch.Tensor:
        """:math:`\\beta(t) = -2 f(t)`."""
        t = _as_time(t)
        if self.kind == "linear":
            return self.beta_min + t * (self.beta_max - self.beta_min)
        dphi = (math.pi / 2) * self._tau / (1 + self.s)
        return 2 * torch.tan(self._phi(t)) * dphi

    def log_alpha(self, t: TimeLike) -> torch.Tensor:
        t = _as_time(t)
        if self.kind == "linear":
            return -0.5 * self.beta_min * t - 0.25 * (self.beta_max - self.beta_min) * t**2
        return torch.log(torch.cos(self._phi(t))) - math.log(math.cos(self._phi0))

    def sigma2(self, t: TimeLike) -> torch.Tensor:
        return -torch.expm1(2 * self.log_alpha(t))

    def drift(self, t: TimeLike) -> torch.Tensor:
        return -0.5 * self.beta(t)

    def diffusion2(self, t: TimeLike) -> torch.Tensor:
        return self.beta(t)

    def config(self) -> dict:
        cfg: dict = {"type": "VPSchedule", "kind": self.kind, "t_min": self.t_min}
        if self.kind == "linear":
            cfg.update(beta_min=self.beta_min, beta_max=self.beta_max)
        else:
            cfg.update(s=self.s, min_alpha_bar=self.min_alpha_bar)
        return cfg


class VESchedule(NoiseSchedule):
    """Variance-exploding schedule (SMLD / NCSN; Song et al. 2021): :math:`\\alpha_t = 1`,
    :math:`\\sigma_t = \\sigma_{min} (\\sigma_{max} / \\sigma_{min})^t`, so :math:`f = 0` and
    :math:`g^2(t) = 2 \\sigma_t^2 \\log(\\sigma_{max} / \\sigma_{min})`.

    :param sigma_min: noise at :math:`t = 0`, :math:`> 0`.
    :param sigma_max: noise at :math:`t = 1`, :math:`> \\sigma_{min}`.

    Example::

        sched = VESchedule(sigma_min=0.01, sigma_max=10.0)
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 10.0):
        self.sigma_min = _check_finite("sigma_min", sigma_min)
        self.sigma_max = _check_finite("sigma_max", sigma_max)
        if self.sigma_min <= 0:
            raise ValueError(f"sigma_min must be > 0, got sigma_min={sigma_min!r}")
        if self.sigma_max <= self.sigma_min:
            raise ValueError(
                f"sigma_max must be > sigma_min (the noise must increase with t), "
                f"got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}"
            )
        self.t_min = 0.0
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def log_alpha(self, t: TimeLike) -> torch.Tensor:
        return torch.zeros_like(_as_time(t))

    def sigma2(self, t: TimeLike) -> torch.Tensor:
        return self.sigma(t) ** 2

    def sigma(self, t: TimeLike) -> torch.Tensor:
        return self.sigma_min * torch.exp(self._log_ratio * _as_time(t))

    def drift(self, t: TimeLike) -> torch.Tensor:
        return torch.zeros_like(_as_time(t))

    def diffusion2(self, t: TimeLike) -> torch.Tensor:
        return 2 * self._log_ratio * self.sigma2(t)

    def config(self) -> dict:
        return {"type": "VESchedule", "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}


class _TabulatedSchedule(NoiseSchedule):
    """A schedule known at the levels ``self._grid`` (increasing times), interpolated piecewise linearly in
    :math:`\\log \\alpha` and in :math:`\\log \\sigma^2`-related quantities by subclasses."""

    _grid: torch.Tensor  # float64, increasing

    def _locate(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grid = self._grid.to(device=t.device, dtype=t.dtype)
        n = grid.numel() - 1
        idx = torch.clamp(torch.searchsorted(grid, t.detach().contiguous(), right=True) - 1, 0, n - 1)
        w = (t - grid[idx]) / (grid[idx + 1] - grid[idx])
        return idx, w

    def _interp(self, table: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Value and slope (per unit time) of the piecewise-linear interpolation of ``table``."""
        idx, w = self._locate(t)
        tab = table.to(device=t.device, dtype=t.dtype)
        grid = self._grid.to(device=t.device, dtype=t.dtype)
        lo, hi = tab[idx], tab[idx + 1]
        return lo + w * (hi - lo), (hi - lo) / (grid[idx + 1] - grid[idx])

    def default_times(self, num_steps: int) -> torch.Tensor:
        """The table's own levels when ``num_steps`` matches the table, uniform times otherwise."""
        if num_steps == self.num_levels - 1:
            return self._sampler_grid().flip(0).clone()
        return super().default_times(num_steps)

    @property
    def num_levels(self) -> int:
        return self._sampler_grid().numel()

    def breakpoints(self, t0: float, t1: float) -> list[float]:
        """The table's levels strictly inside ``(t0, t1)``: where the interpolation's slope (hence
        :math:`\\beta(t)` and the probability-flow drift) jumps, so that an integrator of fixed order steps between
        them (:func:`~pyro_sculpt.diffusion.probability_flow_log_prob`)."""
        grid = self._grid.tolist()
        return [t for t in grid if t0 < t < t1]

    def _sampler_grid(self) -> torch.Tensor:
        return self._grid


def _as_sequence(name: str, values: Union[Sequence[float], torch.Tensor]) -> torch.Tensor:
    try:
        v = torch.as_tensor(values, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a 1-D sequence of numbers, got {values!r}") from None
    if v.dim() != 1 or v.numel() < 2:
        raise ValueError(f"{name} must be a 1-D sequence of at least 2 numbers, got shape {tuple(v.shape)}")
    if not torch.isfinite(v).all():
        raise ValueError(f"{name} must be finite")
    return v


class TabulatedVPSchedule(_TabulatedSchedule):
    """A variance-preserving schedule given by DDPM's discrete :math:`\\beta_1, \\dots, \\beta_N`:
    :math:`\\bar\\alpha_n = \\prod_{k \\le n} (1 - \\beta_k)` at :math:`t_n = n / N`, with :math:`\\log
    \\alpha_t` interpolated linearly between levels (so :math:`\\beta(t)` is piecewise constant and the
    continuous SDE reproduces every :math:`\\bar\\alpha_n` exactly). :attr:`t_min` is :math:`t_1 = 1/N`, the
    first noisy level; with :math:`N - 1` sampler steps (the grid from :math:`t_N = 1` down to :math:`t_1`) the
    samplers use exactly the table's levels (:math:`N` steps give a uniform grid off the levels).

    :param betas: :math:`\\beta_n \\in (0, 1)`; a :math:`\\beta_n \\le 0` would make the noise non-increasing.

    Example::

        sched = TabulatedVPSchedule.linear(1000)     # DDPM: beta from 1e-4 to 0.02
    """

    def __init__(self, betas: Union[Sequence[float], torch.Tensor]):
        b = _as_sequence("betas", betas)
        bad = torch.nonzero((b <= 0) | (b >= 1)).flatten()
        if bad.numel():
            k = int(bad[0])
            raise ValueError(
                f"betas must lie in (0, 1) so that the noise strictly increases at every step; "
                f"got betas[{k}] = {float(b[k])!r}"
            )
        self.betas = b
        n = b.numel()
        self._grid = torch.linspace(0.0, 1.0, n + 1, dtype=torch.float64)
        self._log_alpha_tab = torch.cat([torch.zeros(1, dtype=torch.float64), 0.5 * torch.cumsum(torch.log1p(-b), 0)])
        self.t_min = 1.0 / n

    @classmethod
    def linear(cls, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "TabulatedVPSchedule":
        """DDPM's linear schedule, rescaled by ``1000 / num_steps`` so that the continuous limit is the
        same."""
        scale = 1000.0 / num_steps
        return cls(torch.linspace(beta_start * scale, beta_end * scale, num_steps, dtype=torch.float64))

    @classmethod
    def cosine(cls, num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> "TabulatedVPSchedule":
        """Nichol & Dhariwal's cosine schedule, :math:`\\beta_n` clipped at ``max_beta``."""
        t = torch.linspace(0, 1, num_steps + 1, dtype=torch.float64)
        f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        abar = f / f[0]
        return cls(torch.clamp(1 - abar[1:] / abar[:-1], max=max_beta))

    def _sampler_grid(self) -> torch.Tensor:
        return self._grid[1:]

    def log_alpha(self, t: TimeLike) -> torch.Tensor:
        return self._interp(self._log_alpha_tab, _as_time(t))[0]

    def sigma2(self, t: TimeLike) -> torch.Tensor:
        return -torch.expm1(2 * self.log_alpha(t))

    def drift(self, t: TimeLike) -> torch.Tensor:
        return self._interp(self._log_alpha_tab, _as_time(t))[1]

    def diffusion2(self, t: TimeLike) -> torch.Tensor:
        return -2 * self.drift(t)

    def config(self) -> dict:
        return {"type": "TabulatedVPSchedule", "betas": [float(b) for b in self.betas]}


class TabulatedVESchedule(_TabulatedSchedule):
    """A variance-exploding schedule given by noise levels :math:`\\sigma_1 < \\dots < \\sigma_N` at
    :math:`t_n = (n - 1) / (N - 1)`, with :math:`\\log \\sigma_t` interpolated linearly between levels.

    :param sigmas: strictly increasing positive noise levels.

    Example::

        sched = TabulatedVESchedule(torch.logspace(-2, 1, 100))
    """

    def __init__(self, sigmas: Union[Sequence[float], torch.Tensor]):
        s = _as_sequence("sigmas", sigmas)
        if (s <= 0).any():
            k = int(torch.nonzero(s <= 0).flatten()[0])
            raise ValueError(f"sigmas must be > 0, got sigmas[{k}] = {float(s[k])!r}")
        bad = torch.nonzero(s[1:] <= s[:-1]).flatten()
        if bad.numel():
            k = int(bad[0])
            raise ValueError(
                f"sigmas must strictly increase (non-increasing noise); got sigmas[{k}] = {float(s[k])!r} "
                f"followed by sigmas[{k + 1}] = {float(s[k + 1])!r}"
            )
        self.sigmas = s
        self._grid = torch.linspace(0.0, 1.0, s.numel(), dtype=torch.float64)
        self._log_sigma_tab = s.log()
        self.t_min = 0.0

    def log_alpha(self, t: TimeLike) -> torch.Tensor:
        return torch.zeros_like(_as_time(t))

    def sigma(self, t: TimeLike) -> torch.Tensor:
        return self._interp(self._log_sigma_tab, _as_time(t))[0].exp()

    def sigma2(self, t: TimeLike) -> torch.Tensor:
        return self.sigma(t) ** 2

    def drift(self, t: TimeLike) -> torch.Tensor:
        return torch.zeros_like(_as_time(t))

    def diffusion2(self, t: TimeLike) -> torch.Tensor:
        value, slope = self._interp(self._log_sigma_tab, _as_time(t))
        return 2 * slope * (2 * value).exp()

    def config(self) -> dict:
        return {"type": "TabulatedVESchedule", "sigmas": [float(s) for s in self.sigmas]}


_KINDS = {
    "VPSchedule": VPSchedule,
    "VESchedule": VESchedule,
    "TabulatedVPSchedule": TabulatedVPSchedule,
    "TabulatedVESchedule": TabulatedVESchedule,
}


def schedule_from_config(config: dict) -> NoiseSchedule:
    """Rebuild a schedule from :meth:`NoiseSchedule.config`.

    Example::

        schedule = schedule_from_config(VPSchedule(kind="cosine").config())
    """
    if not isinstance(config, dict) or config.get("type") not in _KINDS:
        raise ValueError(f"unknown schedule config {config!r}; expected a 'type' in {sorted(_KINDS)}")
    cfg = dict(config)
    kind = _KINDS[cfg.pop("type")]
    return kind(**cfg)
