"""Sequential Monte Carlo sharded over the processes of a :mod:`torch.distributed` world (docs/distributed.md).

Each process draws and moves its own particles; the statistics of the whole population come from all-reduces of
the log-weights, never from moving particles:

.. math::

    m = \\max_j \\log w_j, \\qquad S_1 = \\sum_j e^{\\log w_j - m}, \\qquad S_2 = \\sum_j e^{2 (\\log w_j - m)}, \\qquad
    \\mathrm{ESS} = S_1^2 / S_2, \\qquad \\log \\hat Z = m + \\log S_1 - \\log N,

one all-reduce of the maximum and one of the sums per step, whatever the number of particles.

Per-process resampling (the default) is the island particle filter of Vergé et al. (2015, "On parallel
implementation of sequential Monte Carlo methods: the island particle model"): each process resamples its own
particles when ITS effective sample size falls below the threshold, and its resampled particles keep the mean weight
of its shard, so that the weights of the whole population still estimate the normaliser: shard :math:`r` is exactly
the one-process SMC of its :math:`n_r` particles and its rank's seed, and the population's estimate is
:math:`\\hat Z = \\sum_r (n_r / N) \\hat Z_r`. Global resampling (``global_resampling=True``) resamples the whole
population when its ESS falls below the threshold: the log-weights are gathered, rank 0 draws the ancestors, and
each process fetches its new particles from the others (every process then holds all particles for a moment).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch

from pyro_sculpt.infer.diagnostics import (
    count_invalid_increments,
    effective_sample_size,
    invalid_increments_error,
    pareto_k,
)
from pyro_sculpt.infer.twist import Particles, Twist, index_particles
from pyro_sculpt.train.data_parallel import Distributed, distributed, seed_this_rank, shard_sizes
from pyro_sculpt.utils import progress


def global_log_sum_exp(world: Distributed, log_weights: torch.Tensor) -> float:
    """:math:`\\log \\sum_j w_j` over the log-weights of every process (two all-reduces of scalars)."""
    return _global_stats(world, log_weights, torch.zeros(0))[0]


def global_ess(world: Distributed, log_weights: torch.Tensor) -> float:
    """The effective sample size :math:`(\\sum_j w_j)^2 / \\sum_j w_j^2` of the log-weights of every process (two
    all-reduces of scalars); equal to :func:`~pyro_sculpt.infer.effective_sample_size` of the concatenated
    log-weights."""
    return _global_stats(world, log_weights, torch.zeros(0))[1]


def _global_max(world: Distributed, log_weights: torch.Tensor) -> float:
    local = log_weights.double().max().reshape(1) if log_weights.numel() else torch.full((1,), -math.inf)
    return float(world.all_reduce_(local.to(world.device, torch.float64), "max")[0])


def _global_stats(world: Distributed, log_weights: torch.Tensor, extra: torch.Tensor) -> tuple[float, float, list]:
    """``(log sum w, ESS, all-reduced sums of extra)`` over every process."""
    m = _global_max(world, log_weights)
    lw = log_weights.double().to(world.device)
    if m == -math.inf:
        sums = torch.zeros(2, dtype=torch.float64, device=world.device)
    else:
        sums = torch.stack([torch.exp(lw - m).sum(), torch.exp(2 * (lw - m)).sum()])
    buf = world.all_reduce_(torch.cat([sums, extra.to(world.device, torch.float64)]))
    s1, s2 = float(buf[0]), float(buf[1])
    if m == -math.inf:
        return -math.inf, 0.0, buf[2:].tolist()
    return m + math.log(s1), s1 * s1 / s2, buf[2:].tolist()


def _map_particles(fn: Callable[[torch.Tensor], torch.Tensor], particles: Particles) -> Particles:
    if isinstance(particles, torch.Tensor):
        return fn(particles)
    if isinstance(particles, tuple):
        return tuple(_map_particles(fn, p) for p in particles)
    if isinstance(particles, dict):
        return {k: _map_particles(fn, v) for k, v in particles.items()}
    raise TypeError(f"particles must be tensors, or tuples or dicts of tensors, got {type(particles).__name__}")


def _gather(world: Distributed, t: torch.Tensor) -> torch.Tensor:
    """``t`` of every process, concatenated in rank order (through the world's device, back to ``t``'s)."""
    return world.all_gather_rows(t.to(world.device)).to(t.device)


def _align_generators(world: Distributed) -> None:
    """Leave every process's global generators in one state (rank 0 draws a seed for all), so that a script that
    goes on after the SMC draws the same numbers on every rank, as it would after one process's SMC."""
    from pyro_sculpt.utils import set_seed

    draw = torch.randint(0, 2**32, (1,), dtype=torch.int64) if world.is_main else torch.zeros(1, dtype=torch.int64)
    set_seed(int(world.broadcast_(draw.to(world.device))[0]))


def sharded_smc(
    twist: Twist,
    num_particles: int,
    world: Distributed,
    *,
    resample_threshold: Optional[float],
    scheme: Callable[[torch.Tensor], torch.Tensor],
    global_resampling: bool = False,
    seed: Optional[int] = None,
    progress_bar: bool = False,
) -> dict[str, Any]:
    """The SMC loop of :func:`~pyro_sculpt.infer.smc` over the processes of ``world`` (called by
    :func:`~pyro_sculpt.infer.smc` with ``distributed=...``; every process calls it with the same arguments).

    :param num_particles: :math:`N`, the particles of the whole population; process :math:`r` draws
        :math:`n_r` of them (:func:`~pyro_sculpt.train.data_parallel.shard_sizes`).
    :param seed: the seed of the run; process :math:`r` draws with
        :func:`~pyro_sculpt.train.data_parallel.rank_seed` ``(seed, r)``.
    :returns: the fields of :class:`~pyro_sculpt.infer.SMCResult`, gathered on every process.
    """
    if getattr(twist, "rejuvenate_final", False):
        raise ValueError(
            "final rejuvenation moves (moves=...) are not supported by distributed SMC; run with distributed=False"
        )
    sizes = shard_sizes(num_particles, world.world_size)
    if min(sizes) < 1:
        raise ValueError(
            f"num_particles={num_particles} must be at least the world size {world.world_size} (one particle per "
            "process)"
        )
    n_local = sizes[world.rank]
    offset = sum(sizes[: world.rank])
    seed_this_rank(world, seed)
    log_n_local = math.log(n_local)
    ess_history: list = []
    resample_steps: list = []
    # a twist works on this process's particles: an SMC it runs inside (pilot runs) is this process's alone
    with torch.no_grad(), distributed(False):
        particles = twist.init(n_local)
        log_w: Optional[torch.Tensor] = None
        enabled = progress_bar and world.is_main
        for t in progress(range(twist.max_steps), enabled=enabled, total=twist.max_steps, desc="SMC"):
            particles, inc, done = twist.step(particles, t)
            inc = inc.double()
            bad = count_invalid_increments(inc)
            log_w = inc if log_w is None else log_w + inc
            # NaN and +inf counted apart (they would poison the sums), and out of the statistics
            counts = torch.tensor([float((~done).sum()), float(bad)], dtype=torch.float64)
            valid = torch.where(torch.isnan(log_w) | (log_w == math.inf), -math.inf, log_w)
            log_total, ess, (running, bad_all) = _global_stats(world, valid, counts)
            if bad_all:
                raise invalid_increments_error(int(bad_all), t, f" (over {world.world_size} processes)")
            if log_total == -math.inf or math.isnan(log_total):
                raise FloatingPointError(f"SMC: every particle has weight zero after step {t} (on every process)")
            ess_history.append(ess)
            if running == 0:
                break
            if resample_threshold is None:
                continue
            if global_resampling:
                if ess < resample_threshold * num_particles:
                    full = _gather(world, log_w)
                    ancestors = (
                        scheme(full).to(torch.int64) if world.is_main else torch.empty_like(full, dtype=torch.int64)
                    )
                    ancestors = world.broadcast_(ancestors.to(world.device)).to(log_w.device)
                    mine = ancestors[offset : offset + n_local]
                    particles = index_particles(_map_particles(lambda x: _gather(world, x), particles), mine)
                    log_w = torch.full_like(log_w, log_total - math.log(num_particles))
                    resample_steps.append(t)
                    particles = twist.rejuvenate(particles, t)  # MCMC moves, per particle (resample-move)
            elif (
                bool((~done).any())  # a shard whose particles are all done is finished: it resamples no more
                and bool(torch.isfinite(log_w).any())
                and effective_sample_size(log_w) < resample_threshold * n_local
            ):
                mean = float(torch.logsumexp(log_w, 0)) - log_n_local  # the shard keeps its total weight
                particles = index_particles(particles, scheme(log_w))
                log_w = torch.full_like(log_w, mean)
                resample_steps.append(t)
                particles = twist.rejuvenate(particles, t)
    assert log_w is not None
    x = _gather(world, twist.terminal(particles))
    full = _gather(world, log_w)
    norm = torch.logsumexp(full, 0)
    log_w_all = full - norm
    steps = sorted({s for per in world.all_gather_object(resample_steps) for s in per})
    _align_generators(world)
    return {
        "x": x,
        "log_weights": log_w_all,
        "ess_history": ess_history,
        "num_resamples": len(steps),
        "log_evidence": float(norm) - math.log(num_particles),
        "pareto_k": pareto_k(log_w_all),
        "resample_steps": steps,
    }
