"""Overhead of classifier-free SMC over plain composed sampling of diffusion models (docs/math.md §1.6).

Two Gaussian-mixture oracles (the 3x3-lattice bases of ``pyro-sculpt gaussians``), Euler-Maruyama with 100 steps,
10,000 particles in 2D. Per step, plain composed sampling (``ProcessDistribution(...).sample``) evaluates the bases'
scores, the operator's gradient and, for sculpting operators, the bases' log-densities; SMC
(``ps.infer.smc``) adds the log-densities at the new state, the operator, two Gaussian log-densities (proposal and
backward kernel) and resampling. Exact densities (the oracles' ``log_prob``) and tracked densities (the Itô estimator
with its exact second-order term) are measured; ratios are interleaved in one process.

Run: ``OMP_NUM_THREADS=1 python benchmarks/composed_smc.py``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import interleaved, machine, run_main  # noqa: E402

import pyro_sculpt as ps  # noqa: E402
from pyro_sculpt.diffusion import EulerMaruyamaSampler  # noqa: E402
from pyro_sculpt.experiments.gaussians import base_oracles  # noqa: E402


def main(n: int = 10_000, steps: int = 100, repeats: int = 3) -> dict:
    torch.set_num_threads(1)
    oracles = base_oracles()[:2]
    s = [EulerMaruyamaSampler(o, steps) for o in oracles]
    out: dict = {"machine": machine(), "particles": n, "steps": steps}
    for name, dist in (("product", ps.product(*s)), ("harmonic mean", ps.harmonic_mean(*s))):
        fns = {
            "plain": lambda d=dist: d.sample((n,)),
            "smc exact": lambda d=dist: ps.infer.smc(d, n, resample_threshold=0.9),
            "smc tracked": lambda d=dist: ps.infer.smc(d, n, resample_threshold=0.9, densities="tracked"),
        }
        t = interleaved(fns, repeats)
        out[name] = {
            "seconds": t,
            "ms_per_step_plain": 1000 * t["plain"] / steps,
            "smc_exact_ratio": t["smc exact"] / t["plain"],
            "smc_tracked_ratio": t["smc tracked"] / t["plain"],
        }
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    run_main(main, __doc__, ("particles", "steps", "repeats"))
