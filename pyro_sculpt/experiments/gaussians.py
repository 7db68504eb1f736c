"""Sculpting 2D Gaussian-mixture diffusion models (issue 4; Garipov et al. 2023, §4.2; docs/math.md §1.3).

Base models are 2D Gaussian mixtures on a 3x3 lattice of modes (two and three models). Every composition is measured
against the exact composed density of the *true* base distributions on a fine grid, in two variants:

* ``oracle``: exact scores (:class:`~pyro_sculpt.diffusion.GaussianMixtureOracle`) and the exact time-conditioned
  classifier (:class:`~pyro_sculpt.diffusion.GaussianMixtureClassifier`): only the sampler's discretisation errs;
* ``trained``: score networks (:class:`~pyro_sculpt.diffusion.ScoreModel`) trained on samples of the bases, and a
  :class:`~pyro_sculpt.sculpting.DiffusionObservationClassifier` trained on their reverse chains (docs/math.md §1.2).
  The classifier learns from the states of every noise level (``max_time=1``). A second one, trained only up to
  diffusion time 0.7 as in the reference implementation (the library's default) and unused beyond it, is reported for
  comparison: with this VP schedule and modes 3 to 6 apart, part of the choice between modes is made at
  :math:`t > 0.7` (:math:`\\alpha_{0.7} \\cdot 6 \\approx 0.5\\, \\sigma_{0.7}`), and the sharpest operation (the
  3-fold contrast) loses its mode weights there.

Metrics: mode-weight total variation (nearest lattice mode), energy distance and MMD (Gaussian kernel of fixed
bandwidth) against an exact sample of the target, each with its exact-versus-exact null at the same sample size.
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import pyro
import torch

from pyro_sculpt.diffusion import AncestralSampler, DDIMSampler, GaussianMixtureOracle, ScoreModel, VPSchedule
from pyro_sculpt.metrics import energy_distance, grid_mode_weights, mmd, mode_weight_tv, mode_weights, sample_grid
from pyro_sculpt.processes import ProcessDistribution
from pyro_sculpt.sculpting import DiffusionObservationClassifier, composition_log_density, mixture, sculpt
from pyro_sculpt.sculpting.diffusion import GaussianMixtureClassifier

#: the 3x3 lattice of mode positions
LATTICE = torch.tensor([[x, y] for y in (-3.0, 0.0, 3.0) for x in (-3.0, 0.0, 3.0)])
BOUNDS = [(-5.5, 5.5), (-5.5, 5.5)]
#: bandwidth of the MMD kernel (about one mode's width)
MMD_BANDWIDTH = 0.5
#: 2-model operations: (label, y)
TWO_MODEL_OPS = [("mixture", (None, None)), ("harmonic mean", (0, 1)), ("contrast", (0, 0)),
                 ("reverse contrast", (1, 1))]  # fmt: skip
#: 3-model operations (the paper's labels are 1-based)
THREE_MODEL_OPS = [("y=123", (0, 1, 2)), ("y=12", (0, 1, None)), ("y=333", (2, 2, 2))]


def base_oracles(schedule: Optional[VPSchedule] = None) -> list[GaussianMixtureOracle]:
    """The three base mixtures: P1 on the left two columns, P2 on the upper two rows, P3 on the corners and the centre
    (each with its own mode widths and weights)."""
    schedule = schedule or VPSchedule()
    pick = {  # lattice indices: row-major from the bottom-left corner
        "p1": ([0, 1, 3, 4, 6, 7], 0.45, None),
        "p2": ([3, 4, 5, 6, 7, 8], 0.55, [0.2, 0.15, 0.15, 0.2, 0.15, 0.15]),
        "p3": ([0, 2, 4, 6, 8], 0.4, [0.15, 0.15, 0.3, 0.25, 0.15]),
    }
    return [
        GaussianMixtureOracle(LATTICE[idx], stds=std, weights=w, schedule=schedule) for idx, std, w in pick.values()
    ]


@dataclass
class Schedule:
    """Settings of one run."""

    particles: int = 4000
    sampler_steps: int = 100  # DDIM (probability-flow) steps of the compositions
    chain_steps: int = 100  # ancestral steps of the reverse chains the classifier learns from
    quadrature_points: int = 6  # of the exact classifier
    score: dict = field(default_factory=lambda: dict(steps=4000, batch_size=512, lr=2e-3))
    classifier: dict = field(
        default_factory=lambda: dict(steps=4000, batch_size=128, lr=1e-3, ramp=1000, lr_final_factor=0.1,
                                     num_chains=8192, refresh_every=None, states_per_chain=8)
    )  # fmt: skip
    classifier_net: dict = field(default_factory=lambda: dict(hidden=128, layers=3))
    #: max_time of the trained classifier ("trained": every noise level, see the module docstring)
    max_time: float = 1.0
    #: more classifiers, trained only on states up to these times, for comparison (0.7: the reference's setting)
    compare_max_times: tuple = (0.7,)
    three_models: bool = True
    variants: tuple = ("oracle", "trained")


def _null_tv(weights: torch.Tensor, n: int) -> float:
    """Expected mode-weight TV of n exact samples (normal approximation: :math:`E|\\hat w_k - w_k| =
    \\sqrt{2 w_k (1 - w_k) / (\\pi n)}`)."""
    w = weights.double()
    return float(0.5 * torch.sqrt(2 * w * (1 - w) / (math.pi * n)).sum())


def _metrics(x: torch.Tensor, log_density: Callable, n: int, seed: int) -> dict:
    """TV of mode weights, energy distance and MMD against an exact sample, with their nulls: the values expected
    between two independent exact samples of the same size (V-statistics: :math:`E\\,\\mathcal E = (2/n)\\, E|X -
    X'|` and :math:`E\\,\\mathrm{MMD}^2 = (2/n)(1 - E k(X, X'))`, estimated from two more exact samples)."""
    target = grid_mode_weights(log_density, BOUNDS, LATTICE, resolution=440)
    g = torch.Generator().manual_seed(seed)
    ref, a, b = (sample_grid(log_density, n, BOUNDS, 440, generator=g) for _ in range(3))
    x = x.detach().double().cpu()
    d_ab = torch.cdist(a, b)
    k_ab = torch.exp(-(d_ab**2) / (2 * MMD_BANDWIDTH**2)).mean()
    return {
        "tv": mode_weight_tv(x, target, LATTICE),
        "tv_null": _null_tv(target, n),
        "energy": energy_distance(x, ref),
        "energy_null": float(2.0 / n * d_ab.mean()),
        "mmd": mmd(x, ref, MMD_BANDWIDTH),
        "mmd_null": float(torch.sqrt(2.0 / n * (1 - k_ab))),
        "target_weights": [round(float(w), 4) for w in target],
        "sample_weights": [round(float(w), 4) for w in mode_weights(x, LATTICE)],
    }


def _compose(samplers, clf, y, n: int, seed: int) -> tuple[torch.Tensor, float]:
    pyro.set_rng_seed(seed)
    start = time.perf_counter()
    if all(v is None for v in y):
        x = mixture(*samplers).sample((n,))
    else:
        x = sculpt(samplers, clf, y).sample((n,))
    return x, time.perf_counter() - start


def _train_bases(oracles, schedule: Schedule, seed: int, progress_bar: bool, log) -> tuple[list, dict]:
    models, info = [], {}
    for k, o in enumerate(oracles):
        start = time.perf_counter()
        model = ScoreModel(2, o.schedule, seed=seed + k).fit(
            o.sample, **schedule.score, seed=seed + k, progress_bar=progress_bar
        )
        seconds = time.perf_counter() - start
        pyro.set_rng_seed(seed + k)
        xs = ProcessDistribution(DDIMSampler(model, schedule.sampler_steps)).sample((schedule.particles,))
        m = _metrics(xs, lambda z, o=o: o.log_prob(z), schedule.particles, seed + 100 + k)
        info[f"P{k + 1}"] = {"train_seconds": seconds, **m}
        log(f"trained score model P{k + 1} in {seconds:.1f}s: TV {m['tv']:.4f}, energy {m['energy']:.5f} "
            f"(null {m['energy_null']:.5f})")  # fmt: skip
        models.append(model)
    return models, info


def _train_classifier(models, n_obs, max_time, schedule: Schedule, seed, progress_bar, log):
    chains = [AncestralSampler(m, schedule.chain_steps) for m in models]
    start = time.perf_counter()
    clf = DiffusionObservationClassifier.for_bases(chains, n_obs, max_time=max_time, **schedule.classifier_net).fit(
        **schedule.classifier, seed=seed, progress_bar=progress_bar
    )
    seconds = time.perf_counter() - start
    log(f"trained the {len(models)}-model classifier (max_time {max_time}) in {seconds:.1f}s")
    return clf, seconds


def _run_setting(name, oracles, ops, schedule: Schedule, seed, progress_bar, log, models=None) -> dict:
    """Every operation of one setting (2 or 3 models) in every variant."""
    n_obs = len(ops[0][1])
    out: dict = {"rows": [], "samples": {}, "classifier_seconds": {}}
    variants = []
    if "oracle" in schedule.variants:
        exact = GaussianMixtureClassifier(oracles, n_obs, quadrature_points=schedule.quadrature_points,
                                          chunk_size=8192)  # fmt: skip
        variants.append(("oracle", [DDIMSampler(o, schedule.sampler_steps) for o in oracles], exact))
    if "trained" in schedule.variants:
        for k, mt in enumerate((schedule.max_time,) + tuple(schedule.compare_max_times)):
            clf, secs = _train_classifier(models, n_obs, mt, schedule, seed, progress_bar, log)
            label = "trained" if k == 0 else f"trained, max_time={mt}"
            out["classifier_seconds"][label] = secs
            variants.append((label, [DDIMSampler(md, schedule.sampler_steps) for md in models], clf))
    for label, samplers, clf in variants:
        for op, y in ops:
            if label.startswith("trained, max_time") and op == "mixture":
                continue  # the mixture uses no classifier
            x, seconds = _compose(samplers, clf, y, schedule.particles, seed)
            f = composition_log_density(oracles, y)
            row = {"setting": name, "variant": label, "op": op, "y": list(y), "sample_seconds": seconds,
                   **_metrics(x, f, schedule.particles, seed + 7)}  # fmt: skip
            out["rows"].append(row)
            out["samples"][(label, op)] = x.detach().cpu()
            log(_format(row))
    return out


def _format(r: dict) -> str:
    return (f"{r['setting']:>8} {r['variant']:>22} {r['op']:>17}: TV {r['tv']:.4f} (null {r['tv_null']:.4f}) | "
            f"energy {r['energy']:.5f} (null {r['energy_null']:.5f}) | MMD {r['mmd']:.4f} (null {r['mmd_null']:.4f})"
            f" | {r['sample_seconds']:.1f}s")  # fmt: skip


def markdown_table(results: dict) -> str:
    """The results as Markdown tables (one per setting)."""
    lines = [f"Machine: {results['machine']}. {results['schedule']['particles']} particles per composition; "
             f"DDIM (probability-flow) sampler with {results['schedule']['sampler_steps']} steps; metrics against the "
             "exact composition of the true bases (grid of 440x440 cells over [-5.5, 5.5]^2); each null is the same "
             "metric expected between two independent exact samples of that size.", ""]  # fmt: skip
    if results.get("bases"):
        lines += ["#### Trained score models (DDIM, against their own data distribution)", "",
                  "| base | TV | energy (null) | MMD (null) | train s |", "|---|---|---|---|---|"]  # fmt: skip
        for k, b in results["bases"].items():
            lines.append(f"| {k} | {b['tv']:.4f} | {b['energy']:.5f} ({b['energy_null']:.5f}) | {b['mmd']:.4f} "
                         f"({b['mmd_null']:.4f}) | {b['train_seconds']:.1f} |")  # fmt: skip
        lines.append("")
    for key, title in (("two_models", "Two models (P1, P2)"), ("three_models", "Three models (P1, P2, P3)")):
        rows = results.get(key) or []
        if not rows:
            continue
        lines += [f"#### {title}", "", "| variant | operation | TV (null) | energy (null) | MMD (null) | sample s |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for r in rows:
            lines.append(f"| {r['variant']} | {r['op']} | {r['tv']:.4f} ({r['tv_null']:.4f}) | {r['energy']:.5f} "
                         f"({r['energy_null']:.5f}) | {r['mmd']:.4f} ({r['mmd_null']:.4f}) | "
                         f"{r['sample_seconds']:.1f} |")  # fmt: skip
        lines.append("")
    lines.append(f"Total {results['total_seconds']:.0f} s; trained variant {results['trained_seconds']:.0f} s "
                 f"(training and sampling).")  # fmt: skip
    return "\n".join(lines)


def figure(oracles: Sequence, settings: dict, path: Path, max_points: int = 1500) -> Path:
    """Panels of samples over the exact target densities: one row per (setting, variant)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = 200
    axes_ = [torch.linspace(lo, hi, res) for lo, hi in BOUNDS]
    gx, gy = torch.meshgrid(*axes_, indexing="xy")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)
    rows = []
    for name, (ops, out, k) in settings.items():
        for variant in dict.fromkeys(v for v, _ in out["samples"]):
            rows.append((name, variant, ops, out, k))
    ncols = max(len(ops) for _, _, ops, _, _ in rows) + 1 if rows else 1
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.4 * ncols, 2.5 * len(rows)), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for r, (name, variant, ops, out, k) in enumerate(rows):
        ax = axes[r, 0]
        for j, o in enumerate(oracles[:k]):
            ax.contour(gx, gy, o.log_prob(pts).exp().reshape(res, res), levels=4, colors=f"C{j}", linewidths=0.6)
        ax.set_title(f"{name}: bases P1..P{k}", fontsize=7)
        ax.set_ylabel(variant, fontsize=7)
        for c, (op, y) in enumerate(ops, 1):
            ax = axes[r, c]
            dens = composition_log_density(oracles[:k], y)(pts.double()).exp().reshape(res, res)
            ax.imshow(dens, origin="lower", extent=[*BOUNDS[0], *BOUNDS[1]], cmap="Greys", aspect="auto")
            ax.set_xlim(*BOUNDS[0])
            ax.set_ylim(*BOUNDS[1])
            x = out["samples"].get((variant, op))
            if x is not None:
                x = x[:max_points]
                ax.scatter(x[:, 0], x[:, 1], s=1.0, c="C3", alpha=0.6, linewidths=0)
                row = next(q for q in out["rows"] if q["variant"] == variant and q["op"] == op)
                ax.set_title(f"{op}\nTV {row['tv']:.3f}", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run(out: Path, schedule: Schedule, seed: int = 0, progress_bar: bool = True, log=print) -> dict:
    """Run the experiment and write ``results.json``, ``results.md`` and ``gaussians.png`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results: dict = {"machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s)",
                     "schedule": asdict(schedule), "bases": {}, "two_models": [], "three_models": []}  # fmt: skip
    oracles = base_oracles()
    k = 3 if schedule.three_models else 2
    models = None
    trained_seconds = 0.0
    if "trained" in schedule.variants:
        t = time.perf_counter()
        models, results["bases"] = _train_bases(oracles[:k], schedule, seed, progress_bar, log)
        trained_seconds += time.perf_counter() - t
    settings = {}
    plan = [("2 models", oracles[:2], TWO_MODEL_OPS, "two_models")]
    if schedule.three_models:
        plan.append(("3 models", oracles, THREE_MODEL_OPS, "three_models"))
    for name, bases, ops, key in plan:
        res = _run_setting(name, bases, ops, schedule, seed, progress_bar, log,
                           None if models is None else models[: len(bases)])  # fmt: skip
        results[key] = res["rows"]
        results[f"{key}_classifier_seconds"] = res["classifier_seconds"]
        trained_seconds += sum(res["classifier_seconds"].values())
        trained_seconds += sum(r["sample_seconds"] for r in res["rows"] if r["variant"].startswith("trained"))
        settings[name] = (ops, res, len(bases))
    results["trained_seconds"] = trained_seconds
    results["total_seconds"] = time.perf_counter() - start
    figure(oracles, settings, out / "gaussians.png")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    table = markdown_table(results)
    (out / "results.md").write_text(table + "\n")
    log(table)
    log(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'gaussians.png'}")
    return results


def main(
    out: Path,
    seed: int = 0,
    progress_bar: bool = True,
    particles: Optional[int] = None,
    variants: Sequence[str] = ("oracle", "trained"),
    two_only: bool = False,
    compare_max_time: bool = True,
) -> dict:
    """The ``pyro-sculpt gaussians`` command."""
    schedule = Schedule(variants=tuple(variants), three_models=not two_only)
    if particles is not None:
        schedule.particles = particles
    if not compare_max_time:
        schedule.compare_max_times = ()
    if not math.isfinite(schedule.particles) or schedule.particles < 2:
        raise ValueError(f"particles must be >= 2, got {schedule.particles}")
    return run(out, schedule, seed, progress_bar)
