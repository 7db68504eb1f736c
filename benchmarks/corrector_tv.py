"""The TV each sampler reaches on the Reduce-Reuse-Recycle product, per second of sampling (docs/mcmc.md).

The ring of 8 Gaussians (radius 1, std 0.1) times N((0.6, 0.3), 0.5^2 I) from oracle energies, 100 Euler-Maruyama
steps: reverse diffusion alone (summed scores), the MALA and HMC correctors at every level, the late MALA corrector
(3 steps per level above t = 0.1, 200 below), SMC, and SMC with MALA moves. For each: the mode-weight TV against the
exact product (mean over seeds), its exact-sample null, the energy distance against its null, the wall time per run
and its ratio to reverse diffusion alone (measured in this process), and the TV removed per second beyond reverse
diffusion's, ``(TV_reverse - TV) / (seconds - seconds_reverse)``.

Run: ``OMP_NUM_THREADS=1 python benchmarks/corrector_tv.py [--particles 4000] [--seeds 3]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402

from pyro_sculpt.experiments import energy2d  # noqa: E402

SAMPLERS = ("reverse diffusion", "MALA corrector", "HMC corrector", "MALA corrector (late)", "SMC", "SMC + MALA")


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, default=4000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--corrector-steps", type=int, default=3, help="kernel steps per level (the late: above t)")
    args = parser.parse_args(argv)
    size = energy2d.Size(particles=args.particles, seeds=args.seeds, corrector_steps=args.corrector_steps)
    task = energy2d.tasks()["product"]
    rows, _ = energy2d.run_task(task, size, 0, samplers=SAMPLERS, log=lambda *a: None)
    base = rows[0]
    base_s = base.ms_per_sample * size.particles / 1000
    print(f"RRR product, oracle energies, n = {size.particles}, {size.steps} steps, {size.seeds} seeds; {machine()}")
    print(f"plain correctors: {size.corrector_steps} steps per level; late: {size.corrector_steps} above t = "
          f"{size.late_below:g}, {size.late_steps} below")  # fmt: skip
    print("| sampler | mode TV (null) | energy / null | s per run | x reverse diffusion | TV removed per s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        seconds = r.ms_per_sample * size.particles / 1000
        gain = "" if r is base else f"{(base.mean_tv - r.mean_tv) / max(seconds - base_s, 1e-9):.4f}"
        print(f"| {r.sampler} | {r.mean_tv:.3f} ({r.tv_null:.3f}) | {r.mean_energy / r.energy_null:.1f} | "
              f"{seconds:.1f} | {seconds / base_s:.1f} | {gain} |")  # fmt: skip
    return rows


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
