"""The exact GFlowNet classifier computes in float64 and answers in the default dtype, like a learned one."""

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import TraceEnum_ELBO, config_enumerate

import pyro_sculpt as ps
from tests.conftest import exact_bases

ENV = ps.HyperGrid(2, 4)


def test_outputs_follow_the_default_dtype():
    bases = exact_bases(ENV, 2, seed=0)
    clf = ps.ExactClassifier(bases, 2)
    states = ENV.all_states()
    assert clf.terminal_logits(states).dtype == torch.float32
    obs = ps.Observations.build((0, 1), 2)
    terminal = torch.zeros(len(states), dtype=torch.bool)
    assert clf.log_joint(states, terminal, obs).dtype == torch.float32
    # the values are the float64 tables', rounded
    old = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        exact = clf.terminal_logits(states)
        assert exact.dtype == torch.float64
    finally:
        torch.set_default_dtype(old)
    assert torch.allclose(clf.terminal_logits(states).double(), exact, rtol=1e-6, atol=1e-6)


def test_model_of_origin_runs_under_trace_enum_elbo():
    """A Pyro model that observes the model of origin of an enumerated choice of states, next to float32 data."""
    bases = exact_bases(ENV, 2, seed=1)
    clf = ps.ExactClassifier(bases, 2)
    candidates = torch.tensor([[0, 0], [3, 1], [2, 3]])
    data = torch.tensor([0.3, -0.2])

    @config_enumerate
    def model():
        probs = pyro.param("probs", torch.ones(3) / 3, constraint=dist.constraints.simplex)
        k = pyro.sample("k", dist.Categorical(probs))
        pyro.sample("y", ps.ModelOfOrigin(clf, candidates[k]), obs=torch.tensor(0))
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(k.to(data.dtype), 1.0), obs=data)

    def guide():
        pass

    loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(model, guide)
    assert loss.dtype == torch.float32
    # the exact marginal: -log sum_k p(k) p(y=0 | x_k) prod_j N(data_j; k, 1)
    q = torch.softmax(clf.terminal_logits(candidates).double(), -1)[:, 0]
    normal = dist.Normal(torch.arange(3.0).double().unsqueeze(-1), 1.0).log_prob(data.double()).sum(-1)
    expected = -torch.logsumexp(torch.log(torch.ones(3, dtype=torch.float64) / 3) + q.log() + normal, 0)
    assert torch.allclose(loss.double(), expected, atol=1e-5)
