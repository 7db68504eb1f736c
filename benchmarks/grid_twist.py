"""Classifier-free SMC on the paper's 32x32 grid: the intermediate operators of the twist against the sampling floor.

For the learned bases of ``pyro-sculpt grid --all-ops`` (loaded from its ``--out``, or trained there with the same
settings and seeds), each operation of docs/sculpting.md's table is composed without a classifier
(``ps.sculpt(bases, y=..., alpha=...)``) and measured against the exact composition of the learned bases by the
empirical L1 of

* the classifier-free guided policy alone (no weights),
* SMC with each intermediate operator of the twist (``"plain"``, ``"distinct"``, ``"ramp"``; the last two only where
  an observation repeats, else they are the plain one), at ``--particles``,
* SMC with ``intermediate="auto"`` (pilot runs choose) at ``--large`` particles,

each as a ratio to the sampling floor (the expected L1 of as many exact samples), with the run's smallest ESS
fraction. One run per cell (the ratio's noise is about +-0.1).

Run: ``OMP_NUM_THREADS=1 python benchmarks/grid_twist.py --out runs/grid_all [--particles 100000] [--large 400000]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402

import pyro_sculpt as ps  # noqa: E402
from pyro_sculpt.experiments.grid import trained_bases  # noqa: E402
from pyro_sculpt.metrics import empirical_distribution, expected_l1_floor, l1_distance  # noqa: E402
from pyro_sculpt.sculpting import composition_distribution  # noqa: E402

#: the table's rows: (label, bases, y, alpha)
ROWS = [
    *[(f"{op}, alpha {a}", "two", y, a) for a in (0.5,) for op, y in (("harmonic mean", (0, 1)),
                                                                        ("contrast", (0, 0)),
                                                                        ("reverse contrast", (1, 1)))],
    ("harmonic mean, alpha 0.05", "two", (0, 1), 0.05),
    ("contrast, alpha 0.05", "two", (0, 0), 0.05),
    ("reverse contrast, alpha 0.95", "two", (1, 1), 0.95),
    *[(f"y={lab}", "three", tuple(int(c) - 1 for c in lab) + (None,) * (3 - len(lab)), None)
      for lab in ("12", "13", "23", "123", "11", "22", "33", "111", "222", "333")],
]  # fmt: skip


def smc_cell(dist, intermediate: str, n: int, seed: int, target: torch.Tensor, env) -> dict:
    twist = dist.process.twist(intermediate)
    t = time.perf_counter()
    res = ps.infer.smc(twist, n, seed=seed)
    return {
        "l1": l1_distance(res.distribution(env), target),
        "min_ess": min(res.ess_history) / n,
        "chosen": getattr(twist, "chosen", None) or twist.process.intermediate,
        "seconds": time.perf_counter() - t,
    }


def _cell(cell, floor: float) -> str:
    return "= plain" if cell is None else f"{cell['l1'] / floor:.2f} ({cell['min_ess']:.2f})"


def main(out: str, particles: int = 100_000, large: int = 400_000, seed: int = 0) -> list:
    torch.set_num_threads(1)
    print(f"machine: {machine()}")
    bases = {
        "two": trained_bases(out, ["shubert", "sigmoid"], seed=seed),
        "three": trained_bases(out, ["circle1", "circle2", "circle3"], seed=seed),
    }
    env = bases["two"][0].env
    rows = []
    header = (
        f"| operation | floor | guided L1 | SMC plain: ratio (min ESS) | distinct | ramp | {large:,} particles, "
        f'`"auto"`: ratio to the {particles // 1000}k floor (to its own floor), chosen |'
    )
    print(header + "\n|---|---|---|---|---|---|---|", flush=True)
    for label, which, y, alpha in ROWS:
        b = bases[which]
        target = composition_distribution(torch.stack([p.exact_terminal_distribution() for p in b]), y, alpha)
        floor, floor_large = expected_l1_floor(target, particles), expected_l1_floor(target, large)
        dist = ps.sculpt(b, y=y, alpha=alpha)
        torch.manual_seed(seed)
        guided = l1_distance(empirical_distribution(env.index(dist.sample((particles,))), env.num_states), target)
        candidates = dist.process.intermediate_candidates()
        cells = {k: smc_cell(dist, k, particles, seed, target, env) for k in candidates}
        auto = smc_cell(dist, "auto", large, seed, target, env)
        row = dict(op=label, floor=floor, floor_large=floor_large, guided=guided, cells=cells, auto=auto)
        rows.append(row)
        print(
            f"| {label} | {floor:.4f} | {guided:.3f} | "
            + " | ".join(_cell(cells.get(k), floor) for k in ("plain", "distinct", "ramp"))
            + " | "
            f"{auto['l1'] / floor:.2f} ({auto['l1'] / floor_large:.2f}), {auto['chosen']} |",
            flush=True,
        )
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="the --out of `pyro-sculpt grid --all-ops` (bases cached there)")
    ap.add_argument("--particles", type=int, default=100_000)
    ap.add_argument("--large", type=int, default=400_000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    main(a.out, a.particles, a.large, a.seed)
