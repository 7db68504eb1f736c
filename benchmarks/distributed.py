"""Data-parallel scaling on CPU: 1 against 2 processes (a gloo group spawned here, one torch thread each).

* classifier training: steps per second of ``ObservationClassifier.fit`` on the 32x32 grid (two tabular bases, the
  grid experiment's fast settings: batch 128 trajectories per base per step, split over the processes), for the
  plain classifier (evaluated once per step on every state of the grid: a cost the split does not shrink) and the
  alpha-conditioned one (evaluated on the batch's states only), with the CPU time per step of each process;
* SMC: a 1,000,000-particle run of the classifier-free composition ``sculpt(bases, y=(0, 1))`` on the 32x32 grid
  (each process moves its share of the particles; statistics by all-reduce; the result gathered at the end).

The machine's load average is recorded before and after, since the cores may be shared: wall-clock ratios then
mix the method with the other load, and the CPU time per process tells them apart. Writes a JSON report.

Run: ``OMP_NUM_THREADS=1 python benchmarks/distributed.py [--particles 1000000] [--steps 60] [--out FILE]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402

import pyro_sculpt as ps  # noqa: E402
from pyro_sculpt.gflownets import TabularGFlowNet  # noqa: E402


def _bases():
    env = ps.HyperGrid(2, 32)
    return [
        TabularGFlowNet.from_reward(env, ps.rewards.symmetric_shubert(0.5)),
        TabularGFlowNet.from_reward(env, ps.rewards.diagonal_sigmoid()),
    ]


def _worker(rank: int, world_size: int, tmp: str, steps: int, particles: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world_size)
    try:
        world = ps.train.init_distributed()
        bases = _bases()
        out = {}
        with ps.train.distributed(world):
            for name, alpha in (("classifier", False), ("alpha_classifier", True)):
                clf = ps.ObservationClassifier.for_bases(bases, 2, alpha_conditioned=alpha)
                clf.fit(steps=3, batch_size=128, seed=0, progress_bar=False)  # warm-up
                world.barrier()
                t, c = time.perf_counter(), time.process_time()
                clf.fit(steps=steps, batch_size=128, lr=2e-3, ramp=400, seed=0, progress_bar=False)
                cpu = torch.tensor([time.process_time() - c], dtype=torch.float64)
                world.barrier()
                out[f"{name}_steps_per_second"] = steps / (time.perf_counter() - t)
                out[f"{name}_cpu_ms_per_step_per_process"] = float(world.all_reduce_(cpu)) / world_size / steps * 1e3
            d = ps.sculpt(bases, y=(0, 1))
            ps.infer.smc(d, 2000, seed=1)  # warm-up: the exact tables the composition caches
            world.barrier()
            t, c = time.perf_counter(), time.process_time()
            res = ps.infer.smc(d, particles, seed=0)
            cpu = torch.tensor([time.process_time() - c], dtype=torch.float64)
            world.barrier()
            out["smc_seconds"] = time.perf_counter() - t
            out["smc_cpu_seconds_per_process"] = float(world.all_reduce_(cpu)) / world_size
            out["smc_ess"] = res.ess
            out["smc_log_evidence"] = res.log_evidence
        if rank == 0:
            Path(tmp, "result.json").write_text(json.dumps(out))
    finally:
        dist.destroy_process_group()


def run(world_size: int, steps: int, particles: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(world_size, tmp, steps, particles), nprocs=world_size, join=True)
        return json.loads(Path(tmp, "result.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/distributed.json"))
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    report = {"machine": machine(), "load_before": os.getloadavg(), "runs": {}}
    for world_size in (1, 2):
        report["runs"][world_size] = run(world_size, args.steps, args.particles)
        print(world_size, report["runs"][world_size], flush=True)
    report["load_after"] = os.getloadavg()
    one, two = report["runs"][1], report["runs"][2]
    report["ratios"] = {
        **{
            f"{name}_steps_per_second_2_over_1": two[f"{name}_steps_per_second"] / one[f"{name}_steps_per_second"]
            for name in ("classifier", "alpha_classifier")
        },
        "smc_speedup_2_over_1": one["smc_seconds"] / two["smc_seconds"],
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
