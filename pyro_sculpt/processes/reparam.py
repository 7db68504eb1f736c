"""Expanding a single process site into one site per step."""

from __future__ import annotations

import torch
from pyro.distributions import Delta
from pyro.infer.reparam.reparam import Reparam

from pyro_sculpt.processes.distribution import ProcessDistribution
from pyro_sculpt.processes.runner import run


class ProcessReparam(Reparam):
    """Reparameterise a ``pyro.sample(name, ProcessDistribution(...))`` site into the process's step sites.

    The step sites ``{name}_0, {name}_1, ...`` are sampled (so handlers such as ``trace``, ``condition``, ``replay``
    and the guidance handler see every step) and the original site becomes a :class:`~pyro.distributions.Delta` at
    the terminal value, with zero log-density. Observed sites are left alone.

    Example::

        @poutine.reparam(config={"x": ProcessReparam()})
        def model():
            return pyro.sample("x", ProcessDistribution(gfn))
    """

    def apply(self, msg):
        fn, value = msg["fn"], msg["value"]
        if msg["is_observed"]:
            return {"fn": fn, "value": value, "is_observed": True}
        base = fn
        while hasattr(base, "base_dist") and not isinstance(base, ProcessDistribution):
            base = base.base_dist
        if not isinstance(base, ProcessDistribution):
            raise TypeError(
                f"ProcessReparam at site {msg['name']!r} expects a ProcessDistribution, got {type(fn).__name__}"
            )
        x = run(msg["name"], base.process, batch_shape=fn.batch_shape)
        event_dim = len(base.event_shape)
        new_fn = Delta(x, log_density=torch.zeros(x.shape[: x.dim() - event_dim]), event_dim=event_dim)
        return {"fn": new_fn, "value": x, "is_observed": True}
