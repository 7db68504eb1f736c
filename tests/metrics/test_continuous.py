import math

import pytest
import torch

from pyro_sculpt.metrics import (
    assign_modes,
    energy_distance,
    grid_mode_weights,
    grid_probabilities,
    mmd,
    mmd2,
    mode_weight_tv,
    mode_weights,
    sample_grid,
)

F64 = torch.float64


def _normal_cdf(z):
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def _expected_abs(m, s):
    """E|Z| for Z ~ N(m, s^2)."""
    return s * math.sqrt(2 / math.pi) * math.exp(-(m**2) / (2 * s**2)) + m * (1 - 2 * _normal_cdf(-m / s))


def test_energy_distance_exact_cases():
    x = torch.zeros(10, 1)
    y = torch.ones(7, 1)
    assert energy_distance(x, y) == pytest.approx(2.0)
    z = torch.randn(50, 3)
    assert energy_distance(z, z) == pytest.approx(0.0, abs=1e-12)
    assert energy_distance(z, z + 1e-3) >= 0


def test_energy_distance_of_shifted_gaussians_matches_the_closed_form():
    gen = torch.Generator().manual_seed(0)
    n, mu, reps = 1500, 0.7, 24
    exact = 2 * _expected_abs(mu, math.sqrt(2)) - 2 * _expected_abs(0, math.sqrt(2))
    vals = []
    for _ in range(reps):
        x = torch.randn(n, 1, generator=gen, dtype=F64)
        y = torch.randn(n, 1, generator=gen, dtype=F64) + mu
        vals.append(energy_distance(x, y, unbiased=True, chunk_size=999))
    vals = torch.tensor(vals)
    assert vals.mean().item() == pytest.approx(exact, abs=4 * vals.std().item() / math.sqrt(reps))


def test_energy_distance_null_expectation():
    """V-statistic null: E = (1/N + 1/M) E|X - X'|; for N(0, 1) in 1D, E|X - X'| = 2 / sqrt(pi)."""
    gen = torch.Generator().manual_seed(1)
    n, m, reps = 40, 60, 400
    vals = torch.tensor(
        [energy_distance(torch.randn(n, 1, generator=gen), torch.randn(m, 1, generator=gen)) for _ in range(reps)]
    )
    expected = (1 / n + 1 / m) * 2 / math.sqrt(math.pi)
    assert vals.mean().item() == pytest.approx(expected, abs=4 * vals.std().item() / math.sqrt(reps))
    unb = torch.tensor(
        [
            energy_distance(torch.randn(n, 1, generator=gen), torch.randn(m, 1, generator=gen), unbiased=True)
            for _ in range(reps)
        ]
    )
    assert abs(unb.mean().item()) <= 4 * unb.std().item() / math.sqrt(reps)


def test_mmd_exact_cases_and_gaussian_closed_form():
    x, y = torch.zeros(5, 1), torch.ones(4, 1)
    assert mmd2(x, y, 1.0, unbiased=False) == pytest.approx(2 - 2 * math.exp(-0.5))
    assert mmd(x, y, 1.0) == pytest.approx(math.sqrt(2 - 2 * math.exp(-0.5)))
    # N(0, s^2 I) vs N(d, s^2 I) in D dims: E k = (h^2 / (h^2 + 2 s^2))^(D/2) exp(-|d|^2 / (2 (h^2 + 2 s^2)))
    gen = torch.Generator().manual_seed(2)
    n, s, h, d, reps = 2000, 1.0, 1.5, torch.tensor([0.8, -0.5], dtype=F64), 8
    c = (h**2 / (h**2 + 2 * s**2)) ** (2 / 2)
    exact = 2 * c * (1 - math.exp(-(d @ d).item() / (2 * (h**2 + 2 * s**2))))
    vals = []
    for r in range(reps):
        a = torch.randn(n, 2, generator=gen, dtype=F64) * s
        b = torch.randn(n, 2, generator=gen, dtype=F64) * s + d
        vals.append(mmd2(a, b, h, chunk_size=700))
        if r == 0:  # against a direct, unchunked computation of the U-statistic
            k = [torch.exp(-(torch.cdist(u, v) ** 2) / (2 * h * h)) for u, v in ((a, a), (b, b), (a, b))]
            direct = sum((m.sum() - m.diag().sum()) / (n * (n - 1)) for m in k[:2]) - 2 * k[2].mean()
            assert vals[0] == pytest.approx(direct.item(), abs=1e-12)
    vals = torch.tensor(vals)
    assert vals.mean().item() == pytest.approx(exact, abs=4 * vals.std().item() / math.sqrt(reps))


def test_unbiased_mmd_has_zero_null_expectation():
    gen = torch.Generator().manual_seed(3)
    vals = torch.tensor(
        [mmd2(torch.randn(30, 2, generator=gen), torch.randn(40, 2, generator=gen), 1.0) for _ in range(300)]
    )
    assert abs(vals.mean().item()) <= 4 * vals.std().item() / math.sqrt(300)


def test_mode_weights_and_tv():
    means = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
    x = torch.tensor([[0.1, 0.0], [2.5, 0.2], [2.9, -0.1], [0.0, 2.0], [-0.2, 0.3], [0.4, 0.1]])
    assert assign_modes(x, means).tolist() == [0, 1, 1, 2, 0, 0]
    w = mode_weights(x, means)
    assert torch.allclose(w, torch.tensor([3, 2, 1], dtype=F64) / 6)
    assert mode_weight_tv(x, [0.5, 0.25, 0.25], means) == pytest.approx(0.5 * (0 + 1 / 12 + 1 / 12))
    # labels or probabilities from a function
    assert torch.allclose(mode_weights(x, assign=lambda z: assign_modes(z, means)), w)
    soft = mode_weights(x, assign=lambda z: torch.full((z.shape[0], 2), 0.5))
    assert torch.allclose(soft, torch.tensor([0.5, 0.5], dtype=F64))


def test_grid_mode_weights_of_overlapping_gaussians_are_exact():
    """1D mixture 0.3 N(-1, 0.8^2) + 0.7 N(1.5, 0.6^2), nearest-mode split at 0.25: exact from the normal
    CDF."""
    w, mu, s = [0.3, 0.7], [-1.0, 1.5], [0.8, 0.6]

    def log_density(z):
        comps = torch.stack(
            [math.log(w[k]) + torch.distributions.Normal(mu[k], s[k]).log_prob(z[:, 0]) for k in range(2)]
        )
        return torch.logsumexp(comps, 0)

    split = 0.25
    left = sum(w[k] * _normal_cdf((split - mu[k]) / s[k]) for k in range(2))
    # the split falls on a cell edge (-7.75 + 10000 cells of 0.0008), so only the midpoint rule errs (O(h^2))
    got = grid_mode_weights(log_density, [(-7.75, 8.25)], torch.tensor([[-1.0], [1.5]]), resolution=20000)
    assert got.tolist() == pytest.approx([left, 1 - left], abs=1e-6)
    pts, probs = grid_probabilities(log_density, [(-8, 8)], resolution=1000)
    assert probs.sum().item() == pytest.approx(1.0) and pts.shape == (1000, 1)


def test_sample_grid_draws_from_the_density():
    def log_density(z):
        return torch.distributions.MultivariateNormal(
            torch.tensor([0.5, -1.0], dtype=F64), torch.tensor([[1.0, 0.4], [0.4, 0.5]], dtype=F64)
        ).log_prob(z)

    x = sample_grid(log_density, 50_000, [(-6, 6), (-6, 6)], resolution=300, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(x.mean(0), torch.tensor([0.5, -1.0], dtype=F64), atol=0.02)
    assert torch.allclose(torch.cov(x.T), torch.tensor([[1.0, 0.4], [0.4, 0.5]], dtype=F64), atol=0.03)


def test_bad_inputs():
    x = torch.randn(10, 2)
    with pytest.raises(ValueError, match="y has dimension 3"):
        energy_distance(x, torch.randn(10, 3))
    with pytest.raises(ValueError, match="bandwidth"):
        mmd2(x, x, 0.0)
    with pytest.raises(ValueError, match="x must be finite"):
        mmd2(torch.full((3, 2), float("nan")), x, 1.0)
    with pytest.raises(ValueError, match="target_weights"):
        mode_weight_tv(x, [0.5, 0.6], torch.zeros(2, 2))
    with pytest.raises(ValueError, match="means must have shape"):
        mode_weights(x, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="needs means"):
        mode_weights(x)
    with pytest.raises(ValueError, match="3 modes but target_weights has 2"):
        mode_weight_tv(x, [0.5, 0.5], torch.randn(3, 2))
    with pytest.raises(ValueError, match="bounds"):
        grid_mode_weights(lambda z: z[:, 0], [(1, 0)], torch.zeros(1, 1))
    with pytest.raises(ValueError, match="assign"):
        mode_weights(x, assign=lambda z: torch.full((z.shape[0], 2), 0.7))
