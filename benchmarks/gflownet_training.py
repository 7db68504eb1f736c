"""Trajectory balance on the 32x32 grid: the reference recipe against ours, in the same process.

Reference (the sculpting paper's grid recipe): batch 16, Adam 1e-3, log Z 0.1, 5% exploration, 20,000 steps.
Ours: batch 128, Adam 2e-3, log Z 0.1, 5% exploration, 1,500 steps, cosine decay of both rates to 5%.
Both report the exact L1 (sum convention) to the reward distribution at checkpoints and at the end, and wall time.
Target: ours ends at L1 <= 0.05 on both rewards, in less wall time than the reference.

Run: ``OMP_NUM_THREADS=1 python benchmarks/gflownet_training.py [--reference-steps N]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402

from pyro_sculpt.experiments.train_grid import FAST_RECIPE, REFERENCE_RECIPE  # noqa: E402
from pyro_sculpt.gflownets import GFlowNet, exact
from pyro_sculpt.gflownets.envs.hypergrid import HyperGrid, rewards  # noqa: E402
from pyro_sculpt.metrics import l1_distance  # noqa: E402


def train(reward, recipe: dict, seed: int, checkpoints: int = 10):
    env = HyperGrid(2, 32)
    target = exact.reward_distribution(env, reward)
    gfn = GFlowNet(env, reward)
    trace = []
    t0 = time.perf_counter()
    paused = [0.0]

    def cb(step, g):
        t = time.perf_counter()
        trace.append((step, t - t0 - paused[0], l1_distance(g.exact_terminal_distribution(), target)))
        paused[0] += time.perf_counter() - t  # evaluation time is not training time

    gfn.fit(
        **recipe,
        seed=seed,
        progress_bar=False,
        callback=cb,
        callback_every=max(recipe["steps"] // checkpoints, 1),
    )
    return trace


def main(reference_steps: int = REFERENCE_RECIPE["steps"], seed: int = 0) -> dict:
    torch.set_num_threads(1)
    print(f"machine: {machine()}")
    out = {}
    for name, reward in (
        ("symmetric_shubert T=0.5", rewards.symmetric_shubert(0.5)),
        ("diagonal_sigmoid", rewards.diagonal_sigmoid()),
    ):
        ref = train(reward, dict(REFERENCE_RECIPE, steps=reference_steps), seed)
        ours = train(reward, FAST_RECIPE, seed)
        l1s = [c[2] for c in ref]
        print(f"{name}: reference recipe checkpoints L1 = " + ", ".join(f"{v:.3f}" for v in l1s))
        print(
            f"  reference: final L1 {ref[-1][2]:.4f} after {ref[-1][1]:.1f}s "
            f"(min {min(l1s):.4f}, max of the second half {max(l1s[len(l1s) // 2 :]):.4f})"
        )
        print(
            f"  ours:      final L1 {ours[-1][2]:.4f} after {ours[-1][1]:.1f}s "
            f"(wall-time ratio ours/reference {ours[-1][1] / ref[-1][1]:.3f})"
        )
        out[name] = {"reference": ref, "ours": ours}
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference-steps", type=int, default=REFERENCE_RECIPE["steps"])
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    main(a.reference_steps, a.seed)
