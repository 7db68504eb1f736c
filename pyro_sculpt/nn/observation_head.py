"""The output layout of observation classifiers (terminal logits and the non-terminal joint) and the shape check of a
network given to a model."""

from __future__ import annotations

import torch
from torch import nn

from pyro_sculpt.utils import DeviceLike, as_device, check_positive_int


def observation_output_size(num_models: int, num_observations: int) -> int:
    """:math:`m + m^n`: the outputs of an observation classifier's network for :math:`m` bases and :math:`n`
    observations (:func:`split_observation_output`).

    Example::

        ps.nn.observation_output_size(num_models=2, num_observations=2)  # 2 + 2**2 = 6
    """
    return check_positive_int("num_models", num_models, 2) + num_models ** check_positive_int(
        "num_observations", num_observations
    )


def split_observation_output(
    out: torch.Tensor, num_models: int, num_observations: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a classifier network's output ``(..., m + m^n)`` into the terminal logits :math:`\\ell_i(x)`,
    ``(..., m)``, and the normalised non-terminal log-joint :math:`\\log Q(y_1, \\dots, y_n \\mid s)`,
    ``(..., m, ..., m)`` with ``n`` trailing dims (Garipov et al. 2023, §4.1, §4.3; docs/math.md §1.2).

    Example::

        terminal, joint = ps.nn.split_observation_output(torch.randn(10, 6), num_models=2, num_observations=2)
    """
    m, n = num_models, num_observations
    joint = torch.log_softmax(out[..., m:], -1).reshape(out.shape[:-1] + (m,) * n)
    return out[..., :m], joint


def check_network(network: nn.Module, in_dim: int, out_dim: int, name: str = "network", device: DeviceLike = None):
    """Raise a :class:`ValueError` naming ``name`` unless ``network`` maps rows ``(B, in_dim)`` to ``(B, out_dim)``
    (checked on a batch of zeros, without gradients).

    :returns: ``network``.

    Example::

        ps.nn.check_network(ps.nn.MLP(4, 6), in_dim=4, out_dim=6)  # passes; a wrong size raises
    """
    if not isinstance(network, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(network).__name__}")
    p = next(network.parameters(), None)
    dtype = p.dtype if p is not None else torch.get_default_dtype()
    x = torch.zeros(3, in_dim, dtype=dtype, device=p.device if p is not None else as_device(device))
    expected = f"{name} must map features of shape (B, {in_dim}) to outputs of shape (B, {out_dim})"
    try:
        with torch.no_grad():
            out = network(x)
    except (RuntimeError, ValueError, TypeError) as err:
        raise ValueError(f"{expected}, but it fails on (3, {in_dim}): {err}") from None
    if not isinstance(out, torch.Tensor) or out.shape != (3, out_dim):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{expected}, got {shape} for (3, {in_dim})")
    return network
