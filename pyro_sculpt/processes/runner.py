"""Running an iterative process: inside a Pyro program (one sample site per step) or as a plain torch loop."""

from __future__ import annotations

from typing import Optional, Union

import pyro
import torch
from pyro.distributions import TorchDistribution
from pyro.distributions.torch_distribution import MaskedDistribution

from pyro_sculpt.processes.process import IterativeProcess, State, leaf_event_dims
from pyro_sculpt.utils import check_positive_int, check_sample_shape


def step_site_name(name: str, t: int) -> str:
    """The name of the sample site of step ``t`` of the process run under ``name``.

    Example::

        ps.processes.step_site_name("x", 3)  # the name of step 3 of ps.run("x", ...)
    """
    return f"{name}_{t}"


def run(
    name: str,
    process: IterativeProcess,
    num_particles: Optional[int] = None,
    *,
    particle_dim: Optional[int] = None,
    batch_shape: torch.Size = torch.Size(),
    return_state: bool = False,
):
    """Run ``process`` inside a Pyro program, one named sample site per step.

    The sites are called ``{name}_0``, ``{name}_1``, ... and sit inside :class:`pyro.markov`. Steps of trajectories
    that have already stopped are masked (``log_prob`` zero) and leave the state unchanged, so the log-probabilities
    of a trace sum to each trajectory's log-probability. The loop ends when every trajectory has stopped.

    Each site carries ``infer={"pyro_sculpt": {"process", "state", "t"}}`` so that effect handlers (for instance the
    guidance handler) can replace the step's distribution.

    :param name: base name of the step sites.
    :param process: the process to run.
    :param num_particles: if given, run inside a ``pyro.plate`` of that many particles named ``{name}_particles``
        (an integer >= 1: Pyro has no plate of size zero; :func:`sample` accepts an empty batch); otherwise the
        enclosing plates set the batch shape.
    :param particle_dim: the plate's ``dim`` (default: Pyro's choice, the next free dimension on the left).
    :param batch_shape: expand the initial state to this batch shape (for a process distribution that was
        expanded); plates broadcast it further.
    :param return_state: also return the final state.
    :returns: the terminal values, of shape ``plates + process.event_shape``.
    :raises ValueError: if ``num_particles`` is not an integer >= 1 or ``batch_shape`` has a negative size.
    :raises TypeError: if ``process`` is not an :class:`IterativeProcess` (e.g. a distribution: pass its ``.process``).

    The step sites are not enumerable: a state depends on every earlier action, not on the last one only, so
    ``pyro.markov`` here orders the sites but declares no finite history to sum over. They carry
    ``infer={"enumerate": None}``, which ``config_enumerate`` keeps: it enumerates the model's other discrete sites
    (a ``ModelOfOrigin`` label) and leaves the steps sampled (``infer_discrete``) or to the guide (``TraceEnum_ELBO``).

    Example::

        def model():
            return ps.run("x", gfn, num_particles=1000)

        trace = pyro.poutine.trace(model).get_trace()
    """
    if not isinstance(process, IterativeProcess):
        hint = " (a distribution: pass its .process)" if hasattr(process, "process") else ""
        raise TypeError(f"process must be an IterativeProcess{hint}, got {type(process).__name__}")
    try:
        batch_shape = torch.Size(batch_shape)
    except TypeError:
        raise ValueError(f"batch_shape must be a sequence of sizes >= 0, got {batch_shape!r}") from None
    if any(d < 0 for d in batch_shape):
        raise ValueError(f"batch_shape must be a sequence of sizes >= 0, got {tuple(batch_shape)}")
    if num_particles is not None:
        num_particles = check_positive_int("num_particles", num_particles, 1)
        with pyro.plate(f"{name}_particles", num_particles, dim=particle_dim):
            return run(name, process, batch_shape=batch_shape, return_state=return_state)
    state: State = process.init()
    if batch_shape:
        state = expand_state(state, torch.Size(batch_shape), process.state_event_dims)
    done = torch.tensor(False)
    for t in pyro.markov(range(process.max_steps)):
        fn = process.step_dist(state, t)
        if t > 0:
            fn = fn.mask(~done)
        infer = process.site_infer(state, t)
        infer.setdefault("enumerate", None)  # config_enumerate leaves the steps sampled (see the docstring)
        value = pyro.sample(step_site_name(name, t), fn, infer=infer)
        new_state = process.transition(state, value, t)
        state = process.keep_done(done, state, new_state) if t > 0 else new_state
        done = done | process.stops(state, value, t)
        if bool(done.all()):
            break
    x = process.terminal(state)
    return (x, state) if return_state else x


def replace_step_dist(fn: TorchDistribution, new_fn: TorchDistribution) -> TorchDistribution:
    """``new_fn`` in place of a step site's distribution ``fn``, keeping ``fn``'s mask (trajectories that already
    stopped) and batch shape (enclosing plates). Effect handlers that replace a step's distribution use this.

    Example::

        # inside a Messenger's _pyro_sample(self, msg), for a step site:
        msg["fn"] = ps.processes.replace_step_dist(msg["fn"], new_step_distribution)
    """
    mask = None
    if isinstance(fn, MaskedDistribution):
        mask, fn = fn._mask, fn.base_dist
    if new_fn.batch_shape != fn.batch_shape:
        new_fn = new_fn.expand(fn.batch_shape)
    return new_fn.mask(mask) if mask is not None else new_fn


def step_sites(trace, name: Optional[str] = None) -> list[dict]:
    """The step sites of a Pyro trace, in order; only those of the process run under ``name`` if given.

    Example::

        trace = pyro.poutine.trace(lambda: ps.run("x", gfn, num_particles=10)).get_trace()
        sites = ps.processes.step_sites(trace, "x")  # one per step, in order
    """
    out = []
    for site in trace.nodes.values():
        info = site.get("infer", {}).get("pyro_sculpt") if site["type"] == "sample" else None
        if info is not None and (name is None or site["name"] == step_site_name(name, info["t"])):
            out.append(site)
    return out


def sample(process: IterativeProcess, sample_shape: torch.Size = torch.Size(), *, return_state: bool = False):
    """Sample terminal values from ``process`` with a plain vectorised torch loop (no Pyro effects).

    :param sample_shape: batch shape of the particles, a tuple of integers >= 0. A zero entry gives an empty batch of
        shape ``sample_shape + process.event_shape``, without running a step.
    :param return_state: also return the final state.
    :raises ValueError: if ``sample_shape`` is not a tuple of integers >= 0.

    Example::

        x = ps.sample(gfn, (1000,))      # (1000, state_dim)
        ps.sample(gfn, (0,)).shape       # (0, state_dim)
    """
    sample_shape = check_sample_shape("sample_shape", sample_shape)
    state = expand_state(process.init(), sample_shape, process.state_event_dims)
    if sample_shape.numel() == 0:
        # nothing to sample; the steps are skipped (torch distributions cannot validate empty parameters)
        x = process.terminal(state)
        return (x, state) if return_state else x
    done = torch.zeros(sample_shape, dtype=torch.bool)
    with torch.no_grad():
        for t in range(process.max_steps):
            fn = process.step_dist(state, t)
            value = fn.sample()
            new_state = process.transition(state, value, t)
            state = process.keep_done(done.to(_device(state)), state, new_state)
            done = done.to(_device(state)) | process.stops(state, value, t)
            if bool(done.all()):
                break
    x = process.terminal(state)
    return (x, state) if return_state else x


def _device(state: State) -> torch.device:
    return state[0].device if isinstance(state, tuple) else state.device


def expand_state(state: State, shape: torch.Size, event_dims: Union[int, tuple[int, ...]]) -> State:
    """An unbatched ``state`` expanded (and copied) to the batch shape ``shape``; ``event_dims`` is the process's
    :attr:`~IterativeProcess.state_event_dims` (one int, or one per leaf of a tuple state)."""
    if isinstance(state, tuple):
        dims = leaf_event_dims(event_dims, len(state))
        return tuple(expand_state(s, shape, d) for s, d in zip(state, dims))
    event_dims = leaf_event_dims(event_dims, None)
    event = state.shape[state.dim() - event_dims :] if event_dims else torch.Size()
    return state.expand(shape + event).clone()
