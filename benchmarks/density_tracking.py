"""Cost of tracking log-densities along a reverse-diffusion path (``PathDensityTracker``, docs/math.md §1.6).

A plain ancestral step (the model's score at the step's start, the Gaussian update) against the same step followed by
``PathDensityTracker.update`` of the model's own log-density, with the score reused: the left rule at first order (the
Itô sum, a few vector operations) and with the second-order term computed exactly (the score's full Jacobian by
``torch.func.jacrev``) or by Hutchinson's estimate (two vector-Jacobian products), and the trapezoidal rule (the
default: the score and the Hessian's trace at the step's end, which are the next step's start) with exact or
Hutchinson traces. Three models: a score MLP (128 x 3, random weights: they do not change the cost) in 2D at 10,000
particles, the 5-mode Gaussian-mixture oracle of the tests in 2D at 10,000 particles, and the MLP on images of shape
(1, 8, 8) at 2,000 particles. Measured interleaved in one process; target for the first-order ratio: <= 1.20.

Run: ``OMP_NUM_THREADS=1 python benchmarks/density_tracking.py``
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import interleaved, machine, run_main  # noqa: E402

from pyro_sculpt.diffusion import AncestralSampler, GaussianMixtureOracle, PathDensityTracker, ScoreModel  # noqa: E402


def five_modes() -> GaussianMixtureOracle:
    ang = torch.arange(5) * 2 * math.pi / 5
    means = 2.0 * torch.stack([ang.cos(), ang.sin()], -1)
    return GaussianMixtureOracle(
        means, stds=torch.tensor([0.3, 0.4, 0.25, 0.5, 0.35]), weights=[0.1, 0.3, 0.2, 0.15, 0.25]
    )


#: the tracker settings measured: (label, second_order, rule)
MODES = (
    ("left, first order", "none", "left"),
    ("left, exact", "exact", "left"),
    ("left, Hutchinson", "hutchinson", "left"),
    ("trapezoid, exact", "exact", "trapezoid"),
    ("trapezoid, Hutchinson", "hutchinson", "trapezoid"),
)


def run_steps(sampler, tracker, n: int) -> torch.Tensor:
    """``sampler``'s steps at ``n`` particles, tracking the model's log-density with ``tracker`` (``None``: plain)."""
    times = [float(v) for v in sampler.times]
    with torch.no_grad():
        x = torch.randn((n,) + tuple(sampler.event_shape)) * sampler.step_coefficients(0)[2]
        log_q = tracker.init(x, times[0]) if tracker is not None else None
        for k in range(1, sampler.max_steps):
            a, b, c = sampler.step_coefficients(k)
            t, t_next = times[k - 1], times[k]
            if tracker is None:
                x = a * x + b * sampler.model.score(x, t) + c * torch.randn_like(x)
                continue
            scores = tracker.scores(x, t)  # the trapezoid's are kept from the previous step's end
            x_next = a * x + b * scores[:, 0] + c * torch.randn_like(x)
            log_q = tracker.update(log_q, x, x_next, t, t_next, scores)
            x = x_next
    return x


def measure(name: str, model, n: int, steps: int, repeats: int) -> dict:
    sampler = AncestralSampler(model, steps)
    fns = {"plain": lambda: run_steps(sampler, None, n)}
    for label, order, rule in MODES:
        tracker = PathDensityTracker([model], second_order=order, rule=rule)
        fns[label] = lambda tracker=tracker: run_steps(sampler, tracker, n)
    t = interleaved(fns, repeats)
    ratios = {label: t[label] / t["plain"] for label, _, _ in MODES}
    parts = ", ".join(f"{label} {r:.2f}" for label, r in ratios.items())
    print(
        f"{name}: {n} particles, {steps} ancestral steps, plain {1e3 * t['plain'] / steps:.2f} ms/step; "
        f"ratio to the plain step: {parts}"
    )
    return {"seconds": t, "ratios": ratios}


def main(steps: int = 50, repeats: int = 5) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(f"machine: {machine()}")
    results = {
        "machine": machine(),
        "mlp_2d": measure("score MLP, 2D", ScoreModel(2, seed=0), 10_000, steps, repeats),
        "oracle_2d": measure("5-mode oracle, 2D", five_modes(), 10_000, steps, repeats),
        "mlp_image": measure(
            "score MLP, images (1, 8, 8)", ScoreModel(event_shape=(1, 8, 8), seed=0), 2_000, steps, repeats
        ),  # fmt: skip
    }
    print("target: first-order ('none') ratio <= 1.20")
    return results


if __name__ == "__main__":
    run_main(main, __doc__, ("steps", "repeats"))
