"""The protocol through which sequential Monte Carlo drives any iterative process (docs/math.md §1.5).

A :class:`Twist` owns a batch of particles of one process: it proposes each step (a guided step, or the process's own
step), advances the particles and returns each particle's incremental log-weight

.. math::

    \\log \\omega_t = \\log \\pi_{t+1}(s_{t+1}) - \\log \\pi_t(s_t) + \\log \\tilde P(s_{t+1} \\mid s_t)
        - \\log M(s_{t+1} \\mid s_t),

for intermediate targets :math:`\\pi_t` (the target process :math:`\\tilde P` tilted by a twist :math:`\\psi_t`).
Whatever the twist, the final weighted particles target the process's terminal distribution tilted by the final
:math:`\\psi`; a better twist only raises the effective sample size. Families supply their twists (the observation
classifier of a sculpted GFlowNet or diffusion model); :class:`ProcessProposal` is the untwisted case.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from pyro_sculpt.processes.process import IterativeProcess
from pyro_sculpt.processes.runner import expand_state

#: particles: a tensor, or a tuple / dict of tensors, each with the particle dimension first
Particles = Any


def index_particles(particles: Particles, index: torch.Tensor) -> Particles:
    """Select particles ``index`` (a resampling) from every tensor of ``particles``.

    Example::

        idx = ps.infer.systematic(log_weights)
        particles = ps.infer.index_particles(particles, idx)  # every tensor of the particles, resampled
    """
    if isinstance(particles, torch.Tensor):
        return particles[index]
    if isinstance(particles, tuple):
        return tuple(index_particles(p, index) for p in particles)
    if isinstance(particles, dict):
        return {k: index_particles(v, index) for k, v in particles.items()}
    raise TypeError(f"particles must be tensors, or tuples or dicts of tensors, got {type(particles).__name__}")


class Twist(ABC):
    """A proposal for every step of a process, with the twisted incremental weights of its particles.

    :attr:`max_steps` bounds the number of steps; :meth:`init` makes ``N`` particles, :meth:`step` moves them one
    step and returns ``(particles, log_increment (N,), done (N,))``, and :meth:`terminal` reads the outputs.
    Particles that are done must get a zero increment and stay as they are.

    Example::

        twist = ps.infer.as_twist(ps.harmonic_mean(p1, p2, clf))  # the process's own Twist
        particles = twist.init(100)
        particles, log_increment, done = twist.step(particles, 0)
        res = ps.infer.smc(twist, 100)  # or run it all
    """

    max_steps: int
    #: whether :func:`~pyro_sculpt.infer.smc` also resamples the particles after the last step and passes them to
    #: :meth:`rejuvenate` (a twist whose moves target the final distribution, e.g. independence Metropolis-Hastings
    #: on a discrete composition); the result's weights are then equal
    rejuvenate_final: bool = False

    @abstractmethod
    def init(self, num_particles: int) -> Particles:
        """``num_particles`` initial particles."""

    @abstractmethod
    def step(self, particles: Particles, t: int) -> tuple[Particles, torch.Tensor, torch.Tensor]:
        """Propose step ``t`` for every particle: ``(particles, log_increment, done)``."""

    @abstractmethod
    def terminal(self, particles: Particles) -> torch.Tensor:
        """The outputs ``(N,) + event_shape`` of finished particles."""

    def rejuvenate(self, particles: Particles, t: int) -> Particles:
        """Called by :func:`~pyro_sculpt.infer.smc` right after the particles were resampled following step ``t``:
        a twist may move them with MCMC kernels that leave its current intermediate target invariant (resample-move,
        Gilks & Berzuini 2001), which leaves the (equal) weights unchanged; with :attr:`rejuvenate_final`, also after
        the last step (every particle done). Default: no move."""
        return particles


class ProcessProposal(Twist):
    """A process's own steps as the proposal and the process as the target: every weight is one (a plain sampler,
    useful as a baseline and for processes without a twist).

    :param process: any :class:`~pyro_sculpt.processes.IterativeProcess`.

    Example::

        res = ps.infer.smc(ps.infer.ProcessProposal(gfn), 1000)  # plain sampling: every weight is one
    """

    def __init__(self, process: IterativeProcess):
        if not isinstance(process, IterativeProcess):
            raise TypeError(f"process must be an IterativeProcess, got {type(process).__name__}")
        self.process = process
        self.max_steps = process.max_steps

    def init(self, num_particles: int) -> Particles:
        state = expand_state(self.process.init(), torch.Size([num_particles]), self.process.state_event_dims)
        leaf = state[0] if isinstance(state, tuple) else state
        return {"state": state, "done": torch.zeros(num_particles, dtype=torch.bool, device=leaf.device)}

    def step(self, particles: Particles, t: int):
        state, done = particles["state"], particles["done"]
        value = self.process.step_dist(state, t).sample()
        new = self.process.transition(state, value, t)
        state = self.process.keep_done(done, state, new)
        done = done | self.process.stops(state, value, t).to(done.device)
        inc = torch.zeros(done.shape, dtype=torch.float64, device=done.device)
        return {"state": state, "done": done}, inc, done

    def terminal(self, particles: Particles) -> torch.Tensor:
        return self.process.terminal(particles["state"])
