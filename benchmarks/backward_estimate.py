"""Cost of the backward importance estimate of a GFlowNet's terminal log-probability
(:func:`pyro_sculpt.gflownets.backward.estimate_terminal_log_prob`), as a ratio to sampling the same number of
objects forward with the same policy, in one process:

1. the 32x32 grid (HyperGrid, an MLP policy);
2. fragment molecules (the default 72-fragment vocabulary, at most 9 fragments, the environment's own policy network).

One trajectory per object (K = 1): K trajectories cost K times as much.

Run: ``OMP_NUM_THREADS=1 python benchmarks/backward_estimate.py``
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import interleaved, machine  # noqa: E402

import pyro_sculpt as ps  # noqa: E402


def compare(name: str, gfn, n: int, repeats: int) -> float:
    dist = gfn.as_distribution()
    torch.manual_seed(0)
    x = dist.sample((n,))
    t = interleaved(
        {"sample": lambda: dist.sample((n,)), "estimate": lambda: gfn.estimate_terminal_log_prob(x, 1)}, repeats
    )
    ratio = t["estimate"] / t["sample"]
    print(
        f"{name}: {n} objects sampled forward {t['sample']:.2f} s, one backward trajectory each and its estimate "
        f"{t['estimate']:.2f} s, ratio {ratio:.2f}"
    )
    return ratio


def main(repeats: int = 3) -> dict:
    torch.set_num_threads(1)
    print(f"machine: {machine()}")
    torch.manual_seed(0)
    grid = ps.GFlowNet(ps.HyperGrid(2, 32), "symmetric_shubert")
    out = {"grid": compare("32x32 grid", grid, 10_000, repeats)}
    try:
        from pyro_sculpt.gflownets.envs.fragments import FragmentEnv
    except ImportError:  # the mol extra
        return out
    mol = ps.GFlowNet(FragmentEnv(), "qed", policy="env")
    out["fragments"] = compare("fragment molecules (72 fragments, <= 9)", mol, 1_000, repeats)
    return out


if __name__ == "__main__":
    main()
