"""Sampling 10,000 GFlowNet trajectories through the Pyro path (one sample site per step, in a particle plate)
against the same policy in a plain torch loop. Target: ratio <= 1.3.

Run: ``OMP_NUM_THREADS=1 python benchmarks/pyro_path.py``
"""

from __future__ import annotations

import sys
from pathlib import Path

import pyro.poutine as poutine
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import interleaved, machine  # noqa: E402

import pyro_sculpt as ps  # noqa: E402


def plain_loop(gfn, n: int, dedup: bool) -> torch.Tensor:
    """The baseline, written directly against the network and the environment (optionally one network row per
    distinct state, as the library does by default)."""
    env = gfn.env
    s = torch.zeros(n, env.ndim, dtype=torch.long)
    done = torch.zeros(n, dtype=torch.bool)
    with torch.no_grad():
        for _ in range(env.max_steps):
            if dedup:
                ids = env.index(s)
                uniq, inv = torch.unique(ids, return_inverse=True)
                rows = torch.stack([uniq // env.height, uniq % env.height], -1)
                logits = gfn.policy(env.encode(rows))[inv]
            else:
                logits = gfn.policy(env.encode(s))
            logits = logits.masked_fill(~env.forward_mask(s), float("-inf"))
            a = torch.distributions.Categorical(logits=logits).sample()
            a = torch.where(done, torch.full_like(a, env.ndim), a)
            s = env.step(s, a)
            done = done | (a == env.ndim)
            if done.all():
                break
    return s


def main(n: int = 10_000, repeats: int = 5) -> dict:
    torch.set_num_threads(1)
    env = ps.HyperGrid(2, 32)
    gfn = ps.GFlowNet(env, "symmetric_shubert").fit(steps=300, batch_size=64, seed=0, progress_bar=False)
    print(f"machine: {machine()}")
    out = {}
    for dedup in (True, False):
        gfn.deduplicate = dedup

        def pyro_run():
            with torch.no_grad():
                return ps.run("x", gfn, num_particles=n)

        def pyro_traced():
            with torch.no_grad():
                return poutine.trace(lambda: ps.run("x", gfn, num_particles=n)).get_trace()

        t = interleaved(
            {"plain": lambda d=dedup: plain_loop(gfn, n, d), "pyro": pyro_run, "pyro+trace": pyro_traced}, repeats
        )
        label = "one network row per distinct state" if dedup else "one network row per particle"
        print(
            f"{n} trajectories on 32x32, {label}: plain torch {t['plain']:.3f}s, Pyro path {t['pyro']:.3f}s "
            f"(ratio {t['pyro'] / t['plain']:.2f}), under poutine.trace {t['pyro+trace']:.3f}s "
            f"(ratio {t['pyro+trace'] / t['plain']:.2f}); target <= 1.3"
        )
        out[dedup] = {"ratio": t["pyro"] / t["plain"], "ratio_traced": t["pyro+trace"] / t["plain"]}
    return out


if __name__ == "__main__":
    main()
