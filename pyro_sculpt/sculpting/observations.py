"""Observations of the augmented model: which base produced x, their priors, and the joint over y.

The augmented model of Garipov et al. (2023, §3) draws :math:`x` from the mixture :math:`\\sum_i w_i p_i(x)` and
observations :math:`y_1, \\dots, y_n \\in \\{0, \\dots, m-1\\}`, independent given :math:`x`:

.. math::

    \\tilde p(y_k = i \\mid x) = \\frac{\\pi_{k,i}\\, p_i(x)}{\\sum_j \\pi_{k,j}\\, p_j(x)},

where :math:`\\pi_1 = w` (the mixture weights: :math:`y_1` is "the base that generated x") and, for the parameterised
operations, :math:`\\pi_k = (\\alpha, 1 - \\alpha)` for :math:`k \\ge 2`. Indices are 0-based.

The priors are composition parameters a Pyro user may learn (DESIGN.md): given as tensors (e.g. a
:func:`pyro.param` with a ``simplex`` or ``unit_interval`` constraint) they stay tensors, and :meth:`Observations.
log_priors` is differentiable in them.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace
from typing import Any, Optional, Sequence, Union

import torch

from pyro_sculpt.utils import check_probability

#: a prior given by the user: numbers, 0-d tensors, or a 1-d tensor
PriorLike = Union[Sequence[Any], torch.Tensor]


def check_weights(weights: Optional[PriorLike], num_models: int, name: str = "weights") -> torch.Tensor:
    """The normalised mixture weights :math:`w / \\sum_j w_j` as a 1-d tensor, differentiable in ``weights``.

    Numbers give a float64 tensor; a tensor (or a sequence holding tensors, e.g. ``(w, 1 - w)``) keeps its floating
    dtype and its gradient. The values are checked on a detached copy, so the graph is not broken.

    :param weights: one weight per base, each finite and > 0 (a zero weight would remove a base), or ``None`` for
        uniform.
    :param num_models: :math:`m`.
    :param name: the argument's name in error messages.
    :raises ValueError: naming ``name``, for a wrong number of entries, or an infinite, NaN, zero or negative weight.
    """
    return _weights(weights, num_models, name)[0]


def _weights(weights: Optional[PriorLike], num_models: int, name: str) -> tuple[torch.Tensor, tuple]:
    """:func:`check_weights` and the normalised values as floats."""
    if weights is None:
        return torch.full((num_models,), 1.0 / num_models, dtype=torch.float64), (1.0 / num_models,) * num_models
    if isinstance(weights, torch.Tensor):
        w = weights
    else:
        if isinstance(weights, (str, bytes)) or not hasattr(weights, "__iter__"):
            raise ValueError(f"{name} must be a sequence of {num_models} numbers or a tensor, got {weights!r}")
        entries = list(weights)
        if any(isinstance(v, torch.Tensor) for v in entries):
            if any(isinstance(v, torch.Tensor) and v.numel() != 1 for v in entries):
                raise ValueError(f"{name} must hold one number per base ({num_models}), got {weights!r}")
            ts = [v.reshape(()) if isinstance(v, torch.Tensor) else torch.tensor(_number(name, v)) for v in entries]
            dtype = _floating(ts[0].dtype)
            for t in ts[1:]:
                dtype = torch.promote_types(dtype, _floating(t.dtype))
            w = torch.stack([t.to(dtype=dtype, device=ts[0].device) for t in ts])
        else:
            w = torch.tensor([_number(name, v) for v in entries], dtype=torch.float64)
    if not w.is_floating_point():
        w = w.to(torch.get_default_dtype())
    if w.dim() != 1 or w.shape[0] != num_models:
        got = w.shape[0] if w.dim() == 1 else f"shape {tuple(w.shape)}"
        raise ValueError(f"{name} must have one entry per base ({num_models}), got {got}")
    values = w.detach().tolist()
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"{name} must be finite and > 0, got {values}")
    total = math.fsum(values)
    if not math.isfinite(total):
        raise ValueError(f"{name} must have a finite sum, got {values}")
    return w / w.sum(), tuple(v / total for v in values)


def check_alpha(alpha: Any) -> torch.Tensor:
    """:math:`\\alpha` as a 0-d tensor, differentiable in a tensor ``alpha`` (a number gives float64).

    :raises ValueError: naming ``alpha``, unless it is one number in the open interval (0, 1).
    """
    if isinstance(alpha, torch.Tensor):
        if alpha.numel() != 1:
            raise ValueError(f"alpha must be a number in (0, 1), got a tensor of shape {tuple(alpha.shape)}")
        a = alpha.reshape(())
        if not a.is_floating_point():
            a = a.to(torch.get_default_dtype())
        v = float(a.detach())
        if not 0.0 < v < 1.0:  # also false for NaN
            raise ValueError(f"alpha must lie in (0, 1), got {v!r}")
        return a
    return torch.tensor(check_probability("alpha", alpha), dtype=torch.float64)


def _number(name: str, v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must hold numbers, got {v!r}") from None


def _floating(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype.is_floating_point else torch.get_default_dtype()


def _as_index(v: Any) -> Any:
    """``v`` as a Python int when it is an integer of another type (NumPy, a 0-d integer tensor); else as it is."""
    if isinstance(v, torch.Tensor) and v.dim() == 0 and not v.dtype.is_floating_point and v.dtype != torch.bool:
        return int(v)
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        return int(v)
    return v


@dataclass(frozen=True, eq=False)
class Observations:
    """Observed values of :math:`y_1..y_n` (``None`` = unobserved, summed out) and the priors.

    Build it with :meth:`build`, which checks every argument.

    :ivar y: one entry per observation variable, a base index in ``[0, m)`` or ``None``.
    :ivar num_models: :math:`m`.
    :ivar weights: ``(m,)`` the normalised mixture weights :math:`w` (prior of :math:`y_1`), a tensor with the
        gradient of the weights it was built from.
    :ivar alpha: the prior :math:`(\\alpha, 1-\\alpha)` of :math:`y_2..y_n` (two models only) as a 0-d tensor, or
        ``None`` (uniform).
    :ivar weight_values: the weights as Python floats (no gradient): for keys, messages and constant priors.
    :ivar alpha_value: ``alpha`` as a Python float, or ``None``.

    Example::

        obs = ps.Observations.build((0, None), num_models=2, alpha=0.3)  # y1 = 0 observed, y2 summed out
        obs.log_priors()  # one prior per observation variable
    """

    y: tuple
    num_models: int
    weights: torch.Tensor
    alpha: Optional[torch.Tensor]
    weight_values: tuple
    alpha_value: Optional[float]

    @staticmethod
    def build(
        y: Sequence[Optional[int]],
        num_models: int,
        weights: Optional[PriorLike] = None,
        alpha: Optional[Union[float, torch.Tensor]] = None,
    ) -> "Observations":
        """Check and normalise the observations and their priors.

        :param y: one entry per observation variable, a base index in ``[0, m)`` or ``None``.
        :param num_models: :math:`m`.
        :param weights: mixture weights :math:`w` (prior of :math:`y_1`), default uniform: numbers or tensors, each
            finite and > 0; they are normalised to sum to one.
        :param alpha: prior :math:`(\\alpha, 1-\\alpha)` of :math:`y_2..y_n` (two models only), in (0, 1), a number
            or a 0-d tensor; default uniform.
        :raises ValueError: naming the argument that is out of range.

        Example::

            w = pyro.param("w", torch.tensor([0.5, 0.5]), constraint=constraints.simplex)
            obs = Observations.build((0, 1), 2, weights=w)
            obs.log_priors()          # differentiable in w
        """
        y = tuple(_as_index(v) for v in y)  # NumPy integers and 0-d integer tensors read as ints
        if len(y) == 0:
            raise ValueError("y must name at least one observation (use None for an unobserved one)")
        for k, v in enumerate(y):
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < num_models:
                raise ValueError(f"y[{k}] must be a base index in [0, {num_models - 1}] or None, got {v!r}")
        w, values = _weights(weights, num_models, "weights")
        a = None
        if alpha is not None:
            a = check_alpha(alpha)
            if num_models != 2:
                raise ValueError(f"alpha is defined for two base models, got {num_models} bases")
        return Observations(y, num_models, w, a, values, None if a is None else float(a.detach()))

    @property
    def num_observations(self) -> int:
        return len(self.y)

    @property
    def requires_grad(self) -> bool:
        """Whether the weights or alpha carry a gradient."""
        return self.weights.requires_grad or (self.alpha is not None and self.alpha.requires_grad)

    def detach(self) -> "Observations":
        """The same observations with the priors detached from any graph (treated as constants)."""
        if not self.requires_grad:
            return self
        alpha = None if self.alpha is None else self.alpha.detach()
        return replace(self, weights=self.weights.detach(), alpha=alpha)

    def log_priors(self, device=None, dtype=None) -> torch.Tensor:
        """``(n, m)`` log prior of each observation variable, differentiable in tensor weights and alpha."""
        dtype = dtype or torch.get_default_dtype()
        first = self.weights.to(device=device, dtype=dtype)
        if self.alpha is not None:
            a = self.alpha.to(device=first.device, dtype=dtype)
            other = torch.stack([a, 1 - a])
        else:
            other = torch.full((self.num_models,), 1.0 / self.num_models, dtype=dtype, device=first.device)
        return torch.stack([first] + [other] * (len(self.y) - 1)).log()

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
