"""Sharded SMC over two real processes (a spawned gloo group): each process's shard is the one-process SMC of its
particles and its rank's seed, and the population's ESS, log-normaliser and Pareto k are those of one process on the
same particles; global resampling; errors."""

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import pyro_sculpt as ps
from pyro_sculpt.infer import effective_sample_size, pareto_k, smc
from pyro_sculpt.infer.resampling import systematic
from pyro_sculpt.infer.sharded import global_ess, global_log_sum_exp, sharded_smc
from pyro_sculpt.train import Distributed, init_distributed
from pyro_sculpt.train.data_parallel import rank_seed, shard_sizes
from tests.conftest import exact_bases

ENV = ps.HyperGrid(2, 6)
N = 3001  # not a multiple of the world size: shards of 1501 and 1500 particles
SEED = 5


def _target():
    return ps.sculpt(exact_bases(ENV, 2, seed=21), y=(0, 1))  # classifier-free: weights that vary, resampling


class _Delegating(ps.infer.Twist):
    """The target's own twist, for tests to override one method of."""

    def __init__(self):
        self.inner = ps.infer.as_twist(_target())
        self.max_steps = self.inner.max_steps

    def init(self, n):
        return self.inner.init(n)

    def step(self, particles, t):
        return self.inner.step(particles, t)

    def terminal(self, particles):
        return self.inner.terminal(particles)


def _worker(rank: int, world_size: int, tmp: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world_size)
    try:
        world = init_distributed()
        d = _target()
        out = {
            "local": smc(d, N, seed=SEED, distributed=world, resample_threshold=0.9),
            "sis": smc(d, N, seed=SEED, distributed=world, resample_threshold=None),
            "global": smc(d, N, seed=SEED, distributed=world, resample_threshold=0.9, global_resampling=True),
        }
        lw = torch.linspace(-3.0, 2.0, 11).double() ** 2  # the helpers on this rank's half of a known vector
        half = lw[:6] if rank == 0 else lw[6:]
        out["helpers"] = (global_ess(world, half), global_log_sum_exp(world, half))
        try:
            smc(d, 1, distributed=world)
        except ValueError as err:
            out["error"] = str(err)
        torch.save({k: (v.__dict__ if hasattr(v, "__dict__") else v) for k, v in out.items()}, f"{tmp}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


@pytest.mark.slow
def test_sharded_smc_matches_one_process_on_the_same_particles(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for key in ("local", "sis", "global"):  # gathered: every process returns the same result
        assert torch.equal(r0[key]["x"], r1[key]["x"]) and torch.equal(r0[key]["log_weights"], r1[key]["log_weights"])
        assert r0[key]["ess_history"] == r1[key]["ess_history"] and r0[key]["log_evidence"] == r1[key]["log_evidence"]
    d = _target()
    sizes = shard_sizes(N, 2)
    assert sizes == [1501, 1500]
    for key, threshold in (("local", 0.9), ("sis", None)):
        res = r0[key]
        # shard r is the one-process SMC of its particles with its rank's seed
        refs = [smc(d, n, seed=rank_seed(SEED, r), resample_threshold=threshold) for r, n in enumerate(sizes)]
        assert torch.equal(res["x"], torch.cat([ref.x for ref in refs]))
        # the population: shard r carries its normaliser estimate, log Z_r + log n_r
        carried = torch.cat([ref.log_weights + ref.log_evidence + math.log(n) for ref, n in zip(refs, sizes)])
        assert _rel(res["log_evidence"], float(torch.logsumexp(carried, 0)) - math.log(N)) < 1e-6
        assert _rel(res["ess_history"][-1], effective_sample_size(carried)) < 1e-6
        assert _rel(effective_sample_size(res["log_weights"]), effective_sample_size(carried)) < 1e-6
        k = pareto_k(carried)
        assert res["pareto_k"] == k or _rel(res["pareto_k"], k) < 1e-6  # inf when resampling left too short a tail
        steps = sorted(set(refs[0].resample_steps) | set(refs[1].resample_steps))
        assert res["resample_steps"] == steps and res["num_resamples"] == len(steps)
    assert r0["local"]["num_resamples"] > 0 and r0["sis"]["num_resamples"] == 0
    # every run estimates the exact normaliser of the composition
    probs = torch.stack([b.exact_terminal_distribution() for b in exact_bases(ENV, 2, seed=21)])
    exact_log_z = float(torch.logsumexp(d.process.operator(probs.T.double().log()), 0))
    target = ps.composition_distribution(probs, (0, 1), None)
    for key in ("local", "sis", "global"):
        assert abs(r0[key]["log_evidence"] - exact_log_z) < 0.05, key
        res = ps.infer.SMCResult(**{k: r0[key][k] for k in ("x", "log_weights")})
        l1 = ps.metrics.l1_distance(res.distribution(ENV), target)
        assert l1 < 2.5 * ps.metrics.expected_l1_floor(target, N) * math.sqrt(N / min(r0[key]["ess_history"])), key
    assert r0["global"]["num_resamples"] > 0
    # the all-reduced helpers equal the one-process statistics of the whole vector
    lw = torch.linspace(-3.0, 2.0, 11).double() ** 2
    assert _rel(r0["helpers"][0], effective_sample_size(lw)) < 1e-12
    assert _rel(r0["helpers"][1], float(torch.logsumexp(lw, 0))) < 1e-12
    assert "num_particles=1 must be at least the world size 2" in r0["error"]


def test_sharded_smc_argument_errors():
    with pytest.raises(ValueError, match="Distributed.single_process worlds are for training"):
        smc(_target(), 10, distributed=Distributed.single_process(2))
    with pytest.raises(ValueError, match="global_resampling must be True or False"):
        smc(_target(), 10, global_resampling="yes")
    with pytest.raises(TypeError, match="distributed must be None, True, False"):
        smc(_target(), 10, distributed="gloo")


def test_sharded_smc_applies_the_twists_moves_after_each_resampling(tmp_path):
    """A one-process gloo group (fast): the twist's ``rejuvenate`` runs after every resampling, as in one process."""
    calls = []

    class Counting(_Delegating):
        def rejuvenate(self, particles, t):
            calls.append(t)
            return particles

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/rendezvous", rank=0, world_size=1)
    try:
        # (smc runs a one-process world without sharding: call the sharded loop itself)
        out = sharded_smc(
            Counting(), 2000, init_distributed(), resample_threshold=0.9, scheme=systematic,
            global_resampling=False, seed=SEED, progress_bar=False,
        )  # fmt: skip
    finally:
        dist.destroy_process_group()
    assert out["num_resamples"] > 0 and calls == out["resample_steps"]


class _NaNAtStep2(_Delegating):
    """The target's twist, with a NaN incremental log-weight for particle 0 at step 2 (on every process)."""

    def step(self, particles, t):
        particles, inc, done = self.inner.step(particles, t)
        if t == 2:
            inc = inc.double().clone()
            inc[0] = math.nan
        return particles, inc, done


def _small_worker(rank: int, world_size: int, tmp: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world_size)
    try:
        world = init_distributed()
        out = {}
        # 4 particles: the shards finish at different steps (a finished shard must not resample again)
        out["small"] = smc(_target(), 4, seed=20, distributed=world, resample_threshold=0.9).__dict__
        out["draw"] = torch.rand(3)  # after a sharded SMC every rank draws the same numbers
        try:
            smc(_NaNAtStep2(), 10, seed=0, distributed=world)
        except FloatingPointError as err:
            out["nan"] = str(err)
        torch.save(out, f"{tmp}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_finished_shards_stop_resampling_ranks_draw_alike_and_nan_weights_are_named(tmp_path):
    mp.spawn(_small_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    refs = [smc(_target(), n, seed=rank_seed(20, r), resample_threshold=0.9) for r, n in enumerate(shard_sizes(4, 2))]
    assert torch.equal(r0["small"]["x"], torch.cat([ref.x for ref in refs]))  # each shard: its one-process SMC
    assert r0["small"]["resample_steps"] == sorted(set(refs[0].resample_steps) | set(refs[1].resample_steps))
    assert torch.equal(r0["draw"], r1["draw"])
    for r in (r0, r1):  # not "every particle has weight zero": 8 of the 10 are finite
        assert "step 2 gave 2 particle(s) (over 2 processes) a NaN or +inf incremental log-weight" in r["nan"]
    with pytest.raises(FloatingPointError, match="step 2 gave 1 particle\\(s\\) a NaN or \\+inf"):
        smc(_NaNAtStep2(), 10, seed=0)
