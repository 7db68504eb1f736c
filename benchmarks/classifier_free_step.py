"""Cost of classifier-free composition on the 32x32 grid at 10,000 particles.

1. One step of the classifier-free guided policy (``ps.harmonic_mean(p1, p2)`` without a classifier: the bases'
   policies once per distinct state, the operator on every particle's children) against one step of the exact
   mixture of the same bases, both through the library's step distributions and transitions, at the states of
   10,000 particles in the middle of their trajectories. Target: <= 1.5x.
2. A whole classifier-free SMC run (weights, ESS, resampling) against sampling the classifier-free guided policy
   alone through ``ps.run``-free plain sampling (``ProcessDistribution.sample``): the SMC overhead.

Run: ``OMP_NUM_THREADS=1 python benchmarks/classifier_free_step.py``
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import interleaved, machine  # noqa: E402

import pyro_sculpt as ps  # noqa: E402
from pyro_sculpt.processes.runner import expand_state  # noqa: E402


def advance(proc, state, steps: int):
    """``state`` of a batch after ``steps`` steps of ``proc`` (stopped particles stay where they stopped)."""
    done = torch.zeros(state[0].shape[0], dtype=torch.bool)
    with torch.no_grad():
        for t in range(steps):
            a = proc.step_dist(state, t).sample()
            new = proc.transition(state, a, t)
            state = proc.keep_done(done, state, new)
            done = done | proc.stops(state, a, t)
    return state


def main(n: int = 10_000, repeats: int = 10) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    env = ps.HyperGrid(2, 32)
    p1 = ps.GFlowNet(env, "symmetric_shubert").fit(steps=200, batch_size=64, seed=0, progress_bar=False)
    p2 = ps.GFlowNet(env, "diagonal_sigmoid").fit(steps=200, batch_size=64, seed=1, progress_bar=False)
    cf = ps.harmonic_mean(p1, p2).process
    mix = ps.mixture(p1, p2).process
    print(f"machine: {machine()}")
    expand = lambda proc: expand_state(proc.init(), torch.Size([n]), proc.state_event_dims)  # noqa: E731
    cf_state = advance(cf, expand(cf), 25)
    mix_state = advance(mix, expand(mix), 25)

    def step(proc, state):
        proc.__dict__.pop("_memo", None)  # both processes remember their last evaluation: time a fresh one
        with torch.no_grad():
            a = proc.step_dist(state, 25).sample()
            return proc.transition(state, a, 25)

    t = interleaved({"mixture": lambda: step(mix, mix_state), "classifier-free": lambda: step(cf, cf_state)}, repeats)
    step_ratio = t["classifier-free"] / t["mixture"]
    print(
        f"one step at {n} mid-trajectory particles: mixture {1e3 * t['mixture']:.1f} ms, classifier-free guided "
        f"{1e3 * t['classifier-free']:.1f} ms, ratio {step_ratio:.2f} (target <= 1.5)"
    )
    d = ps.ProcessDistribution(cf)
    t = interleaved({"sample": lambda: d.sample((n,)), "smc": lambda: ps.infer.smc(cf, n)}, repeats=3)
    smc_ratio = t["smc"] / t["sample"]
    print(
        f"whole run at {n} particles: guided policy alone {t['sample']:.2f} s, classifier-free SMC {t['smc']:.2f} s, "
        f"ratio {smc_ratio:.2f}"
    )
    return {"step_ratio": step_ratio, "smc_ratio": smc_ratio}


if __name__ == "__main__":
    main()
