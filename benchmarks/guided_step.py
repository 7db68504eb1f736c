"""Cost of guidance on the 32x32 grid at 10,000 particles.

1. One guided step (bases + ONE batched classifier call over all particles' children) against one unguided step of
   a base GFlowNet, both through the library's step distributions, at the states of 10,000 real particles in the
   middle of their trajectories. Reported with state deduplication (the default: networks run once per distinct
   state) and without it. Target: <= 3x.
2. The handler-based guided sampler (``sculpt_guidance`` over ``ps.run`` of the mixture: Pyro sites, plates, masks)
   against the same guided policy in a plain torch loop. Target: <= 1.3x.

Run: ``OMP_NUM_THREADS=1 python benchmarks/guided_step.py``
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import interleaved, machine  # noqa: E402

import pyro_sculpt as ps  # noqa: E402


def plain_guided_loop(proc, n: int) -> torch.Tensor:
    """The baseline: the sculpted process's guided policy (same deduplication) in a plain torch loop, no Pyro."""
    env = proc.env
    s = torch.zeros(n, env.state_dim, dtype=torch.long)
    done = torch.zeros(n, dtype=torch.bool)
    with torch.no_grad():
        for _ in range(env.max_steps):
            a = torch.distributions.Categorical(logits=proc.guided(s).log_probs).sample()
            a = torch.where(done, torch.full_like(a, env.stop_action), a)
            s = torch.where(done.unsqueeze(-1), s, env.step(s, a))
            done = done | (a == env.stop_action)
            if done.all():
                break
    return s


def mid_trajectory_states(proc, n: int, steps: int) -> torch.Tensor:
    """States of ``n`` particles after ``steps`` guided steps (stopped ones stay where they stopped)."""
    env = proc.env
    s = torch.zeros(n, env.state_dim, dtype=torch.long)
    done = torch.zeros(n, dtype=torch.bool)
    with torch.no_grad():
        for _ in range(steps):
            a = torch.distributions.Categorical(logits=proc.guided(s).log_probs).sample()
            s = torch.where(done.unsqueeze(-1), s, env.step(s, a))
            done = done | (a == env.stop_action)
    return s


def main(n: int = 10_000, repeats: int = 5) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    env = ps.HyperGrid(2, 32)
    p1 = ps.GFlowNet(env, "symmetric_shubert").fit(steps=200, batch_size=64, seed=0, progress_bar=False)
    p2 = ps.GFlowNet(env, "diagonal_sigmoid").fit(steps=200, batch_size=64, seed=1, progress_bar=False)
    clf = ps.ObservationClassifier(env, 2, 2)  # the paper's architecture (MLP 256x2); weights do not change cost
    proc = ps.harmonic_mean(p1, p2, clf).process
    results = {}
    print(f"machine: {machine()}")
    for label, states in (
        ("mid-trajectory", mid_trajectory_states(proc, n, 25)),
        ("uniformly random", torch.randint(0, 32, (n, 2))),
    ):
        for dedup in (True, False):
            p1.deduplicate = proc.deduplicate = dedup

            def unguided(states=states):
                with torch.no_grad():
                    return p1.step_dist(states, 0).sample()

            def guided(states=states):
                with torch.no_grad():
                    return proc.step_dist(states, 0).sample()

            t = interleaved({"unguided": unguided, "guided": guided}, repeats=10)
            ratio = t["guided"] / t["unguided"]
            results[f"{label}, dedup={dedup}"] = ratio
            print(
                f"one step, {n} particles at {label} states ({len(env.unique(states)[0])} distinct), "
                f"deduplication {'on' if dedup else 'off'}: unguided {t['unguided'] * 1e3:.1f} ms, guided "
                f"{t['guided'] * 1e3:.1f} ms, ratio {ratio:.2f} (target <= 3)"
            )
    p1.deduplicate = proc.deduplicate = True
    mix = ps.mixture(p1, p2).process

    def handler():
        with torch.no_grad(), ps.sculpt_guidance(classifier=clf, y=(0, 1)):
            return ps.run("x", mix, num_particles=n)

    loop = interleaved({"plain": lambda: plain_guided_loop(proc, n), "handler": handler}, repeats)
    results["handler_ratio"] = loop["handler"] / loop["plain"]
    print(
        f"whole guided sampler, {n} particles: plain torch loop {loop['plain']:.3f}s, Pyro handler "
        f"{loop['handler']:.3f}s, ratio {results['handler_ratio']:.2f} (target <= 1.3)"
    )
    return results


if __name__ == "__main__":
    main()
