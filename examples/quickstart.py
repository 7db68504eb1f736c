"""Quick start: two GFlowNets on a small grid, their compositions, and the same composition as a Pyro model.

Run: ``python examples/quickstart.py`` (about half a minute on one CPU core).
"""

from __future__ import annotations

import pyro
import torch
from pyro.infer import Importance

import pyro_sculpt as ps
from pyro_sculpt.gflownets import exact


def main(height: int = 12, gfn_steps: int = 800, clf_steps: int = 800, seed: int = 0) -> dict:
    env = ps.HyperGrid(ndim=2, height=height)
    recipe = dict(batch_size=128, lr=2e-3, lr_final_factor=0.05, seed=seed, progress_bar=False)
    p1 = ps.GFlowNet(env, ps.rewards.symmetric_shubert(temperature=0.5)).fit(steps=gfn_steps, **recipe)
    p2 = ps.GFlowNet(env, ps.rewards.diagonal_sigmoid()).fit(steps=gfn_steps, **recipe)
    for name, g in (("P1 (Shubert)", p1), ("P2 (sigmoid)", p2)):
        l1 = ps.metrics.l1_distance(g.exact_terminal_distribution(), exact.reward_distribution(env, g.reward))
        print(f"{name}: exact L1 to its reward distribution {l1:.3f}")

    clf = ps.ObservationClassifier.for_bases([p1, p2], num_observations=2).fit(
        steps=clf_steps,
        batch_size=128,
        lr=2e-3,
        ramp=clf_steps // 4,
        lr_final_factor=0.05,
        seed=seed,
        progress_bar=False,
    )
    learned = torch.stack([p1.exact_terminal_distribution(), p2.exact_terminal_distribution()])
    out = {}
    for name, d, y in (
        ("harmonic mean", ps.harmonic_mean(p1, p2, clf), (0, 1)),
        ("contrast", ps.contrast(p1, p2, clf), (0, 0)),
        ("reverse contrast", ps.reverse_contrast(p1, p2, clf), (1, 1)),
    ):
        x = d.sample((10_000,))  # guided particles, vectorised
        exact_l1 = ps.metrics.l1_distance(
            d.process.exact_terminal_distribution(), ps.composition_distribution(learned, y)
        )
        out[name] = exact_l1
        print(
            f"{name}: exact L1 of the guided sampler to the closed form {exact_l1:.3f}; "
            f"mean log-prob of 10,000 samples {d.log_prob(x).mean():.2f}"
        )

    def model():
        x = pyro.sample("x", ps.mixture(p1, p2))
        pyro.sample("y1", ps.ModelOfOrigin(clf, x), obs=torch.tensor(0))
        pyro.sample("y2", ps.ModelOfOrigin(clf, x), obs=torch.tensor(1))
        return x

    posterior = Importance(model, num_samples=500).run()
    ess = float(posterior.get_ESS())
    print(f"Pyro Importance on the ModelOfOrigin model: ESS {ess:.0f} of 500")
    out["importance_ess"] = ess
    return out


if __name__ == "__main__":
    main()
