"""An iterative process as a Pyro distribution over its output."""

from __future__ import annotations

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

from pyro_sculpt.processes.process import IterativeProcess
from pyro_sculpt.processes.runner import sample as sample_process


class ProcessDistribution(TorchDistribution):
    """The distribution of the output of an :class:`~pyro_sculpt.processes.IterativeProcess`.

    :meth:`sample` runs the process as a plain vectorised torch loop (it never calls ``pyro.sample``, so it is safe
    under ``condition``, ``replay`` and ELBO objectives); :meth:`log_prob` is the exact marginal log-probability
    :math:`\\log p(x) = \\log \\sum_{\\tau \\to x} p(\\tau)` where the process can compute it (enumerable spaces).
    To see the individual steps as Pyro sites, use :func:`pyro_sculpt.run` or
    :class:`~pyro_sculpt.processes.ProcessReparam`.

    :param process: the process.
    :param batch_shape: batch shape of independent copies (default scalar).

    Example::

        d = ProcessDistribution(gfn)
        x = pyro.sample("x", d)          # one site, the whole trajectory hidden
        d.log_prob(x)                    # exact on a HyperGrid
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, process: IterativeProcess, batch_shape: torch.Size = torch.Size(), validate_args=None):
        if not isinstance(process, IterativeProcess):
            raise TypeError(f"process must be an IterativeProcess, got {type(process).__name__}")
        self.process = process
        super().__init__(torch.Size(batch_shape), process.event_shape, validate_args=validate_args)

    @property
    def support(self) -> constraints.Constraint:
        return self.process.support

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(ProcessDistribution, _instance)
        new.process = self.process
        super(ProcessDistribution, new).__init__(torch.Size(batch_shape), self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        return sample_process(self.process, torch.Size(sample_shape) + self.batch_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return self.process.terminal_log_prob(value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.process!r}, batch_shape={tuple(self.batch_shape)})"
