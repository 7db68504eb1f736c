"""A guide for a Pyro model written with :class:`ModelOfOrigin` observations: the sculpted (guided) composition."""

from __future__ import annotations

from typing import Callable

import pyro
import pyro.poutine as poutine
import torch

from pyro_sculpt.processes.distribution import ProcessDistribution
from pyro_sculpt.sculpting.model_of_origin import ModelOfOrigin
from pyro_sculpt.sculpting.observations import Observations, check_weights
from pyro_sculpt.sculpting.operators import sculpt


def _unwrap(fn):
    while not isinstance(fn, ProcessDistribution) and hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return fn


def process_of(site: dict):
    """The mixture process sampled at ``site``."""
    return _unwrap(site["fn"]).process


def _check_first_prior(site: dict, process) -> None:
    """The first observation's prior must be the mixture's weights: the sculpted distribution's :math:`y_1` is the
    mixture's component (Garipov et al. 2023, §3), so another prior has no sculpted guide."""
    fn = site["fn"]
    m = fn.classifier.num_models
    if fn.alpha is not None:
        prior = Observations.build((None, None), m, alpha=fn.alpha).log_priors()[1].exp()
    else:
        prior = check_weights(fn.prior, m, "prior")
    weights = check_weights(process.weights, m).detach().double().cpu()
    prior = prior.detach().double().cpu()
    if not torch.allclose(prior, weights, atol=1e-6, rtol=0.0):
        shown = [round(float(v), 6) for v in prior]
        raise ValueError(
            f"site {site['name']!r}: the first ModelOfOrigin observation has prior {shown}, but the mixture's "
            f"weights are {[round(float(v), 6) for v in weights]}; its y_1 is the mixture's "
            "component, so the sculpted guide needs prior=weights there (the default prior is uniform): give the "
            "first site prior=the weights, or the mixture weights=that prior"
        )


def sculpted_guide(model: Callable, *args, **kwargs) -> Callable:
    """Read a model's composition and return the guided sampler of it as a Pyro guide.

    The model draws ``x`` from :func:`~pyro_sculpt.sculpting.mixture` (at a site outside any plate) and observes
    :class:`ModelOfOrigin` sites on it. One trace of the model (with ``args, kwargs``) finds the mixture's site,
    the observed values :math:`y_1, \\dots, y_n` in order, the classifier, and the prior :math:`\\alpha` of
    :math:`y_{2..n}`; the returned guide samples that site from ``sculpt(bases, classifier, y, alpha, weights)``.
    With an exact classifier the guide *is* the posterior, so Pyro's importance weights are all equal. The first
    observation's prior must be the mixture's weights (its :math:`y_1` is the mixture's component; the default prior
    is uniform); observations the classifier has but the model does not observe are unobserved (``None``). The
    model's other latent sites (an unobserved ``ModelOfOrigin`` label, latents of its own) are drawn, after ``x``,
    from the model given ``x``: the guide runs the model once more with ``x`` conditioned and its observations
    hidden, so that their prior terms cancel in the importance weights.

    :param model: the Pyro model.
    :returns: a guide with the model's signature.

    Example::

        def model():
            x = pyro.sample("x", ps.mixture(p1, p2))
            pyro.sample("y1", ps.ModelOfOrigin(clf, x), obs=torch.tensor(0))
            pyro.sample("y2", ps.ModelOfOrigin(clf, x), obs=torch.tensor(1))

        posterior = Importance(model, guide=ps.sculpted_guide(model), num_samples=1000).run()
    """
    trace = poutine.trace(model).get_trace(*args, **kwargs)
    mixtures, observations = [], []
    for site in trace.nodes.values():
        if site["type"] != "sample":
            continue
        fn = _unwrap(site["fn"])
        if isinstance(fn, ProcessDistribution) and getattr(fn.process, "is_mixture", False) and not site["is_observed"]:
            mixtures.append(site)
        elif isinstance(site["fn"], ModelOfOrigin) and site["is_observed"]:
            observations.append(site)
    if len(mixtures) != 1:
        raise ValueError(f"model must sample exactly one site from ps.mixture(...), found {len(mixtures)}")
    x_site = mixtures[0]
    if x_site["cond_indep_stack"]:
        raise ValueError(f"the mixture site {x_site['name']!r} must not be inside a plate for sculpted_guide")
    if not observations:
        raise ValueError("model observes no ModelOfOrigin site: nothing to sculpt")
    classifier = observations[0]["fn"].classifier
    y, alphas = [], set()
    for k, site in enumerate(observations):
        fn = site["fn"]
        if fn.classifier is not classifier:
            raise ValueError(f"ModelOfOrigin site {site['name']!r} uses another classifier than the first one")
        values = [int(v) for v in site["value"].reshape(-1).tolist()]  # a plate of labels: one observation each
        if k == 0:
            _check_first_prior(site, process_of(x_site))
        elif fn.prior is not None:
            raise ValueError(f"site {site['name']!r}: observations after the first take alpha=..., not prior=...")
        if k > 0 or len(values) > 1:  # entries after the very first: their prior is the alpha of y_2..y_n
            if fn.prior is not None:  # the first site's plate, with prior=weights (checked)
                if fn.classifier.num_models != 2:
                    raise ValueError(
                        f"site {site['name']!r}: a plate of first observations with a prior needs two bases (its "
                        "later entries then have alpha = prior[0]); give it no prior (uniform weights) instead"
                    )
                alpha = float(check_weights(fn.prior, 2, "prior")[0])
            else:
                # by value: a pyro.param read at two sites is two tensor objects of one value (the sculpted guide
                # treats alpha as a constant, see ps.sculpt)
                alpha = None if fn.alpha is None else float(torch.as_tensor(fn.alpha).detach())
            alphas.add(alpha)
        y += values
    if len(alphas) > 1:
        raise ValueError(f"every observation after the first must share one alpha, got {sorted(map(str, alphas))}")
    process = process_of(x_site)
    y += [None] * (getattr(classifier, "num_observations", len(y)) - len(y))  # observations the model leaves out
    dist = sculpt(process.base_processes, classifier, tuple(y), alphas.pop() if alphas else None, process.weights)
    name = x_site["name"]
    others = [
        s["name"] for s in trace.nodes.values() if s["type"] == "sample" and not s["is_observed"] and s["name"] != name
    ]
    if not others:

        def guide(*args, **kwargs):
            return pyro.sample(name, dist)

        return guide

    def hidden(site: dict) -> bool:  # the model's observations, and x, which the guide has drawn already
        return site["is_observed"] or site["name"] == name

    def guide_with_latents(*args, **kwargs):
        # the model's other latent sites (an unobserved ModelOfOrigin label, a latent of its own) come from the
        # model given x: a guide without them would leave their p(. | x) in the importance weights as if observed
        x = pyro.sample(name, dist)
        with poutine.block(hide_fn=hidden):
            poutine.condition(model, data={name: x})(*args, **kwargs)
        return x

    return guide_with_latents
