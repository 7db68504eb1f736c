"""Deferred step distributions: computed on first use only, equal to the Categorical they stand for."""

import pyro
import pytest
import torch

import pyro_sculpt as ps
from pyro_sculpt.processes import DeferredCategorical
from tests.conftest import exact_bases


def test_deferred_categorical_is_lazy_and_equals_its_categorical():
    logits = torch.randn(5, 3)
    calls = []

    def compute():
        calls.append(1)
        return logits

    d = DeferredCategorical(torch.Size([5]), 3, compute)
    assert d.batch_shape == (5,) and not d.computed and not calls
    assert d.expand(torch.Size([5])) is d and not calls  # Pyro's plates expand every site, even to its own shape
    big = d.expand(torch.Size([2, 5]))
    assert not calls and big.batch_shape == (2, 5)
    ref = pyro.distributions.Categorical(logits=logits)
    x = torch.tensor([0, 1, 2, 1, 0])
    assert torch.allclose(d.log_prob(x), ref.log_prob(x))
    assert torch.allclose(big.log_prob(x.expand(2, 5)), ref.log_prob(x).expand(2, 5))
    assert len(calls) == 1  # computed once, shared by the expanded copy
    assert torch.allclose(d.probs.sum(-1), torch.ones(5))
    assert d.mask(torch.tensor([True, False, True, True, True])).log_prob(x)[1] == 0


def test_deferred_categorical_checks_the_shape_of_its_logits():
    d = DeferredCategorical(torch.Size([4]), 3, lambda: torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"compute\(\) must return logits of shape \(4, 3\), got \(4, 2\)"):
        d.sample()


def test_the_guided_mixture_never_computes_the_step_it_replaces(monkeypatch):
    env = ps.HyperGrid(2, 6)
    p1, p2 = exact_bases(env, 2, seed=4)
    clf = ps.ExactClassifier([p1, p2], 2)
    mix = ps.mixture(p1, p2).process
    computed = []
    original = type(mix)._mixture_logits
    monkeypatch.setattr(type(mix), "_mixture_logits", lambda self, s, r: computed.append(1) or original(self, s, r))
    with ps.sculpt_guidance(classifier=clf, y=(0, 1)):
        ps.run("x", mix, num_particles=50)
    assert not computed
    ps.run("x", mix, num_particles=50)  # unguided: the mixture's own steps are sampled
    assert computed
