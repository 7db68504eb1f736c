"""Exact terminal distribution of a 32x32 GFlowNet policy by dynamic programming (target < 0.5 s on one thread).

Run: ``OMP_NUM_THREADS=1 python benchmarks/exact_dp.py``
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_of, machine  # noqa: E402

import pyro_sculpt as ps  # noqa: E402
from pyro_sculpt.gflownets import exact  # noqa: E402


def main() -> dict:
    torch.set_num_threads(1)
    env = ps.HyperGrid(2, 32)
    gfn = ps.GFlowNet(env, "symmetric_shubert")
    exact.state_graph(env)  # built once per environment, then cached
    full = best_of(lambda: exact.terminal_distribution(env, gfn.log_prob_table()), repeats=10)
    table = gfn.log_prob_table()
    dp_only = best_of(lambda: exact.terminal_distribution(env, table), repeats=10)
    print(f"machine: {machine()}")
    print(
        f"32x32 exact terminal distribution: {full * 1e3:.1f} ms with the policy forward on all 1024 states, "
        f"{dp_only * 1e3:.1f} ms for the DP alone (target < 500 ms)"
    )
    return {"full_seconds": full, "dp_seconds": dp_only}


if __name__ == "__main__":
    main()
