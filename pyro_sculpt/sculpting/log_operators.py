"""Composition operators on the bases' log-densities (docs/math.md §1, §1.5, §1.6).

Every composition of m bases is a function :math:`\\Phi` of their log-densities: the composition's unnormalised
log-density at :math:`x` is :math:`\\Phi(\\log p_1(x), \\dots, \\log p_m(x))`.

=====================  =============================================================================================
operator               :math:`\\Phi(\\ell)`
=====================  =============================================================================================
:class:`Base`          :math:`\\ell_i`
:class:`Product`       :math:`\\sum_j \\Phi_j(\\ell)`
:class:`Mixture`       :math:`\\log \\sum_j w_j e^{\\Phi_j(\\ell)}`
:class:`Negation`      :math:`(1 + a)\\, \\Phi_1(\\ell) - a\\, \\Phi_2(\\ell)`, i.e. :math:`q_1 (q_1 / q_2)^a`
:class:`Tempered`      :math:`\\beta\\, \\Phi_1(\\ell)`
:class:`Sculpt`        :math:`\\log \\sum_j w_j e^{\\Phi_j} + \\sum_k \\log \\tilde p(y_k \\mid x)` (Garipov et al.)
=====================  =============================================================================================

Operators nest (the arguments of an operator are operators), so a composition of compositions is one operator on
the leaves' log-densities: :func:`flatten` collects the leaves of bases that are themselves compositions.

Sequential Monte Carlo uses the operator twice (both families, :mod:`pyro_sculpt.infer`): its intermediate targets
are :math:`\\Phi` of the bases' log-densities along the path (prefix likelihoods of GFlowNets, tracked or exact
:math:`\\log q_{i,t}(x_t)` of diffusion models), and a proposal follows the operator's gradient
:math:`\\partial \\Phi / \\partial \\ell_i` (a weighted sum of the bases' policies' log-probabilities or scores).
Every operator here is homogeneous, :math:`\\Phi(\\ell + c) = \\Phi(\\ell) + d\\, c` with degree :math:`d`
(:attr:`LogOperator.degree`): the product of :math:`m` bases has degree :math:`m`, the others 1 on bases of degree 1.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import torch

from pyro_sculpt.processes.distribution import ProcessDistribution
from pyro_sculpt.sculpting.observations import Observations, PriorLike, check_weights


class LogOperator(ABC):
    """:math:`\\Phi`: maps ``(..., m)`` log-densities of the m leaves to the ``(...)`` unnormalised log-density of
    the composition."""

    #: the number of leaves m the operator reads
    num_bases: int

    @abstractmethod
    def __call__(self, log_q: torch.Tensor) -> torch.Tensor:
        """:math:`\\Phi(\\ell)` for ``log_q`` of shape ``(..., m)``."""

    @property
    @abstractmethod
    def degree(self) -> float:
        """:math:`d` with :math:`\\Phi(\\ell + c) = \\Phi(\\ell) + d c`."""

    @abstractmethod
    def children(self) -> tuple["LogOperator", ...]:
        """The operators this one combines."""

    @abstractmethod
    def map_leaves(self, fn: Callable[[int], "LogOperator"]) -> "LogOperator":
        """The same operator with every leaf :class:`Base` ``i`` replaced by ``fn(i)``."""

    def map_children(self, fn: Callable[["LogOperator"], "LogOperator"]) -> "LogOperator":
        """The same operator with every operand ``c`` replaced by ``fn(c)`` (a leaf has none)."""
        return self

    @property
    def linear(self) -> bool:
        """Whether :math:`\\Phi` is linear in the log-densities (leaves, products, negations, tempering): its
        gradient is then a constant, and a proposal that follows it needs no log-density."""
        return False

    def reindex(self, index: Sequence[int], num_bases: int) -> "LogOperator":
        """The same operator reading leaf ``index[i]`` of ``num_bases`` leaves where it read leaf ``i``."""
        return self.map_leaves(lambda i: Base(int(index[i]), num_bases))

    def substitute(self, ops: Sequence["LogOperator"]) -> "LogOperator":
        """The operator with its leaf ``i`` replaced by the operator ``ops[i]`` (nesting)."""
        if len(ops) != self.num_bases:
            raise ValueError(f"ops must hold one operator per base ({self.num_bases}), got {len(ops)}")
        return self.map_leaves(lambda i: ops[i])

    def gradient(self, log_q: torch.Tensor) -> torch.Tensor:
        """:math:`\\partial \\Phi / \\partial \\ell_i`, ``(..., m)``: how much each base's policy or score enters
        a proposal that follows the operator."""
        with torch.enable_grad():
            lq = log_q.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self(lq).sum(), lq)
        return g

    #: whether the operator can give NaN from -inf log-densities (inf - inf): only differences of operands can
    can_nan: bool = False

    def check_log_q(self, log_q: torch.Tensor, name: str = "log_q") -> None:
        if not isinstance(log_q, torch.Tensor) or log_q.dim() < 1 or log_q.shape[-1] != self.num_bases:
            shape = tuple(log_q.shape) if isinstance(log_q, torch.Tensor) else type(log_q).__name__
            raise ValueError(f"{name} must have shape (..., {self.num_bases}) (one log-density per base), got {shape}")


def _check_same_arity(ops: Sequence[LogOperator], name: str) -> int:
    if len(ops) == 0:
        raise ValueError(f"{name} needs at least one operand")
    for k, op in enumerate(ops):
        if not isinstance(op, LogOperator):
            raise TypeError(f"{name}: operand {k} must be a LogOperator, got {type(op).__name__}")
    m = {op.num_bases for op in ops}
    if len(m) != 1:
        raise ValueError(f"{name}: operands read different numbers of bases {sorted(m)}; reindex them to one set")
    return m.pop()


def _number(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


@dataclass(frozen=True)
class Base(LogOperator):
    """Leaf ``index`` of ``num_bases``: :math:`\\Phi(\\ell) = \\ell_i`."""

    index: int
    num_bases: int

    def __post_init__(self):
        if isinstance(self.index, bool) or not isinstance(self.index, int) or not 0 <= self.index < self.num_bases:
            raise ValueError(f"index must be a base index in [0, {self.num_bases - 1}], got {self.index!r}")

    def __call__(self, log_q: torch.Tensor) -> torch.Tensor:
        return log_q[..., self.index]

    @property
    def degree(self) -> float:
        return 1.0

    def children(self) -> tuple:
        return ()

    def map_leaves(self, fn) -> LogOperator:
        return fn(self.index)

    @property
    def linear(self) -> bool:
        return True

    def gradient(self, log_q: torch.Tensor) -> torch.Tensor:
        g = torch.zeros_like(log_q)
        g[..., self.index] = 1.0
        return g


class Product(LogOperator):
    """:math:`\\prod_j p_j`: :math:`\\Phi(\\ell) = \\sum_j \\Phi_j(\\ell)`."""

    def __init__(self, *ops: LogOperator):
        self.num_bases = _check_same_arity(ops, "Product")
        self.ops = tuple(ops)

    def __call__(self, log_q):
        return sum(op(log_q) for op in self.ops)

    @property
    def degree(self) -> float:
        return float(sum(op.degree for op in self.ops))

    def children(self):
        return self.ops

    def map_leaves(self, fn):
        return Product(*(op.map_leaves(fn) for op in self.ops))

    def map_children(self, fn):
        return Product(*(fn(op) for op in self.ops))

    @property
    def linear(self) -> bool:
        return all(op.linear for op in self.ops)

    def __repr__(self) -> str:
        return f"Product({', '.join(map(repr, self.ops))})"


class Mixture(LogOperator):
    """:math:`\\sum_j w_j p_j` (weights normalised): :math:`\\Phi = \\log \\sum_j w_j e^{\\Phi_j}`."""

    def __init__(self, ops: Sequence[LogOperator], weights: Optional[PriorLike] = None):
        self.num_bases = _check_same_arity(ops, "Mixture")
        self.ops = tuple(ops)
        self.log_weights = check_weights(weights, len(self.ops)).detach().double().log()

    def __call__(self, log_q):
        vals = torch.stack([op(log_q) for op in self.ops], -1)
        return torch.logsumexp(vals + self.log_weights.to(vals.device, vals.dtype), -1)

    @property
    def degree(self) -> float:
        return _common_degree(self.ops, "Mixture")

    def children(self):
        return self.ops

    def map_leaves(self, fn):
        return Mixture([op.map_leaves(fn) for op in self.ops], self.log_weights.exp())

    def map_children(self, fn):
        return Mixture([fn(op) for op in self.ops], self.log_weights.exp())

    def __repr__(self) -> str:
        return f"Mixture({', '.join(map(repr, self.ops))})"


def _common_degree(ops: Sequence[LogOperator], name: str) -> float:
    degrees = {round(op.degree, 12) for op in ops}
    if len(degrees) != 1:
        raise ValueError(f"{name} of operands of different degrees {sorted(degrees)} is not homogeneous")
    return degrees.pop()


class Negation(LogOperator):
    """:math:`q_1 (q_1 / q_2)^a`: :math:`\\Phi = (1 + a)\\Phi_1 - a \\Phi_2`, ``a >= 0`` (Du et al. 2023)."""

    can_nan = True

    def __init__(self, op1: LogOperator, op2: LogOperator, a: float = 1.0):
        self.num_bases = _check_same_arity((op1, op2), "Negation")
        self.a = _number("a", a)
        if self.a < 0:
            raise ValueError(f"a must be >= 0 (the strength of the negation), got {a!r}")
        self.op1, self.op2 = op1, op2

    def __call__(self, log_q):
        return (1.0 + self.a) * self.op1(log_q) - self.a * self.op2(log_q)

    @property
    def degree(self) -> float:
        return (1.0 + self.a) * self.op1.degree - self.a * self.op2.degree

    def children(self):
        return (self.op1, self.op2)

    def map_leaves(self, fn):
        return Negation(self.op1.map_leaves(fn), self.op2.map_leaves(fn), self.a)

    def map_children(self, fn):
        return Negation(fn(self.op1), fn(self.op2), self.a)

    @property
    def linear(self) -> bool:
        return self.op1.linear and self.op2.linear

    def __repr__(self) -> str:
        return f"Negation({self.op1!r}, {self.op2!r}, a={self.a})"


class Tempered(LogOperator):
    """:math:`p^\\beta`: :math:`\\Phi = \\beta \\Phi_1`, ``beta > 0``."""

    def __init__(self, op: LogOperator, beta: float):
        self.num_bases = _check_same_arity((op,), "Tempered")
        self.beta = _number("beta", beta)
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {beta!r}")
        self.op = op

    def __call__(self, log_q):
        return self.beta * self.op(log_q)

    @property
    def degree(self) -> float:
        return self.beta * self.op.degree

    def children(self):
        return (self.op,)

    def map_leaves(self, fn):
        return Tempered(self.op.map_leaves(fn), self.beta)

    def map_children(self, fn):
        return Tempered(fn(self.op), self.beta)

    @property
    def linear(self) -> bool:
        return self.op.linear

    def __repr__(self) -> str:
        return f"Tempered({self.op!r}, beta={self.beta})"


class Sculpt(LogOperator):
    """The sculpting operator (docs/math.md §1): the mixture :math:`\\sum_j w_j p_j` conditioned on the
    observations :math:`y`, :math:`\\Phi = \\log \\sum_j w_j e^{\\Phi_j} + \\sum_{k \\text{ obs.}} \\log
    \\tilde p(y_k \\mid x)` with :math:`\\tilde p(y_k = i \\mid x) \\propto \\pi_{k,i} e^{\\Phi_i}`.

    :param ops: the operands (one per model of the mixture).
    :param y: observed operand indices, ``None`` for unobserved.
    :param alpha: prior :math:`(\\alpha, 1 - \\alpha)` of :math:`y_{2..n}` (two operands).
    :param weights: mixture weights.
    """

    def __init__(
        self,
        ops: Sequence[LogOperator],
        y: Sequence[Optional[int]],
        alpha: Optional[Union[float, torch.Tensor]] = None,
        weights: Optional[PriorLike] = None,
    ):
        self.num_bases = _check_same_arity(ops, "Sculpt")
        self.ops = tuple(ops)
        self.obs = Observations.build(y, len(self.ops), weights, alpha).detach()
        # operands that are leaves: read them with one index instead of one call each
        leaves = [op.index for op in self.ops if isinstance(op, Base)]
        self.leaf_index = leaves if len(leaves) == len(self.ops) else None
        self.identity = self.leaf_index == list(range(self.num_bases))
        log_priors = self.obs.log_priors(dtype=torch.float64)
        self.shared_prior = bool((log_priors == log_priors[0]).all())
        self._counts = torch.zeros(len(self.ops), dtype=torch.float64)
        for v in self.obs.y:
            if v is not None:
                self._counts[v] += 1.0

    def log_terms(self, log_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log mixture, log p(y | x))`` for ``log_q``."""
        if not self.shared_prior:
            log_mix, terms = self.log_terms_per_observation(log_q)
            return log_mix, terms.sum(-1)
        # every observation has the prior of y_1: sum_k log p(y_k | x) = <counts, vals> + sum_k log w_{y_k}
        # - n_obs * logsumexp(vals + log w), in a handful of batched operations
        vals = self._vals(log_q)
        log_w = self.obs.log_priors(vals.device, vals.dtype)[0]
        lse = torch.logsumexp(vals + log_w, -1)
        counts = self._counts.to(device=vals.device, dtype=vals.dtype)
        log_y = vals @ counts + (float((counts * log_w).sum()) - float(counts.sum()) * lse)
        return lse, log_y

    def _vals(self, log_q: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return log_q
        if self.leaf_index is not None:
            return log_q[..., self.leaf_index]
        return torch.stack([op(log_q) for op in self.ops], -1)

    def log_terms_per_observation(self, log_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log mixture, terms)`` with ``terms[..., j]`` :math:`= \\log \\tilde p(y_k = y \\mid x)` for the
        j-th OBSERVED :math:`y_k` (the observations are independent given :math:`x`; an unobserved one sums to
        one), ``(..., n_observed)``."""
        vals = self._vals(log_q)
        log_priors = self.obs.log_priors(vals.device, vals.dtype)  # (n, m)
        # log p(y_k = i | x) = vals_i + log pi_{k,i} - logsumexp_j(vals_j + log pi_{k,j}): one logsumexp per distinct
        # prior (y_1 has the mixture weights, y_2.. the alpha prior or the uniform one)
        lse = {0: torch.logsumexp(vals + log_priors[0], -1)}
        terms = []
        for k, v in enumerate(self.obs.y):
            if v is None:
                continue
            row = 0 if k == 0 or bool((log_priors[k] == log_priors[0]).all()) else 1
            if row not in lse:
                lse[row] = torch.logsumexp(vals + log_priors[k], -1)
            terms.append(vals[..., v] + (log_priors[k, v] - lse[row]))
        return lse[0], torch.stack(terms, -1) if terms else vals.new_zeros(vals.shape[:-1] + (0,))

    def __call__(self, log_q):
        log_mix, log_y = self.log_terms(log_q)
        return log_mix + log_y

    @property
    def degree(self) -> float:
        return _common_degree(self.ops, "Sculpt")

    def children(self):
        return self.ops

    def map_leaves(self, fn):
        return self.map_children(lambda op: op.map_leaves(fn))

    def map_children(self, fn):
        return Sculpt([fn(op) for op in self.ops], self.obs.y, self.obs.alpha_value, self.obs.weight_values)

    def __repr__(self) -> str:
        return f"Sculpt({', '.join(map(repr, self.ops))}, y={self.obs.y})"


@dataclass(frozen=True)
class Composition:
    """A composition as leaves and one operator on their log-densities (what nested operators flatten to)."""

    leaves: tuple
    operator: LogOperator


def flatten(bases: Sequence[Any]) -> tuple[list, list[LogOperator]]:
    """The distinct leaves of ``bases`` and, for each base, its operator on those leaves.

    A base that is a composition (it has a :class:`Composition` as attribute ``composition``, directly or on the
    process of its distribution) contributes its own leaves and operator; any other base is a leaf. Leaves are
    identified by object identity, so a base used twice is one leaf.
    """
    leaves: list = []
    where: dict[int, int] = {}
    parts: list[tuple[list[int], Optional[LogOperator]]] = []
    for b in bases:
        comp = composition_of(b)
        subs = comp.leaves if comp is not None else (b,)
        idx = []
        for leaf in subs:
            key = id(_process_of(leaf))
            if key not in where:
                where[key] = len(leaves)
                leaves.append(leaf)
            idx.append(where[key])
        parts.append((idx, comp.operator if comp is not None else None))
    m = len(leaves)
    ops = [op.reindex(idx, m) if op is not None else Base(idx[0], m) for idx, op in parts]
    return leaves, ops


def _process_of(base: Any) -> Any:
    return base.process if isinstance(base, ProcessDistribution) else base


def composition_of(base: Any) -> Optional[Composition]:
    """The :class:`Composition` of a base that is a classifier-free composition (or its distribution), else None."""
    comp = getattr(_process_of(base), "composition", None)
    return comp if isinstance(comp, Composition) else None
