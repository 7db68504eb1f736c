"""The exact observation classifier of Gaussian-mixture oracles, terminal and time-conditioned (docs/math.md §1,
§1.3)."""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from pyro_sculpt.diffusion.model import check_points, time_like
from pyro_sculpt.diffusion.oracle import GaussianMixtureOracle
from pyro_sculpt.diffusion.schedules import TimeLike
from pyro_sculpt.sculpting.diffusion.bases import check_same_space
from pyro_sculpt.utils import DeviceLike, check_positive_int, check_probability

Y = Sequence[Optional[int]]


class GaussianMixtureClassifier:
    """:math:`Q(y_1, \\dots, y_n \\mid x_t)` of the augmented model of Garipov et al. (2023), exact for
    :class:`~pyro_sculpt.diffusion.GaussianMixtureOracle` bases :math:`p_1, \\dots, p_m`.

    Observations are 0-based base indices. :math:`y_1` has prior :math:`w` (the mixture weights, default
    uniform) and :math:`y_{2..n}` the prior :math:`\\pi` (default :math:`w`; ``alpha`` gives :math:`(\\alpha,
    1 - \\alpha)` for two bases, the parameterised operations of docs/math.md §1). Terminal (``t=None``), the
    observations are independent given :math:`x`:

    .. math::

        Q(y_k = i \\mid x) = \\frac{\\pi_{k,i}\\, p_i(x)}{\\sum_j \\pi_{k,j}\\, p_j(x)} .

    At noise level :math:`t`, :math:`y_1` ("the base that generates the trajectory") has the closed form
    :math:`Q(y_1 = i \\mid x_t) = w_i p_{i,t}(x_t) / \\sum_j w_j p_{j,t}(x_t)`, and the others are
    observations of the final sample:

    .. math::

        Q(y_1 = i, y_{2:n} \\mid x_t) = Q(y_1 = i \\mid x_t)
        \\int p_i(x_0 \\mid x_t) \\prod_{k \\ge 2} Q(y_k \\mid x_0)\\, dx_0 .

    The posterior :math:`p_i(x_0 \\mid x_t) = \\sum_c r_{ic}\\, \\mathcal N(x_0; m_{ic}, V_{ic})` is a
    Gaussian mixture in closed form (:meth:`GaussianMixtureOracle.posterior`), so the integral is, component
    by component, a Gaussian expectation, computed by a tensor-product Gauss-Hermite rule: a grid of
    ``quadrature_points ** D`` nodes :math:`m_{ic} + L_{ic} z_q` (:math:`V_{ic} = L_{ic} L_{ic}^\\top`) for
    every particle at once. The rule adapts to the posterior's width, from the base's own components at
    :math:`t = 1` down to a point mass at :math:`\\sigma_t = 0`, and is differentiable in :math:`x_t`:
    :meth:`grad_log_prob` is autograd through it.

    The classifier is for vector data (event shape ``(D,)``, that of its oracles); its quadrature grid grows as
    ``quadrature_points ** D``, so it is meant for small :math:`D`.

    :param bases: the base oracles (at least two), one data dimension and one schedule.
    :param num_observations: :math:`n \\ge 1`.
    :param weights: the mixture weights :math:`w`, default uniform.
    :param quadrature_points: Gauss-Hermite points per dimension (cost grows as its square in 2D). On
        overlapping 2D mixtures 16 points give :math:`\\log Q` to about :math:`3 \\cdot 10^{-3}` and its
        gradient to about 2 % (worst case over noise levels); 8 points are four times cheaper and about ten
        times less accurate.
    :param chunk_size: particles per batched evaluation (bounds memory; not a loop over particles).
    :param device: move the bases there (default: where they are); inputs are evaluated on their own device.

    Example::

        clf = GaussianMixtureClassifier([p1, p2], num_observations=2)
        lq = clf.log_prob((0, 1), x_t, 0.3)              # log Q(y1=0, y2=1 | x_t), harmonic mean
        lq, grad = clf.grad_log_prob((0, 1), x_t, 0.3)   # and its gradient in x_t
    """

    #: the family this classifier guides (for messages)
    guides = "diffusion models"

    supports_alpha = True

    def __init__(
        self,
        bases: Sequence[GaussianMixtureOracle],
        num_observations: int = 2,
        *,
        weights: Optional[Sequence[float]] = None,
        quadrature_points: int = 16,
        chunk_size: int = 1024,
        device: DeviceLike = None,
    ):
        bases = list(bases)
        if len(bases) < 2:
            raise ValueError(f"bases must hold at least two base models, got {len(bases)}")
        for k, b in enumerate(bases):
            if not isinstance(b, GaussianMixtureOracle):
                raise TypeError(f"bases[{k}] must be a GaussianMixtureOracle, got {type(b).__name__}")
        check_same_space(bases)
        if device is not None:
            bases = [b.to(device) for b in bases]
        self.bases = bases
        self.num_models = len(bases)
        self.num_observations = check_positive_int("num_observations", num_observations)
        self.dim = bases[0].dim
        #: the shape of one point: vectors ``(D,)``
        self.event_shape = torch.Size([self.dim])
        self.schedule = bases[0].schedule
        self.quadrature_points = check_positive_int("quadrature_points", quadrature_points)
        self.chunk_size = check_positive_int("chunk_size", chunk_size)
        self.weights = self._prior("weights", weights)
        self._build_tables()

    def __repr__(self) -> str:
        return (
            f"GaussianMixtureClassifier(num_models={self.num_models}, "
            f"num_observations={self.num_observations}, "
            f"dim={self.dim}, quadrature_points={self.quadrature_points})"
        )

    @property
    def device(self) -> torch.device:
        return self.bases[0].device

    # ----- priors and observations -----

    def _prior(self, name: str, value: Any) -> torch.Tensor:
        m = self.num_models
        if value is None:
            return torch.full((m,), 1.0 / m, dtype=torch.float64)
        w = torch.as_tensor(value, dtype=torch.float64).detach().cpu().reshape(-1)
        if w.shape != (m,):
            raise ValueError(f"{name} must have one entry per base ({m}), got shape {tuple(w.shape)}")
        if not torch.isfinite(w).all() or (w <= 0).any():
            raise ValueError(f"{name} must be finite and > 0, got {value!r}")
        return w / w.sum()

    def _alpha_prior(self, alpha: Any, weights: torch.Tensor) -> torch.Tensor:
        if alpha is None:
            return weights
        if isinstance(alpha, (int, float, np.floating)) or (isinstance(alpha, torch.Tensor) and alpha.dim() == 0):
            if self.num_models != 2:
                raise ValueError(
                    f"a scalar alpha is defined for two base models, got {self.num_models}; pass a "
                    "probability vector with one entry per base"
                )
            a = check_probability("alpha", float(alpha))
            return torch.tensor([a, 1.0 - a], dtype=torch.float64)
        return self._prior("alpha", alpha)

    def _resolve(self, y: Any, weights: Any, alpha: Any):
        """Accept either ``y`` (a sequence) or an observations object with ``y``, ``weights`` and
        ``alpha``."""
        if hasattr(y, "y"):
            obs = y
            y = obs.y
            weights = getattr(obs, "weights", None) if weights is None else weights
            alpha = getattr(obs, "alpha", None) if alpha is None else alpha
        w = self.weights if weights is None else self._prior("weights", weights)
        return y, w, self._alpha_prior(alpha, w)

    def check_y(self, y: Y) -> tuple:
        """Raise a :class:`ValueError` unless ``y`` has :math:`n` entries, each a base index or ``None``."""
        if isinstance(y, (str, bytes)) or not hasattr(y, "__len__"):
            raise ValueError(f"y must be a sequence of {self.num_observations} base indices or None, got {y!r}")
        y = tuple(int(v) if isinstance(v, torch.Tensor) else v for v in y)
        if len(y) != self.num_observations:
            raise ValueError(
                f"y must have {self.num_observations} entries (num_observations), got {len(y)}: {y!r}; "
                "use None for an unobserved one"
            )
        for k, v in enumerate(y):
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v < self.num_models:
                raise ValueError(f"y[{k}] must be a base index in [0, {self.num_models - 1}] or None, got {v!r}")
        return tuple(None if v is None else int(v) for v in y)

    # ----- densities of the bases at arbitrary points -----

    def _build_tables(self) -> None:
        """Coefficients of every base component's log-density as a quadratic polynomial in :math:`x`,

        .. math::

            \\log w_c \\mathcal N(x; \\mu_c, \\Sigma_c) = -\\tfrac12 x^\\top P_c x + (P_c \\mu_c)^\\top x
            + k_c

        so that all components are evaluated at once by two matrix products."""
        m, d = self.num_models, self.dim
        kmax = max(b.num_components for b in self.bases)
        quad = torch.zeros(m, kmax, d * d, dtype=torch.float64)
        lin = torch.zeros(m, kmax, d, dtype=torch.float64)
        const = torch.full((m, kmax), -math.inf, dtype=torch.float64)  # -inf on padding components
        for i, b in enumerate(self.bases):  # a loop over bases (construction only)
            mu = b.means.detach().cpu().double()
            cov = b.covariances.detach().cpu().double()
            prec = torch.linalg.inv(cov)
            prec = 0.5 * (prec + prec.transpose(-1, -2))
            k = b.num_components
            quad[i, :k] = (-0.5 * prec).reshape(k, d * d)
            lin[i, :k] = (prec @ mu.unsqueeze(-1)).squeeze(-1)
            const[i, :k] = (
                -0.5 * (mu.unsqueeze(-2) @ prec @ mu.unsqueeze(-1)).reshape(k)
                - 0.5 * torch.logdet(cov)
                - 0.5 * d * math.log(2 * math.pi)
                + b.weights.detach().cpu().double().log()
            )
        self._quad = quad.reshape(m * kmax, d * d).T.contiguous()  # (D * D, m * kmax)
        self._lin = lin.reshape(m * kmax, d).T.contiguous()  # (D, m * kmax)
        self._const = const.reshape(-1)  # (m * kmax)
        self._kmax = kmax
        nodes, wts = np.polynomial.hermite_e.hermegauss(self.quadrature_points)
        z = torch.cartesian_prod(*[torch.as_tensor(nodes, dtype=torch.float64)] * d).reshape(-1, d)
        lw = torch.as_tensor(np.log(wts) - 0.5 * math.log(2 * math.pi), dtype=torch.float64)
        lw = torch.cartesian_prod(*[lw] * d).reshape(-1, d).sum(-1)
        self._nodes, self._log_node_weights = z, lw
        self._cache: dict = {}

    def _tensors(self, x: torch.Tensor):
        key = (x.dtype, x.device)
        if key not in self._cache:
            self._cache[key] = tuple(
                t.to(dtype=x.dtype, device=x.device)
                for t in (self._quad, self._lin, self._const, self._nodes, self._log_node_weights)
            )
        return self._cache[key]

    def _data_log_densities(self, z: torch.Tensor) -> torch.Tensor:
        """:math:`\\log p_j(z)` of every base's data density, ``(..., m)``."""
        quad, lin, const, _, _ = self._tensors(z)
        outer = (z.unsqueeze(-1) * z.unsqueeze(-2)).flatten(-2)
        comp = outer @ quad + z @ lin + const  # (..., m * kmax)
        return torch.logsumexp(comp.reshape(comp.shape[:-1] + (self.num_models, self._kmax)), -1)

    def terminal_logits(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\ell_i(x) = \\log p_i(x)` of the data densities (no noise), shape ``(..., m)``."""
        check_points(x, self.dim, "x")
        return torch.stack([b.log_prob(x) for b in self.bases], -1)

    # ----- the classifier -----

    def log_prob_first(self, x: torch.Tensor, t: Optional[TimeLike] = None, *, weights=None) -> torch.Tensor:
        """:math:`\\log Q(y_1 = i \\mid x_t)`, shape ``(..., m)``, in closed form (``t=None``: terminal)."""
        check_points(x, self.dim, "x")
        w = self.weights if weights is None else self._prior("weights", weights)
        logp = torch.stack([b.log_prob(x, t) for b in self.bases], -1)
        return torch.log_softmax(logp + w.to(dtype=x.dtype, device=x.device).log(), -1)

    def log_joint(
        self, x: torch.Tensor, t: Optional[TimeLike] = None, *, weights=None, alpha=None, obs: Any = None
    ) -> torch.Tensor:
        """:math:`\\log Q(y_1, \\dots, y_n \\mid x_t)` for every configuration, shape ``(..., m, ..., m)``
        (``n`` trailing dims); ``t=None`` is the terminal classifier. ``obs`` (any object with ``weights`` and
        ``alpha``) may supply the priors."""
        if obs is not None:
            weights = getattr(obs, "weights", None) if weights is None else weights
            alpha = getattr(obs, "alpha", None) if alpha is None else alpha
        w = self.weights if weights is None else self._prior("weights", weights)
        return self._evaluate(x, t, w, self._alpha_prior(alpha, w), None)

    def log_prob(
        self, y: Union[Y, Any], x: torch.Tensor, t: Optional[TimeLike] = None, *, weights=None, alpha=None
    ) -> torch.Tensor:
        """:math:`\\log Q(y \\mid x_t)` for one configuration ``y`` (entries ``None`` are summed out), shape
        ``x.shape[:-1]``. ``y`` may be an observations object with ``y``, ``weights`` and ``alpha``."""
        y, w, a = self._resolve(y, weights, alpha)
        return self._evaluate(x, t, w, a, self.check_y(y))

    def grad_log_prob(
        self, y: Union[Y, Any], x: torch.Tensor, t: Optional[TimeLike] = None, *, weights=None, alpha=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:math:`\\log Q(y \\mid x_t)` and :math:`\\nabla_{x_t} \\log Q(y \\mid x_t)` by autograd, one chunk
        of particles at a time. Works under :func:`torch.no_grad`. Returns detached tensors of shapes
        ``x.shape[:-1]`` and ``x.shape``."""
        y, w, a = self._resolve(y, weights, alpha)
        y = self.check_y(y)
        check_points(x, self.dim, "x")
        flat, tt = self._flatten(x, t)
        values, grads = [], []
        with torch.enable_grad():
            for start in range(0, flat.shape[0], self.chunk_size):
                xc = flat[start : start + self.chunk_size].detach().requires_grad_(True)
                tc = tt if tt is None or tt.dim() == 0 else tt[start : start + self.chunk_size]
                lp = self._evaluate_flat(xc, tc, w, a, y)
                (g,) = torch.autograd.grad(lp.sum(), xc)
                values.append(lp.detach())
                grads.append(g)
        return torch.cat(values).reshape(x.shape[:-1]), torch.cat(grads).reshape(x.shape)

    # ----- evaluation -----

    def _flatten(self, x: torch.Tensor, t: Optional[TimeLike]):
        flat = x.reshape(-1, self.dim)
        if t is None:
            return flat, None
        tt = time_like(t, x)
        return flat, (tt if tt.dim() == 0 else tt.reshape(-1))

    def _evaluate(self, x, t, w, a, y):
        check_points(x, self.dim, "x")
        flat, tt = self._flatten(x, t)
        out = []
        for start in range(0, flat.shape[0], self.chunk_size):  # chunks bound memory; each is fully batched
            tc = tt if tt is None or tt.dim() == 0 else tt[start : start + self.chunk_size]
            out.append(self._evaluate_flat(flat[start : start + self.chunk_size], tc, w, a, y))
        res = (
            torch.cat(out)
            if out
            else flat.new_zeros((0,) + ((self.num_models,) * self.num_observations if y is None else ()))
        )
        return res.reshape(x.shape[:-1] + res.shape[1:])

    def _log_g(self, lq: torch.Tensor, tail: Optional[tuple]) -> torch.Tensor:
        """:math:`\\log \\prod_{k \\ge 2} Q(y_k \\mid x_0)` from ``lq = log Q(y_k = . | x_0)`` ``(..., m)``:
        all ``m ** (n - 1)`` configurations flattened (``tail=None``) or the one given by ``tail``
        (shape ``(..., 1)``)."""
        n = self.num_observations
        if tail is not None:
            out = torch.zeros_like(lq[..., :1])
            for v in tail:
                if v is not None:
                    out = out + lq[..., v : v + 1]
            return out
        out = torch.zeros_like(lq[..., :1])
        for _ in range(n - 1):
            out = (out.unsqueeze(-1) + lq.unsqueeze(-2)).flatten(-2)
        return out

    def _evaluate_flat(self, x, t, w, a, y):
        """``x`` is ``(B, D)``; returns ``(B,)`` for a configuration ``y`` or ``(B, m, ..., m)`` for the
        joint."""
        n, m = self.num_observations, self.num_models
        log_w = w.to(dtype=x.dtype, device=x.device).log()
        log_a = a.to(dtype=x.dtype, device=x.device).log()
        tail = None if y is None else y[1:]
        if t is None:  # terminal: independent observations given x
            logp = self._data_log_densities(x)
            first = torch.log_softmax(logp + log_w, -1)  # (B, m)
            rest = self._log_g(torch.log_softmax(logp + log_a, -1), tail)  # (B, C)
            joint = first.unsqueeze(-1) + rest.unsqueeze(-2)  # (B, m, C)
        else:
            first = torch.log_softmax(torch.stack([b.log_prob(x, t) for b in self.bases], -1) + log_w, -1)
            if n == 1:
                joint = first.unsqueeze(-1)
            else:
                bases = range(m) if (y is None or y[0] is None) else [y[0]]
                cols = {}
                for i in bases:  # a loop over bases, each batched over every particle and node
                    cols[i] = first[:, i : i + 1] + self._log_integral(i, x, t, log_a, tail)
                if y is not None and y[0] is not None:
                    return cols[y[0]].squeeze(-1)
                joint = torch.stack([cols[i] for i in range(m)], 1)  # (B, m, C)
        if y is None:
            return joint.reshape(joint.shape[:1] + (m,) * n)
        if y[0] is None:
            return torch.logsumexp(joint.squeeze(-1), -1)
        return joint[:, y[0], 0]

    def _log_integral(self, i: int, x, t, log_a, tail) -> torch.Tensor:
        """:math:`\\log \\int p_i(x_0 \\mid x_t) \\prod_{k \\ge 2} Q(y_k \\mid x_0) dx_0`, ``(B, C)``."""
        _, _, _, z, log_qw = self._tensors(x)
        log_r, mean, chol = self.bases[i].posterior(x, t, cholesky=True)  # (B, K), (B, K, D), (T.., K, D, D)
        nodes = mean.unsqueeze(-2) + (chol.unsqueeze(-3) @ z.unsqueeze(-1)).squeeze(-1)  # (B, K, Q, D)
        logp = self._data_log_densities(nodes)  # (B, K, Q, m)
        log_g = self._log_g(torch.log_softmax(logp + log_a, -1), tail)  # (B, K, Q, C)
        per_comp = torch.logsumexp(log_g + log_qw.unsqueeze(-1), -2)  # (B, K, C)
        return torch.logsumexp(per_comp + log_r.unsqueeze(-1), -2)
