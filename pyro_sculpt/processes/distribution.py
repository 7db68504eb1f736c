"""An iterative process as a Pyro distribution over its output."""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

from pyro_sculpt.processes.process import IterativeProcess
from pyro_sculpt.processes.runner import sample as sample_process
from pyro_sculpt.utils import check_sample_shape


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
        batch_shape = check_sample_shape("batch_shape", batch_shape)
        super().__init__(batch_shape, process.event_shape, validate_args=validate_args)

    @property
    def support(self) -> constraints.Constraint:
        return self.process.support

    def expand(self, batch_shape, _instance=None):
        batch_shape = check_sample_shape("batch_shape", batch_shape)
        try:
            ok = torch.broadcast_shapes(self.batch_shape, batch_shape) == batch_shape
        except RuntimeError:
            ok = False
        if not ok:  # as torch distributions: only size-1 or new leading dimensions grow
            raise ValueError(f"batch_shape {tuple(batch_shape)} is not an expansion of {tuple(self.batch_shape)}")
        new = self._get_checked_instance(ProcessDistribution, _instance)
        new.process = self.process
        super(ProcessDistribution, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        """Run the process; a zero in ``sample_shape`` gives an empty batch (see :func:`pyro_sculpt.sample`).

        :raises ValueError: if ``sample_shape`` is not a tuple of integers >= 0.
        """
        sample_shape = check_sample_shape("sample_shape", sample_shape)
        return sample_process(self.process, sample_shape + self.batch_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """The exact log-probability of ``value`` (see the class docstring), of shape
        ``value.shape[:-len(event_shape)]`` broadcast with the batch shape (as torch distributions do: one value
        observed inside a plate). An empty batch gives an empty result without consulting the process.
        """
        if self._validate_args:
            self._validate_sample(value)
        value_batch = value.shape[: value.dim() - len(self.event_shape)]
        try:
            batch = torch.broadcast_shapes(value_batch, self.batch_shape)
        except RuntimeError:
            raise ValueError(
                f"value of shape {tuple(value.shape)} does not broadcast with the distribution's shape "
                f"{tuple(self.batch_shape + self.event_shape)}"
            ) from None
        if math.prod(value_batch) == 0:
            dtype = value.dtype if value.is_floating_point() else torch.get_default_dtype()
            return torch.zeros(batch, dtype=dtype, device=value.device)
        return self.process.terminal_log_prob(value).expand(batch)  # e.g. one value observed in a plate

    def _validate_sample(self, value: torch.Tensor) -> None:
        if isinstance(value, torch.Tensor) and value.numel() == 0:
            # torch's independent constraints cannot reshape an empty tensor; the support check is vacuous there,
            # the shape check is not
            event_dim = len(self.event_shape)
            if value.dim() < event_dim or value.shape[value.dim() - event_dim :] != self.event_shape:
                raise ValueError(
                    f"value must have event shape {tuple(self.event_shape)}, got shape {tuple(value.shape)}"
                )
            try:
                torch.broadcast_shapes(value.shape, self.batch_shape + self.event_shape)
            except RuntimeError:
                raise ValueError(
                    f"value of shape {tuple(value.shape)} does not broadcast with the distribution's shape "
                    f"{tuple(self.batch_shape + self.event_shape)}"
                ) from None
            return
        super()._validate_sample(value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.process!r}, batch_shape={tuple(self.batch_shape)})"
