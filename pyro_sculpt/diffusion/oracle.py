"""Oracle diffusion models: Gaussian mixtures whose noised densities and scores are exact at every noise
level."""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch

from pyro_sculpt.diffusion.model import DiffusionModel, check_points, time_like
from pyro_sculpt.diffusion.schedules import NoiseSchedule, TimeLike, VPSchedule
from pyro_sculpt.utils import DeviceLike, as_device, check_finite

_LOG_2PI = math.log(2 * math.pi)


class GaussianMixtureOracle(DiffusionModel):
    """A diffusion model whose data distribution is a Gaussian mixture, with exact scores.

    The data density is :math:`p_0(x) = \\sum_k w_k \\mathcal N(x; \\mu_k, \\Sigma_k)`. The forward kernel
    :math:`\\mathcal N(x_t; \\alpha_t x_0, \\sigma_t^2 I)` maps it to another mixture, in closed form:

    .. math::

        p_t(x) = \\sum_k w_k\\, \\mathcal N\\big(x;\\ \\alpha_t \\mu_k,\\ C_k(t)\\big), \\qquad
        C_k(t) = \\alpha_t^2 \\Sigma_k + \\sigma_t^2 I,

        \\nabla_x \\log p_t(x) = -\\sum_k r_k(x, t)\\, C_k(t)^{-1} (x - \\alpha_t \\mu_k),

    with responsibilities :math:`r_k \\propto w_k \\mathcal N(x; \\alpha_t\\mu_k, C_k)`. The posterior of the
    clean sample is again a mixture: :math:`p(x_0 \\mid x_t) = \\sum_k r_k\\, \\mathcal N(x_0; m_k, V_k)` with
    :math:`m_k = \\mu_k + \\alpha_t \\Sigma_k C_k^{-1} (x_t - \\alpha_t \\mu_k)` and :math:`V_k = \\sigma_t^2
    \\Sigma_k C_k^{-1}` (see :meth:`posterior`). An oracle is usable wherever a trained
    :class:`~pyro_sculpt.diffusion.ScoreModel` is, so that sampler and composition errors can be measured
    apart from model error.

    The oracle is a vector model (event shape ``(D,)``); an image-shaped oracle is a thin
    :class:`~pyro_sculpt.diffusion.DiffusionModel` that reshapes ``(..., C, H, W)`` to ``(..., C H W)``, calls this
    one and reshapes the score back.

    :param means: component means, shape ``(K, D)``.
    :param covariances: component covariances, shape ``(K, D, D)``, symmetric positive definite. Give either
        this or ``stds``.
    :param weights: mixture weights, shape ``(K,)``, non-negative and summing to 1 (default uniform).
    :param stds: component standard deviations: a number (isotropic, shared), shape ``(K,)`` (isotropic per
        component) or ``(K, D)`` (diagonal).
    :param schedule: the noise schedule (default :class:`~pyro_sculpt.diffusion.VPSchedule`).
    :param device: where the parameters live.

    Example::

        oracle = GaussianMixtureOracle(torch.tensor([[-2.0, 0.0], [2.0, 0.0]]), stds=0.3, weights=[0.3, 0.7])
        x = oracle.sample(1000)                       # exact samples of the data distribution
        s = oracle.score(x, 0.5)                      # exact score of the noised density at t = 0.5
    """

    def __init__(
        self,
        means: Union[torch.Tensor, Sequence],
        covariances: Union[torch.Tensor, Sequence, None] = None,
        weights: Union[torch.Tensor, Sequence, None] = None,
        *,
        stds: Union[float, torch.Tensor, Sequence, None] = None,
        schedule: Optional[NoiseSchedule] = None,
        device: DeviceLike = None,
    ):
        device = as_device(device)
        means = torch.as_tensor(means)
        if not means.is_floating_point():
            means = means.to(torch.get_default_dtype())
        dtype = means.dtype
        means = means.to(device)
        if means.dim() != 2 or means.shape[0] < 1 or means.shape[1] < 1:
            raise ValueError(f"means must have shape (K, D), got {tuple(means.shape)}")
        if not torch.isfinite(means).all():
            raise ValueError("means must be finite")
        k, d = means.shape
        if (covariances is None) == (stds is None):
            raise ValueError("give exactly one of covariances (K, D, D) and stds")
        if covariances is not None:
            cov = torch.as_tensor(covariances, dtype=dtype).to(device)
            if cov.shape != (k, d, d):
                raise ValueError(f"covariances must have shape (K, D, D) = {(k, d, d)}, got {tuple(cov.shape)}")
            if not torch.isfinite(cov).all() or not torch.allclose(cov, cov.transpose(-1, -2), atol=1e-6):
                raise ValueError("covariances must be finite and symmetric")
            _, info = torch.linalg.cholesky_ex(cov)
            if (info != 0).any():
                raise ValueError(
                    f"covariances must be positive definite; component {int(torch.nonzero(info)[0])} is not"
                )
        else:
            s = torch.as_tensor(stds, dtype=dtype).to(device)
            if not torch.isfinite(s).all() or (s <= 0).any():
                raise ValueError(f"stds must be finite and > 0, got {stds!r}")
            if s.dim() == 0:
                s = s.expand(k, d)
            elif s.shape == (k,):
                s = s.unsqueeze(-1).expand(k, d)
            elif s.shape != (k, d):
                raise ValueError(
                    f"stds must be a number or have shape (K,) = ({k},) or (K, D) = {(k, d)}, got {tuple(s.shape)}"
                )
            cov = torch.diag_embed(s**2)
        if weights is None:
            w = torch.full((k,), 1.0 / k, dtype=dtype, device=device)
        else:
            w = torch.as_tensor(weights, dtype=dtype).to(device)
            if w.shape != (k,):
                raise ValueError(f"weights must have shape (K,) = ({k},), got {tuple(w.shape)}")
            if not torch.isfinite(w).all() or (w < 0).any():
                raise ValueError("weights must be finite and non-negative")
            if abs(float(w.sum()) - 1.0) > 1e-6:
                raise ValueError(f"weights must sum to 1, got {float(w.sum()):.6g}")
        if schedule is None:
            schedule = VPSchedule()
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
        self.means, self.covariances, self.weights = means, cov.contiguous(), w
        self.schedule = schedule
        self.dim = d
        self.num_components = k
        self._device = device

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the mixture's parameters (its samplers' states are drawn in it)."""
        return self.means.dtype

    def to(self, device: DeviceLike) -> "GaussianMixtureOracle":
        """A copy on ``device``."""
        return GaussianMixtureOracle(self.means, self.covariances, self.weights, schedule=self.schedule, device=device)

    def __repr__(self) -> str:
        return f"GaussianMixtureOracle(K={self.num_components}, D={self.dim}, schedule={self.schedule!r})"

    # ----- closed forms -----

    def _params(self, x: torch.Tensor):
        return (
            self.means.to(device=x.device, dtype=x.dtype),
            self.covariances.to(device=x.device, dtype=x.dtype),
            self.weights.to(device=x.device, dtype=x.dtype),
        )

    def _coefficients(self, x: torch.Tensor, t: Optional[TimeLike]):
        if t is None:
            one = torch.ones((), dtype=x.dtype, device=x.device)
            return one, torch.zeros_like(one)
        tt = time_like(t, x)
        return self.schedule.alpha(tt), self.schedule.sigma2(tt)

    def _terms(self, x: torch.Tensor, t: Optional[TimeLike]):
        """Per-component log-densities ``(..., K)``, Cholesky factors of :math:`C_k`, residuals ``(..., K,
        D)`` and :math:`(\\alpha_t, \\sigma_t^2)`."""
        mu, cov, w = self._params(x)
        alpha, sigma2 = self._coefficients(x, t)
        a = alpha[..., None, None, None]
        eye = torch.eye(self.dim, dtype=x.dtype, device=x.device)
        c = a**2 * cov + sigma2[..., None, None, None] * eye
        chol = torch.linalg.cholesky(c)
        r = x.unsqueeze(-2) - a[..., 0] * mu
        z = torch.linalg.solve_triangular(chol, r.unsqueeze(-1), upper=False).squeeze(-1)
        log_det = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        log_n = -0.5 * ((z**2).sum(-1) + log_det + self.dim * _LOG_2PI)
        return torch.log(w) + log_n, chol, r, alpha, sigma2

    def component_log_probs(self, x: torch.Tensor, t: Optional[TimeLike] = None) -> torch.Tensor:
        """:math:`\\log w_k + \\log \\mathcal N(x; \\alpha_t \\mu_k, C_k(t))`, shape ``(..., K)``; ``t=None``
        is the data distribution (no noise at all)."""
        check_points(x, self.dim)
        return self._terms(x, t)[0]

    def log_prob(self, x: torch.Tensor, t: Optional[TimeLike] = None) -> torch.Tensor:
        """The exact :math:`\\log p_t(x)`, shape ``x.shape[:-1]``; ``t=None`` is the data density :math:`p_0`
        without noise (for a VP schedule the same as ``t=0``; a VE schedule has :math:`\\sigma_0 > 0`).

        :raises ValueError: for points that are not finite (a NaN log-density would pass for a number).
        """
        if isinstance(x, torch.Tensor):
            check_finite("x", x)
        return torch.logsumexp(self.component_log_probs(x, t), -1)

    #: :meth:`log_prob` is the exact, normalised log-density (an energy model's is known up to a constant per level)
    log_prob_normalised = True

    def energy(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """The energy of the noised density in the convention of
        :class:`~pyro_sculpt.diffusion.EnergyScoreModel` (docs/math.md §2), :math:`E(x, t) = -\\sigma_t \\log p_t(x)`,
        so that :meth:`log_prob` is :math:`-E/\\sigma_t` and :meth:`score` is :math:`-\\nabla_x E / \\sigma_t`;
        shape ``x.shape[:-1]``."""
        if t is None:
            raise ValueError("t must be a noise level (the energy is -sigma_t log p_t), got None")
        sigma = self.schedule.sigma(time_like(t, x))
        return -sigma * self.log_prob(x, t)

    def responsibilities(self, x: torch.Tensor, t: Optional[TimeLike] = None) -> torch.Tensor:
        """:math:`r_k(x, t) = P(\\text{component } k \\mid x_t = x)`, shape ``(..., K)``."""
        return torch.softmax(self.component_log_probs(x, t), -1)

    def score(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """The exact score :math:`\\nabla_x \\log p_t(x)` (see the class docstring)."""
        check_points(x, self.dim)
        log_c, chol, r, _, _ = self._terms(x, t)
        resp = torch.softmax(log_c, -1)
        prec_r = torch.cholesky_solve(r.unsqueeze(-1), chol).squeeze(-1)
        return -(resp.unsqueeze(-1) * prec_r).sum(-2)

    def posterior(self, x: torch.Tensor, t: TimeLike, *, cholesky: bool = False):
        """The posterior :math:`p(x_0 \\mid x_t = x) = \\sum_k r_k \\mathcal N(x_0; m_k, V_k)`.

        :param cholesky: return a Cholesky factor :math:`L_k` (:math:`V_k = L_k L_k^\\top`) instead of
            :math:`V_k`; computed as :math:`\\sigma_t \\operatorname{chol}(\\Sigma_k C_k^{-1})`, valid down to
            :math:`\\sigma_t = 0`.
        :returns: ``(log_r, m, V)`` of shapes ``(..., K)``, ``(..., K, D)`` and ``(T..., K, D, D)`` where
            ``T`` is the shape of ``t`` (scalar ``t``: ``(K, D, D)``). :math:`V_k = \\sigma_t^2 \\Sigma_k
            C_k^{-1}` has no cancellation at small :math:`\\sigma_t`; it is zero where :math:`\\sigma_t = 0`.
        """
        check_points(x, self.dim)
        mu, cov, _ = self._params(x)
        log_c, chol, r, alpha, sigma2 = self._terms(x, t)
        log_r = log_c - torch.logsumexp(log_c, -1, keepdim=True)
        cinv_r = torch.cholesky_solve(r.unsqueeze(-1), chol)
        a = alpha[..., None, None]
        m = mu + a * (cov @ cinv_r).squeeze(-1)
        cinv_cov = torch.cholesky_solve(cov.expand(chol.shape), chol)
        cinv_cov = 0.5 * (cinv_cov + cinv_cov.transpose(-1, -2))
        if cholesky:
            return log_r, m, sigma2.sqrt()[..., None, None, None] * torch.linalg.cholesky(cinv_cov)
        return log_r, m, sigma2[..., None, None, None] * cinv_cov

    def sample(
        self,
        num_samples: int,
        t: Optional[float] = None,
        *,
        generator: Optional[torch.Generator] = None,
        return_labels: bool = False,
    ):
        """Exact samples of :math:`p_t` (``t=None``: the data distribution), shape ``(num_samples, D)``.

        :param return_labels: also return the component of each sample.
        """
        n = int(num_samples)
        if n < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples!r}")
        dev = self.device
        labels = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        chol = torch.linalg.cholesky(self.covariances)
        z = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype, device=dev)
        x = self.means[labels] + (chol[labels] @ z.unsqueeze(-1)).squeeze(-1)
        if t is not None:
            tt = torch.as_tensor(float(t), dtype=x.dtype, device=dev)
            eps = torch.randn(n, self.dim, generator=generator, dtype=x.dtype, device=dev)
            x = self.schedule.alpha(tt) * x + self.schedule.sigma(tt) * eps
        return (x, labels) if return_labels else x
