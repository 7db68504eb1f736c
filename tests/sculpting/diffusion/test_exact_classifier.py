import math

import pytest
import torch

from pyro_sculpt.diffusion import GaussianMixtureOracle, VESchedule, VPSchedule
from pyro_sculpt.sculpting.diffusion import GaussianMixtureClassifier

F64 = torch.float64


def _bases(schedule=None):
    """Two overlapping 2D mixtures (a different number of components each)."""
    schedule = schedule or VPSchedule()
    p1 = GaussianMixtureOracle(
        torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=F64),
        stds=torch.tensor([0.35, 0.35], dtype=F64),
        schedule=schedule,
    )
    p2 = GaussianMixtureOracle(
        torch.tensor([[1.0, 0.0], [0.0, 1.5], [1.2, -0.5]], dtype=F64),
        stds=torch.tensor([0.4, 0.3, 0.5], dtype=F64),
        weights=[0.5, 0.3, 0.2],
        schedule=schedule,
    )
    return p1, p2


def _points(n=6, seed=0):
    return torch.randn(n, 2, dtype=F64, generator=torch.Generator().manual_seed(seed)) * 1.2


def test_terminal_classifier_is_the_closed_form():
    p1, p2 = _bases()
    clf = GaussianMixtureClassifier([p1, p2], num_observations=2)
    x = _points(20)
    l1, l2 = p1.log_prob(x), p2.log_prob(x)
    log_q1 = l1 - torch.logaddexp(l1, l2)  # uniform weights
    log_q2 = l2 - torch.logaddexp(l1, l2)
    joint = clf.log_joint(x)
    assert torch.allclose(joint[:, 0, 1], log_q1 + log_q2, atol=1e-12)
    # harmonic mean: p(x | y=(0,1)) is proportional to p~(x) Q(0|x) Q(1|x) = p1 p2 / (p1 + p2) / 2
    hm = (l1 + l2 - torch.logaddexp(l1, l2)) - math.log(2)
    mix = torch.logaddexp(l1, l2) - math.log(2)
    assert torch.allclose(mix + clf.log_prob((0, 1), x), hm, atol=1e-12)
    # parameterised: y2 has prior (a, 1 - a): p1^2 / (a p1 + (1 - a) p2) up to a constant
    a = 0.3
    lq = clf.log_prob((0, 0), x, alpha=a)
    expected = log_q1 + (math.log(a) + l1 - torch.logaddexp(math.log(a) + l1, math.log(1 - a) + l2))
    assert torch.allclose(lq, expected, atol=1e-12)
    assert torch.allclose(clf.terminal_logits(x), torch.stack([l1, l2], -1))


@pytest.mark.parametrize("t", [None, 0.0, 0.05, 0.3, 0.8, 1.0])
def test_joint_is_normalised_and_its_first_marginal_is_closed_form(t):
    clf = GaussianMixtureClassifier(list(_bases()), num_observations=3, weights=[0.3, 0.7])
    x = _points(8)
    joint = clf.log_joint(x, t)
    assert joint.shape == (8, 2, 2, 2)
    assert torch.allclose(torch.logsumexp(joint.flatten(-3), -1), torch.zeros(8, dtype=F64), atol=1e-10)
    first = clf.log_prob_first(x, t)
    assert torch.allclose(torch.logsumexp(joint.flatten(-2), -1), first, atol=1e-10)
    assert torch.allclose(clf.log_prob((1, None, None), x, t), first[:, 1], atol=1e-10)
    assert torch.allclose(clf.log_prob((None, 0, 1), x, t), torch.logsumexp(joint[:, :, 0, 1], -1), atol=1e-10)
    assert torch.allclose(clf.log_prob((1, 0, 1), x, t), joint[:, 1, 0, 1], atol=1e-10)
    if t is not None:
        p1, p2 = clf.bases
        l1, l2 = p1.log_prob(x, t) + math.log(0.3), p2.log_prob(x, t) + math.log(0.7)
        assert torch.allclose(first[:, 0], l1 - torch.logaddexp(l1, l2), atol=1e-12)


def test_time_zero_is_the_terminal_classifier():
    clf = GaussianMixtureClassifier(list(_bases()), num_observations=2)
    x = _points(10)
    assert torch.allclose(clf.log_joint(x, 0.0), clf.log_joint(x, None), atol=1e-10)


@pytest.mark.parametrize("t", [0.1, 0.4, 0.8])
def test_multi_observation_classifier_matches_monte_carlo(t):
    """Q(y1=i, y2=j, y3=k | x_t) against sampling x0 ~ p_i(x0 | x_t) exactly (mixture posterior) and
    averaging."""
    p1, p2 = _bases()
    clf = GaussianMixtureClassifier([p1, p2], num_observations=3, quadrature_points=32)
    x = _points(3, seed=1)
    n = 100_000
    gen = torch.Generator().manual_seed(2)
    for i, base in enumerate([p1, p2]):
        log_r, m, chol = base.posterior(x, t, cholesky=True)
        for b in range(x.shape[0]):
            comp = torch.multinomial(log_r[b].exp(), n, replacement=True, generator=gen)
            z = torch.randn(n, 2, dtype=F64, generator=gen)
            x0 = m[b][comp] + (chol[comp] @ z.unsqueeze(-1)).squeeze(-1)
            q = torch.softmax(clf.terminal_logits(x0), -1)  # Q(y_k = . | x0), uniform prior
            for j, k in [(0, 1), (1, 1), (0, 0)]:
                g = q[:, j] * q[:, k]
                mc = clf.log_prob_first(x[b : b + 1], t)[0, i] + g.mean().log()
                se = (g.std() / g.mean() / math.sqrt(n)).item()
                exact = clf.log_prob((i, j, k), x[b : b + 1], t)[0]
                assert abs(exact - mc).item() <= 4 * se + 1e-3, (i, j, k, b, exact.item(), mc.item(), se)


@pytest.mark.parametrize("t", [0.1, 0.5])
def test_classifier_matches_brute_force_integration_on_a_grid(t):
    """Q(y1=i, y2=j | x_t) = int w_i p_i(x0) N(x_t; a x0, s^2) Q(y2=j | x0) dx0 / p_t(x_t), on a fine grid: an
    independent route (no posterior formula, no quadrature rule)."""
    p1, p2 = _bases()
    clf = GaussianMixtureClassifier([p1, p2], num_observations=2, quadrature_points=32)
    h = 0.01
    ax = torch.arange(-4 + h / 2, 4, h, dtype=F64)
    grid = torch.cartesian_prod(ax, ax)
    l1, l2 = p1.log_prob(grid), p2.log_prob(grid)
    log_q = torch.stack([l1, l2], -1) - torch.logaddexp(l1, l2).unsqueeze(-1)
    tt = torch.tensor(t, dtype=F64)
    a, s = p1.schedule.alpha(tt), p1.schedule.sigma(tt)
    x = _points(4, seed=3)
    lik = torch.distributions.Normal(a * grid.unsqueeze(0), s).log_prob(x.unsqueeze(1)).sum(-1)  # (B, G)
    p_t = torch.logaddexp(p1.log_prob(x, t), p2.log_prob(x, t)) + math.log(0.5)
    for i, li in enumerate([l1, l2]):
        for j in range(2):
            brute = torch.logsumexp(math.log(0.5) + li + lik + log_q[:, j], -1) + 2 * math.log(h) - p_t
            assert torch.allclose(clf.log_prob((i, j), x, t), brute, atol=2e-4), (i, j)


def test_gradient_of_one_observation_is_the_score_difference():
    """grad log Q(y1=i | x_t) = s_i(x_t) - sum_j Q(y1=j | x_t) s_j(x_t), from the oracles' exact scores."""
    p1, p2 = _bases()
    clf = GaussianMixtureClassifier([p1, p2], num_observations=1, weights=[0.4, 0.6])
    x, t = _points(12), 0.3
    q = clf.log_prob_first(x, t).exp()
    s1, s2 = p1.score(x, t), p2.score(x, t)
    value, grad = clf.grad_log_prob((0,), x, t)
    assert torch.allclose(value, q[:, 0].log())
    assert torch.allclose(grad, s1 - (q[:, :1] * s1 + q[:, 1:] * s2), atol=1e-10)


def test_gradient_matches_finite_differences():
    clf = GaussianMixtureClassifier(list(_bases()), num_observations=2)
    x, t, h = _points(5), 0.2, 1e-5
    with torch.no_grad():  # the gradient is computed even under no_grad (sampling loops)
        value, grad = clf.grad_log_prob((0, 1), x, t, alpha=0.7)
    for d in range(2):
        e = torch.zeros(2, dtype=F64)
        e[d] = h
        fd = (clf.log_prob((0, 1), x + e, t, alpha=0.7) - clf.log_prob((0, 1), x - e, t, alpha=0.7)) / (2 * h)
        assert torch.allclose(grad[:, d], fd, atol=1e-6)
    assert torch.allclose(value, clf.log_prob((0, 1), x, t, alpha=0.7))


def test_batched_times_chunks_and_observation_objects():
    clf = GaussianMixtureClassifier(list(_bases(VESchedule(0.01, 5.0))), num_observations=2, chunk_size=3)
    x = _points(10).reshape(2, 5, 2)
    t = torch.linspace(0.0, 1.0, 10, dtype=F64).reshape(2, 5)
    batched = clf.log_prob((1, 0), x, t)
    assert batched.shape == (2, 5)
    for r in range(2):
        for c in range(5):
            assert torch.allclose(batched[r, c], clf.log_prob((1, 0), x[r, c], t[r, c].item()), atol=1e-10)
    value, grad = clf.grad_log_prob((1, 0), x, t)
    assert grad.shape == (2, 5, 2) and torch.allclose(value, batched)

    class Obs:  # any object with y, weights and alpha (e.g. pyro_sculpt.sculpting's Observations)
        y, weights, alpha = (0, 1), (0.5, 0.5), 0.25

    assert torch.allclose(clf.log_prob(Obs(), x, 0.3), clf.log_prob((0, 1), x, 0.3, alpha=0.25))
    assert torch.allclose(clf.log_joint(x, 0.3, obs=Obs())[..., 0, 1], clf.log_prob((0, 1), x, 0.3, alpha=0.25))


def test_float32_and_three_bases():
    means = [torch.tensor([[-1.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.5], [0.0, -1.5]])]
    bases = [GaussianMixtureOracle(m, stds=0.5) for m in means]
    clf = GaussianMixtureClassifier(bases, num_observations=3)
    x = torch.randn(100, 2)
    joint = clf.log_joint(x, 0.25)
    assert joint.dtype == torch.float32 and joint.shape == (100, 3, 3, 3)
    assert torch.allclose(joint.exp().sum((-1, -2, -3)), torch.ones(100), atol=1e-5)
    v, g = clf.grad_log_prob((0, 1, 2), x, 0.25)
    assert torch.isfinite(g).all() and torch.isfinite(v).all()
    assert torch.allclose(
        clf.log_prob((0, 1, 2), x, 0.25, alpha=[0.2, 0.3, 0.5]),
        clf.log_joint(x, 0.25, alpha=[0.2, 0.3, 0.5])[:, 0, 1, 2],
        atol=1e-5,
    )


def test_bad_inputs():
    p1, p2 = _bases()
    three_d = GaussianMixtureOracle(torch.zeros(1, 3, dtype=F64), stds=1.0)
    with pytest.raises(ValueError, match=r"bases\[1\] has data dimension 3"):
        GaussianMixtureClassifier([p1, three_d])
    with pytest.raises(ValueError, match=r"bases\[1\] has schedule"):
        GaussianMixtureClassifier([p1, _bases(VESchedule())[1]])
    with pytest.raises(ValueError, match="at least two"):
        GaussianMixtureClassifier([p1])
    with pytest.raises(TypeError, match=r"bases\[0\]"):
        GaussianMixtureClassifier(["p1", p2])
    clf = GaussianMixtureClassifier([p1, p2], num_observations=2)
    x = _points(3)
    with pytest.raises(ValueError, match="2 entries"):
        clf.log_prob((0,), x, 0.5)
    with pytest.raises(ValueError, match=r"y\[1\] must be a base index in \[0, 1\]"):
        clf.log_prob((0, 2), x, 0.5)
    with pytest.raises(ValueError, match="alpha"):
        clf.log_prob((0, 1), x, 0.5, alpha=1.0)
    with pytest.raises(ValueError, match="alpha"):
        clf.log_prob((0, 1), x, 0.5, alpha=-0.2)
    with pytest.raises(ValueError, match="weights"):
        clf.log_prob((0, 1), x, 0.5, weights=[1.0, 0.0])
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 2\)"):
        clf.log_prob((0, 1), torch.zeros(4, 3, dtype=F64), 0.5)
    with pytest.raises(ValueError, match="num_observations"):
        GaussianMixtureClassifier([p1, p2], num_observations=0)
