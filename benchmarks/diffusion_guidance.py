"""Cost of Pyro's effect handling in guided diffusion sampling, at 10,000 particles in 2D.

The handler-based guided sampler (``sculpt_guidance`` over ``ps.run`` of the diffusion mixture: one Pyro site per
step, plates, masks; the mixture step computes every base's score, the handler rebuilds the step from the guided score)
against the same guidance written as a plain torch loop without Pyro: per step the two base score networks, one
classifier forward and backward pass, and the Gaussian update. Both use an ancestral sampler of 100 steps, two score
MLPs (128 x 3, as trained by ``pyro-sculpt gaussians``) and a classifier MLP (128 x 3) trained on every noise level
(so that guidance runs at every step). Weights are random: they do not change the cost. Measured interleaved in one
process. Target: ratio <= 1.3.

Run: ``OMP_NUM_THREADS=1 python benchmarks/diffusion_guidance.py``
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import interleaved, machine, run_main  # noqa: E402

import pyro_sculpt as ps  # noqa: E402
from pyro_sculpt.diffusion import AncestralSampler, ScoreModel  # noqa: E402
from pyro_sculpt.sculpting import Observations  # noqa: E402
from pyro_sculpt.sculpting.diffusion import composed_score  # noqa: E402


def plain_torch_loop(models, clf, sampler, y, n: int) -> torch.Tensor:
    """The baseline: guided ancestral sampling written by hand (no Pyro, no library sampler objects)."""
    m = len(models)
    tail = tuple(range(-len(y) + 1, 0))
    with torch.no_grad():
        x = torch.randn(n, sampler.dim) * sampler.step_coefficients(0)[2]
        for t in range(1, sampler.max_steps):
            tau = sampler.score_time(t)
            a, b, c = sampler.step_coefficients(t)
            scores = torch.stack([mod.score(x, tau) for mod in models], -2)  # (n, m, D)
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                joint = clf.log_joint(xg, tau)  # (n, m, m): uniform priors
                log_q1 = torch.logsumexp(joint, tail) if tail else joint
                (grad,) = torch.autograd.grad(joint[(slice(None),) + tuple(y)].sum(), xg)
            score = (log_q1.exp().unsqueeze(-1) * scores).sum(-2) + grad
            x = a * x + b * score + c * torch.randn_like(x)
            assert log_q1.shape[-1] == m
    return x


def library_loop(models, clf, sampler, y, n: int) -> torch.Tensor:
    """The same loop with the library's guided score (:func:`composed_score`) and step distribution, no Pyro."""
    obs = Observations.build(y, len(models))
    with torch.no_grad():
        x = sampler.prior(torch.Size([n])).sample()
        for t in range(1, sampler.max_steps):
            score = composed_score(models, clf, obs, x, sampler.score_time(t))
            x = sampler.step_from_score(x, t, score).sample()
    return x


def main(n: int = 10_000, steps: int = 100, repeats: int = 5) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    models = [ScoreModel(2, seed=k) for k in range(2)]
    clf = ps.DiffusionObservationClassifier(2, 2, 2, schedule=models[0].schedule, hidden=128, layers=3, max_time=1.0)
    samplers = [AncestralSampler(mod, steps) for mod in models]
    mix = ps.mixture(*samplers).process
    y = (0, 1)

    def handler():
        with torch.no_grad(), ps.sculpt_guidance(classifier=clf, y=y):
            return ps.run("x", mix, num_particles=n)

    fns = {
        "plain": lambda: plain_torch_loop(models, clf, samplers[0], y, n),
        "library": lambda: library_loop(models, clf, samplers[0], y, n),
        "handler": handler,
    }
    t = interleaved(fns, repeats)
    results = {
        "machine": machine(),
        "particles": n,
        "steps": steps,
        "seconds": t,
        "handler_ratio": t["handler"] / t["plain"],
        "library_ratio": t["library"] / t["plain"],
    }
    print(f"machine: {results['machine']}")
    print(
        f"guided diffusion sampler, {n} particles, {steps} ancestral steps (best of {repeats}, interleaved): plain "
        f"torch loop {t['plain']:.3f}s, library loop without Pyro {t['library']:.3f}s, Pyro handler "
        f"{t['handler']:.3f}s; ratio handler / plain {results['handler_ratio']:.2f} (target <= 1.3), library / plain "
        f"{results['library_ratio']:.2f}"
    )
    return results


if __name__ == "__main__":
    run_main(main, __doc__, ("particles", "steps", "repeats"))
