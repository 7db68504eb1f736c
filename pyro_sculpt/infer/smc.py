"""Sequential Monte Carlo over any iterative process (docs/math.md §1.5).

Particles follow a :class:`~pyro_sculpt.infer.twist.Twist` (a proposal for every step with twisted incremental
weights), carry log-weights, and are resampled when the effective sample size falls below a threshold, never after
the last step. The result holds the weighted particles, the ESS history, the estimate of the log-normaliser and
Pareto :math:`\\hat k` of the final weights, and converts to ArviZ ``InferenceData`` and to a Pyro ``Empirical``
marginal.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch

from pyro_sculpt.infer.diagnostics import (
    count_invalid_increments,
    effective_sample_size,
    invalid_increments_error,
    pareto_k,
)
from pyro_sculpt.infer.resampling import get_scheme
from pyro_sculpt.infer.sharded import sharded_smc
from pyro_sculpt.infer.twist import ProcessProposal, Twist, index_particles
from pyro_sculpt.processes.distribution import ProcessDistribution
from pyro_sculpt.processes.process import IterativeProcess
from pyro_sculpt.train.data_parallel import DistributedLike, resolve_distributed
from pyro_sculpt.utils import check_positive_int, progress, set_seed

#: the resampling threshold of twists that do not set their own
DEFAULT_RESAMPLE_THRESHOLD = 0.5


@dataclass
class SMCResult:
    """Weighted particles and diagnostics of :func:`smc`.

    :ivar x: ``(N,) + event_shape`` terminal values.
    :ivar log_weights: ``(N,)`` final log-weights, normalised to log-sum-exp 0.
    :ivar ess_history: effective sample size after each step, before its resampling decision.
    :ivar num_resamples: how many times the particles were resampled.
    :ivar log_evidence: estimate of the log-normaliser :math:`\\log \\mathbb E_M[\\gamma / M]` of the target.
    :ivar pareto_k: Pareto :math:`\\hat k` of the final weights (reliable below 0.7).
    :ivar resample_steps: the steps after which the particles were resampled.

    Example::

        res = ps.infer.smc(ps.harmonic_mean(p1, p2), 10_000)  # an SMCResult
        res.ess, res.pareto_k, res.log_evidence
        x = res.resample(1000)  # equally weighted samples
        marginal = res.empirical()  # a Pyro Empirical
    """

    x: torch.Tensor
    log_weights: torch.Tensor
    ess_history: list = field(default_factory=list)
    num_resamples: int = 0
    log_evidence: float = 0.0
    pareto_k: float = float("nan")
    resample_steps: list = field(default_factory=list)

    @property
    def num_particles(self) -> int:
        return int(self.log_weights.shape[0])

    @property
    def weights(self) -> torch.Tensor:
        """Normalised weights ``(N,)``."""
        return self.log_weights.exp()

    @property
    def ess(self) -> float:
        """Effective sample size of the final weights, :math:`1 / \\sum_j \\bar w_j^2`."""
        return effective_sample_size(self.log_weights)

    def distribution(self, env) -> torch.Tensor:
        """Weighted empirical distribution over ``env.all_states()`` (enumerable environments)."""
        w = self.log_weights.exp().double()
        out = torch.zeros(env.num_states, dtype=torch.float64, device=w.device)
        return out.index_add_(0, env.index(self.x), w)

    def resample(self, num_samples: Optional[int] = None, resampling: str = "systematic") -> torch.Tensor:
        """Equally weighted samples drawn from the weighted particles, in random order.

        :param num_samples: how many (default: the number of particles).
        :param resampling: ``"systematic"`` (default: each particle drawn :math:`\\lfloor n w_i \\rfloor` or
            :math:`\\lceil n w_i \\rceil` times, the least added noise; equal weights return every particle once) or
            ``"multinomial"`` (independent draws).
        """
        idx = get_scheme(resampling)(self.log_weights, num_samples)  # (the scheme validates num_samples)
        idx = idx[torch.randperm(idx.shape[0], device=idx.device)]
        return self.x[idx]

    def empirical(self):
        """The weighted particles as a Pyro :class:`~pyro.distributions.Empirical` marginal."""
        from pyro.distributions import Empirical

        return Empirical(self.x, self.log_weights.to(torch.get_default_dtype()))

    def to_inference_data(self, var_name: str = "x"):
        """ArviZ ``InferenceData``: the particles as one chain of draws, with the log-weights and the ESS history in
        ``sample_stats`` and the scalar diagnostics in its attributes."""
        import arviz as az
        import numpy as np

        x = self.x.detach().cpu().numpy()
        stats = {"log_weight": self.log_weights.detach().cpu().double().numpy()[None]}
        idata = az.from_dict(posterior={var_name: x[None]}, sample_stats=stats)
        idata.sample_stats.attrs.update(
            {
                "log_evidence": self.log_evidence,
                "pareto_k": self.pareto_k,
                "ess": self.ess,
                "num_resamples": self.num_resamples,
                "ess_history": np.asarray(self.ess_history, dtype=float),
            }
        )
        return idata


def as_twist(target: Any, **options) -> Twist:
    """The twist of ``target``: itself if it is a :class:`Twist`, the process's own (``process.twist(**options)``)
    if it has one, else the process's steps unweighted (:class:`ProcessProposal`).

    Example::

        twist = ps.infer.as_twist(ps.harmonic_mean(p1, p2, clf), terminal="classifier")
        res = ps.infer.smc(twist, 10_000)
    """
    if isinstance(target, Twist):
        if options:
            raise ValueError(f"options {sorted(options)} apply to a process, not to a Twist")
        return target
    if isinstance(target, ProcessDistribution):
        target = target.process
    if not isinstance(target, IterativeProcess):
        raise TypeError(
            f"target must be an IterativeProcess, its distribution, or a Twist; got {type(target).__name__}"
        )
    make = getattr(target, "twist", None)
    twist = make(**options) if make is not None else None
    if twist is None:
        if options:
            raise ValueError(f"{target!r} has no twist, so options {sorted(options)} do not apply")
        twist = ProcessProposal(target)
    return twist


def smc(
    target: Any,
    num_particles: int,
    *,
    resample_threshold: Union[float, None, str] = "auto",
    resampling: str = "systematic",
    seed: Optional[int] = None,
    progress_bar: bool = False,
    distributed: DistributedLike = None,
    global_resampling: bool = False,
    **twist_options,
) -> SMCResult:
    """Sequential Monte Carlo over an iterative process.

    :param target: a :class:`~pyro_sculpt.infer.twist.Twist`, or a process (or its distribution) whose own twist is
        used (a sculpted GFlowNet or diffusion model: its classifier), or any process (unweighted).
    :param num_particles: number of particles.
    :param resample_threshold: resample when the ESS falls below this fraction of the particles, in (0, 1];
        ``None`` for sequential importance sampling without resampling; ``"auto"`` (default): the twist's own
        ``resample_threshold`` attribute where it has one (measured per family, e.g. 0.9 for composed diffusion
        models), else 0.5.
    :param resampling: ``"systematic"`` or ``"multinomial"``.
    :param seed: seed of the global generators.
    :param progress_bar: show a progress bar over steps (on rank 0 only in a distributed run).
    :param distributed: shard the particles over the processes of a :mod:`torch.distributed` world
        (docs/distributed.md; :mod:`pyro_sculpt.infer.sharded`): ``None`` (default) follows the active
        :func:`pyro_sculpt.train.distributed` context (one process outside one), ``False``: one process, ``True``:
        the default process group (initialised from ``torchrun``'s environment if needed), or a
        :class:`~pyro_sculpt.train.Distributed`. Every process calls ``smc`` with the same arguments;
        ``num_particles`` is the whole population, each process draws its share with its rank's seed; the ESS
        history, the log-normaliser and Pareto :math:`\\hat k` are those of the whole population (all-reduces of the
        log-weights); the particles and weights are gathered at the end, so every process returns the same result.
    :param global_resampling: in a distributed run, resample the whole population when its ESS falls below the
        threshold (particles move between processes); ``False`` (default): each process resamples its own particles
        when their ESS falls below the threshold (no particle moves).
    :param twist_options: passed to the process's ``twist(...)`` (e.g. ``terminal="classifier"``).

    Example::

        hm = ps.harmonic_mean(p1, p2, clf)
        res = ps.infer.smc(hm, 100_000)
        res.ess, res.log_evidence, res.pareto_k
        idata = res.to_inference_data()
    """
    n = check_positive_int("num_particles", num_particles)
    auto = isinstance(resample_threshold, str) and resample_threshold == "auto"
    if not auto and resample_threshold is not None:
        value = resample_threshold
        if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype == torch.bool:
            value = value.item()  # a 0-d tensor
        if isinstance(value, (str, bool)) or not isinstance(value, numbers.Real) or not 0.0 < value <= 1.0:
            raise ValueError(f"resample_threshold must lie in (0, 1], be None or 'auto', got {resample_threshold!r}")
        resample_threshold = float(value)
    scheme = get_scheme(resampling)
    twist = as_twist(target, **twist_options)
    if auto:
        resample_threshold = getattr(twist, "resample_threshold", DEFAULT_RESAMPLE_THRESHOLD)
    world = resolve_distributed(distributed)
    if not isinstance(global_resampling, bool):
        raise ValueError(f"global_resampling must be True or False, got {global_resampling!r}")
    if world is not None:
        if world.emulated:
            raise ValueError(
                "smc shards particles over real processes; Distributed.single_process worlds are for training "
                "(run smc with distributed=False, or launch with torchrun)"
            )
        fields = sharded_smc(
            twist, n, world, resample_threshold=resample_threshold, scheme=scheme,
            global_resampling=global_resampling, seed=seed, progress_bar=progress_bar,
        )  # fmt: skip
        return SMCResult(**fields)
    set_seed(seed)
    log_n = math.log(n)
    ess_history: list = []
    resample_steps: list = []
    log_evidence = 0.0
    with torch.no_grad():
        particles = twist.init(n)
        log_w: Optional[torch.Tensor] = None
        for t in progress(range(twist.max_steps), enabled=progress_bar, total=twist.max_steps, desc="SMC"):
            particles, inc, done = twist.step(particles, t)
            inc = inc.double()
            bad = count_invalid_increments(inc)
            if bad:
                raise invalid_increments_error(bad, t)
            log_w = inc if log_w is None else log_w + inc
            if not bool(torch.isfinite(log_w).any()):
                raise FloatingPointError(f"SMC: every particle has weight zero after step {t}")
            ess = effective_sample_size(log_w)
            ess_history.append(ess)
            last = bool(done.all())
            if last:
                break
            if resample_threshold is not None and ess < resample_threshold * n:
                log_evidence += float(torch.logsumexp(log_w, 0)) - log_n
                particles = index_particles(particles, scheme(log_w))
                log_w = torch.zeros_like(log_w)
                resample_steps.append(t)
                particles = twist.rejuvenate(particles, t)
        assert log_w is not None
        if twist.rejuvenate_final:  # moves that target the final distribution need equally weighted particles
            log_evidence += float(torch.logsumexp(log_w, 0)) - log_n
            particles = index_particles(particles, scheme(log_w))
            log_w = torch.zeros_like(log_w)
            resample_steps.append(t)
            particles = twist.rejuvenate(particles, t)
            # systematic resampling lists each ancestor's copies side by side: return them in random order, as
            # resample() does, so that any subset (the first k) is a fair one; the moves' values are unchanged
            particles = index_particles(particles, torch.randperm(n, device=log_w.device))
    norm = torch.logsumexp(log_w, 0)
    log_evidence += float(norm) - log_n
    log_w = log_w - norm
    x = twist.terminal(particles)
    return SMCResult(x, log_w, ess_history, len(resample_steps), log_evidence, pareto_k(log_w), resample_steps)
