"""Observations of the augmented model: which base produced x, their priors, and the joint over y.

The augmented model of Garipov et al. (2023, §3) draws :math:`x` from the mixture :math:`\\sum_i w_i p_i(x)` and
observations :math:`y_1, \\dots, y_n \\in \\{0, \\dots, m-1\\}`, independent given :math:`x`:

.. math::

    \\tilde p(y_k = i \\mid x) = \\frac{\\pi_{k,i}\\, p_i(x)}{\\sum_j \\pi_{k,j}\\, p_j(x)},

where :math:`\\pi_1 = w` (the mixture weights: :math:`y_1` is "the base that generated x") and, for the parameterised
operations, :math:`\\pi_k = (\\alpha, 1 - \\alpha)` for :math:`k \\ge 2`. Indices are 0-based.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from pyro_sculpt.utils import check_probability


@dataclass(frozen=True)
class Observations:
    """Observed values of :math:`y_1..y_n` (``None`` = unobserved, summed out) and the priors.

    :param y: one entry per observation variable, a base index in ``[0, m)`` or ``None``.
    :param num_models: :math:`m`.
    :param weights: mixture weights :math:`w` (prior of :math:`y_1`), default uniform.
    :param alpha: prior :math:`(\\alpha, 1-\\alpha)` of :math:`y_2..y_n` (two models only), default uniform.
    """

    y: tuple
    num_models: int
    weights: tuple
    alpha: Optional[float]

    @staticmethod
    def build(
        y: Sequence[Optional[int]],
        num_models: int,
        weights: Optional[Sequence[float]] = None,
        alpha: Optional[float] = None,
    ) -> "Observations":
        y = tuple(y)
        if len(y) == 0:
            raise ValueError("y must name at least one observation (use None for an unobserved one)")
        for k, v in enumerate(y):
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < num_models:
                raise ValueError(f"y[{k}] must be a base index in [0, {num_models - 1}] or None, got {v!r}")
        if weights is None:
            weights = (1.0 / num_models,) * num_models
        weights = tuple(float(w) for w in weights)
        if len(weights) != num_models:
            raise ValueError(f"weights must have one entry per base ({num_models}), got {len(weights)}")
        if any(not (w > 0) or math.isnan(w) for w in weights):
            raise ValueError(f"weights must be positive, got {weights}")
        total = sum(weights)
        weights = tuple(w / total for w in weights)
        if alpha is not None:
            alpha = check_probability("alpha", alpha)
            if num_models != 2:
                raise ValueError(f"alpha is defined for two base models, got {num_models} bases")
        return Observations(y, num_models, weights, alpha)

    @property
    def num_observations(self) -> int:
        return len(self.y)

    def log_priors(self, device=None, dtype=None) -> torch.Tensor:
        """``(n, m)`` log prior of each observation variable."""
        rows = [list(self.weights)]
        other = [self.alpha, 1 - self.alpha] if self.alpha is not None else [1.0 / self.num_models] * self.num_models
        rows += [other] * (len(self.y) - 1)
        return torch.tensor(rows, device=device, dtype=dtype or torch.get_default_dtype()).log()

    def select(self, log_joint: torch.Tensor) -> torch.Tensor:
        """:math:`\\log Q(y_{obs} \\mid \\cdot)` from a joint ``(..., m, ..., m)`` (n trailing dims): index the
        observed entries and sum out the others."""
        out = log_joint
        for v in reversed(self.y):  # the last remaining dim is always the next one to remove
            out = torch.logsumexp(out, dim=-1) if v is None else out.select(-1, v)
        return out


def check_classifier_observations(
    obs: Observations, num_models: int, num_observations: int, supports_alpha: bool
) -> None:
    """Raise a :class:`ValueError` if a classifier for ``num_models`` bases and ``num_observations`` observations
    (conditioned on alpha or not) cannot answer ``obs``."""
    if obs.num_models != num_models:
        raise ValueError(f"classifier was trained for {num_models} base models, but {obs.num_models} bases were given")
    if obs.num_observations != num_observations:
        raise ValueError(
            f"classifier was trained for {num_observations} observations, but y has "
            f"{obs.num_observations} entries (use None for an unobserved one)"
        )
    if obs.alpha is not None and not supports_alpha and obs.num_observations > 1:
        raise ValueError("alpha needs a classifier conditioned on alpha (alpha_conditioned=True) or an exact one")


def terminal_log_joint(terminal_logits: torch.Tensor, log_priors: torch.Tensor) -> torch.Tensor:
    """Joint of independent observations given a terminal x: :math:`\\sum_k \\log \\tilde p(y_k \\mid x)`.

    :param terminal_logits: ``(..., m)`` logits :math:`\\ell_i(x) = \\log p_i(x) + c(x)`.
    :param log_priors: ``(n, m)``.
    :returns: ``(..., m, ..., m)`` with n trailing dims.
    """
    n, m = log_priors.shape
    per = torch.log_softmax(terminal_logits.unsqueeze(-2) + log_priors, dim=-1)  # (..., n, m)
    batch = terminal_logits.shape[:-1]
    out = torch.zeros(batch + (1,) * n, dtype=per.dtype, device=per.device)
    for k in range(n):
        shape = batch + (1,) * k + (m,) + (1,) * (n - k - 1)
        out = out + per[..., k, :].reshape(shape)
    return out


def reweight_first(log_joint: torch.Tensor, n: int, log_weights: torch.Tensor, trained_log_weights: torch.Tensor):
    """Change the prior of :math:`y_1` from the one a classifier was trained with to ``log_weights`` (Bayes' rule):
    :math:`Q_w(y_1 = i, y_{2:n}) \\propto (w_i / w^{train}_i) Q(y_1 = i, y_{2:n})`."""
    delta = (log_weights - trained_log_weights).reshape((-1,) + (1,) * (n - 1))
    out = log_joint + delta
    return out - torch.logsumexp(out.flatten(-n), -1).reshape(out.shape[:-n] + (1,) * n)


def target_weights(t_logits: torch.Tensor, label: torch.Tensor, n: int, logit_alpha) -> torch.Tensor:
    """:math:`W(y) = 1[y_1 = k] \\prod_{j \\ge 2} \\bar Q(y_j \\mid x)`, flattened to ``(B, m**n)``."""
    m = t_logits.shape[-1]
    w = torch.nn.functional.one_hot(label, m).to(t_logits.dtype)
    if n > 1:
        if logit_alpha is not None:  # prior (alpha, 1 - alpha): logit of y = 1 shifts by -logit(alpha)
            shift = torch.stack([torch.zeros_like(logit_alpha), -logit_alpha], -1)
            q = torch.softmax(t_logits + shift, -1)
        else:
            q = torch.softmax(t_logits, -1)
        for _ in range(n - 1):
            w = w.unsqueeze(-1) * q.reshape(q.shape[:1] + (1,) * (w.dim() - 1) + (m,))
    return w.reshape(w.shape[0], -1)
