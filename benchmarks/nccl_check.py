"""The NCCL path on one GPU: ``torchrun --standalone --nproc_per_node 1 benchmarks/nccl_check.py``.

Joins the torchrun group (NCCL where CUDA is available, else gloo), fits a GFlowNet on the 32x32 grid for 300 steps
inside ``ps.train.distributed`` (one gradient all-reduce per step) on the rank's device, and times the sharded
classifier-free SMC of the harmonic mean of two exact grid GFlowNets at 100,000 and 1,000,000 particles (two runs
each: the first includes the CUDA warm-up). Prints each figure.
"""

import time

import torch

import pyro_sculpt as ps
from pyro_sculpt.gflownets import TabularGFlowNet


def main() -> None:
    world = ps.train.init_distributed()
    dev = world.device
    print(f"backend {world.backend}, device {dev}, world size {world.world_size}", flush=True)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    env = ps.HyperGrid(2, 32)
    with ps.train.distributed(world):
        t = time.perf_counter()
        ps.GFlowNet(env, ps.rewards.symmetric_shubert(0.5), device=dev).fit(
            steps=300, batch_size=128, seed=0, progress_bar=False
        )
        sync()
        print(f"GFlowNet fit, 300 steps: {time.perf_counter() - t:.1f} s", flush=True)
        rewards = (ps.rewards.symmetric_shubert(0.5), ps.rewards.diagonal_sigmoid())
        bases = [TabularGFlowNet.from_reward(env, r).to(dev) for r in rewards]
        for n in (100_000, 1_000_000):
            for rep in range(2):
                t = time.perf_counter()
                res = ps.infer.smc(ps.sculpt(bases, y=(0, 1)), n, seed=rep, progress_bar=False)
                sync()
                print(
                    f"classifier-free SMC (HM), {n:,} particles, run {rep}: {time.perf_counter() - t:.2f} s, "
                    f"ESS {float(res.ess):,.0f}",
                    flush=True,
                )
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
