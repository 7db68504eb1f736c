"""Cost per image of classifier-guided against unguided sampling of coloured-MNIST diffusion models (issue 11).

Two :class:`~pyro_sculpt.diffusion.ScoreModel` s of 3x28x28 images with :class:`~pyro_sculpt.nn.UNet` noise
predictors and a time-conditioned :class:`~pyro_sculpt.sculpting.DiffusionObservationClassifier` whose network is a
:class:`~pyro_sculpt.nn.ConvClassifierNet`, of the sizes ``pyro-sculpt mnist --size`` trains (default ``full``).
Weights are random: they do not change the cost. The classifier guides at every step (``max_time=1``, as in the
experiment). Ancestral sampler; measured interleaved in one process:

* one base model alone (``ProcessDistribution(AncestralSampler(model))``),
* the unguided mixture of the two (``ps.mixture``: every step computes both bases' scores),
* the harmonic mean guided by the classifier (``ps.harmonic_mean(s1, s2, clf)``: both scores, one classifier
  forward and backward pass per step).

The ratio guided / unguided is against the mixture (the same two score evaluations per step). Target: <= 2.

Run: ``OMP_NUM_THREADS=1 python benchmarks/mnist_guidance.py [--size small] [--particles 16] [--steps 20]
[--device cuda]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package
from _common import interleaved, machine  # noqa: E402

import pyro_sculpt as ps  # noqa: E402
from pyro_sculpt.diffusion import AncestralSampler, ScoreModel  # noqa: E402
from pyro_sculpt.experiments.mnist import SIZES  # noqa: E402
from pyro_sculpt.experiments.mnist_data import IMAGE_SHAPE  # noqa: E402
from pyro_sculpt.nn import ConvClassifierNet, UNet, observation_output_size  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="full", choices=sorted(SIZES), help="network sizes of this run size")
    p.add_argument("--particles", type=int, default=16, help="images per sampling call")
    p.add_argument("--steps", type=int, default=20, help="ancestral steps")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    settings = SIZES[args.size]
    torch.manual_seed(0)
    models = [
        ScoreModel(event_shape=IMAGE_SHAPE, network=UNet(IMAGE_SHAPE, **settings.unet), device=args.device)
        for _ in range(2)
    ]
    samplers = [AncestralSampler(m, args.steps) for m in models]
    tdim = 32
    net = ConvClassifierNet(IMAGE_SHAPE, tdim + 1, observation_output_size(2, 2), **settings.classifier_net)
    clf = ps.DiffusionObservationClassifier.for_bases(
        samplers, 2, max_time=1.0, time_embedding_dim=tdim, network=net, device=args.device
    )
    n = args.particles
    cuda = torch.device(args.device).type == "cuda"

    def timed(dist):
        def run():
            x = dist.sample((n,))
            if cuda:
                torch.cuda.synchronize()
            return x

        return run

    fns = {
        "one base": timed(ps.ProcessDistribution(samplers[0])),
        "mixture (unguided)": timed(ps.mixture(*samplers)),
        "harmonic mean (guided)": timed(ps.harmonic_mean(samplers[0], samplers[1], clf)),
    }
    best = interleaved(fns, args.repeats)
    per_image = {k: v / n for k, v in best.items()}
    ratio = per_image["harmonic mean (guided)"] / per_image["mixture (unguided)"]
    print(f"machine: {machine()}; device {args.device}")
    print(f"size {args.size}: UNet {settings.unet}, classifier {settings.classifier_net}; {n} images, "
          f"{args.steps} ancestral steps, best of {args.repeats}")  # fmt: skip
    for k, v in per_image.items():
        print(f"  {k:24s} {v * 1e3:9.3f} ms per image")
    print(f"guided / unguided (mixture) = {ratio:.2f} (target <= 2); guided / one base = "
          f"{per_image['harmonic mean (guided)'] / per_image['one base']:.2f}")  # fmt: skip
    return {"per_image": per_image, "ratio": ratio}


if __name__ == "__main__":
    main()
