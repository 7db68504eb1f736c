"""Train one GFlowNet on a 2D HyperGrid and measure its exact distance to the reward distribution."""

from __future__ import annotations

import json
import time
from pathlib import Path

from pyro_sculpt.experiments.plotting import grid_heatmaps
from pyro_sculpt.gflownets import GFlowNet, exact
from pyro_sculpt.gflownets.envs.hypergrid import HyperGrid, rewards
from pyro_sculpt.metrics import js_divergence, l1_distance

#: Our fast trajectory-balance recipe on the 32x32 grid (see docs/gflownets.md for the measurements).
FAST_RECIPE = dict(steps=1500, batch_size=128, lr=2e-3, lr_logz=0.1, exploration=0.05, lr_final_factor=0.05)
#: The reference recipe of the sculpting paper's grid experiments.
REFERENCE_RECIPE = dict(steps=20_000, batch_size=16, lr=1e-3, lr_logz=0.1, exploration=0.05)


def train_and_evaluate(
    reward: rewards.Reward,
    height: int = 32,
    recipe: dict | None = None,
    seed: int = 0,
    progress_bar: bool = True,
    device: str | None = None,
) -> tuple[GFlowNet, dict]:
    """Train a GFlowNet on ``reward`` and return it with its exact L1 / JS to the normalised reward."""
    env = HyperGrid(ndim=2, height=height)
    gfn = GFlowNet(env, reward, device=device)
    start = time.perf_counter()
    gfn.fit(**(recipe or FAST_RECIPE), seed=seed, progress_bar=progress_bar)
    seconds = time.perf_counter() - start
    p = gfn.exact_terminal_distribution().cpu()
    target = exact.reward_distribution(env, reward)
    return gfn, {
        "reward": reward.config(),
        "height": height,
        "l1": l1_distance(p, target),
        "js": js_divergence(p, target),
        "train_seconds": seconds,
        "recipe": recipe or FAST_RECIPE,
    }


def main(reward_name: str, height: int, out: Path, seed: int, progress_bar: bool, steps: int | None = None) -> dict:
    """The ``pyro-sculpt train`` command."""
    out.mkdir(parents=True, exist_ok=True)
    params = {"temperature": 0.5} if reward_name == "symmetric_shubert" else {}
    reward = rewards.get(reward_name, **params)
    recipe = dict(FAST_RECIPE)
    if steps is not None:
        recipe["steps"] = steps
    gfn, result = train_and_evaluate(reward, height, recipe, seed, progress_bar)
    gfn.save(out / f"gfn_{reward_name}.pt")
    target = exact.reward_distribution(gfn.env, reward)
    grid_heatmaps(
        [
            ("reward distribution", target),
            (f"GFlowNet (exact), L1={result['l1']:.3f}", gfn.exact_terminal_distribution()),
        ],
        height,
        out / f"gfn_{reward_name}.png",
    )
    (out / f"gfn_{reward_name}.json").write_text(json.dumps(result, indent=2))
    print(
        f"{reward_name} on {height}x{height}: exact L1 = {result['l1']:.4f} (sum convention), "
        f"JS = {result['js']:.5f}, trained in {result['train_seconds']:.1f}s"
    )
    print(f"wrote {out / f'gfn_{reward_name}.pt'} (the model), {out / f'gfn_{reward_name}.png'} and "
          f"{out / f'gfn_{reward_name}.json'}")  # fmt: skip
    return result
