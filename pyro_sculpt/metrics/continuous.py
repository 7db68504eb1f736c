"""Distances between sample sets on continuous spaces, and mode weights against an exact density on a grid."""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Union

import torch

Assign = Union[str, Callable[[torch.Tensor], torch.Tensor]]


def _as_samples(name: str, x: torch.Tensor, dim: Optional[int] = None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if x.dim() == 1:
        x = x.unsqueeze(-1)
    if x.dim() != 2 or x.shape[0] < 1:
        raise ValueError(f"{name} must have shape (N, D) with N >= 1, got {tuple(x.shape)}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} has dimension {x.shape[1]}, expected {dim}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} must be finite")
    return x.to(torch.float64)


def _pair(x: torch.Tensor, y: torch.Tensor):
    x = _as_samples("x", x)
    y = _as_samples("y", y, x.shape[1])
    return x, y.to(x.device)


def _pairwise_sum(
    a: torch.Tensor, b: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], chunk: int
) -> torch.Tensor:
    """:math:`\\sum_{i, j} fn(\\lVert a_i - b_j \\rVert^2)`, in row chunks (bounded memory)."""
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for s in range(0, a.shape[0], chunk):
        d2 = torch.cdist(a[s : s + chunk], b).pow(2)
        total = total + fn(d2).sum()
    return total


def energy_distance(x: torch.Tensor, y: torch.Tensor, *, unbiased: bool = False, chunk_size: int = 2048) -> float:
    """The energy distance (Székely & Rizzo) between the sample sets ``x`` ``(N, D)`` and ``y`` ``(M, D)``:

    .. math::

        \\mathcal E = 2\\, \\mathbb E \\lVert X - Y \\rVert - \\mathbb E \\lVert X - X' \\rVert
        - \\mathbb E \\lVert Y - Y' \\rVert .

    The default V-statistic (means over all pairs, self-pairs included) is non-negative; for two independent
    samples of one distribution its expectation is exactly :math:`(1/N + 1/M)\\, \\mathbb E \\lVert X - X'
    \\rVert` (the null to calibrate against). ``unbiased=True`` excludes self-pairs (U-statistics): zero
    expectation under the null, may be negative.

    Example::

        ps.metrics.energy_distance(torch.randn(500, 2), torch.randn(500, 2) + 1.0)
    """
    x, y = _pair(x, y)
    n, m = x.shape[0], y.shape[0]
    dist = torch.sqrt
    xy = _pairwise_sum(x, y, dist, chunk_size) / (n * m)
    if unbiased:
        if n < 2 or m < 2:
            raise ValueError("the unbiased energy distance needs at least 2 samples in x and in y")
        xx = _pairwise_sum(x, x, dist, chunk_size) / (n * (n - 1))
        yy = _pairwise_sum(y, y, dist, chunk_size) / (m * (m - 1))
    else:
        xx = _pairwise_sum(x, x, dist, chunk_size) / (n * n)
        yy = _pairwise_sum(y, y, dist, chunk_size) / (m * m)
    return float(2 * xy - xx - yy)


def mmd2(x: torch.Tensor, y: torch.Tensor, bandwidth: float, *, unbiased: bool = True, chunk_size: int = 2048) -> float:
    """Squared maximum mean discrepancy with the Gaussian kernel
    :math:`k(a, b) = \\exp(-\\lVert a - b \\rVert^2 / (2 h^2))` of fixed bandwidth :math:`h`:

    .. math::

        \\mathrm{MMD}^2 = \\mathbb E\\, k(X, X') + \\mathbb E\\, k(Y, Y') - 2\\, \\mathbb E\\, k(X, Y).

    ``unbiased=True`` (default) is Gretton et al.'s U-statistic (zero expectation under the null, may be
    negative); ``unbiased=False`` the V-statistic (non-negative).

    Example::

        ps.metrics.mmd2(torch.randn(500, 2), torch.randn(500, 2), bandwidth=0.5)  # near 0
    """
    h = float(bandwidth)
    if not h > 0 or not math.isfinite(h):
        raise ValueError(f"bandwidth must be a finite number > 0, got {bandwidth!r}")
    x, y = _pair(x, y)
    n, m = x.shape[0], y.shape[0]

    def kern(d2: torch.Tensor) -> torch.Tensor:
        return torch.exp(-d2 / (2 * h * h))

    kxy = _pairwise_sum(x, y, kern, chunk_size) / (n * m)
    kxx = _pairwise_sum(x, x, kern, chunk_size)
    kyy = _pairwise_sum(y, y, kern, chunk_size)
    if unbiased:
        if n < 2 or m < 2:
            raise ValueError("the unbiased MMD needs at least 2 samples in x and in y")
        kxx = (kxx - n) / (n * (n - 1))  # the diagonal k(x_i, x_i) = 1 is excluded
        kyy = (kyy - m) / (m * (m - 1))
    else:
        kxx, kyy = kxx / (n * n), kyy / (m * m)
    return float(kxx + kyy - 2 * kxy)


def mmd(x: torch.Tensor, y: torch.Tensor, bandwidth: float, *, chunk_size: int = 2048) -> float:
    """:math:`\\mathrm{MMD}` (the square root of the non-negative V-statistic of :func:`mmd2`).

    Example::

        ps.metrics.mmd(torch.randn(500, 2), torch.randn(500, 2) + 1.0, bandwidth=0.5)
    """
    return math.sqrt(max(mmd2(x, y, bandwidth, unbiased=False, chunk_size=chunk_size), 0.0))


# ----- mode weights -----


def _check_means(means: torch.Tensor, dim: int) -> torch.Tensor:
    means = torch.as_tensor(means, dtype=torch.float64)
    if means.dim() != 2 or means.shape[1] != dim or means.shape[0] < 1:
        raise ValueError(f"means must have shape (K, {dim}), got {tuple(means.shape)}")
    return means


def assign_modes(x: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Index of the nearest mode (Euclidean) of every row of ``x`` ``(N, D)``; ``means`` is ``(K, D)``.

    Example::

        means = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])
        ps.metrics.assign_modes(torch.tensor([[-1.5, 0.3], [2.2, 0.1]]), means)  # tensor([0, 1])
    """
    x = _as_samples("x", x)
    means = _check_means(means, x.shape[1]).to(x.device)
    return torch.cdist(x, means).argmin(-1)


def _soft_assign(
    x: torch.Tensor, assign: Assign, means: Optional[torch.Tensor], num_modes: Optional[int]
) -> torch.Tensor:
    """``(N, K)`` assignment probabilities of rows of ``x``."""
    if isinstance(assign, str):
        if assign != "nearest":
            raise ValueError(f"assign must be 'nearest' or a function, got {assign!r}")
        if means is None:
            raise ValueError("assign='nearest' needs means (K, D)")
        means = _check_means(means, x.shape[1])
        labels = assign_modes(x, means)
        return torch.nn.functional.one_hot(labels, means.shape[0]).to(torch.float64)
    out = assign(x)
    out = torch.as_tensor(out)
    if out.dim() == 1 and not out.is_floating_point():
        k = num_modes if num_modes is not None else (int(out.max()) + 1 if out.numel() else 1)
        if (out < 0).any() or (out >= k).any():
            raise ValueError(f"assign returned labels outside [0, {k - 1}]")
        return torch.nn.functional.one_hot(out.long(), k).to(torch.float64)
    if out.dim() != 2 or out.shape[0] != x.shape[0]:
        raise ValueError(f"assign must return (N,) labels or (N, K) probabilities, got shape {tuple(out.shape)}")
    out = out.to(torch.float64)
    if (
        not torch.isfinite(out).all()
        or (out < -1e-9).any()
        or not torch.allclose(out.sum(-1), torch.ones_like(out[:, 0]), atol=1e-5)
    ):
        raise ValueError("assign must return rows of probabilities (non-negative, summing to 1)")
    return out


def mode_weights(x: torch.Tensor, means: Optional[torch.Tensor] = None, *, assign: Assign = "nearest") -> torch.Tensor:
    """Share of the samples ``x`` ``(N, D)`` in each mode: by nearest mode (``means`` ``(K, D)``), or by a
    function ``assign(x)`` returning ``(N,)`` labels or ``(N, K)`` probabilities (e.g. an exact target's
    posterior over its components). Returns a float64 vector of length :math:`K`.

    Example::

        means = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])
        ps.metrics.mode_weights(torch.tensor([[-2.1, 0.0], [1.9, 0.2]]), means)  # tensor([0.5, 0.5])
    """
    x = _as_samples("x", x)
    k = None if means is None else _check_means(means, x.shape[1]).shape[0]
    return _soft_assign(x, assign, means, k).mean(0)


def grid(bounds: Sequence[Sequence[float]], resolution: int = 512, device=None):
    """A regular grid of cell centres over a box.

    :param bounds: ``[(low_1, high_1), ..., (low_D, high_D)]``.
    :param resolution: cells per dimension.
    :returns: ``(points, cell_volume)``, points of shape ``(resolution ** D, D)`` (float64).

    Example::

        points, cell_volume = ps.metrics.grid([(-1.0, 1.0), (-1.0, 1.0)], resolution=100)  # (10000, 2)
    """
    bounds = [tuple(map(float, b)) for b in bounds]
    if not bounds or any(len(b) != 2 or not b[0] < b[1] for b in bounds):
        raise ValueError(f"bounds must be a list of (low, high) pairs with low < high, got {bounds!r}")
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution!r}")
    axes = []
    volume = 1.0
    for lo, hi in bounds:
        h = (hi - lo) / resolution
        axes.append(torch.linspace(lo + h / 2, hi - h / 2, resolution, dtype=torch.float64, device=device))
        volume *= h
    pts = torch.cartesian_prod(*axes).reshape(-1, len(bounds))
    return pts, volume


def grid_probabilities(
    log_density: Callable[[torch.Tensor], torch.Tensor],
    bounds: Sequence[Sequence[float]],
    resolution: int = 512,
    *,
    chunk_size: int = 65536,
):
    """A (possibly unnormalised) density discretised on a grid: ``(points, probs)`` with ``probs`` the
    normalised masses of the cells (midpoint rule). ``log_density`` maps ``(N, D)`` to ``(N,)``.

    Example::

        points, probs = ps.metrics.grid_probabilities(lambda x: -(x**2).sum(-1), [(-4, 4), (-4, 4)], 200)
    """
    pts, _ = grid(bounds, resolution)
    logs = []
    for s in range(0, pts.shape[0], chunk_size):
        chunk = pts[s : s + chunk_size]
        lp = torch.as_tensor(log_density(chunk)).to(torch.float64).reshape(-1)
        if lp.shape[0] != chunk.shape[0]:
            raise ValueError(f"log_density must map (N, D) to (N,), got {tuple(lp.shape)} for N = {chunk.shape[0]}")
        logs.append(lp.cpu())
    lp = torch.cat(logs)
    if torch.isnan(lp).any() or not torch.isfinite(lp).any():
        raise ValueError("log_density must be finite somewhere on the grid and never NaN")
    return pts, torch.softmax(lp, 0)


def grid_mode_weights(
    log_density: Callable[[torch.Tensor], torch.Tensor],
    bounds: Sequence[Sequence[float]],
    means: Optional[torch.Tensor] = None,
    *,
    assign: Assign = "nearest",
    resolution: int = 512,
) -> torch.Tensor:
    """Exact mode weights of a target density: its mass in each mode's region (nearest mode to ``means``, or
    ``assign``), integrated on a fine grid over ``bounds`` (:func:`grid_probabilities`). The density is
    renormalised on the box, so the box should hold all but a negligible share of the mass.

    Example::

        means = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])
        oracle = GaussianMixtureOracle(means, stds=0.5, weights=[0.3, 0.7])
        ps.metrics.grid_mode_weights(oracle.log_prob, [(-5, 5), (-5, 5)], means)  # about (0.3, 0.7)
    """
    pts, probs = grid_probabilities(log_density, bounds, resolution)
    k = None if means is None else _check_means(means, pts.shape[1]).shape[0]
    weights = []
    for s in range(0, pts.shape[0], 65536):  # bounded memory: chunks of grid cells
        a = _soft_assign(pts[s : s + 65536], assign, means, k)
        weights.append((a * probs[s : s + 65536].unsqueeze(-1)).sum(0))
    return torch.stack(weights).sum(0)


def mode_weight_tv(
    x: torch.Tensor,
    target_weights: torch.Tensor,
    means: Optional[torch.Tensor] = None,
    *,
    assign: Assign = "nearest",
) -> float:
    """Total variation :math:`\\tfrac12 \\sum_k |\\hat w_k - w_k|` (range 0 to 1) between the mode weights of
    the samples ``x`` (:func:`mode_weights`) and ``target_weights`` (e.g. :func:`grid_mode_weights` of the
    exact target). Note the factor :math:`\\tfrac12`: this is half the L1 distance.

    Example::

        means = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])
        x = torch.tensor([[-2.1, 0.0], [1.9, 0.2], [2.0, -0.1]])
        ps.metrics.mode_weight_tv(x, torch.tensor([0.5, 0.5]), means)  # 1/6
    """
    target = torch.as_tensor(target_weights, dtype=torch.float64)
    if target.dim() != 1 or (target < 0).any() or abs(float(target.sum()) - 1) > 1e-6:
        raise ValueError("target_weights must be a probability vector (non-negative, summing to 1)")
    w = mode_weights(x, means, assign=assign)
    if w.shape != target.shape:
        raise ValueError(f"x has {w.shape[0]} modes but target_weights has {target.shape[0]}")
    return float(0.5 * (w - target.to(w.device)).abs().sum())


def sample_grid(
    log_density: Callable[[torch.Tensor], torch.Tensor],
    num_samples: int,
    bounds: Sequence[Sequence[float]],
    resolution: int = 512,
    *,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Near-exact samples of a (possibly unnormalised) density known only pointwise: a cell drawn with its
    grid mass, then a uniform point in the cell. Used to calibrate the null of sample-based metrics against an
    exact target.

    Example::

        x = ps.metrics.sample_grid(lambda x: -(x**2).sum(-1), 1000, [(-4, 4), (-4, 4)])  # (1000, 2)
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples!r}")
    pts, probs = grid_probabilities(log_density, bounds, resolution)
    idx = torch.multinomial(probs, num_samples, replacement=True, generator=generator)
    widths = torch.tensor([(float(b[1]) - float(b[0])) / resolution for b in bounds], dtype=torch.float64)
    jitter = (torch.rand(num_samples, len(bounds), generator=generator, dtype=torch.float64) - 0.5) * widths
    return pts[idx] + jitter
