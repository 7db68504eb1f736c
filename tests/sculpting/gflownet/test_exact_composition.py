"""With exact classifiers, every composition matches its closed form (docs/math.md §1)."""

import pytest
import torch

import pyro_sculpt as ps
from tests.conftest import exact_bases

ENV = ps.HyperGrid(2, 6)


def closed_form(bases, y, alpha=None, weights=None):
    return ps.composition_distribution(torch.stack([b.exact_terminal_distribution() for b in bases]), y, alpha, weights)


@pytest.mark.parametrize(
    "y,alpha",
    [
        ((0, 1), None),
        ((0, 0), None),
        ((1, 1), None),
        ((0, 1), 0.05),
        ((0, 1), 0.95),
        ((0, 0), 0.05),
        ((1, 1), 0.95),
        ((0, None), None),
        ((None, 1), None),
        ((None, None), None),
        ((1, 0), 0.3),
    ],
)
def test_two_model_compositions(y, alpha):
    bases = exact_bases(ENV, 2, seed=1)
    clf = ps.ExactClassifier(bases, num_observations=2)
    p = ps.sculpt(bases, clf, y, alpha).process.exact_terminal_distribution()
    assert ps.metrics.l1_distance(p, closed_form(bases, y, alpha)) < 1e-5


@pytest.mark.parametrize("y", [(0, 1, 2), (0, 0, 0), (1, 1, 1), (2, 2, 2), (0, 1, None), (None, 2, 2), (0, 2, 1)])
def test_three_model_compositions(y):
    bases = exact_bases(ENV, 3, seed=2)
    clf = ps.ExactClassifier(bases, num_observations=3)
    p = ps.sculpt(bases, clf, y).process.exact_terminal_distribution()
    assert ps.metrics.l1_distance(p, closed_form(bases, y)) < 1e-5


def test_named_operators_are_the_sculpting_cases():
    p1, p2 = exact_bases(ENV, 2, seed=3)
    clf = ps.ExactClassifier([p1, p2], 2)
    q1, q2 = p1.exact_terminal_distribution(), p2.exact_terminal_distribution()
    expected = {
        "harmonic": q1 * q2 / (q1 + q2),
        "contrast": q1**2 / (q1 + q2),
        "reverse": q2**2 / (q1 + q2),
        "contrast_a": q1**2 / (0.05 * q1 + 0.95 * q2),
    }
    got = {
        "harmonic": ps.harmonic_mean(p1, p2, clf),
        "contrast": ps.contrast(p1, p2, clf),
        "reverse": ps.reverse_contrast(p1, p2, clf),
        "contrast_a": ps.contrast(p1, p2, clf, alpha=0.05),
    }
    for k, d in got.items():
        e = expected[k] / expected[k].sum()
        assert ps.metrics.l1_distance(d.process.exact_terminal_distribution(), e) < 1e-5, k
        # the distribution's log_prob is the same exact answer
        states = ENV.all_states()
        assert torch.allclose(d.log_prob(states).double().exp(), e, atol=1e-6)


def test_mixture_with_weights_is_exact_and_samples_right():
    from scipy.stats import chisquare

    p1, p2 = exact_bases(ENV, 2, seed=4)
    d = ps.mixture(p1, p2, weights=(0.3, 0.7))
    expected = 0.3 * p1.exact_terminal_distribution() + 0.7 * p2.exact_terminal_distribution()
    assert torch.allclose(d.log_prob(ENV.all_states()).double().exp(), expected, atol=1e-6)
    n = 20_000
    counts = torch.bincount(ENV.index(d.sample((n,))), minlength=ENV.num_states).double()
    keep = expected * n >= 5
    f_exp = expected[keep] / expected[keep].sum() * counts[keep].sum()
    assert chisquare(counts[keep].numpy(), f_exp.numpy()).pvalue > 1e-3


def test_mixture_weights_reweight_the_classifier():
    p1, p2 = exact_bases(ENV, 2, seed=5)
    clf = ps.ExactClassifier([p1, p2], 2)
    p = ps.sculpt([p1, p2], clf, (0, 1), weights=(0.2, 0.8)).process.exact_terminal_distribution()
    assert ps.metrics.l1_distance(p, closed_form([p1, p2], (0, 1), weights=(0.2, 0.8))) < 1e-5


def test_guided_sampler_matches_its_exact_distribution():
    from scipy.stats import chisquare

    p1, p2 = exact_bases(ENV, 2, seed=6)
    d = ps.harmonic_mean(p1, p2, ps.ExactClassifier([p1, p2], 2))
    n = 20_000
    counts = torch.bincount(ENV.index(d.sample((n,))), minlength=ENV.num_states).double()
    expected = closed_form([p1, p2], (0, 1))
    keep = expected * n >= 5
    f_exp = expected[keep] / expected[keep].sum() * counts[keep].sum()
    assert chisquare(counts[keep].numpy(), f_exp.numpy()).pvalue > 1e-3


def test_chaining_runs_and_is_approximate():
    p1, p2, p3 = exact_bases(ENV, 3, seed=7)
    hm = ps.harmonic_mean(p1, p2, ps.ExactClassifier([p1, p2], 2))
    clf = ps.ExactClassifier([hm.process, p3], 2)
    chained = ps.contrast(hm, p3, clf)
    x = chained.sample((100,))
    assert x.shape == (100, 2)
    p = chained.process.exact_terminal_distribution()
    expected = closed_form([hm.process, p3], (0, 0))
    l1 = ps.metrics.l1_distance(p, expected)
    assert 0 < l1 < 0.5  # approximate: the guided base breaks the shared backward policy


def test_one_batched_classifier_call_per_step():
    p1, p2 = exact_bases(ENV, 2, seed=8)
    clf = ps.ExactClassifier([p1, p2], 2)
    calls, flags = [], []
    original = clf.raw

    def counting(states, terminal, obs):
        calls.append(states.shape)
        flags.append((states, terminal))
        return original(states, terminal, obs)

    clf.raw = counting
    proc = ps.harmonic_mean(p1, p2, clf).process
    proc.check_support()  # one row at the initial state, once per version of the bases and classifier: not a step
    calls.clear()
    n = 500
    x, state = ps.sample(proc, (n,), return_state=True)
    steps = int(ENV.levels(x).max()) + 1
    # one call per step, over the distinct (state, terminal flag) rows of all particles' children, stops and states
    assert len(calls) == steps
    rows = [torch.Size(shape[:-1]).numel() for shape in calls]
    assert all(shape[-1] == 2 for shape in calls)
    assert all(r <= n * (ENV.n_actions + 1) for r in rows)
    assert sum(rows) < steps * n  # particles share rows: far fewer than (A + 1) rows per particle per step
    proc.deduplicate = False
    calls.clear()
    flags.clear()
    x = ps.sample(proc, (n,))
    assert len(calls) == int(ENV.levels(x).max()) + 1
    # without deduplication: exactly the valid children of the n states, then the n states as terminal and as current
    for shape, (states, flag) in zip(calls, flags):
        assert len(shape) == 2 and shape[-1] == 2 and int(flag.sum()) == n
        k = shape[0] - 2 * n
        assert k == int(ENV.forward_mask(states[flag])[:, :-1].sum())  # the valid children only
        assert bool(flag[k : k + n].all()) and not bool(flag[:k].any()) and not bool(flag[k + n :].any())
    rows_per_step = [shape[0] for shape in calls]
    assert all(2 * n <= r <= n * (ENV.n_actions + 1) for r in rows_per_step)


class SparseGrid(ps.HyperGrid):
    """A grid that builds only its valid children (as an environment with many actions would), and counts it."""

    calls = 0

    def valid_children(self, states):
        SparseGrid.calls += 1
        inc = states < self.height - 1  # (B, D): the valid increments
        parent, action = inc.nonzero(as_tuple=True)
        kids = states[parent].clone()
        kids[torch.arange(len(parent)), action] += 1
        return parent, action, kids

    def children(self, states):  # guidance must not need the dense children
        raise AssertionError("guided_step built every child instead of the valid ones")


def test_guidance_builds_only_the_valid_children_of_an_environment():
    env = SparseGrid(2, 6)
    p1, p2 = exact_bases(ps.HyperGrid(2, 6), 2, seed=12)
    p1.env = p2.env = env
    clf = ps.ExactClassifier([p1, p2], 2)  # its dynamic programming was built on the dense grid above
    target = ps.composition_distribution(
        torch.stack([p1.exact_terminal_distribution(), p2.exact_terminal_distribution()]), (0, 1)
    )
    got = ps.harmonic_mean(p1, p2, clf).process.exact_terminal_distribution()
    assert SparseGrid.calls > 0
    assert ps.metrics.l1_distance(got, target) < 1e-5


@pytest.mark.parametrize("y, alpha", [((0, 1), None), ((1, 1), 0.3), ((0, 1, 2), None)])
def test_twisted_smc_estimates_the_normaliser_of_the_observation(y, alpha):
    # with the exact classifier every weight is p~(y) = sum_x p_mix(x) Q(y | x), the normaliser of the classifier-free
    # operator's exp Phi: log_evidence is exact from any number of particles (it lacked log Q(y | s_0) before)
    bases = exact_bases(ENV, len(y), seed=2)
    clf = ps.ExactClassifier(bases, num_observations=len(y))
    log_p = torch.stack([b.exact_terminal_distribution() for b in bases], -1).double().log()
    exact = float(torch.logsumexp(ps.sculpt(bases, y=y, alpha=alpha).process.operator(log_p), 0))
    for terminal in ("trajectory", "classifier"):
        res = ps.infer.smc(ps.sculpt(bases, clf, y, alpha), 64, seed=0, terminal=terminal)
        assert abs(res.log_evidence - exact) < 1e-5, (terminal, res.log_evidence, exact)
        assert float(res.log_weights.max() - res.log_weights.min()) < 1e-5


def test_states_no_base_visits_give_zero_not_nan():
    """Bases that never increment coordinate 0 (a valid action of probability zero): the exact classifier's tables
    at the states they never visit are zero, and the composition is the closed form (it was NaN everywhere)."""
    env = ps.HyperGrid(2, 3)

    def base(stop_bias):
        log_probs = torch.zeros(env.num_states, 3)
        log_probs[:, 0] = float("-inf")
        log_probs[:, 2] = stop_bias
        return ps.gflownets.TabularGFlowNet(env, log_probs)

    p1, p2 = base(0.0), base(1.0)
    clf = ps.ExactClassifier([p1, p2], 2)
    p = ps.harmonic_mean(p1, p2, clf).process.exact_terminal_distribution()
    t1, t2 = p1.exact_terminal_distribution(), p2.exact_terminal_distribution()
    target = torch.nan_to_num(t1 * t2 / (t1 + t2))
    assert torch.isfinite(p).all() and torch.allclose(p, target / target.sum(), atol=1e-6)
    assert bool((ps.harmonic_mean(p1, p2, clf).sample((200,))[:, 0] == 0).all())
