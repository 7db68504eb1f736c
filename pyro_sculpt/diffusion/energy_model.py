"""Energy-parameterised diffusion models: a scalar network :math:`E_\\theta(x, t)` whose gradient is the noise
prediction, so that the model has a log-density at every noise level (docs/math.md §2; Du et al. 2023, "Reduce,
Reuse, Recycle"; Salimans & Ho 2021).

Convention (docs/math.md §2):

.. math::

    \\hat\\epsilon_\\theta(x, t) = \\nabla_x E_\\theta(x, t), \\qquad
    s_\\theta(x, t) = -\\frac{\\nabla_x E_\\theta(x, t)}{\\sigma_t}, \\qquad
    \\log q_{\\theta, t}(x) = -\\frac{E_\\theta(x, t)}{\\sigma_t} + c(t),

so the score is exactly the gradient of the log-density and the training loss is :class:`ScoreModel`'s denoising
loss on :math:`\\hat\\epsilon_\\theta` (one training loop). :math:`c(t)`, the log-normaliser of each level, is
unknown: :meth:`EnergyScoreModel.log_prob` is :math:`\\log q_t` up to a constant per noise level
(:attr:`~EnergyScoreModel.log_prob_normalised` is ``False``). That is enough wherever the constant cancels: Metropolis
tests at one level, and SMC weights of operators linear in the log-densities (products, negations, tempering),
whose constant :math:`\\sum_i a_i c_i(t)` is shared by all particles at a level. A mixture or a sculpting operator
(log-sum-exp of the log-densities) needs normalised ones.

The oracles (:class:`~pyro_sculpt.diffusion.GaussianMixtureOracle`) expose the same interface with the exact
normalised log-density: :math:`E(x, t) = -\\sigma_t \\log q_t(x)`.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from pyro_sculpt.diffusion.model import batch_shape_of, check_points, time_like
from pyro_sculpt.diffusion.schedules import TimeLike
from pyro_sculpt.diffusion.score_model import ScoreModel
from pyro_sculpt.nn import EnergyGradient, EnergyMLP


class EnergyScoreModel(ScoreModel):
    """A diffusion model whose network is a scalar energy :math:`E_\\theta(x, t)`: noise prediction
    :math:`\\nabla_x E_\\theta`, score :math:`-\\nabla_x E_\\theta / \\sigma_t`, log-density :math:`-E_\\theta /
    \\sigma_t` up to a constant per noise level (see the module docstring).

    Everything but the network head is :class:`ScoreModel`'s: the denoising loss (on :math:`\\nabla_x E_\\theta`,
    by double back-propagation), :meth:`fit` (the shared training loop), the EMA weights and checkpoints (format
    ``EnergyScoreModel``).

    :param dim: data dimension :math:`D` of vector data; or give ``event_shape``.
    :param schedule: the noise schedule (default VP).
    :param event_shape: the shape of one data point.
    :param network: a scalar energy module ``energy(x (B,) + event_shape, t (B,)) -> (B,)``; default an
        :class:`~pyro_sculpt.nn.EnergyMLP` of ``hidden``, ``layers`` and ``time_embedding_dim``. The model's
        :attr:`network` is its :class:`~pyro_sculpt.nn.EnergyGradient`.
    :param seed: seed applied before the network is initialised.
    :param device: where the networks live.

    Example::

        oracle = GaussianMixtureOracle(means, stds=0.2)
        model = EnergyScoreModel(2, seed=0).fit(oracle.sample, steps=5000, seed=0)
        model.energy(x, 0.3), model.log_prob(x, 0.3), model.score(x, 0.3)   # log_prob up to a constant per level
        res = ps.infer.smc(ps.product(AncestralSampler(model, 100), AncestralSampler(other, 100)), 4000,
                           densities="exact")
    """

    #: :meth:`log_prob` is known up to a constant per noise level only
    log_prob_normalised = False

    def _make_network(self, network: Optional[nn.Module], hidden: int, layers: int, time_embedding_dim: int):
        if network is None:
            vector = len(self.event_shape) == 1
            network = EnergyMLP(
                self.dim, hidden, layers, time_embedding_dim, event_shape=None if vector else self.event_shape
            )
        return EnergyGradient(network)

    def _network_config(self) -> Optional[dict]:
        return self.network.energy.config() if isinstance(self.network.energy, EnergyMLP) else None

    def energy(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """:math:`E_\\theta(x, t)`, of shape ``batch_shape`` (EMA weights when ``use_ema``; in ``x``'s dtype)."""
        check_points(x, self.event_shape)
        net = self.ema_network if self.use_ema else self.network
        batch = batch_shape_of(x, self.event_shape)
        dtype = next(net.parameters()).dtype
        xx = x.to(dtype)
        tt = time_like(t, xx, self.event_shape).expand(batch).reshape(-1)
        return net.energy(xx.reshape((-1,) + tuple(self.event_shape)), tt).reshape(batch).to(x.dtype)

    def log_prob(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """:math:`-E_\\theta(x, t) / \\sigma_t`: :math:`\\log q_t(x)` up to a constant per noise level, of shape
        ``batch_shape`` (its gradient is :meth:`score`)."""
        sigma = self.schedule.sigma(time_like(t, x, self.event_shape))
        return -self.energy(x, t) / sigma

    def eps(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """:math:`\\nabla_x E_\\theta(x, t)` (in ``x``'s dtype)."""
        dtype = next(self.network.parameters()).dtype
        return super().eps(x.to(dtype), t).to(x.dtype)

    checkpoint_format = "EnergyScoreModel"
