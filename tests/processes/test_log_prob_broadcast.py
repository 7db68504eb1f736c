"""``ProcessDistribution.log_prob`` broadcasts a value with the distribution's batch shape, as torch distributions do
(one value observed inside a plate)."""

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

import pyro_sculpt as ps
from tests.conftest import exact_bases, random_gflownet

ENV = ps.HyperGrid(2, 4)


def test_log_prob_broadcasts_with_the_batch_shape():
    p1, p2 = exact_bases(ENV, 2, seed=0)
    mix = ps.mixture(p1, p2)
    x = torch.tensor([1, 2])
    one = mix.log_prob(x)
    assert one.shape == ()
    assert torch.equal(mix.expand([3]).log_prob(x), one.expand(3))
    many = torch.tensor([[[0, 1]], [[1, 2]], [[3, 3]], [[2, 0]]])  # (4, 1, 2)
    lp = mix.expand([3]).log_prob(many)
    assert lp.shape == (4, 3) and torch.equal(lp[:, 0], mix.log_prob(many[:, 0]))
    with pytest.raises(ValueError, match="does not broadcast with the distribution's shape"):
        ps.ProcessDistribution(p1, validate_args=False).expand([3]).log_prob(torch.zeros(4, 2, dtype=torch.long))


def test_one_observation_in_a_plate_scores_once_per_plate_entry():
    p1, p2 = exact_bases(ENV, 2, seed=0)
    mix = ps.mixture(p1, p2)
    x = torch.tensor([1, 2])

    def model():
        with pyro.plate("data", 3):
            pyro.sample("x", mix, obs=x)

    loss = Trace_ELBO().loss(model, lambda: None)
    assert abs(loss + 3 * float(mix.log_prob(x))) < 1e-4


def test_batch_shapes_are_checked_as_torch_checks_them():
    d = ps.ProcessDistribution(random_gflownet(ps.HyperGrid(2, 3), seed=0))
    assert d.expand([3]).expand([2, 3]).batch_shape == (2, 3) and d.expand([3, 1]).expand([3, 4]).batch_shape == (3, 4)
    with pytest.raises(ValueError, match=r"batch_shape \(2,\) is not an expansion of \(3,\)"):
        d.expand([3]).expand([2])
    for bad in ((-1,), (-3,), (2.5,)):
        with pytest.raises(ValueError, match="batch_shape must be a tuple of integers >= 0"):
            d.expand(bad)
        with pytest.raises(ValueError, match="batch_shape must be a tuple of integers >= 0"):
            ps.ProcessDistribution(d.process, batch_shape=bad)
