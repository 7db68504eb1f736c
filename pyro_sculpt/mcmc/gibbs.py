"""Gibbs sampling over the coordinates of discrete states (docs/math.md §3; Geman & Geman 1984).

For a target :math:`\\pi(x) \\propto e^{-E(x)}` on :math:`x \\in \\prod_d \\{0, \\dots, K_d - 1\\}` known only through
its (log-)density, e.g. a sum of energies :math:`E = E_1 + E_2` of models without a sampler, each update draws one
coordinate :math:`d` from its full conditional

.. math::

    \\pi(x_d = k \\mid x_{-d}) = \\frac{e^{-E(x_{-d}, k)}}{\\sum_{j < K_d} e^{-E(x_{-d}, j)}},

enumerated for every chain and every value in ONE batched call of the log-density on ``N K_d`` states. A
*systematic* sweep updates the coordinates in order (``D`` calls per step); a *random* scan updates one coordinate
per chain, drawn uniformly and independently per chain (one call per step). Both leave :math:`\\pi` invariant; the
chain mixes slowly when the coordinates are strongly dependent under :math:`\\pi`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence, Union

import torch

from pyro_sculpt.mcmc.base import MCMCInfo, per_chain

SCANS = ("systematic", "random")


@dataclass(frozen=True)
class GibbsState:
    """The chains of a :class:`Gibbs` kernel.

    :ivar x: ``(N, D)`` integer states.
    :ivar log_prob: ``(N,)`` float64 :math:`\\log\\pi(x)` (unnormalised).

    Example::

        state = ps.mcmc.Gibbs(log_prob, num_values=8).init(torch.zeros(100, 2, dtype=torch.long))
        state.x.shape, state.log_prob.shape   # (100, 2), (100,)
    """

    x: torch.Tensor
    log_prob: torch.Tensor

    @property
    def num_particles(self) -> int:
        return int(self.x.shape[0])

    def index(self, idx: torch.Tensor) -> "GibbsState":
        """The chains ``idx`` (e.g. a resampling)."""
        return GibbsState(self.x[idx], self.log_prob[idx])


class Gibbs:
    """Gibbs sampling over the coordinates of ``N`` chains of discrete states (see the module docstring).

    :param log_prob: :math:`\\log\\pi`, ``x (M, D) integer -> (M,)``, unnormalised (e.g. ``lambda x: -(e1(x) +
        e2(x))``; :meth:`from_energies`). ``-inf`` marks states outside the support; a NaN value of a conditional
        reads as probability zero.
    :param num_values: :math:`K_d`, the number of values of every coordinate (an int), or one per coordinate.
    :param scan: ``"systematic"`` (every coordinate in order per step) or ``"random"`` (one uniformly chosen
        coordinate per chain per step).

    Example::

        env = ps.HyperGrid(2, 8)
        d1, d2 = p1.as_distribution(), p2.as_distribution()
        kernel = ps.mcmc.Gibbs(lambda x: d1.log_prob(x) + d2.log_prob(x), num_values=env.height)
        state = kernel.init(torch.zeros(4000, 2, dtype=torch.long))
        for _ in range(20):
            state, info = kernel.step(state)
    """

    def __init__(
        self,
        log_prob: Callable[[torch.Tensor], torch.Tensor],
        num_values: Union[int, Sequence[int]],
        scan: str = "systematic",
    ):
        if not callable(log_prob):
            raise TypeError(f"log_prob must be callable x (M, D) -> (M,), got {type(log_prob).__name__}")
        self.log_prob = log_prob
        values = [num_values] if isinstance(num_values, int) else list(num_values) if _is_seq(num_values) else []
        if not values or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in values):
            raise ValueError(
                f"num_values must be an int >= 1 or a sequence of them (one per coordinate), got {num_values!r}"
            )
        self.num_values = num_values if isinstance(num_values, int) else values
        if scan not in SCANS:
            raise ValueError(f"scan must be one of {SCANS}, got {scan!r}")
        self.scan = scan

    @classmethod
    def from_energies(
        cls,
        energies: Sequence[Callable[[torch.Tensor], torch.Tensor]],
        num_values: Union[int, Sequence[int]],
        scan: str = "systematic",
    ) -> "Gibbs":
        """Gibbs on :math:`\\pi \\propto e^{-\\sum_i E_i}` (docs/math.md §3): the product of the energy models.

        Example::

            kernel = ps.mcmc.Gibbs.from_energies([e1, e2], num_values=32)
        """
        energies = list(energies)
        if not energies or not all(callable(e) for e in energies):
            raise TypeError("energies must be a non-empty sequence of callables x (M, D) -> (M,)")
        return cls(lambda x: -sum(e(x).double() for e in energies), num_values, scan)

    def __repr__(self) -> str:
        return f"Gibbs(num_values={self.num_values}, scan={self.scan!r})"

    def _sizes(self, dim: int) -> list[int]:
        if isinstance(self.num_values, int):
            return [self.num_values] * dim
        if len(self.num_values) != dim:
            raise ValueError(f"x has {dim} coordinates but num_values gives {len(self.num_values)}")
        return list(self.num_values)

    def evaluate(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\log\\pi` at ``x`` ``(M, D)``, checked: ``(M,)`` float64."""
        return per_chain(self.log_prob, x, "log_prob")

    def init(self, x: torch.Tensor) -> GibbsState:
        """The chains at ``x`` ``(N, D)``.

        :raises ValueError: for states that are not integer ``(N, D)`` with coordinate ``d`` in ``[0, K_d)``, or
            whose log-density is NaN, :math:`+\\infty` or :math:`-\\infty` (naming the chain).
        """
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.is_floating_point() or x.dtype == torch.bool:
            raise ValueError(
                "x must be an integer tensor (N, D) of states, got "
                f"{(tuple(x.shape), x.dtype) if isinstance(x, torch.Tensor) else type(x).__name__}"
            )
        sizes = torch.tensor(self._sizes(x.shape[1]), device=x.device)
        if x.numel() and bool(((x < 0) | (x >= sizes)).any()):
            raise ValueError(f"x must have coordinate d in [0, num_values[d]) = [0, {sizes.tolist()})")
        x = x.detach()
        lp = self.evaluate(x)
        bad = torch.nonzero(~torch.isfinite(lp)).flatten()
        if bad.numel():
            raise ValueError(f"x: the log-density is {float(lp[bad[0]])} at chain {int(bad[0])}")
        return GibbsState(x, lp)

    def _update(self, x: torch.Tensor, coord: torch.Tensor, sizes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw coordinate ``coord[n]`` of every chain ``n`` from its full conditional: ``(x, log_prob)``."""
        n, _ = x.shape
        kmax = int(sizes[coord].max())
        values = torch.arange(kmax, device=x.device)
        cand = x.unsqueeze(1).repeat(1, kmax, 1)  # (N, K, D)
        rows = torch.arange(n, device=x.device)
        cand[rows, :, coord] = values.expand(n, kmax)
        valid = values < sizes[coord].unsqueeze(-1)  # (N, K): only states of the space reach log_prob
        lp = torch.full((n, kmax), -math.inf, dtype=torch.float64, device=x.device)
        lp[valid] = self.evaluate(cand[valid])
        lp = torch.nan_to_num(lp, nan=-math.inf)
        k = torch.distributions.Categorical(logits=lp).sample()
        return cand[rows, k], lp[rows, k]

    def step(self, state: GibbsState) -> tuple[GibbsState, MCMCInfo]:
        """One step of every chain (a sweep, or one random coordinate): ``(new_state, info)``. Every draw is
        accepted (``info.accept_prob`` is one, ``info.accepted`` marks the chains that moved; ``info.step_size`` is
        NaN)."""
        if not isinstance(state, GibbsState):
            raise TypeError(f"state must be a GibbsState (from kernel.init(x)), got {type(state).__name__}")
        x, lp = state.x, state.log_prob
        n, dim = x.shape
        sizes = torch.tensor(self._sizes(dim), device=x.device)
        if self.scan == "systematic":
            for d in range(dim):
                x, lp = self._update(x, torch.full((n,), d, dtype=torch.long, device=x.device), sizes)
        else:
            x, lp = self._update(x, torch.randint(dim, (n,), device=x.device), sizes)
        moved = (x != state.x).any(-1)
        ones = torch.ones(n, dtype=torch.float64, device=x.device)
        nan = torch.full((), math.nan, dtype=torch.float64)
        return GibbsState(x, lp), MCMCInfo(ones, moved, nan, torch.zeros_like(ones))


def _is_seq(v) -> bool:
    return isinstance(v, (list, tuple))
