"""Composition parameters a Pyro user can learn (DESIGN.md): mixture weights and alpha stay tensors with gradients,
SVI recovers them from observed data, and bad values raise errors naming the argument."""

import math

import pyro
import pytest
import torch
from pyro.distributions import constraints
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam

import pyro_sculpt as ps
from pyro_sculpt.diffusion import DDIMSampler, GaussianMixtureOracle
from pyro_sculpt.gflownets import TabularGFlowNet, exact
from tests.conftest import exact_bases

ENV = ps.HyperGrid(2, 8)


def empty_guide(*args, **kwargs):
    pass


def fit(model, *args, steps=100):
    svi = SVI(model, empty_guide, ClippedAdam({"lr": 0.1, "lrd": 0.98}), Trace_ELBO())
    for _ in range(steps):
        svi.step(*args)


def test_svi_recovers_mixture_weight_from_model_of_origin_labels():
    """The joint model of the augmented model: x observed from the mixture with learnable weights w, and its label
    y ~ ModelOfOrigin(clf, x, prior=w). Its likelihood is :math:`\\prod_j w_{y_j} p_{y_j}(x_j)`, so the exact MLE of
    w is the labels' frequency. The data are an exact-frequency draw of the augmented model with w = (0.7, 0.3):
    3,500 x from p1 labelled 0 and 1,500 from p2 labelled 1 (the pair (y, x) with y ~ w, x ~ p_y has the law of
    x ~ mixture, y ~ ModelOfOrigin), so the MLE is 0.7 exactly. (Given x alone, the labels' likelihood has its MLE
    near 0.7, not at it; the alpha test below uses that formulation.)"""
    p1, p2 = exact_bases(ENV, 2, seed=0)
    clf = ps.ExactClassifier([p1, p2], 2)
    pyro.set_rng_seed(0)
    x = torch.cat([ps.ProcessDistribution(p1).sample((3500,)), ps.ProcessDistribution(p2).sample((1500,))])
    y = torch.cat([torch.zeros(3500, dtype=torch.long), torch.ones(1500, dtype=torch.long)])

    def model(x, y):
        w = pyro.param("w", torch.tensor([0.5, 0.5]), constraint=constraints.simplex)
        with pyro.plate("data", len(x)):
            x = pyro.sample("x", ps.mixture(p1, p2, weights=w), obs=x)
            pyro.sample("y", ps.ModelOfOrigin(clf, x, prior=w), obs=y)

    fit(model, x, y)
    w = pyro.param("w").detach()
    assert abs(float(w[0]) - 0.7) < 0.02, w
    assert abs(float(w[0]) - 0.7) < 5e-3, w  # SVI reaches the exact MLE, not just its neighbourhood


def test_svi_recovers_alpha_from_model_of_origin_labels():
    """Labels y2 ~ ModelOfOrigin(clf, x, alpha=0.3) of draws x of the mixture, observed given x. The exact MLE of
    alpha is found by a grid search over the closed-form likelihood; SVI must reach it, and it is within 0.02 of
    0.3. Bases close to each other carry the most information about alpha (the label is a coin of bias near alpha
    where p1 ~ p2), hence the small reward scale."""
    p1, p2 = exact_bases(ENV, 2, seed=0, scale=0.5)
    clf = ps.ExactClassifier([p1, p2], 2)
    pyro.set_rng_seed(1)
    x = ps.mixture(p1, p2).sample((5000,))
    y2 = ps.ModelOfOrigin(clf, x, alpha=0.3).sample()

    def model(x, y2):
        a = pyro.param("a", torch.tensor(0.5), constraint=constraints.unit_interval)
        with pyro.plate("data", len(x)):
            pyro.sample("y2", ps.ModelOfOrigin(clf, x, alpha=a), obs=y2)

    fit(model, x, y2)
    a = float(pyro.param("a").detach())
    # the exact MLE: the log-likelihood is concave in u = logit(alpha), with derivative
    # sum_j (1[y_j = 0] - Q(y = 0 | x_j; alpha)), Q(y = 0 | x; alpha) = sigmoid(log p1(x) - log p2(x) + u)
    logits = clf.terminal_logits(x)
    o = logits[:, 0] - logits[:, 1]
    lo, hi = -10.0, 10.0
    for _ in range(60):
        u = (lo + hi) / 2
        lo, hi = (u, hi) if float(((y2 == 0).double() - torch.sigmoid(o + u)).sum()) > 0 else (lo, u)
    mle = 1 / (1 + math.exp(-(lo + hi) / 2))
    assert abs(a - mle) < 2e-3, (a, mle)
    assert abs(a - 0.3) < 0.02, (a, mle)


def test_mixture_log_prob_gradient_matches_closed_form():
    p1, p2 = exact_bases(ENV, 2, seed=1)
    q1, q2 = p1.exact_terminal_distribution(), p2.exact_terminal_distribution()
    pyro.set_rng_seed(0)
    x = ps.mixture(p1, p2).sample((200,))
    idx = ENV.index(x)
    w = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(ps.mixture(p1, p2, weights=(w, 1 - w)).log_prob(x).sum(), w)
    # d/dw sum_j log(w q1 + (1 - w) q2) = sum_j (q1 - q2) / (w q1 + (1 - w) q2)
    expected = ((q1[idx] - q2[idx]) / (0.3 * q1[idx] + 0.7 * q2[idx])).sum()
    assert abs(float(g)) > 1.0
    assert torch.allclose(g.double(), expected, rtol=1e-4), (g, expected)
    # a 1-d tensor of weights, normalised inside: the gradient of log((w_0 q1 + w_1 q2) / (w_0 + w_1))
    v = torch.tensor([0.6, 1.4], requires_grad=True)
    (gv,) = torch.autograd.grad(ps.mixture(p1, p2, weights=v).log_prob(x).sum(), v)
    mix = 0.3 * q1[idx] + 0.7 * q2[idx]
    expected_v = torch.stack([(q1[idx] / mix).sum(), (q2[idx] / mix).sum()]) / 2.0 - len(x) / 2.0
    assert torch.allclose(gv.double(), expected_v, rtol=1e-4), (gv, expected_v)
    # sampling still works with weights that carry a gradient, and draws the mixture
    s = ps.mixture(p1, p2, weights=(w, 1 - w)).sample((4000,))
    assert not s.requires_grad
    freq = torch.bincount(ENV.index(s), minlength=ENV.num_states).double() / len(s)
    assert ps.metrics.l1_distance(freq, 0.3 * q1 + 0.7 * q2) < 0.15


def test_mixture_steps_under_run_are_differentiable_in_the_weights():
    """The step sites of pyro_sculpt.run carry the gradient too. The bases share the uniform backward policy, so a
    trajectory's probability is :math:`\\sum_i w_i p_i(x) P_B(\\tau \\mid x)`: the same gradient as the terminal
    log-probability's (and no NaN from the actions that every base forbids)."""
    p1, p2 = exact_bases(ENV, 2, seed=4)
    w = torch.tensor(0.3, requires_grad=True)
    mix = ps.mixture(p1, p2, weights=(w, 1 - w))
    trace = pyro.poutine.trace(lambda: ps.run("x", mix.process, num_particles=50)).get_trace()
    x = trace.nodes["_RETURN"]["value"]
    (g_steps,) = torch.autograd.grad(trace.log_prob_sum(), w, retain_graph=True)
    (g_terminal,) = torch.autograd.grad(mix.log_prob(x).sum(), w)
    assert abs(float(g_terminal)) > 1.0
    assert math.isclose(float(g_steps), float(g_terminal), rel_tol=1e-4), (g_steps, g_terminal)


def test_diffusion_mixture_log_prob_gradient_matches_closed_form():
    """DDIM with eta=0 scores its samples by the probability-flow ODE (a few RK4 steps here); the gradient of the
    mixture's log-probability in w is the closed form in the bases' own flow densities."""
    o1 = GaussianMixtureOracle(torch.tensor([[-1.0, 0.0]]), stds=0.5)
    o2 = GaussianMixtureOracle(torch.tensor([[1.0, 0.5]]), stds=0.7)
    s1, s2 = DDIMSampler(o1, 8, log_prob_steps=16), DDIMSampler(o2, 8, log_prob_steps=16)
    x = torch.tensor([[-1.0, 0.0], [0.0, 0.2], [1.2, 0.4], [0.5, -0.5]])
    w = torch.tensor(0.4, requires_grad=True)
    (g,) = torch.autograd.grad(ps.mixture(s1, s2, weights=(w, 1 - w)).log_prob(x).sum(), w)
    d1, d2 = s1.terminal_log_prob(x).double().exp(), s2.terminal_log_prob(x).double().exp()
    expected = ((d1 - d2) / (0.4 * d1 + 0.6 * d2)).sum()
    assert abs(float(g)) > 0.1
    assert math.isclose(float(g), float(expected), rel_tol=1e-4), (g, expected)


def test_closed_form_is_differentiable_in_alpha_and_weights():
    """composition_distribution with tensor alpha and weights: autograd matches central finite differences."""
    p1, p2 = exact_bases(ENV, 2, seed=2)
    base = torch.stack([p1.exact_terminal_distribution(), p2.exact_terminal_distribution()])
    target = torch.rand(ENV.num_states, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def f(a, w):
        return (ps.composition_distribution(base, (None, 0), alpha=a, weights=(w, 1 - w)) * target).sum()

    a = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    w = torch.tensor(0.6, dtype=torch.float64, requires_grad=True)
    ga, gw = torch.autograd.grad(f(a, w), (a, w))
    h = 1e-6
    fa = (f(0.3 + h, 0.6) - f(0.3 - h, 0.6)) / (2 * h)
    fw = (f(0.3, 0.6 + h) - f(0.3, 0.6 - h)) / (2 * h)
    assert abs(float(ga)) > 1e-4 and abs(float(gw)) > 1e-4
    assert math.isclose(float(ga), float(fa), rel_tol=1e-5), (ga, fa)
    assert math.isclose(float(gw), float(fw), rel_tol=1e-5), (gw, fw)


def test_model_of_origin_log_prob_is_differentiable_in_prior_and_alpha():
    p1, p2 = exact_bases(ENV, 2, seed=3)
    clf = ps.ExactClassifier([p1, p2], 2)
    x = ENV.all_states()
    q1, q2 = p1.exact_terminal_distribution(), p2.exact_terminal_distribution()
    a = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(ps.ModelOfOrigin(clf, x, alpha=a).log_prob(torch.tensor(0)).sum(), a)
    # d/da log(a q1 / (a q1 + (1 - a) q2)) = 1/a - (q1 - q2) / (a q1 + (1 - a) q2)
    expected = (1 / 0.3 - (q1 - q2) / (0.3 * q1 + 0.7 * q2)).sum()
    assert torch.allclose(g, expected, rtol=1e-6), (g, expected)
    w = torch.tensor([0.3, 0.7], dtype=torch.float64, requires_grad=True)
    (gw,) = torch.autograd.grad(ps.ModelOfOrigin(clf, x, prior=w).log_prob(torch.tensor(0)).sum(), w)
    assert torch.allclose(gw[0] - gw[1], expected, rtol=1e-6), (gw, expected)


def test_bad_weights_and_alpha_raise_naming_the_argument():
    """Infinite, NaN, zero, negative weights, a wrong number of them, and alpha outside (0, 1) given as tensors."""
    p1, p2 = exact_bases(ENV, 2)
    clf = ps.ExactClassifier([p1, p2], 2)
    x = ENV.all_states()[:3]
    base = torch.stack([p1.exact_terminal_distribution(), p2.exact_terminal_distribution()])
    bad_weights = [
        torch.tensor([math.inf, 1.0]),
        torch.tensor([math.nan, 1.0]),
        torch.tensor([-0.5, 1.5]),
        torch.tensor([0.0, 1.0]),
        (torch.tensor(math.inf), 1.0),
        (torch.tensor(0.5, requires_grad=True), torch.tensor(-0.5)),
    ]
    for w in bad_weights:
        with pytest.raises(ValueError, match=r"weights must be finite and > 0"):
            ps.mixture(p1, p2, weights=w)
        with pytest.raises(ValueError, match=r"weights must be finite and > 0"):
            ps.composition_distribution(base, (0, 1), weights=w)
        with pytest.raises(ValueError, match=r"weights must be finite and > 0"):
            ps.sculpt([p1, p2], clf, (0, 1), weights=w)
        with pytest.raises(ValueError, match=r"prior must be finite and > 0"):
            ps.ModelOfOrigin(clf, x, prior=w)
    for w in (torch.tensor([0.2, 0.3, 0.5]), torch.ones(2, 2)):
        with pytest.raises(ValueError, match=r"weights must have one entry per base \(2\)"):
            ps.mixture(p1, p2, weights=w)
        with pytest.raises(ValueError, match=r"prior must have one entry per base \(2\)"):
            ps.ModelOfOrigin(clf, x, prior=w)
    for a in (torch.tensor(0.0), torch.tensor(1.0), torch.tensor(1.5), torch.tensor(-0.1), torch.tensor(math.nan)):
        a = a.requires_grad_()
        with pytest.raises(ValueError, match=r"alpha must lie in \(0, 1\)"):
            ps.contrast(p1, p2, clf, alpha=a)
        with pytest.raises(ValueError, match=r"alpha must lie in \(0, 1\)"):
            ps.ModelOfOrigin(clf, x, alpha=a)
        with pytest.raises(ValueError, match=r"alpha must lie in \(0, 1\)"):
            ps.composition_distribution(base, (0, 0), alpha=a)
    with pytest.raises(ValueError, match=r"alpha must be a number in \(0, 1\), got a tensor of shape \(2,\)"):
        ps.contrast(p1, p2, clf, alpha=torch.tensor([0.3, 0.7]))
    for a in ("0.3", True):
        with pytest.raises(ValueError, match=r"alpha must be a number in \(0, 1\)"):
            ps.contrast(p1, p2, clf, alpha=a)
    for y in ((0,), (1, None)):  # alpha is the prior of y_2..y_n: with none observed it would be ignored
        with pytest.raises(ValueError, match="alpha is the prior of the observations after the first"):
            ps.sculpt([p1, p2], clf, y, alpha=0.3)


def disjoint_bases(env):
    """Two exact GFlowNets with disjoint supports (x_0 < h/2 and x_0 >= h/2), zero mass outside. The flow policy of
    log-rewards of -inf has NaN rows at the states its base never visits (0/0 flows); those rows are unreachable, so
    any valid policy serves there: the uniform one of a flat reward."""
    s = env.all_states()
    left = s[:, 0] < env.height // 2
    flat = TabularGFlowNet.from_reward(env, torch.zeros(env.num_states)).table
    out = []
    for support in (left, ~left):
        table = exact.flow_policy(env, torch.where(support, 0.0, -math.inf))  # from_reward rejects -inf rewards
        out.append(TabularGFlowNet(env, torch.where(torch.isnan(table), flat.to(table), table)))
    return out


def test_bases_without_common_support_raise():
    env = ps.HyperGrid(2, 4)
    p1, p2 = disjoint_bases(env)
    base = torch.stack([p1.exact_terminal_distribution(), p2.exact_terminal_distribution()])
    assert not bool((base[0] * base[1]).any())  # the supports are disjoint
    clf = ps.ExactClassifier([p1, p2], 2)
    for y in ((0, 1), (1, 0)):
        with pytest.raises(ValueError, match=rf"y=\({y[0]}, {y[1]}\) has probability 0 .* share no support"):
            ps.composition_distribution(base, y)
        hm = ps.sculpt([p1, p2], clf, y)
        with pytest.raises(ValueError, match=rf"y=\({y[0]}, {y[1]}\) has probability .* share no support"):
            hm.log_prob(env.all_states())
        with pytest.raises(ValueError, match=r"share no support"):
            hm.sample((10,))
        with pytest.raises(ValueError, match=r"share no support"):
            ps.infer.smc(hm.process, 16)
        with pytest.raises(ValueError, match=r"share no support"), ps.sculpt_guidance(classifier=clf, y=y):
            ps.run("x", ps.mixture(p1, p2).process, num_particles=8)
    # the contrasts are defined: each base alone
    assert torch.allclose(ps.composition_distribution(base, (0, 0)), base[0])
    p = ps.contrast(p1, p2, clf).process.exact_terminal_distribution()
    assert ps.metrics.l1_distance(p, base[0]) < 1e-6


def test_sculpt_warns_that_its_parameters_are_constants():
    p1, p2 = exact_bases(ENV, 2)
    clf = ps.ExactClassifier([p1, p2], 2)
    a = torch.tensor(0.3, requires_grad=True)
    with pytest.warns(UserWarning, match="treats weights and alpha as constants"):
        d = ps.contrast(p1, p2, clf, alpha=a)
    assert not d.log_prob(ENV.all_states()).requires_grad
