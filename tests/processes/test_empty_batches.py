"""Empty batches (a zero in ``sample_shape``) and the checks of ``num_particles`` and ``sample_shape``."""

import pyro
import pyro.poutine as poutine
import pytest
import torch

import pyro_sculpt as ps
from pyro_sculpt.diffusion import AncestralSampler, DDIMSampler, GaussianMixtureOracle, TabulatedVPSchedule
from tests.conftest import exact_bases, random_gflownet

ENV = ps.HyperGrid(2, 4)


def _gflownet():
    return random_gflownet(ENV, hidden=16).as_distribution()


def _harmonic_mean():
    bases = exact_bases(ENV, 2, seed=0)
    return ps.harmonic_mean(*bases, ps.ExactClassifier(bases, 2))


def _oracle():
    return GaussianMixtureOracle(
        torch.tensor([[-1.0, 0.0], [1.0, 0.5]]), stds=0.4, schedule=TabulatedVPSchedule.linear(50)
    )


@pytest.mark.parametrize("make", [_gflownet, _harmonic_mean], ids=["GFlowNet", "harmonic_mean"])
def test_discrete_empty_batch(make):
    d = make()
    x = d.sample((0,))
    assert x.shape == (0, 2) and x.dtype == torch.long
    assert d.sample((3, 0)).shape == (3, 0, 2)
    lp = d.log_prob(x)
    assert lp.shape == (0,) and lp.dtype == torch.get_default_dtype()
    # the same distribution scores a non-empty batch exactly as before
    y = d.sample((5,))
    assert torch.allclose(d.log_prob(y).double().exp(), d.process.exact_terminal_distribution()[ENV.index(y)])


def test_empty_batch_keeps_the_shape_check():
    with pytest.raises(ValueError, match="event shape"):
        _gflownet().log_prob(torch.zeros(0, 3, dtype=torch.long))


def test_diffusion_empty_batch():
    oracle = _oracle()
    x = ps.ProcessDistribution(AncestralSampler(oracle, 20)).sample((0,))
    assert x.shape == (0, 2) and x.dtype == torch.get_default_dtype()
    ddim = ps.ProcessDistribution(DDIMSampler(oracle, 20, eta=0.0, log_prob_steps=10))
    assert ddim.sample((0,)).shape == (0, 2)
    assert ddim.log_prob(torch.zeros(0, 2)).shape == (0,)
    assert ddim.log_prob(torch.zeros(4, 0, 2)).shape == (4, 0)
    # a composition of diffusion models too
    other = GaussianMixtureOracle(torch.tensor([[0.0, 1.0]]), stds=0.5, schedule=oracle.schedule)
    clf = ps.GaussianMixtureClassifier([oracle, other], quadrature_points=4)
    hm = ps.harmonic_mean(DDIMSampler(oracle, 20, log_prob_steps=10), DDIMSampler(other, 20, log_prob_steps=10), clf)
    assert hm.sample((0,)).shape == (0, 2)
    assert hm.log_prob(torch.zeros(0, 2)).shape == (0,)


def test_sample_returns_the_initial_state_of_an_empty_batch():
    gfn = random_gflownet(ENV, hidden=16)
    x, state = ps.sample(gfn, (0,), return_state=True)
    assert x.shape == state.shape == (0, 2)


@pytest.mark.parametrize("n", [0, -1, 2.5, 1.0, "3", True])
def test_run_needs_a_positive_integer_number_of_particles(n):
    gfn = random_gflownet(ENV, hidden=16)
    with pytest.raises(ValueError, match="num_particles must be an integer >= 1"):
        poutine.trace(lambda: ps.run("x", gfn, num_particles=n)).get_trace()


def test_run_accepts_numpy_integers():
    import numpy as np

    gfn = random_gflownet(ENV, hidden=16)
    x = poutine.trace(lambda: ps.run("x", gfn, num_particles=np.int64(3))).get_trace().nodes["_RETURN"]["value"]
    assert x.shape == (3, 2)


@pytest.mark.parametrize("shape", [(-1,), (2.5,), 3, (2, -3), "10", torch.tensor([3])])
def test_sample_shape_must_be_a_tuple_of_non_negative_integers(shape):
    gfn = random_gflownet(ENV, hidden=16)
    with pytest.raises(ValueError, match="sample_shape must be a tuple of integers >= 0"):
        ps.sample(gfn, shape)
    with pytest.raises(ValueError, match="sample_shape must be a tuple of integers >= 0"):
        gfn.as_distribution().sample(shape)


def test_an_empty_distribution_in_a_pyro_program():
    """An empty batch also works inside a Pyro program (the site's distribution expanded to batch (0,))."""
    d = _gflownet().expand((0,))
    x = pyro.sample("x", d)
    assert x.shape == (0, 2) and d.log_prob(x).shape == (0,)
