"""The compositions as Pyro programs: the guidance handler, ModelOfOrigin under Importance, replay."""

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Importance

import pyro_sculpt as ps
from tests.conftest import exact_bases

ENV = ps.HyperGrid(2, 4)


def closed_form(bases, y, alpha=None):
    return ps.composition_distribution(torch.stack([b.exact_terminal_distribution() for b in bases]), y, alpha)


def test_handler_gives_the_guided_policy_at_every_step():
    p1, p2 = exact_bases(ENV, 2, seed=1)
    clf = ps.ExactClassifier([p1, p2], 2)
    mix = ps.mixture(p1, p2).process
    sculpted = ps.harmonic_mean(p1, p2, clf).process
    with ps.sculpt_guidance(classifier=clf, y=(0, 1)):
        trace = poutine.trace(lambda: ps.run("x", mix, num_particles=200)).get_trace()
    trace.compute_log_prob()
    steps = ps.processes.step_sites(trace, "x")
    total = sum(s["log_prob"] for s in steps)
    # replay the same actions through the sculpted process: the same per-particle log-probability
    data = {s["name"]: s["value"] for s in steps}
    tr2 = poutine.trace(poutine.condition(lambda: ps.run("x", sculpted, num_particles=200), data=data)).get_trace()
    tr2.compute_log_prob()
    total2 = sum(s["log_prob"] for s in ps.processes.step_sites(tr2, "x"))
    assert torch.allclose(total.double(), total2.double(), atol=1e-4)
    assert torch.equal(trace.nodes["_RETURN"]["value"], tr2.nodes["_RETURN"]["value"])


def test_handler_samples_the_composition():
    from scipy.stats import chisquare

    p1, p2 = exact_bases(ENV, 2, seed=2)
    clf = ps.ExactClassifier([p1, p2], 2)
    n = 20_000
    with ps.sculpt_guidance(classifier=clf, y=(0, 0)):
        x = ps.run("x", ps.mixture(p1, p2).process, num_particles=n)
    expected = closed_form([p1, p2], (0, 0))
    counts = torch.bincount(ENV.index(x), minlength=ENV.num_states).double()
    keep = expected * n >= 5
    f_exp = expected[keep] / expected[keep].sum() * counts[keep].sum()
    assert chisquare(counts[keep].numpy(), f_exp.numpy()).pvalue > 1e-3


def _labels_model(p1, p2, clf):
    """A Pyro model observing y = (0, 1) about one draw of the mixture of ``p1`` and ``p2``."""

    def model():
        x = pyro.sample("x", ps.mixture(p1, p2))
        pyro.sample("y1", ps.ModelOfOrigin(clf, x), obs=torch.tensor(0))
        pyro.sample("y2", ps.ModelOfOrigin(clf, x), obs=torch.tensor(1))
        return x

    return model


def test_model_of_origin_under_importance_matches_guided_sampler():
    p1, p2 = exact_bases(ENV, 2, seed=3)
    clf = ps.ExactClassifier([p1, p2], 2)

    model = _labels_model(p1, p2, clf)

    n = 1500  # the bound follows the ESS (4,000 took 38 s on the slower machine of 2026-12-02)
    posterior = Importance(model, num_samples=n).run()  # the mixture is the proposal
    xs = torch.stack([tr.nodes["x"]["value"] for tr in posterior.exec_traces])
    w = torch.softmax(torch.stack([torch.as_tensor(lw) for lw in posterior.log_weights]).double(), 0)
    est = torch.zeros(ENV.num_states, dtype=torch.float64).index_add_(0, ENV.index(xs), w)
    guided = ps.harmonic_mean(p1, p2, clf).process.exact_terminal_distribution()
    ess = 1 / (w**2).sum()
    l1 = ps.metrics.l1_distance(est, guided)
    assert l1 < 3 * ps.metrics.expected_l1_floor(guided, int(ess)), (l1, float(ess))


def test_model_of_origin_alpha_and_errors():
    p1, p2 = exact_bases(ENV, 2, seed=4)
    clf = ps.ExactClassifier([p1, p2], 2)
    x = ENV.all_states()
    q = ps.ModelOfOrigin(clf, x, alpha=0.2).probs
    a, b = p1.exact_terminal_distribution(), p2.exact_terminal_distribution()
    assert torch.allclose(q[:, 0].double(), 0.2 * a / (0.2 * a + 0.8 * b), atol=1e-6)
    with pytest.raises(ValueError, match="alpha must lie in"):
        ps.ModelOfOrigin(clf, x, alpha=1.0)
    with pytest.raises(ValueError, match="x must have shape"):
        ps.ModelOfOrigin(clf, torch.zeros(3, 5, dtype=torch.long))
    # diffusion values: NaN or inf is named (it gave all-NaN probabilities without validation)
    from pyro_sculpt.diffusion import GaussianMixtureOracle

    o1, o2 = (
        GaussianMixtureOracle(torch.tensor([[-1.0, 0.0]]), stds=0.5),
        GaussianMixtureOracle(torch.zeros(1, 2), stds=1.0),
    )
    gmc = ps.GaussianMixtureClassifier([o1, o2])
    bad = torch.tensor([[float("nan"), 0.0], [float("inf"), 1.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match=r"x must be finite, got 2 NaN or infinite entries"):
        ps.ModelOfOrigin(gmc, bad, validate_args=False)
    assert torch.isfinite(ps.ModelOfOrigin(gmc, bad[2:]).probs).all()


def test_guided_trace_replays():
    p1, p2 = exact_bases(ENV, 2, seed=5)
    clf = ps.ExactClassifier([p1, p2], 2)
    model = lambda: ps.run("x", ps.contrast(p1, p2, clf).process, num_particles=64)  # noqa: E731
    trace = poutine.trace(model).get_trace()
    replayed = poutine.trace(poutine.replay(model, trace=trace)).get_trace()
    assert torch.equal(trace.nodes["_RETURN"]["value"], replayed.nodes["_RETURN"]["value"])


def test_handler_raises_on_processes_it_cannot_guide_and_checks_its_classifier():
    p1, p2 = exact_bases(ENV, 2, seed=6)
    clf = ps.ExactClassifier([p1, p2], 2)
    trace = poutine.trace(lambda: ps.run("z", p1, num_particles=10)).get_trace()  # outside the handler: unguided
    assert isinstance(trace.nodes["z_0"]["fn"], pyro.distributions.Categorical)
    with pytest.raises(TypeError, match="site 'z_0' is a step of .*which cannot be guided"):
        with ps.sculpt_guidance(classifier=clf, y=(0, 1)):  # not a mixture: an error, never unguided in silence
            ps.run("z", p1, num_particles=10)
    with ps.sculpt_guidance(classifier=clf, y=(0, 1)):  # non-step sites are left alone
        pyro.sample("w", pyro.distributions.Normal(0.0, 1.0))
    three = ps.ExactClassifier(exact_bases(ENV, 3, seed=7), 2)
    with pytest.raises(ValueError, match="trained for 3 base models"):
        with ps.sculpt_guidance(classifier=three, y=(0, 1)):
            ps.run("x", ps.mixture(p1, p2).process, num_particles=4)


def test_sculpted_guide_makes_importance_weights_equal():
    p1, p2 = exact_bases(ENV, 2, seed=8)
    clf = ps.ExactClassifier([p1, p2], 2)

    def model():
        x = pyro.sample("x", ps.mixture(p1, p2))
        pyro.sample("y1", ps.ModelOfOrigin(clf, x), obs=torch.tensor(1))
        pyro.sample("y2", ps.ModelOfOrigin(clf, x, alpha=0.3), obs=torch.tensor(1))
        return x

    guide = ps.sculpted_guide(model)
    posterior = Importance(model, guide=guide, num_samples=300).run()
    logw = torch.stack([torch.as_tensor(w) for w in posterior.log_weights])
    assert (logw.max() - logw.min()).item() < 1e-4  # the guide is the exact posterior
    # and the constant weight is the evidence: log sum_x p_mix(x) p(y1|x) p(y2|x)
    q1, q2 = p1.exact_terminal_distribution(), p2.exact_terminal_distribution()
    evidence = (0.5 * (q1 + q2) * (0.5 * q2 / (0.5 * q1 + 0.5 * q2)) * (0.7 * q2 / (0.3 * q1 + 0.7 * q2))).sum()
    assert logw.mean().item() == pytest.approx(evidence.log().item(), abs=1e-4)


def test_sculpted_guide_errors():
    p1, p2 = exact_bases(ENV, 2, seed=9)
    clf = ps.ExactClassifier([p1, p2], 2)
    with pytest.raises(ValueError, match="exactly one site from ps.mixture"):
        ps.sculpted_guide(lambda: pyro.sample("x", p1.as_distribution()))
    with pytest.raises(ValueError, match="observes no ModelOfOrigin site"):
        ps.sculpted_guide(lambda: pyro.sample("x", ps.mixture(p1, p2)))
    other = ps.ExactClassifier([p1, p2], 2)

    def two_classifiers():
        x = pyro.sample("x", ps.mixture(p1, p2))
        pyro.sample("y1", ps.ModelOfOrigin(clf, x), obs=torch.tensor(0))
        pyro.sample("y2", ps.ModelOfOrigin(other, x), obs=torch.tensor(1))

    with pytest.raises(ValueError, match="uses another classifier than the first one"):
        ps.sculpted_guide(two_classifiers)


def test_sculpted_guide_needs_the_mixture_weights_as_the_first_prior_and_pads_unobserved():
    p1, p2 = exact_bases(ENV, 2, seed=8)
    clf = ps.ExactClassifier([p1, p2], 3)

    def model(weights=(0.5, 0.5), **first):
        x = pyro.sample("x", ps.mixture(p1, p2, weights=weights))
        pyro.sample("y1", ps.ModelOfOrigin(clf, x, **first), obs=torch.tensor(1))
        pyro.sample("y2", ps.ModelOfOrigin(clf, x), obs=torch.tensor(1))  # y3: not observed by the model
        return x

    # a first prior other than the weights has no sculpted guide (it used to be dropped in silence: L1 0.29)
    for weights, first in (((0.5, 0.5), {"prior": (0.9, 0.1)}), ((0.5, 0.5), {"alpha": 0.9}), ((0.2, 0.8), {})):
        with pytest.raises(ValueError, match="the first ModelOfOrigin observation has prior"):
            ps.sculpted_guide(model, weights, **first)
    guide = ps.sculpted_guide(model, (0.2, 0.8), prior=(0.2, 0.8))  # consistent: the guide is the posterior
    assert poutine.trace(guide).get_trace().nodes["x"]["fn"].process.obs.y == (1, 1, None)
    posterior = Importance(model, guide=guide, num_samples=200).run((0.2, 0.8), prior=(0.2, 0.8))
    logw = torch.stack([torch.as_tensor(w) for w in posterior.log_weights])
    assert (logw.max() - logw.min()).item() < 1e-4


def test_sculpted_guide_reads_one_pyro_param_alpha_used_at_several_sites():
    p1, p2 = exact_bases(ENV, 2, seed=9)
    clf = ps.ExactClassifier([p1, p2], 3)

    def model():
        a = pyro.param("a", torch.tensor(0.3), constraint=torch.distributions.constraints.unit_interval)
        x = pyro.sample("x", ps.mixture(p1, p2))
        pyro.sample("y1", ps.ModelOfOrigin(clf, x), obs=torch.tensor(0))
        pyro.sample("y2", ps.ModelOfOrigin(clf, x, alpha=a), obs=torch.tensor(1))
        pyro.sample("y3", ps.ModelOfOrigin(clf, x, alpha=a), obs=torch.tensor(1))
        return x

    guide = ps.sculpted_guide(model)  # two reads of the parameter: two tensors of one value, one alpha
    trace = poutine.trace(guide).get_trace()
    process = trace.nodes["x"]["fn"].process
    assert process.obs.y == (0, 1, 1) and abs(process.obs.alpha_value - 0.3) < 1e-6


def test_a_reused_guidance_handler_keeps_no_dead_process_alive():
    import gc
    import weakref

    p1, p2 = exact_bases(ENV, 2, seed=3)
    clf = ps.ExactClassifier([p1, p2], 2)
    seen = []

    @ps.sculpt_guidance(classifier=clf, y=(0, 1))
    def guide():
        mix = ps.mixture(p1, p2, weights=torch.tensor([0.5, 0.5])).process  # a new process per call (an SVI loop)
        seen.append(weakref.ref(mix))
        return ps.run("x", mix, num_particles=100)

    for _ in range(20):
        guide()
    gc.collect()
    assert sum(ref() is not None for ref in seen) <= 1  # all 20 were kept alive by the handler's cache before


def test_traces_of_pyro_elbos_with_provenance_tensors():
    # TraceGraph_ELBO wraps values in provenance tensors whose .shape is a plain tuple (no .numel())
    from pyro.infer import Trace_ELBO, TraceGraph_ELBO

    p1, p2 = exact_bases(ENV, 2, seed=3)
    clf = ps.ExactClassifier([p1, p2], 2)

    model = _labels_model(p1, p2, clf)

    guide = ps.sculpted_guide(model)
    q1, q2 = p1.exact_terminal_distribution().double(), p2.exact_terminal_distribution().double()
    exact = -float((0.5 * (q1 + q2) * (q1 / (q1 + q2)) * (q2 / (q1 + q2))).sum().log())
    for elbo in (Trace_ELBO(), TraceGraph_ELBO()):
        assert abs(elbo.loss(model, guide) - exact) < 1e-4


def test_a_plate_of_model_of_origin_labels_is_one_observation_per_entry():
    p1, p2 = exact_bases(ENV, 2, seed=3)
    clf = ps.ExactClassifier([p1, p2], 2)

    def model():
        x = pyro.sample("x", ps.mixture(p1, p2))
        with pyro.plate("obs", 2):
            pyro.sample("y", ps.ModelOfOrigin(clf, x), obs=torch.tensor([1, 1]))
        return x

    guide = ps.sculpted_guide(model)
    assert poutine.trace(guide).get_trace().nodes["x"]["fn"].process.obs.y == (1, 1)  # (1, None) before
    posterior = Importance(model, guide=guide, num_samples=200).run()
    logw = torch.stack([torch.as_tensor(w) for w in posterior.log_weights])
    assert (logw.max() - logw.min()).item() < 1e-4


def test_sculpted_guide_draws_the_models_other_latents_given_x():
    """An unobserved ModelOfOrigin label y2 after x: the guide draws it from the model given x, so that the weights
    stay those of x alone (equal, with an exact classifier) and the posterior of y2 is Bayes' exact one."""
    p1, p2 = exact_bases(ENV, 2, seed=1)
    clf = ps.ExactClassifier([p1, p2], 2)

    def model():
        x = pyro.sample("x", ps.mixture(p1, p2))
        pyro.sample("y1", ps.ModelOfOrigin(clf, x), obs=torch.tensor(0))
        return pyro.sample("y2", ps.ModelOfOrigin(clf, x))

    guide = ps.sculpted_guide(model)
    assert set(poutine.trace(guide).get_trace().stochastic_nodes) == {"x", "y2"}
    pyro.set_rng_seed(0)
    posterior = Importance(model, guide=guide, num_samples=4000).run()
    logw = torch.stack([torch.as_tensor(w) for w in posterior.log_weights])
    assert (
        logw.max() - logw.min()
    ).item() < 1e-4  # p(y2 | x) cancels (before: a spread of 3.5, p(y2 | x) in the weights)
    y2 = torch.stack([tr.nodes["y2"]["value"] for tr in posterior.exec_traces])
    q1, q2 = p1.exact_terminal_distribution(), p2.exact_terminal_distribution()
    exact = float((q1 * q1 / (q1 + q2)).sum() / q1.sum())  # P(y2 = 0 | y1 = 0): posterior of x is q1
    assert abs(float((y2 == 0).double().mean()) - exact) < 4 * (exact * (1 - exact) / 4000) ** 0.5
