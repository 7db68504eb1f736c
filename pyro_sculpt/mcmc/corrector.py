"""MCMC correctors of a reverse-diffusion run, as a Pyro effect handler (docs/math.md §2; Du et al. 2023; docs/mcmc.md).

Reverse diffusion on a composition (summed scores of a product) is biased even with exact models: the sum of the
noised factors' scores is not the score of the noised product. The fix of Du et al. (2023) is MCMC at every noise
level, targeting the level's composed density :math:`\\pi_t \\propto \\exp\\Phi(\\log q_{1,t}, \\dots, \\log q_{m,t})`.
:class:`CorrectorMessenger` does this around :func:`pyro_sculpt.run` of a diffusion process: before every reverse
step that starts from a noise level :math:`t`, it moves the step's input state with ``num_steps`` steps of a batched
kernel (ULA, MALA, U-HMC, HMC; :mod:`pyro_sculpt.mcmc`) targeting :math:`\\pi_t`, and rebuilds the step's distribution
from the moved state. Every random number of a corrector step is a Pyro sample site: a kernel step is a deterministic
function of its standard normal proposal noise or momentum and, for the Metropolis-adjusted kernels, of the uniform of
its test (auxiliary-variable form, like a :mod:`pyro.infer.reparam` reparameterisation). So a trace records the whole
run; replaying or conditioning the sites reproduces it; plates broadcast the sites like the step sites; and the site's
annotation carries the moved state, so that a guidance handler applied after the corrector
(``with sculpt_guidance(...): with corrector(...): ps.run(...)``) guides the step from the moved particles.

Sites of the corrector before step ``t`` of the run under ``name``: ``{name}_{t}_corrector_{k}_{draw}``, ``k`` the
kernel step at that level and ``draw`` one of ``"proposal"``, ``"momentum"``, ``"accept"`` (and
``"initial_momentum"`` at step 0 of the Hamiltonian kernels), annotated with
``infer={"pyro_sculpt_corrector": {"t", "level", "step", "draw"}}``.

The protocol a process implements to be corrected (duck-typed: reverse-diffusion samplers, classifier-free
compositions and diffusion mixtures do): ``corrector_level(t)`` (the noise level of step ``t``'s input, or ``None``
for a step whose input is not corrected), ``corrector_position(state)``, ``corrector_state(state, x, t)`` and
``corrector_models()`` (``(models, operator)`` for :func:`~pyro_sculpt.mcmc.operator_target`, or ``None`` when the
handler needs an explicit ``target``).

The last level (the run's output) is not corrected: the handler acts on a step before it is drawn.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import pyro
import pyro.distributions as dist
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from pyro_sculpt.mcmc.base import LogProbAndGrad, NoiseSource, StepSize, noise_source
from pyro_sculpt.mcmc.rejuvenation import Rejuvenation
from pyro_sculpt.mcmc.targets import operator_target
from pyro_sculpt.processes.runner import replace_step_dist

#: the ``infer`` key of corrector sites
CORRECTOR_INFER = "pyro_sculpt_corrector"


class PyroNoise(NoiseSource):
    """A :class:`~pyro_sculpt.mcmc.base.NoiseSource` whose every draw is a Pyro sample site (standard normal or
    uniform), shaped by the particles' batch shape (the enclosing plates) and event shape, named
    ``{prefix}_{k}_{draw}``: ``k`` counts the kernel steps (a draw whose name was already drawn at this step starts the
    next one; every kernel draws each name at most once per step, and a Hamiltonian kernel's ``init`` draws
    ``"initial_momentum"``, a site of step 0).

    :param prefix: the sites' name prefix.
    :param batch_shape: the particles' batch shape (the kernels see them flattened to one dimension).
    :param event_shape: the shape of one particle.
    :param info: added to every site's ``infer[CORRECTOR_INFER]``.

    Example::

        with ps.mcmc.noise_source(ps.mcmc.PyroNoise("x_3_corrector", (1000,), (2,))):
            state, info = kernel.step(state)      # its draws are the sites x_3_corrector_0_proposal, ...
    """

    def __init__(self, prefix: str, batch_shape: torch.Size, event_shape: torch.Size, info: Optional[dict] = None):
        self.prefix = prefix
        self.batch_shape = torch.Size(batch_shape)
        self.event_shape = torch.Size(event_shape)
        self.info = dict(info or {})
        self.step = 0
        self._drawn: set = set()

    def _site(self, draw: str, fn) -> torch.Tensor:
        if draw in self._drawn:  # every kernel draws each name at most once per step: a repeat starts the next step
            self.step += 1
            self._drawn = set()
        self._drawn.add(draw)
        infer = {CORRECTOR_INFER: {**self.info, "step": self.step, "draw": draw}}
        return pyro.sample(f"{self.prefix}_{self.step}_{draw}", fn, infer=infer)

    def normal(self, like: torch.Tensor, name: str) -> torch.Tensor:
        shape = self.batch_shape + self.event_shape
        zero = torch.zeros((), dtype=like.dtype, device=like.device)
        fn = dist.Normal(zero, torch.ones_like(zero)).expand(shape).to_event(len(self.event_shape))
        return self._site(name, fn).reshape(like.shape)

    def uniform(self, shape: torch.Size, device: torch.device, name: str) -> torch.Tensor:
        zero = torch.zeros((), dtype=torch.float64, device=device)
        value = self._site(name, dist.Uniform(zero, torch.ones_like(zero)).expand(self.batch_shape))
        return value.reshape(shape)


class CorrectorMessenger(Messenger):
    """MCMC correctors at every noise level of a reverse-diffusion run (see the module docstring).

    :param kernel: ``"mala"``, ``"hmc"``, ``"ula"``, ``"uhmc"`` or an :class:`~pyro_sculpt.mcmc.base.MCMCKernel`
        subclass.
    :param num_steps: kernel steps per level: a number (>= 1) or a function of the level's noise time returning an
        integer >= 0 (as :class:`~pyro_sculpt.mcmc.Rejuvenation`; a level with 0 steps is left alone).
    :param step_size: the initial step size (adapted across levels towards ``target_accept`` when ``adapt``, as in
        :class:`~pyro_sculpt.mcmc.Rejuvenation`; reset at every entry of the handler).
    :param target_accept: in (0, 1); ``None``: the kernel's default.
    :param adapt: adapt the step size after every kernel step (constant gain ``rate``).
    :param rate: the adapter's gain.
    :param target: ``None`` (default): the level target from the process (``corrector_models()``:
        :func:`~pyro_sculpt.mcmc.operator_target` of its models and operator at the level; exact log-densities, or
        a score-only target for score-only models, which MALA and HMC refuse unless ``line_integral=K`` is given);
        or a callable ``target(level) -> LogProbAndGrad`` (e.g. a sculpting operator's target for a guided mixture).
    :param sites: make every draw a Pyro sample site (default); ``False``: draw from torch's generator (no sites;
        for timing the handler's overhead).
    :param kernel_options: passed to the kernel (``num_leapfrog``, ``persistence``, ``line_integral``).

    After a run, :attr:`history` holds one record per corrected level (``level``, mean ``step_size``, mean
    ``accept_rate``, ``num_divergent`` moves) and :attr:`num_evaluations` the target evaluations per particle;
    :func:`~pyro_sculpt.mcmc.diagnostics.level_diagnostics` turns them into ArviZ data.

    Example::

        dist = ps.product(EulerMaruyamaSampler(ring, 100), EulerMaruyamaSampler(gauss, 100))
        with ps.mcmc.corrector(kernel="mala", num_steps=5, step_size=0.05) as corr:
            x = ps.run("x", dist.process, num_particles=4000)
        corr.history[-1]       # {'level': ..., 'step_size': ..., 'accept_rate': ..., 'num_divergent': 0}
    """

    def __init__(
        self,
        kernel: Union[str, type] = "mala",
        num_steps: Union[int, Callable[[float], int]] = 5,
        step_size: StepSize = 0.05,
        *,
        target_accept: Optional[float] = None,
        adapt: bool = True,
        rate: float = 0.5,
        target: Optional[Callable[[float], LogProbAndGrad]] = None,
        sites: bool = True,
        **kernel_options: Any,
    ):
        super().__init__()
        if "when" in kernel_options:
            raise ValueError(
                "when applies to SMC moves (Rejuvenation); a corrector moves the particles before every step that has "
                "a noise level, so it takes no when"
            )
        self.moves = Rejuvenation(
            kernel, num_steps, step_size, target_accept=target_accept, adapt=adapt, rate=rate, **kernel_options
        )
        if target is not None and not callable(target):
            raise TypeError(f"target must be None or a callable level -> target, got {target!r}")
        if not isinstance(sites, bool):
            raise ValueError(f"sites must be True or False, got {sites!r}")
        self.target = target
        self.sites = sites

    def __repr__(self) -> str:
        return f"CorrectorMessenger({self.moves!r}, sites={self.sites})"

    def __enter__(self):
        self.moves.reset()
        return super().__enter__()

    @property
    def history(self) -> list:
        """One record per corrected level: ``{"level", "step_size", "accept_rate", "num_divergent"}``."""
        return self.moves.history

    @property
    def num_evaluations(self) -> int:
        """Target evaluations per particle in the correctors so far (since the handler was entered)."""
        return self.moves.num_evaluations

    def _level_target(self, process: Any, level: float, name: str) -> LogProbAndGrad:
        if self.target is not None:
            return self.target(level)
        spec = process.corrector_models()
        if spec is None:
            raise ValueError(
                f"corrector at site {name!r}: {process!r} has no level target of its own (e.g. a mixture whose target "
                "depends on the guidance around it): pass target=lambda level: ps.mcmc.operator_target(...)"
            )
        models, operator = spec
        return operator_target(models, level, operator)

    def _pyro_sample(self, msg) -> None:
        if site_is_subsample(msg) or msg["done"] or msg["is_observed"]:
            return
        info = (msg.get("infer") or {}).get("pyro_sculpt")
        if info is None:
            return
        process, t, state = info["process"], info["t"], info["state"]
        level_of = getattr(process, "corrector_level", None)
        if level_of is None:
            raise TypeError(
                f"corrector: site {msg['name']!r} is a step of {process!r}, which cannot be corrected (it implements "
                "no corrector_level/corrector_state: correctors apply to diffusion samplers and their compositions)"
            )
        level = level_of(t)
        if level is None or self.moves.steps_at(level) == 0:
            return
        target = self._level_target(process, level, msg["name"])
        x = process.corrector_position(state)
        event = process.event_shape
        batch = x.shape[: x.dim() - len(event)]
        flat = x.reshape((-1,) + tuple(event))
        source = None
        if self.sites:
            source = PyroNoise(f"{msg['name']}_corrector", batch, event, {"t": t, "level": level})
        with noise_source(source):
            moved = self.moves.move(flat, target, level=level).x
        new_state = process.corrector_state(state, moved.reshape(x.shape), t)
        msg["fn"] = replace_step_dist(msg["fn"], process.step_dist(new_state, t))
        msg["infer"] = {**msg["infer"], "pyro_sculpt": {**info, "state": new_state, "corrected_from": state}}


def corrector(
    fn=None,
    kernel: Union[str, type] = "mala",
    num_steps: Union[int, Callable[[float], int]] = 5,
    step_size: StepSize = 0.05,
    **options: Any,
):
    """Function form of :class:`CorrectorMessenger`, in the style of :mod:`pyro.poutine` handlers.

    Example::

        def model():
            return ps.run("x", ps.product(s1, s2).process, num_particles=4000)

        trace = pyro.poutine.trace(ps.mcmc.corrector(model, kernel="hmc", num_steps=2, num_leapfrog=3)).get_trace()
    """
    msngr = CorrectorMessenger(kernel, num_steps, step_size, **options)
    return msngr(fn) if fn is not None else msngr
