"""Expanding a single process site into one site per step."""

from __future__ import annotations

import contextlib

import pyro.poutine as poutine
import torch
from pyro.distributions import Delta
from pyro.distributions.torch_distribution import MaskedDistribution
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
        wrappers, base = [], fn
        while hasattr(base, "base_dist") and not isinstance(base, ProcessDistribution):
            wrappers.append(base)
            base = base.base_dist
        if not isinstance(base, ProcessDistribution):
            raise TypeError(
                f"ProcessReparam at site {msg['name']!r} expects a ProcessDistribution, got {type(fn).__name__}"
            )
        # .to_event(k) reinterprets batch dimensions of the process's trajectories: they are still trajectories, run
        # at the base's whole batch shape; .mask(m) masks their step sites (m aligned with the wrapper's batch shape)
        mask, below = None, 0
        for wrapper in reversed(wrappers):  # from the process outwards
            if isinstance(wrapper, torch.distributions.Independent):
                below += wrapper.reinterpreted_batch_ndims
            elif isinstance(wrapper, MaskedDistribution):
                m = wrapper._mask
                if isinstance(m, torch.Tensor):
                    m = m.reshape(m.shape + (1,) * below)
                mask = m if mask is None else mask & m
        with poutine.mask(mask=mask) if mask is not None else contextlib.nullcontext():
            x = run(msg["name"], base.process, batch_shape=base.batch_shape)
        event_dim = len(fn.event_shape)
        new_fn = Delta(x, log_density=torch.zeros(x.shape[: x.dim() - event_dim]), event_dim=event_dim)
        return {"fn": new_fn, "value": x, "is_observed": True}
