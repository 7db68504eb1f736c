"""Products of fragment-molecule GFlowNets by classifier-free SMC, and pseudo-marginal moves of their final particles.

The product's twist reads the backward probability :math:`\\log P_B = -\\log |\\mathrm{Pa}(s')|` of every valid child
of every distinct state at every step (docs/sculpting.md). :meth:`FragmentEnv.children_log_backward` counts the
parents of each child with the new leaf appended (no canonical form); the generic
:meth:`DiscreteEnv.children_log_backward` builds the canonical children first. Both run in this process on the same
particles and seed (identical results, checked), so their ratio is the speed-up. The moves
(``IndependenceRejuvenation(num_moves, proposal=0, num_backward=K)``) are reported as their cost over SMC's.

Bases: ``--models DIR`` (the ``gfn_qed.pt`` and ``gfn_sa.pt`` that ``pyro-sculpt molecules`` writes), or untrained
tree policies on the default vocabulary with trees of at most ``--max-fragments`` (default 6).

Run: ``OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/molecule_product.py [--models runs/molecules]
[--particles 1000] [--moves 2] [--num-backward 4]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402
from molecules_sampling import bases  # noqa: E402

import pyro_sculpt as ps  # noqa: E402
from pyro_sculpt.gflownets import DiscreteEnv  # noqa: E402
from pyro_sculpt.gflownets.envs.fragments import FragmentEnv  # noqa: E402


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main(
    models=None, particles: int = 1000, moves: int = 2, num_backward: int = 4, seed: int = 0, max_fragments: int = 6
) -> dict:
    torch.set_num_threads(1)
    print(f"machine: {machine()}")
    p1, p2 = bases(models, max_fragments)
    print(f"bases: {'loaded from ' + str(models) if models else 'untrained'}, {p1.env!r}; {particles} particles")
    product = ps.product(p1, p2)
    ps.infer.smc(product, 8, seed=seed + 1)  # warm-up (lazy imports, caches)

    def run(**kw):
        return ps.infer.smc(product, particles, seed=seed, **kw)

    fast, t_fast = _timed(run)
    override = FragmentEnv.children_log_backward
    FragmentEnv.children_log_backward = DiscreteEnv.children_log_backward
    try:
        generic, t_generic = _timed(run)
    finally:
        FragmentEnv.children_log_backward = override
    assert torch.equal(fast.x, generic.x) and torch.equal(fast.log_weights, generic.log_weights), "paths differ"
    out = {"smc_s": t_fast, "smc_generic_s": t_generic}
    print(f"product by SMC, children's P_B counted from parents:{t_fast:7.1f} s")
    print(f"product by SMC, canonical children (generic):       {t_generic:7.1f} s  ({t_generic / t_fast:.1f}x)")
    if moves:
        kernel = ps.mcmc.IndependenceRejuvenation(moves, proposal=0, num_backward=num_backward)
        _, t_moves = _timed(lambda: run(moves=kernel))
        per_move = (t_moves - t_fast) / moves
        out.update(moves_s=t_moves, per_move_s=per_move)
        print(
            f"+ {moves} pseudo-marginal moves (K = {num_backward}): {t_moves:7.1f} s; one move {per_move:.1f} s "
            f"({per_move / t_fast:.2f}x the SMC run)"
        )
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=None, help="directory with gfn_qed.pt and gfn_sa.pt")
    parser.add_argument("--particles", type=int, default=1000)
    parser.add_argument("--moves", type=int, default=2)
    parser.add_argument("--num-backward", type=int, default=4)
    parser.add_argument("--max-fragments", type=int, default=6, help="of the untrained bases")
    args = parser.parse_args()
    main(args.models, args.particles, args.moves, args.num_backward, max_fragments=args.max_fragments)
