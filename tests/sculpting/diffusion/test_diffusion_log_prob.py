"""The probability-flow log-density of sculpted diffusion compositions against exact answers: the divergence of the
guided score against finite differences, and the log-density of oracle compositions against the exact normalised
density of the composition (docs/math.md §1.3)."""

import math

import pytest
import torch

import pyro_sculpt as ps
from pyro_sculpt.diffusion import DDIMSampler, GaussianMixtureOracle
from pyro_sculpt.metrics import sample_grid
from pyro_sculpt.sculpting import Observations
from pyro_sculpt.sculpting.diffusion import GaussianMixtureClassifier, guidance_terms

F64 = torch.float64
MODES = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]], dtype=F64)


def two_bases():
    """As in test_diffusion_composition: p1 has modes A, B; p2 has A (light), B (wider) and C."""
    p1 = GaussianMixtureOracle(MODES[:2], stds=torch.tensor([0.4, 0.4], dtype=F64))
    p2 = GaussianMixtureOracle(MODES, stds=torch.tensor([0.4, 0.5, 0.4], dtype=F64), weights=[0.15, 0.5, 0.35])
    return p1, p2


def random_classifier(schedule, max_time):
    """A learned classifier with random (untrained, far from uniform) float64 weights."""
    torch.manual_seed(0)
    clf = ps.DiffusionObservationClassifier(2, 2, 2, schedule=schedule, hidden=32, layers=2, max_time=max_time)
    clf = clf.to(F64)
    with torch.no_grad():
        for p in clf.net.parameters():
            p.mul_(2.0)
    return clf


def divergence(model, x, t):
    """:math:`\\nabla \\cdot s(x, t)` by autograd, one backward pass per dimension."""
    xr = x.clone().requires_grad_(True)
    s = model.score(xr, t)
    return sum(torch.autograd.grad(s[..., d].sum(), xr, retain_graph=True)[0][..., d] for d in range(x.shape[-1]))


def finite_difference_divergence(model, x, t, eps=1e-5):
    """Central differences of the score computed as the samplers do (under no_grad, classifier terms detached)."""
    div = torch.zeros(x.shape[:-1], dtype=x.dtype)
    with torch.no_grad():
        for d in range(x.shape[-1]):
            e = torch.zeros(x.shape[-1], dtype=x.dtype)
            e[d] = eps
            div = div + (model.score(x + e, t)[..., d] - model.score(x - e, t)[..., d]) / (2 * eps)
    return div


@pytest.mark.parametrize(
    "kind, y, gamma, t",
    [
        ("exact", (0, 1), 1.0, 0.3),
        ("exact", (0, 0), 1.0, 0.05),
        ("exact", (None, 1), 2.0, 0.6),
        ("learned", (0, 1), 1.0, 0.3),
        ("learned", (1, 1), 3.0, 0.3),
        ("learned", (0, 1), 1.0, 0.8),  # beyond max_time: the bases' prior-weighted divergence only
        ("learned", (0, 1), 1.0, "straddling"),  # per-particle times on both sides of max_time
    ],
)
def test_divergence_of_the_composed_score_includes_the_classifier(kind, y, gamma, t):
    p1, p2 = two_bases()
    x = torch.randn(8, 2, dtype=F64, generator=torch.Generator().manual_seed(0)) * 1.5
    if kind == "exact":
        clf = GaussianMixtureClassifier([p1, p2], 2, quadrature_points=8)
    else:
        clf = random_classifier(p1.schedule, max_time=0.5)
    if t == "straddling":
        t = torch.linspace(0.2, 0.9, 8, dtype=F64)
    model = ps.SculptedDiffusionModel([p1, p2], clf, y, gamma=gamma)
    # the differentiable path computes the same score as the samplers' detached one
    xr = x.clone().requires_grad_(True)
    with torch.no_grad():
        assert torch.allclose(model.score(xr, t), model.score(x, t), atol=1e-12)
    div = divergence(model, x, t)
    assert torch.allclose(div, finite_difference_divergence(model, x, t), atol=1e-5, rtol=1e-6)
    if kind == "learned" and isinstance(t, float) and t > clf.max_time:
        # the classifier is not used there: prior weights, no guidance
        base_div = sum(0.5 * divergence(p, x, t) for p in (p1, p2))
        assert torch.allclose(div, base_div, atol=1e-10)


def test_guidance_terms_graph_only_when_asked():
    p1, p2 = two_bases()
    clf = GaussianMixtureClassifier([p1, p2], 2, quadrature_points=4)
    obs = Observations.build((0, 1), 2)
    x = torch.randn(5, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    # the samplers' path: detached terms from one forward and backward pass, also under no_grad
    with torch.no_grad():
        terms = guidance_terms(clf, obs, x, 0.4)
    assert all(not v.requires_grad for v in terms)
    xr = x.clone().requires_grad_(True)
    log_q1, log_q_y, grad = guidance_terms(clf, obs, xr, 0.4, create_graph=True)
    assert log_q1.requires_grad and log_q_y.requires_grad and grad.requires_grad
    for a, b in zip((log_q1, log_q_y, grad), terms):
        assert torch.allclose(a, b, atol=1e-12)
    with pytest.raises(ValueError, match="x must require grad"):
        guidance_terms(clf, obs, x, 0.4, create_graph=True)


def normalised_log_density(bases, y, resolution=800):
    """The exact log-density of the composition, normalised on a fine float64 grid (Riemann sum; the densities are
    smooth and negligible outside the box)."""
    f = ps.composition_log_density(bases, y)
    bounds = [(-8.0, 8.0), (-8.0, 9.0)]
    axes = [torch.linspace(a, b, resolution + 1, dtype=F64) for a, b in bounds]
    cell = math.prod((b - a) / resolution for a, b in bounds)
    log_z = torch.logsumexp(f(torch.cartesian_prod(*axes)), 0) + math.log(cell)
    return f, lambda x: f(x) - log_z


@pytest.mark.parametrize("operation, y", [(ps.harmonic_mean, (0, 1)), (ps.contrast, (0, 0))])
def test_log_prob_of_an_oracle_composition_is_its_exact_normalised_density(operation, y):
    # gamma = 1, exact scores, exact classifier: the probability-flow ODE of the guided score transports the noised
    # sculpted densities exactly, so log_prob is the composition's normalised log-density up to the Gaussian prior's
    # mismatch at t_max (~0.01 nats here), the quadrature (6 points: ~1e-3) and RK4 (converged at 20 steps)
    p1, p2 = two_bases()
    clf = GaussianMixtureClassifier([p1, p2], 2, quadrature_points=6)
    f, exact = normalised_log_density([p1, p2], y)
    x = sample_grid(f, 8, [(-5.0, 5.0), (-4.0, 6.0)], 400, generator=torch.Generator().manual_seed(1))
    d = operation(DDIMSampler(p1, 10, log_prob_steps=20), DDIMSampler(p2, 10, log_prob_steps=20), clf)
    lp = d.log_prob(x)
    assert lp.shape == (8,)
    assert (lp - exact(x)).abs().max() < 0.05
