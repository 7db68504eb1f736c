"""The exact log-density of a composition of diffusion bases with exact densities (oracles)."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import torch

from pyro_sculpt.diffusion.samplers import ReverseDiffusionProcess
from pyro_sculpt.sculpting.diffusion.bases import as_sampler
from pyro_sculpt.sculpting.observations import Observations, PriorLike, terminal_log_joint


def composition_log_density(
    bases: Sequence[Any],
    y: Sequence[Optional[int]],
    alpha: Optional[Union[float, torch.Tensor]] = None,
    weights: Optional[PriorLike] = None,
    *,
    t: Optional[float] = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The exact (unnormalised) log-density of a composition of bases with exact densities,

    .. math::

        \\log \\tilde p(x \\mid y) = \\log \\sum_i w_i p_i(x) + \\sum_{k \\text{ observed}}
        \\log \\frac{\\pi_{k, y_k} p_{y_k}(x)}{\\sum_j \\pi_{k,j} p_j(x)} + \\text{const},

    with the priors of :class:`~pyro_sculpt.sculpting.Observations`, for evaluation on a grid
    (:func:`~pyro_sculpt.metrics.grid_mode_weights`, :func:`~pyro_sculpt.metrics.sample_grid`).

    :param bases: :class:`~pyro_sculpt.diffusion.GaussianMixtureOracle` (or any object with ``log_prob(x, t)``), or
        samplers of them.
    :param y: observed base indices, ``None`` for unobserved (all ``None``: the mixture).
    :param alpha: prior :math:`(\\alpha, 1-\\alpha)` of :math:`y_{2..n}` (two bases), a number or a 0-d tensor.
    :param weights: mixture weights, numbers or a tensor.
    :param t: the noise level of the densities (``None``: the data densities).
    :returns: a function mapping points ``(N,) + event_shape`` to ``(N,)`` (float64), differentiable in tensor
        ``weights`` and ``alpha``.

    Example::

        f = composition_log_density([oracle1, oracle2], (0, 1))
        target = ps.metrics.grid_mode_weights(f, [(-5, 5), (-5, 5)], means)
    """
    models = []
    for k, b in enumerate(bases):
        if isinstance(b, ReverseDiffusionProcess) or hasattr(b, "process"):
            b = as_sampler(b, f"bases[{k}]").model
        if not callable(getattr(b, "log_prob", None)):
            raise TypeError(f"bases[{k}] must have an exact log_prob(x, t) (e.g. a GaussianMixtureOracle)")
        models.append(b)
    obs = Observations.build(y, len(models), weights, alpha)
    log_priors = obs.log_priors(dtype=torch.float64)

    def log_density(x: torch.Tensor) -> torch.Tensor:
        logp = torch.stack([m.log_prob(x, t) for m in models], -1).to(torch.float64)
        lp = log_priors.to(logp.device)
        mix = torch.logsumexp(logp + lp[0], -1)
        return mix + obs.select(terminal_log_joint(logp, lp))

    return log_density
