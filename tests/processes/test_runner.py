import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Predictive

import pyro_sculpt as ps
from tests.conftest import random_gflownet


@pytest.fixture
def gfn():
    return random_gflownet(ps.HyperGrid(ndim=2, height=5))


def trajectory_log_prob(gfn, actions):
    """Log-probability of one action sequence under the policy, by hand."""
    env = gfn.env
    s = env.initial_state()
    total = 0.0
    for a in actions:
        total += float(gfn.action_log_probs(s)[a].detach())
        if a == env.stop_action:
            return total, s
        s = env.step(s, torch.tensor(a))
    raise AssertionError("trajectory did not stop")


def test_trace_has_one_site_per_step_and_sums_to_trajectory_log_prob(gfn):
    trace = poutine.trace(lambda: ps.run("x", gfn)).get_trace()
    sites = [s["name"] for s in ps.processes.step_sites(trace, "x")]
    actions = [int(trace.nodes[n]["value"]) for n in sites]
    assert sites == [f"x_{t}" for t in range(len(sites))]
    assert actions[-1] == gfn.env.stop_action and gfn.env.stop_action not in actions[:-1]
    expected, final = trajectory_log_prob(gfn, actions)
    trace.compute_log_prob()
    assert trace.log_prob_sum().item() == pytest.approx(expected, abs=1e-5)
    assert torch.equal(trace.nodes["_RETURN"]["value"], final)


def test_particle_plate_masks_stopped_trajectories(gfn):
    n = 300
    trace = poutine.trace(lambda: ps.run("x", gfn, num_particles=n)).get_trace()
    trace.compute_log_prob()
    steps = ps.processes.step_sites(trace, "x")
    actions = torch.stack([s["value"] for s in steps], -1)  # (n, T)
    assert actions.shape[0] == n
    per_particle = sum(s["log_prob"] for s in steps)
    for i in range(0, n, 37):
        acts = actions[i].tolist()
        acts = acts[: acts.index(gfn.env.stop_action) + 1]
        expected, final = trajectory_log_prob(gfn, acts)
        assert per_particle[i].item() == pytest.approx(expected, abs=1e-5)
        assert torch.equal(trace.nodes["_RETURN"]["value"][i], final)


def test_particle_plate_of_1000_is_one_vectorised_pass(gfn):
    calls = []
    handle = gfn.policy.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    try:
        trace = poutine.trace(lambda: ps.run("x", gfn, num_particles=1000)).get_trace()
    finally:
        handle.remove()
    n_steps = len(ps.processes.step_sites(trace, "x"))
    assert len(calls) == n_steps  # one network call per step, none per particle
    assert all(shape[0] <= 1000 for shape in calls)  # distinct states only
    assert trace.nodes["_RETURN"]["value"].shape == (1000, 2)
    gfn.deduplicate = False
    calls.clear()
    handle = gfn.policy.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    try:
        trace = poutine.trace(lambda: ps.run("x", gfn, num_particles=1000)).get_trace()
    finally:
        handle.remove()
    assert len(calls) == len(ps.processes.step_sites(trace, "x"))
    assert all(shape[0] == 1000 for shape in calls[1:])


def test_condition_on_step_sites(gfn):
    data = {"x_0": torch.tensor(1), "x_1": torch.tensor(1), "x_2": torch.tensor(gfn.env.stop_action)}
    x = poutine.condition(lambda: ps.run("x", gfn), data=data)()
    assert x.tolist() == [0, 2]


def test_replay_reproduces_trajectory(gfn):
    model = lambda: ps.run("x", gfn, num_particles=50)  # noqa: E731
    trace = poutine.trace(model).get_trace()
    replayed = poutine.trace(poutine.replay(model, trace=trace)).get_trace()
    assert torch.equal(trace.nodes["_RETURN"]["value"], replayed.nodes["_RETURN"]["value"])
    for site in ps.processes.step_sites(trace, "x"):
        assert torch.equal(site["value"], replayed.nodes[site["name"]]["value"])


def test_predictive_parallel(gfn):
    def model():
        return pyro.deterministic("terminal", ps.run("x", gfn, num_particles=20), event_dim=2)

    out = Predictive(model, num_samples=7, parallel=True, return_sites=["terminal", "x_0"])()
    # Predictive keeps a singleton dimension for the vectorised-samples plate
    terminal = out["terminal"].reshape(7, 20, 2)
    assert out["x_0"].reshape(7, 20).shape == (7, 20)
    assert not all(torch.equal(terminal[0], terminal[i]) for i in range(1, 7))  # independent draws
    valid = (terminal >= 0) & (terminal < gfn.env.height)
    assert valid.all()


def test_process_distribution_single_site(gfn):
    d = gfn.as_distribution()
    x = d.sample((500,))
    assert x.shape == (500, 2)
    states = gfn.env.all_states()
    assert d.log_prob(states).exp().sum().item() == pytest.approx(1.0, abs=1e-6)

    def model():
        with pyro.plate("n", 10):
            return pyro.sample("x", d)

    trace = poutine.trace(model).get_trace()
    assert trace.nodes["x"]["value"].shape == (10, 2)
    # a conditioned single site keeps its value: sample() never calls pyro.sample
    fixed = torch.tensor([[1, 2]]).expand(10, 2)
    tr = poutine.trace(poutine.condition(model, data={"x": fixed})).get_trace()
    tr.compute_log_prob()
    assert torch.allclose(tr.nodes["x"]["log_prob"], d.log_prob(fixed))


def test_reparam_expands_single_site_into_steps(gfn):
    d = gfn.as_distribution()

    @poutine.reparam(config={"x": ps.ProcessReparam()})
    def model():
        with pyro.plate("n", 64):
            return pyro.sample("x", d)

    trace = poutine.trace(model).get_trace()
    trace.compute_log_prob()
    assert "x_0" in trace.nodes and trace.nodes["x_0"]["value"].shape == (64,)
    assert trace.nodes["x"]["value"].shape == (64, 2)
    assert torch.all(trace.nodes["x"]["log_prob"] == 0)


def test_reparam_keeps_to_event_and_mask(gfn):
    d = gfn.as_distribution()

    @poutine.reparam(config={"x": ps.ProcessReparam(), "y": ps.ProcessReparam()})
    def model():
        x = pyro.sample("x", d.expand([5]).to_event(1))  # five trajectories, one event (it ran one before)
        keep = torch.tensor([True, False, False, True, False, False])
        with pyro.plate("n", 6):
            y = pyro.sample("y", d.mask(keep))  # the masked particles' steps must add nothing
        return x, y

    trace = poutine.trace(model).get_trace()
    trace.compute_log_prob()
    assert trace.nodes["x"]["value"].shape == (5, 2) and trace.nodes["x_0"]["value"].shape == (5,)
    assert trace.nodes["x"]["fn"].event_dim == 2
    steps = [site for name, site in trace.nodes.items() if name.startswith("y_") and site["type"] == "sample"]
    assert steps and all(bool((site["log_prob"][[1, 2, 4, 5]] == 0).all()) for site in steps)
    assert any(bool((site["log_prob"][[0, 3]] != 0).any()) for site in steps)


def test_run_names_its_bad_arguments(gfn):
    with pytest.raises(TypeError, match=r"process must be an IterativeProcess \(a distribution: pass its .process\)"):
        ps.run("x", gfn.as_distribution(), num_particles=3)
    with pytest.raises(ValueError, match=r"batch_shape must be a sequence of sizes >= 0, got \(-1,\)"):
        ps.run("x", gfn, batch_shape=(-1,))


def test_plain_sampler_matches_exact_distribution(gfn):
    from scipy.stats import chisquare

    env = gfn.env
    n = 20_000
    x = ps.sample(gfn, (n,))
    counts = torch.bincount(env.index(x), minlength=env.num_states).double()
    p = gfn.exact_terminal_distribution()
    keep = p * n >= 5
    expected = p[keep] * n
    stat = chisquare(counts[keep].numpy(), (expected / expected.sum() * counts[keep].sum()).numpy())
    assert stat.pvalue > 1e-3


def test_config_enumerate_leaves_the_steps_sampled_and_enumerates_the_labels():
    """Step sites carry infer={"enumerate": None}: under config_enumerate, TraceEnum_ELBO sums the model's latent
    ModelOfOrigin label out exactly and takes the steps from the guide (here the same process: the ELBO is 0)."""
    from pyro.infer import TraceEnum_ELBO, config_enumerate

    from tests.conftest import exact_bases

    p1, p2 = exact_bases(ps.HyperGrid(2, 4), 2, seed=1)
    clf = ps.ExactClassifier([p1, p2], 2)
    process = ps.mixture(p1, p2).process

    def model():
        with pyro.plate("n", 50):
            x = ps.run("x", process)
            pyro.sample("y", ps.ModelOfOrigin(clf, x))

    def guide():
        with pyro.plate("n", 50):
            ps.run("x", process)

    tr = poutine.trace(config_enumerate(model)).get_trace()
    assert tr.nodes["y"]["infer"]["enumerate"] == "parallel"
    assert all(s["infer"]["enumerate"] is None for name, s in tr.nodes.items() if name.startswith("x_"))
    pyro.set_rng_seed(0)
    loss = TraceEnum_ELBO(max_plate_nesting=1).loss(config_enumerate(model), guide)
    assert abs(loss) < 1e-4  # sum_y p(y | x) = 1, the steps' terms cancel (before: an AssertionError inside Pyro)
