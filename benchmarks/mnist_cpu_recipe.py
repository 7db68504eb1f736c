"""The share of one coloured-MNIST score model's samples in its own set against its training time (issue 11; the
CPU recipe of docs/mnist.md).

Trains the score model of one set of the two-model setting (``M1``: red and green zeros, or ``M2``) with the given
U-Net, VP schedule and optimiser settings, and every ``--every`` steps draws ``--n`` samples (ancestral sampler, EMA
weights, the same seed each time) and judges them with the measurement classifier of ``pyro-sculpt mnist --size
small`` (trained once and cached in ``--out``). Prints one JSON line per evaluation: step, training seconds (the
evaluations excluded), share in the set, the running loss, and the predicted classes.

Run: ``OMP_NUM_THREADS=1 nice -n 5 python benchmarks/mnist_cpu_recipe.py --set M1 --channels 16 32 32
--beta-max 12 --batch 32 --lr 2e-3 --ema 0.995 --limit 540``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package
from pyro_sculpt.diffusion import AncestralSampler, ScoreModel, VPSchedule  # noqa: E402
from pyro_sculpt.experiments import mnist as mx  # noqa: E402
from pyro_sculpt.experiments.mnist_data import IMAGE_SHAPE, TWO_MODEL_SETS, coloured_dataset  # noqa: E402
from pyro_sculpt.nn import UNet  # noqa: E402
from pyro_sculpt.processes import ProcessDistribution  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--set", default="M1", choices=sorted(TWO_MODEL_SETS))
    p.add_argument("--channels", type=int, nargs="+", default=[16, 32, 32])
    p.add_argument("--tdim", type=int, default=32, help="time embedding dimension")
    p.add_argument("--beta-max", type=float, default=12.0)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--final-factor", type=float, default=1.0, help="cosine decay of the learning rate to this share")
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--limit", type=float, default=540.0, help="seconds (evaluations included)")
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--sampler-steps", type=int, default=50)
    p.add_argument("--n", type=int, default=100, help="samples per evaluation")
    p.add_argument("--out", default="runs/mnist_cpu_recipe")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = mx.SIZES["small"]
    data = mx.prepare_data(settings, None, 0)
    measure = mx.train_measurement(data, settings, out, 1000, None, False, print)
    pairs = TWO_MODEL_SETS[a.set]
    x, _ = coloured_dataset(data.images, data.labels, pairs)
    sampling, fit_start = [0.0], [0.0]

    def evaluate(step: int, model: ScoreModel) -> None:
        start = time.perf_counter()
        # the training time up to this step, by this script's clock (the model's history is recorded only every
        # 100 steps: its last entry may be an earlier step's)
        train_s = start - fit_start[0] - sampling[0]
        last = model.history[-1] if model.history else {}
        pyro.set_rng_seed(50)
        xs = ProcessDistribution(AncestralSampler(model, a.sampler_steps)).sample((a.n,)).detach()
        pred = measure.predict(xs)
        sampling[0] += time.perf_counter() - start
        row = {"step": step, "train_s": round(train_s, 1), "share": mx.share_in(pred, pairs),
               "loss": last.get("loss"), "loss_at_step": last.get("step"),
               "classes": mx.class_shares(pred)}  # fmt: skip
        print(json.dumps(row), flush=True)

    net = UNet(IMAGE_SHAPE, channels=tuple(a.channels), time_embedding_dim=a.tdim)
    model = ScoreModel(event_shape=IMAGE_SHAPE, network=net, schedule=VPSchedule(beta_max=a.beta_max), seed=0)
    fit_start[0] = time.perf_counter()
    model.fit(x, steps=a.steps, batch_size=a.batch, lr=a.lr, ema_decay=a.ema, seed=0, progress_bar=False,
              callback=evaluate, callback_every=a.every, time_limit=a.limit,
              lr_final_factor=a.final_factor)  # fmt: skip


if __name__ == "__main__":
    main()
