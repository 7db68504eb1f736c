"""The iterative-process abstraction shared by GFlowNets and diffusion models.

An iterative generative process builds its output in steps:

.. math::

    s_0 \\to s_1 \\to \\dots \\to s_T, \\qquad v_t \\sim p(v_t \\mid s_t), \\quad s_{t+1} = f(s_t, v_t),

where :math:`v_t` is the value sampled at step :math:`t` (an action of a GFlowNet, the next noisy sample of a
reverse diffusion chain) and :math:`f` is a deterministic transition. A step may end the trajectory early (a GFlowNet's
stop action); trajectories of different lengths are handled with masks, never with a loop over particles.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Optional, Union

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

State = Union[torch.Tensor, tuple]


class IterativeProcess(ABC):
    """Abstract base class of an iterative generative process.

    A state is a tensor, or a tuple of tensors, whose leading dimensions are batch dimensions and whose trailing
    :attr:`state_event_dims` dimensions describe one state (an int for every leaf, or one int per leaf of a tuple
    state, e.g. ``(3, 1)`` for an image and a label). :meth:`init` returns an *unbatched* state: inside a Pyro
    program the plates broadcast it, and :meth:`step_dist` must therefore accept states of any batch shape.

    Subclasses implement :meth:`init`, :meth:`step_dist`, :meth:`transition` and :meth:`terminal`; processes whose
    trajectories can stop early also implement :meth:`stops`.

    Example::

        gfn = ps.GFlowNet(ps.HyperGrid(2, 8), ps.rewards.original())  # a GFlowNet is an IterativeProcess
        x = ps.run("x", gfn, num_particles=100)  # one Pyro sample site per step
        x = ps.ProcessDistribution(gfn).sample((100,))  # the whole process at one site
    """

    #: Upper bound on the number of steps of a trajectory.
    max_steps: int
    #: Number of trailing dimensions of one state tensor: one int for every leaf, or a tuple of one int per leaf of a
    #: tuple state.
    state_event_dims: Union[int, tuple[int, ...]] = 1

    @abstractmethod
    def init(self) -> State:
        """The initial state :math:`s_0`, unbatched."""

    @abstractmethod
    def step_dist(self, state: State, t: int) -> TorchDistribution:
        """The distribution of the value sampled at step ``t`` from ``state``; its batch shape is the state's."""

    @abstractmethod
    def transition(self, state: State, value: torch.Tensor, t: int) -> State:
        """The next state, given the value sampled at step ``t``."""

    def stops(self, state: State, value: torch.Tensor, t: int) -> torch.Tensor:
        """Whether the value sampled at step ``t`` ends the trajectory (default: only at the last step)."""
        return torch.tensor(t + 1 >= self.max_steps)

    @abstractmethod
    def terminal(self, state: State) -> torch.Tensor:
        """The process's output for a finished state."""

    # ----- properties of the output, used by :class:`ProcessDistribution` -----

    @property
    def event_shape(self) -> torch.Size:
        """Shape of one output."""
        return torch.Size()

    @property
    def support(self) -> constraints.Constraint:
        return constraints.real

    def terminal_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-probability of an output; processes on enumerable spaces override this."""
        raise NotImplementedError(
            f"{type(self).__name__} has no exact log-probability of its output: the space is not enumerable"
        )

    def keep_done(self, done: torch.Tensor, old: State, new: State) -> State:
        """Select ``old`` where ``done`` and ``new`` elsewhere, leaf by leaf."""
        if isinstance(new, tuple):
            dims = leaf_event_dims(self.state_event_dims, len(new))
            return tuple(self._where(done, o, n, d) for o, n, d in zip(old, new, dims))
        return self._where(done, old, new, leaf_event_dims(self.state_event_dims, None))

    def _where(
        self, done: torch.Tensor, old: torch.Tensor, new: torch.Tensor, event_dims: Optional[int] = None
    ) -> torch.Tensor:
        if done.dim() == 0 and done.device != new.device:
            # a fixed-length process's host-side flag (the default :meth:`stops`): no device transfer, no sync
            return old if bool(done) else new
        k = self.state_event_dims if event_dims is None else event_dims
        mask = done.reshape(done.shape + (1,) * k)
        return torch.where(mask, old, new)

    def site_infer(self, state: State, t: int) -> dict[str, Any]:
        """The ``infer`` annotation of a step site, read by effect handlers such as the guidance handler."""
        return {"pyro_sculpt": {"process": self, "state": state, "t": t}}


def leaf_event_dims(event_dims: Union[int, tuple[int, ...]], num_leaves: Optional[int]):
    """The event dimensions of every leaf of a state: a tuple of ``num_leaves`` ints for a tuple state, one int for a
    tensor state (``num_leaves=None``).

    :raises ValueError: if a tuple ``event_dims`` does not have one entry per leaf, or is given for a tensor state.
    """
    if isinstance(event_dims, tuple):
        if num_leaves is None or len(event_dims) != num_leaves:
            raise ValueError(
                f"state_event_dims {event_dims} must have one entry per leaf of the state "
                f"({'a tensor' if num_leaves is None else f'{num_leaves} leaves'})"
            )
        return event_dims
    return event_dims if num_leaves is None else (event_dims,) * num_leaves
