"""The ``pyro-sculpt`` command line (also ``python -m pyro_sculpt``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence


def _common(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument("--out", type=Path, default=Path(default_out), help=f"output directory (default {default_out})")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyro-sculpt",
        description="Compositional sculpting of GFlowNets and diffusion models, as Pyro distributions.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train one GFlowNet on a 2D HyperGrid and report its exact L1")
    from pyro_sculpt.gflownets.registry import reward_names as names

    train.add_argument("--reward", default="symmetric_shubert", choices=names(), help="reward name")
    train.add_argument("--height", type=int, default=32, help="grid side (default 32)")
    train.add_argument("--steps", type=int, default=None, help="training steps (default: the fast recipe's)")
    _common(train, "runs/train")

    grid = sub.add_parser(
        "grid",
        help="the sculpting paper's 2D grid experiment (2 and 3 GFlowNets; exact L1 of every composition)",
        description="Train (or load from --out) the base GFlowNets and classifiers, compose, and report exact L1 "
        "against the closed form of the learned bases, with and without the SMC correction.",
    )
    grid.add_argument("--full", action="store_true", help="the paper's full settings (hours on a CPU)")
    grid.add_argument("--particles", type=int, default=None, help="particles for empirical L1 (0 to skip)")
    grid.add_argument("--two-only", action="store_true", help="skip the 3-model experiment")
    _common(grid, "runs/grid")

    gaussians = sub.add_parser(
        "gaussians",
        help="sculpting 2D Gaussian-mixture diffusion models (2 and 3 models, oracle and trained)",
        description="Compose two and three 2D Gaussian-mixture diffusion models, with exact scores and the exact "
        "classifier (oracle) and with trained score models and a trained classifier (trained); report mode-weight "
        "TV, energy distance and MMD against the exact composition, with their exact-vs-exact nulls; write "
        "results.md, results.json and gaussians.png into --out.",
    )
    gaussians.add_argument("--particles", type=int, default=None, help="samples per composition (default 4000)")
    gaussians.add_argument(
        "--variants", nargs="+", default=["oracle", "trained"], choices=["oracle", "trained"], help="what to run"
    )
    gaussians.add_argument("--two-only", action="store_true", help="skip the 3-model compositions")
    gaussians.add_argument(
        "--no-max-time-comparison",
        action="store_true",
        help="skip the comparison classifiers trained only on diffusion times <= 0.7 (the reference's setting)",
    )
    _common(gaussians, "runs/gaussians")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    if args.command == "train":
        from pyro_sculpt.experiments import train_grid

        train_grid.main(args.reward, args.height, args.out, args.seed, not args.no_progress, args.steps)
    elif args.command == "grid":
        from pyro_sculpt.experiments import grid

        grid.main(args.out, args.full, args.seed, not args.no_progress, args.particles, args.two_only)
    elif args.command == "gaussians":
        from pyro_sculpt.experiments import gaussians

        gaussians.main(
            args.out,
            args.seed,
            not args.no_progress,
            args.particles,
            args.variants,
            args.two_only,
            not args.no_max_time_comparison,
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
