"""Exact distributions cached on a model follow every change of its parameters (compared with a fresh DP)."""

import pytest
import torch

import pyro_sculpt as ps
from pyro_sculpt.gflownets import DiscretePolicyProcess, exact
from pyro_sculpt.gflownets.policy_process import parameters_key
from tests.conftest import exact_bases, random_gflownet

ENV = ps.HyperGrid(2, 4)


def fresh(process):
    """The exact terminal distribution of the process as it is now, bypassing every cache."""
    return exact.terminal_distribution(process.env, process.log_prob_table())


def assert_current(process):
    assert torch.allclose(process.exact_terminal_distribution(), fresh(process), atol=1e-12)


def _adam_step(gfn):
    opt = torch.optim.Adam(gfn.parameters(), lr=0.1)
    gfn.action_log_probs(ENV.all_states())[:, 0].sum().backward()
    opt.step()


def _load_other(gfn):
    gfn.load_state_dict(random_gflownet(ENV, seed=7, hidden=16).state_dict())


def _assign_data(gfn):
    p = next(gfn.policy.parameters())
    p.data = p.data * 2.0 + 0.5


def _write_through_data(gfn):
    next(gfn.policy.parameters()).data.mul_(-2.0)  # torch's version counter does not see this


def _replace_policy(gfn):
    gfn.policy = random_gflownet(ENV, seed=8, hidden=16).policy


@pytest.mark.parametrize("change", [_adam_step, _load_other, _assign_data, _write_through_data, _replace_policy])
def test_gflownet_cache_follows_its_parameters(change):
    gfn = random_gflownet(ENV, seed=0, hidden=16)
    before = gfn.exact_terminal_distribution().clone()
    change(gfn)
    assert not torch.allclose(fresh(gfn), before)  # the change matters
    assert_current(gfn)


def _replace_buffer(tab, other):
    tab.table = other.table.clone()


def _assign_buffer_data(tab, other):
    tab.table.data = other.table.clone()


def _copy_into_buffer_data(tab, other):
    tab.table.data.copy_(other.table)


@pytest.mark.parametrize("change", [_replace_buffer, _assign_buffer_data, _copy_into_buffer_data])
def test_tabular_cache_follows_its_table(change):
    tab, other = exact_bases(ENV, 2, seed=3)
    tab.exact_terminal_distribution()
    change(tab, other)
    assert_current(tab)
    assert torch.allclose(tab.exact_terminal_distribution(), other.exact_terminal_distribution(), atol=1e-12)


def _classifier_step(clf):
    with torch.no_grad():
        for p in clf.parameters():
            p.mul_(1.5)


def _classifier_data(clf):
    for p in clf.parameters():
        p.data = p.data * 1.5


@pytest.mark.parametrize("change", [_classifier_step, _classifier_data])
def test_sculpted_cache_follows_its_classifier(change):
    g1, g2 = random_gflownet(ENV, seed=0, hidden=16), random_gflownet(ENV, seed=1, hidden=16)
    clf = ps.ObservationClassifier(ENV, 2, 2, hidden=16)
    hm = ps.harmonic_mean(g1, g2, clf).process
    before = hm.exact_terminal_distribution().clone()
    change(clf)
    assert not torch.allclose(fresh(hm), before)
    assert_current(hm)


def test_exact_classifier_follows_its_bases():
    g1, g2 = random_gflownet(ENV, seed=0, hidden=16), random_gflownet(ENV, seed=1, hidden=16)
    clf = ps.ExactClassifier([g1, g2], 2)
    x = ENV.all_states()
    clf.terminal_logits(x)
    _write_through_data(g1)
    assert torch.allclose(clf.terminal_logits(x), ps.ExactClassifier([g1, g2], 2).terminal_logits(x))
    # and so does a composition guided by it
    hm = ps.harmonic_mean(g1, g2, clf).process
    hm.exact_terminal_distribution()
    _assign_data(g2)
    assert_current(hm)


def test_exact_classifier_follows_a_composed_base_whose_classifier_changed():
    """Chaining: a base that is itself a composition, guided by a learned classifier that then changes."""
    g1, g2, g3 = (random_gflownet(ENV, seed=s, hidden=16) for s in range(3))
    inner_clf = ps.ObservationClassifier(ENV, 2, 2, hidden=16)
    inner = ps.harmonic_mean(g1, g2, inner_clf).process
    outer = ps.ExactClassifier([inner, g3], 2)
    x = ENV.all_states()
    before = outer.terminal_logits(x).clone()
    _classifier_data(inner_clf)
    now = outer.terminal_logits(x)
    assert not torch.allclose(now, before)
    assert torch.allclose(now, ps.ExactClassifier([inner, g3], 2).terminal_logits(x))


def test_mixture_follows_its_bases():
    g1, g2 = random_gflownet(ENV, seed=0, hidden=16), random_gflownet(ENV, seed=1, hidden=16)
    mix = ps.mixture(g1, g2, weights=(0.25, 0.75))
    x = ENV.all_states()
    mix.log_prob(x)
    _write_through_data(g1)
    expected = 0.25 * fresh(g1) + 0.75 * fresh(g2)
    assert torch.allclose(mix.log_prob(x).double().exp(), expected, atol=1e-6)


class _TensorPolicy(DiscretePolicyProcess):
    """A policy held in a plain tensor attribute: it cannot tell when it changes (``cache_key`` is ``None``)."""

    def __init__(self, env, logits):
        self.env = env
        self.logits = logits

    def action_log_probs(self, states):
        mask = self.env.forward_mask(states)
        return torch.log_softmax(self.logits[self.env.index(states)].masked_fill(~mask, float("-inf")), -1)


def test_a_process_without_a_cache_key_is_never_cached():
    g = torch.Generator().manual_seed(0)
    a = _TensorPolicy(ENV, torch.randn(ENV.num_states, ENV.n_actions, generator=g))
    b = _TensorPolicy(ENV, torch.randn(ENV.num_states, ENV.n_actions, generator=g))
    clf = ps.ExactClassifier([a, b], 2)
    x = ENV.all_states()
    clf.terminal_logits(x)
    a.exact_terminal_distribution()
    a.logits = torch.randn(ENV.num_states, ENV.n_actions, generator=g)
    assert_current(a)
    assert torch.allclose(clf.terminal_logits(x), ps.ExactClassifier([a, b], 2).terminal_logits(x))


def test_parameters_key():
    gfn = random_gflownet(ENV, seed=0, hidden=16)
    key = parameters_key(gfn.policy)
    assert key == parameters_key(gfn.policy) and hash(key) == hash(parameters_key(gfn.policy))
    with torch.no_grad():
        next(gfn.policy.parameters()).add_(0.0)  # a write that changes no value keeps the key
    assert key == parameters_key(gfn.policy)
    next(gfn.policy.parameters()).data[0, 0] += 1.0
    assert key != parameters_key(gfn.policy)
    assert key != parameters_key(random_gflownet(ENV, seed=0, hidden=16).policy)  # same values, other tensors
