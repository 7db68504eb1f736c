"""The HyperGrid environment of Bengio et al. (2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributions import constraints

from pyro_sculpt.gflownets.env import DiscreteEnv
from pyro_sculpt.gflownets.registry import register_env, registered_env_name
from pyro_sculpt.utils import check_positive_int


@register_env
class HyperGrid(DiscreteEnv):
    """States :math:`\\{0, \\dots, H-1\\}^D`, starting at the origin; an action increments one coordinate, or stops.

    Action ``d < ndim`` increments coordinate ``d`` (valid while it is below ``height - 1``); action ``ndim`` stops.
    The backward policy is uniform over the parents, whose number is the count of non-zero coordinates.

    :param ndim: number of dimensions :math:`D` (>= 1).
    :param height: side length :math:`H` (>= 2).

    Example::

        env = HyperGrid(ndim=2, height=32)
        env.num_states   # 1024
    """

    def __init__(self, ndim: int = 2, height: int = 32):
        self.ndim = check_positive_int("ndim", ndim, 1)
        self.height = check_positive_int("height", height, 2)
        self.n_actions = self.ndim + 1
        self.state_dim = self.ndim
        self.max_steps = self.ndim * (self.height - 1) + 1
        self.feature_dim = self.ndim * self.height
        self._strides = None

    def __repr__(self) -> str:
        return f"HyperGrid(ndim={self.ndim}, height={self.height})"

    def config(self) -> dict:
        return {"type": registered_env_name(type(self)), "ndim": self.ndim, "height": self.height}

    @property
    def support(self) -> constraints.Constraint:
        return constraints.independent(constraints.integer_interval(0, self.height - 1), 1)

    def initial_state(self, device=None) -> torch.Tensor:
        return torch.zeros(self.ndim, dtype=torch.long, device=device)

    def forward_mask(self, states: torch.Tensor) -> torch.Tensor:
        inc = states < self.height - 1
        stop = torch.ones(states.shape[:-1] + (1,), dtype=torch.bool, device=states.device)
        return torch.cat([inc, stop], dim=-1)

    def step(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        # one_hot of the stop action is dropped by the slice, so stop leaves the state unchanged
        inc = F.one_hot(actions, self.n_actions)[..., : self.ndim]
        new = states + inc
        return torch.where(new < self.height, new, states)

    def num_parents(self, states: torch.Tensor) -> torch.Tensor:
        return (states > 0).sum(-1)

    def parents(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One parent per non-zero coordinate ``d``, reached back by action ``d`` (see :meth:`DiscreteEnv.parents`)."""
        index, d = (states > 0).nonzero(as_tuple=True)
        return index, states[index] - F.one_hot(d, self.ndim).to(states.dtype), d

    def encode(self, states: torch.Tensor) -> torch.Tensor:
        return F.one_hot(states, self.height).flatten(-2).to(torch.get_default_dtype())

    def validate_states(self, states: torch.Tensor, name: str = "states") -> None:
        super().validate_states(states, name)
        if states.dtype.is_floating_point or states.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer tensor, got dtype {states.dtype}")
        if states.numel() and (states.min() < 0 or states.max() >= self.height):
            raise ValueError(f"{name} must have coordinates in [0, {self.height - 1}]")

    def unit_coordinates(self, states: torch.Tensor) -> torch.Tensor:
        """Coordinates scaled to :math:`[0, 1]`: :math:`s_d / (H - 1)`."""
        return states.to(torch.get_default_dtype()) / (self.height - 1)

    # ----- enumeration -----

    @property
    def is_enumerable(self) -> bool:
        return True

    @property
    def num_states(self) -> int:
        return self.height**self.ndim

    def all_states(self, device=None) -> torch.Tensor:
        # row-major order; a child has a larger index than its parent, so this order is topological
        grids = torch.meshgrid(*[torch.arange(self.height, device=device)] * self.ndim, indexing="ij")
        return torch.stack(grids, -1).reshape(-1, self.ndim)

    def levels(self, states: torch.Tensor) -> torch.Tensor:
        return states.sum(-1)

    def index(self, states: torch.Tensor) -> torch.Tensor:
        strides = self.height ** torch.arange(self.ndim - 1, -1, -1, device=states.device)
        return (states * strides).sum(-1)
