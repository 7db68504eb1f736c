"""Sampling fragment molecules at batch 256: unguided, classifier-free guided, classifier-free SMC, and
classifier-guided with a per-action classifier head (alone and with twisted SMC).

Issue 10's targets (on a 2-core CPU): classifier-free guided sampling <= 10 ms per molecule and classifier-guided
<= 50 ms per molecule at batch 256, with the unguided cost beside them (the reference reports 16-25 ms per molecule
for a plain fragment GFlowNet and about 1.8 s for classifier-guided sculpting, on a GPU). The bases are
beta-conditioned tree-policy GFlowNets on the default 72-fragment vocabulary: loaded from ``--models`` (the
``gfn_qed.pt`` and ``gfn_sa.pt`` that ``pyro-sculpt molecules`` writes, with their environment), or untrained with
trees of at most ``--max-fragments`` (default 9), which is the slow case (an untrained policy rarely stops, so nearly
every tree is as large as allowed). Only sampling is timed (no SMILES, no rewards). The figures are also printed as
ratios to the unguided cost measured in the same process, which is what a loaded machine preserves. The
classifier-guided cases use an untrained ``ChildObservationClassifier`` (hidden 64, 3 message-passing rounds; its
cost does not depend on its weights): the children of every particle are scored in one forward of the parents, none
is built.

Run: ``OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/molecules_sampling.py [--models runs/molecules]
[--max-fragments 9]``
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
from pyro_sculpt.gflownets import GFlowNet  # noqa: E402
from pyro_sculpt.gflownets.envs.fragments import FragmentEnv  # noqa: E402


def bases(models, max_fragments: int):
    """The QED and SA bases: loaded (their environment and sampling beta from the checkpoints), or untrained."""
    if models:
        return [GFlowNet.load(Path(models) / f"gfn_{obj}.pt") for obj in ("qed", "sa")]
    env = FragmentEnv(max_fragments=max_fragments)
    out = []
    for k, obj in enumerate(("qed", "sa")):
        torch.manual_seed(k)
        gfn = GFlowNet(env, obj, policy="env", hidden=64, layers=3, beta_range=(8.0, 48.0))
        out.append(gfn.with_beta(24.0))
    return out


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(models=None, batch: int = 256, repeats: int = 3, seed: int = 0, max_fragments: int = 9) -> dict:
    torch.set_num_threads(1)
    print(f"machine: {machine()}")
    p1, p2 = bases(models, max_fragments)
    print(
        f"bases: {'loaded from ' + str(models) if models else 'untrained'}, {p1.env!r}, beta {p1.sampling_beta}; "
        f"batch {batch}; best of {repeats}"
    )
    torch.manual_seed(seed)
    hm = ps.harmonic_mean(p1, p2)
    clf = ps.ChildObservationClassifier.for_bases([p1, p2], num_observations=2, hidden=64, layers=3)
    guided = ps.harmonic_mean(p1, p2, clf)
    cases = {
        "unguided (one base)": lambda: p1.as_distribution().sample((batch,)),
        "mixture of two bases": lambda: ps.mixture(p1, p2).sample((batch,)),
        "classifier-free guided HM": lambda: hm.sample((batch,)),
        "classifier-free HM + SMC": lambda: ps.infer.smc(hm, batch),
        "classifier-guided HM (per-action head)": lambda: guided.sample((batch,)),
        "classifier-guided HM + twisted SMC": lambda: ps.infer.smc(guided, batch),
    }
    out = {}
    with torch.no_grad():
        for name, fn in cases.items():
            out[name] = timed(fn, repeats) / batch * 1e3
    base = out["unguided (one base)"]
    for name, ms in out.items():
        print(f"{name:>40}: {ms:7.2f} ms per molecule  ({ms / base:.2f}x unguided)")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=None, help="directory with gfn_qed.pt and gfn_sa.pt")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-fragments", type=int, default=9, help="of the untrained bases")
    args = parser.parse_args()
    main(args.models, args.batch, args.repeats, max_fragments=args.max_fragments)
