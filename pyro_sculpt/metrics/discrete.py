"""Distances between distributions on enumerable spaces."""

from __future__ import annotations

import torch


def _as_probs(name: str, p: torch.Tensor) -> torch.Tensor:
    p = torch.as_tensor(p, dtype=torch.float64)
    if p.dim() != 1:
        raise ValueError(f"{name} must be a 1-D probability vector, got shape {tuple(p.shape)}")
    if (p < 0).any() or not torch.isfinite(p).all():
        raise ValueError(f"{name} must be finite and non-negative")
    total = p.sum()
    if not torch.isclose(total, torch.ones((), dtype=torch.float64), atol=1e-6):
        raise ValueError(f"{name} must sum to 1, got {float(total):.6g}")
    return p


def l1_distance(p: torch.Tensor, q: torch.Tensor) -> float:
    """:math:`\\sum_x |p(x) - q(x)|`, the sum convention (range 0 to 2), never the per-state mean.

    Example::

        ps.metrics.l1_distance(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0]))  # 1.0
    """
    p, q = _as_probs("p", p), _as_probs("q", q)
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {tuple(p.shape)} and {tuple(q.shape)}")
    return float((p - q).abs().sum())


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> float:
    """Jensen-Shannon divergence in nats, :math:`\\tfrac12 KL(p \\| m) + \\tfrac12 KL(q \\| m)`, :math:`m = (p+q)/2`.

    Example::

        ps.metrics.js_divergence(torch.tensor([0.5, 0.5]), torch.tensor([0.9, 0.1]))
    """
    p, q = _as_probs("p", p), _as_probs("q", q)
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {tuple(p.shape)} and {tuple(q.shape)}")
    m = 0.5 * (p + q)

    def kl(a):
        nz = a > 0
        return (a[nz] * (a[nz].log() - m[nz].log())).sum()

    return float(0.5 * kl(p) + 0.5 * kl(q))


def empirical_distribution(indices: torch.Tensor, num_states: int) -> torch.Tensor:
    """Frequencies of state indices as a probability vector of length ``num_states``.

    Example::

        env = ps.HyperGrid(2, 8)
        x = ps.ProcessDistribution(gfn).sample((1000,))
        p_hat = ps.metrics.empirical_distribution(env.index(x), env.num_states)  # (64,)
    """
    counts = torch.bincount(indices.reshape(-1).cpu(), minlength=num_states).double()
    return counts / counts.sum()


def expected_l1_floor(p: torch.Tensor, n: int) -> float:
    r"""Expected L1 between ``p`` and the empirical distribution of ``n`` exact samples from it: the sampling floor
    of a perfect sampler. Exact, from de Moivre's mean absolute deviation of the binomial,
    :math:`\mathbb E|X - np| = 2 m \binom{n}{m} p^m (1-p)^{n-m+1}` with :math:`m = \lfloor np \rfloor + 1`.

    Example::

        p = torch.full((64,), 1 / 64)
        ps.metrics.expected_l1_floor(p, 10_000)  # the L1 expected from 10,000 exact samples
    """
    p = _as_probs("p", p)
    return float(_binomial_mad(p, n).sum())


def _binomial_mad(p: torch.Tensor, n: int) -> torch.Tensor:
    # mean absolute deviation of Binomial(n, p) / n by de Moivre's formula, in log space
    p = p.clamp(min=0.0)
    m = torch.floor(n * p) + 1
    m = torch.minimum(m, torch.full_like(m, float(n)))
    logc = torch.lgamma(torch.tensor(n + 1.0, dtype=p.dtype)) - torch.lgamma(m + 1) - torch.lgamma(n - m + 1)
    with torch.no_grad():
        log_term = logc + m * torch.log(p.clamp(min=1e-300)) + (n - m + 1) * torch.log1p(-p.clamp(max=1 - 1e-16))
    mad = 2 * torch.exp(log_term) * m / n
    return torch.where(p > 0, mad, torch.zeros_like(p))
