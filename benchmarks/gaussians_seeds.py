"""The trained rows of ``pyro-sculpt gaussians`` over several sampling seeds.

One seed is not enough to rank the trained classifier, the classifier-free composed process and its SMC correction:
SMC's mode TV varies between seeds far more than the classifier's. This trains the command's score models and
classifiers once (seed 0, the command's settings), then samples every trained operation with seeds 0, 1, ...: the
classifier-guided DDIM row, the classifier-free composed process alone (Euler-Maruyama) and its SMC correction with
tracked densities, each against the exact composition of the true bases (mode-weight TV; the exact reference sample
of seed ``s`` is the command's). Prints the mean over seeds and, for SMC, the weighted TV in brackets and the range.

Run: ``OMP_NUM_THREADS=1 python benchmarks/gaussians_seeds.py [--seeds 5] [--particles 4000]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402

from pyro_sculpt.diffusion import DDIMSampler  # noqa: E402
from pyro_sculpt.experiments import gaussians as g  # noqa: E402
from pyro_sculpt.experiments.exact_targets import operator_log_density  # noqa: E402


def main(seeds: int = 5, particles: int = 4000, schedule: g.Schedule = None, log=print) -> dict:
    torch.set_num_threads(1)
    log(f"machine: {machine()}")
    start = time.perf_counter()
    schedule = schedule or g.Schedule(particles=particles)
    oracles = g.base_oracles()
    models, _ = g._train_bases(oracles, schedule, 0, False, log)
    plan = [("2 models", oracles[:2], g.TWO_MODEL_OPS), ("3 models", oracles, g.THREE_MODEL_OPS)]
    results = {}
    for _, bases, ops in plan:
        ms = models[: len(bases)]
        n_obs = len(next(y for _, y in ops if y is not None))
        clf, _ = g._train_classifier(ms, n_obs, schedule.max_time, schedule, 0, False, log)
        samplers = [DDIMSampler(m, schedule.sampler_steps) for m in ms]
        for op, y in ops:
            f = operator_log_density(bases, g.operator_of(op, y, len(bases), schedule.negation_a))
            tv = {k: [] for k in ("null", g.CLASSIFIER, g.CF_GUIDED, g.CF_SMC, "weighted")}
            for s in range(seeds):
                ref = g.Reference(f, schedule.particles, s + 7)
                tv["null"].append(g._null_tv(ref.target, schedule.particles))
                if y is not None:
                    x, _ = g._compose(samplers, clf, y, schedule.particles, s)
                    tv[g.CLASSIFIER].append(g._metrics(x, ref)["tv"])
                rows, _ = g.classifier_free_rows(ms, bases, op, y, schedule, s, "tracked", ref)
                for row in rows:
                    tv[row["method"]].append(row["tv"])
                    if row["method"] == g.CF_SMC:
                        tv["weighted"].append(row["tv_weighted"])
            results[op] = tv
            log(f"{op}: " + ", ".join(f"{k} {[round(v, 4) for v in vs]}" for k, vs in tv.items() if vs))
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    log(f"\nseeds 0-{seeds - 1}, {schedule.particles} particles; mean mode TV (SMC: weighted in brackets; range)\n")
    log("| operation | TV null | classifier | cf guided | cf SMC |\n|---|---|---|---|---|")
    for op, tv in results.items():
        clf = f"{mean(tv[g.CLASSIFIER]):.3f}" if tv[g.CLASSIFIER] else "-"
        smc = tv[g.CF_SMC]
        log(
            f"| {op} | {mean(tv['null']):.3f} | {clf} | {mean(tv[g.CF_GUIDED]):.3f} | {mean(smc):.3f} "
            f"({mean(tv['weighted']):.3f}; {min(smc):.3f}-{max(smc):.3f}) |"
        )
    log(f"\n{time.perf_counter() - start:.0f} s")
    return results


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--particles", type=int, default=4000)
    a = ap.parse_args()
    main(a.seeds, a.particles)
