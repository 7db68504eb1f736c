"""The sculpting paper's 2D grid experiment (Garipov et al. 2023, §6.1, Fig. 3 and Fig. C.1).

Base GFlowNets on a 32x32 grid (symmetric Shubert at temperature 0.5 and diagonal sigmoid; the three circles), an
observation classifier per experiment, and the operations of the paper's figures. Each composition is measured
against the exact composition of the *learned* bases by the exact L1 of the guided policy's terminal distribution
(dynamic programming), and by empirical L1 of particles with and without the twisted-SMC correction. Models are
cached in the output directory and reused; an unusable cached file is retrained (with a logged warning).

The default run (README command 1, :func:`reduced_schedule`) is the paper's main figure (Fig. 3), sized to finish
well within 10 minutes on 2 CPU cores even on a slow day: the two bases and the harmonic mean, contrast and reverse
contrast at alpha = 1/2 with a classifier not conditioned on alpha. ``all_ops`` (``pyro-sculpt grid --all-ops``) adds
the alpha-conditioned classifier at alphas 0.05, 0.5, 0.95, the 3-model experiment (Fig. C.1, every operation) and
the chained composition; ``--full`` is the paper's training settings with every operation.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

import torch

from pyro_sculpt.experiments.cache import load_or_train, settings_key
from pyro_sculpt.experiments.plotting import grid_heatmaps
from pyro_sculpt.experiments.train_grid import FAST_RECIPE, REFERENCE_RECIPE
from pyro_sculpt.gflownets import GFlowNet, exact
from pyro_sculpt.gflownets.envs.hypergrid import HyperGrid, rewards
from pyro_sculpt.infer import smc
from pyro_sculpt.metrics import empirical_distribution, expected_l1_floor, l1_distance
from pyro_sculpt.sculpting import ObservationClassifier, composition_distribution, sculpt

#: 2-model operations of the paper's Fig. 3: (label, y) at every alpha
TWO_MODEL_OPS = [("harmonic mean", (0, 1)), ("contrast", (0, 0)), ("reverse contrast", (1, 1))]
ALPHAS = (0.05, 0.5, 0.95)
#: 3-model operations (paper's labels are 1-based)
THREE_MODEL_OPS = ["12", "13", "23", "123", "11", "22", "33", "111", "222", "333"]


@dataclass
class Schedule:
    """Training settings and operations of one run of the experiment (every operation by default)."""

    base: dict = field(default_factory=lambda: dict(FAST_RECIPE))
    classifier: dict = field(default_factory=dict)
    particles: int = 100_000
    #: alphas of the 2-model operations with the alpha-conditioned classifier (empty: that classifier is not trained)
    alphas: tuple = ALPHAS
    #: the chained composition (the harmonic mean used as a base; one more classifier)
    chained: bool = True
    three_models: bool = True
    #: the 3-model operations run (labels of :data:`THREE_MODEL_OPS`)
    three_model_ops: tuple = tuple(THREE_MODEL_OPS)


def default_operations(schedule: Schedule) -> Schedule:
    """``schedule`` restricted to the operations of the default run (README command 1): the two bases and the
    classifier not conditioned on alpha, with the harmonic mean, contrast and reverse contrast at alpha = 1/2; no
    alpha-conditioned classifier (alphas 0.05, 0.5, 0.95), no 3-model experiment and no chained composition.
    ``pyro-sculpt grid --all-ops`` runs every operation."""
    return replace(schedule, alphas=(), chained=False, three_models=False)


def reduced_schedule(all_ops: bool = False) -> Schedule:
    """The schedule of README command 1: large batches and a decaying learning rate, minutes on 2 CPU cores.

    :param all_ops: every operation of the paper's figures (the alpha-conditioned classifier at alphas 0.05, 0.5,
        0.95, the 3-model experiment, the chained composition); otherwise :func:`default_operations`.
    """
    clf = dict(steps=2000, batch_size=128, lr=2e-3, ramp=400, lr_final_factor=0.05)
    schedule = Schedule(classifier=clf, particles=100_000, three_models=True)
    return schedule if all_ops else default_operations(schedule)


def paper_schedule() -> Schedule:
    """The paper's settings and every operation: bases by the reference TB recipe, classifiers at 64 trajectories
    per model per step for 15,000 steps (Adam 1e-3, ramp 3,000, EMA 0.995)."""
    clf = dict(steps=15_000, batch_size=64, lr=1e-3, ramp=3_000)
    return Schedule(base=dict(REFERENCE_RECIPE), classifier=clf, particles=100_000, three_models=True)


def _label(y) -> str:
    return "".join(str(v + 1) for v in y if v is not None)


def _load_base(path: Path, env: HyperGrid, reward) -> GFlowNet:
    gfn = GFlowNet.load(path, env)
    if gfn.reward is not None and gfn.reward.config() != reward.config():
        raise ValueError(f"{path} holds a GFlowNet of reward {gfn.reward.config()}, expected {reward.config()}")
    return gfn


def base_path(out: Path, name: str, schedule: Schedule, seed: int) -> Path:
    """Where base ``name`` trained by ``schedule.base`` from ``seed`` is cached: ``out/base_{name}_{key}.pt``, the key
    a hash of those settings, so that runs of other settings (``--full`` after the default run) in one ``--out``
    train their own instead of loading these."""
    return Path(out) / f"base_{name}_{settings_key(schedule.base, seed)}.pt"


def classifier_path(out: Path, name: str, schedule: Schedule, seed: int) -> Path:
    """Where classifier ``name`` is cached: ``out/classifier_{name}_{key}.pt``, the key a hash of its training
    settings, its seed and the bases' training settings (the bases it was trained for)."""
    return Path(out) / f"classifier_{name}_{settings_key(schedule.classifier, schedule.base, seed)}.pt"


def _get_base(out: Path, name: str, reward, schedule: Schedule, seed: int, progress_bar: bool, log) -> GFlowNet:
    """The base GFlowNet cached at :func:`base_path`, trained (and cached) if missing or unusable."""
    env = HyperGrid(2, 32)

    def train() -> GFlowNet:
        t = time.perf_counter()
        # a seeded fit starts from weights drawn from the seed: the same --seed gives the same bases
        gfn = GFlowNet(env, reward).fit(**schedule.base, seed=seed, progress_bar=progress_bar)
        l1 = l1_distance(gfn.exact_terminal_distribution(), exact.reward_distribution(env, reward))
        log(f"trained base {name} in {time.perf_counter() - t:.1f}s: exact L1 to its reward = {l1:.4f}")
        return gfn

    gfn, _ = load_or_train(base_path(out, name, schedule, seed), lambda p: _load_base(p, env, reward), train, log)
    return gfn


#: the bases of the experiment: name -> (reward, seed offset from ``--seed``)
BASES = {
    "shubert": (lambda: rewards.symmetric_shubert(0.5), 0),
    "sigmoid": (lambda: rewards.diagonal_sigmoid(), 1),
    **{f"circle{k}": ((lambda k=k: rewards.circle(k)), 1 + k) for k in (1, 2, 3)},
}


def trained_bases(
    out: Path, names, schedule: Optional[Schedule] = None, seed: int = 0, progress_bar: bool = False, log=print
) -> list:
    """The base GFlowNets ``names`` (keys of :data:`BASES`) of a run into ``out`` with ``schedule`` (default: the
    command's reduced one) and ``seed``, loaded from its cache or trained and cached there (e.g.
    ``trained_bases("runs/grid", ["shubert", "sigmoid"])``, the bases of README command 1).
    """
    schedule = reduced_schedule() if schedule is None else schedule
    unknown = [n for n in names if n not in BASES]
    if unknown:
        raise ValueError(f"names must be bases of the grid experiment ({', '.join(BASES)}), got {unknown}")
    return [_get_base(Path(out), n, BASES[n][0](), schedule, seed + BASES[n][1], progress_bar, log) for n in names]


def _load_classifier(path: Path, env, n: int, alpha_conditioned: bool, num_models: int) -> ObservationClassifier:
    clf = ObservationClassifier.load(path, env)
    found = (clf.num_models, clf.num_observations, clf.alpha_conditioned)
    if found != (num_models, n, alpha_conditioned):
        raise ValueError(
            f"{path} holds a classifier of (models, observations, alpha-conditioned) = {found}, expected "
            f"{(num_models, n, alpha_conditioned)}"
        )
    return clf


def _get_classifier(out, name, bases, n, alpha_conditioned, schedule, seed, progress_bar, log):
    """The classifier cached at :func:`classifier_path`, trained (and cached) if missing or unusable; returns it
    with its training time in seconds (``None`` when loaded)."""
    seconds = None

    def train() -> ObservationClassifier:
        nonlocal seconds
        t = time.perf_counter()
        clf = ObservationClassifier.for_bases(bases, n, alpha_conditioned=alpha_conditioned).fit(
            **schedule.classifier, seed=seed, progress_bar=progress_bar
        )  # a seeded fit starts from weights drawn from the seed
        seconds = time.perf_counter() - t
        log(f"trained classifier {name} in {seconds:.1f}s")
        return clf

    path = classifier_path(out, name, schedule, seed)
    load = lambda p: _load_classifier(p, bases[0].env, n, alpha_conditioned, len(bases))  # noqa: E731
    clf, _ = load_or_train(path, load, train, log)
    return clf, seconds


def _evaluate(bases, clf, y, alpha, particles: int, seed: int) -> dict:
    env = bases[0].env
    target = composition_distribution(torch.stack([b.exact_terminal_distribution() for b in bases]), y, alpha)
    mixture = torch.stack([b.exact_terminal_distribution() for b in bases]).mean(0)
    d = sculpt(bases, clf, y, alpha)
    proc = d.process
    row = {
        "y": _label(y),
        "alpha": alpha,
        "exact_l1": l1_distance(proc.exact_terminal_distribution(), target),
        "mixture_l1": l1_distance(mixture, target),
    }
    if particles:
        torch.manual_seed(seed)
        t = time.perf_counter()
        x = d.sample((particles,))
        row["guided_seconds"] = time.perf_counter() - t
        row["guided_empirical_l1"] = l1_distance(empirical_distribution(env.index(x), env.num_states), target)
        res = smc(proc, particles, seed=seed, terminal="classifier")
        row["smc_classifier_terminal_l1"] = l1_distance(res.distribution(env), target)
        t = time.perf_counter()
        res = smc(proc, particles, seed=seed, terminal="trajectory")
        row["smc_seconds"] = time.perf_counter() - t
        row["smc_empirical_l1"] = l1_distance(res.distribution(env), target)
        row["smc_ess"] = res.ess
        row["smc_pareto_k"] = res.pareto_k
        row["smc_resamples"] = res.num_resamples
        row["floor_l1"] = expected_l1_floor(target, particles)
        row.update(_evaluate_classifier_free(bases, y, alpha, particles, seed, target))
    return row, target, proc


def _evaluate_classifier_free(bases, y, alpha, particles: int, seed: int, target: torch.Tensor) -> dict:
    """Classifier-free columns: the guided policy alone and SMC (no classifier trained, so their time is all)."""
    env = bases[0].env
    d = sculpt(bases, y=y, alpha=alpha)
    torch.manual_seed(seed)
    t = time.perf_counter()
    x = d.sample((particles,))
    row = {"cf_guided_seconds": time.perf_counter() - t}
    row["cf_guided_empirical_l1"] = l1_distance(empirical_distribution(env.index(x), env.num_states), target)
    twist = d.process.twist("auto")  # the intermediate operator chosen by pilot runs where it matters
    t = time.perf_counter()
    res = smc(twist, particles, seed=seed)
    row["cf_smc_seconds"] = time.perf_counter() - t
    row["cf_smc_empirical_l1"] = l1_distance(res.distribution(env), target)
    row["cf_smc_min_ess"] = min(res.ess_history)
    row["cf_smc_resamples"] = res.num_resamples
    row["cf_intermediate"] = getattr(twist, "chosen", None) or twist.process.intermediate
    return row


def run(out: Path, schedule: Schedule, seed: int = 0, progress_bar: bool = True, log=print) -> dict:
    """Run the experiment and write ``results.json``, ``results.md`` and the figures into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results: dict = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "schedule": asdict(schedule),
        "two_models": [],
        "three_models": [],
    }
    bases = trained_bases(out, ["shubert", "sigmoid"], schedule, seed, progress_bar, log)
    shubert, sigmoid = bases
    panels = [
        ("P1: Shubert", shubert.exact_terminal_distribution()),
        ("P2: sigmoid", sigmoid.exact_terminal_distribution()),
    ]
    clf = None
    if schedule.alphas:
        clf, secs = _get_classifier(out, "two_models", bases, 2, True, schedule, seed, progress_bar, log)
        results["two_models_classifier_seconds"] = secs
        for alpha in schedule.alphas:
            for label, y in TWO_MODEL_OPS:
                row, target, proc = _evaluate(bases, clf, y, alpha, schedule.particles, seed)
                row["op"] = label
                results["two_models"].append(row)
                log(_format(row))
                panels.append((f"{label} a={alpha}\nL1={row['exact_l1']:.3f}", proc.exact_terminal_distribution()))
    # the unparameterised operations (alpha = 1/2) with a classifier that is not conditioned on alpha
    plain, secs = _get_classifier(out, "two_models_plain", bases, 2, False, schedule, seed, progress_bar, log)
    results["two_models_plain_classifier_seconds"] = secs
    for label, y in TWO_MODEL_OPS:
        row, _, proc = _evaluate(bases, plain, y, None, schedule.particles, seed)
        row["op"] = f"{label} (plain clf)"
        results["two_models"].append(row)
        log(_format(row))
        panels.append((f"{label} (plain clf)\nL1={row['exact_l1']:.3f}", proc.exact_terminal_distribution()))
    if schedule.chained:
        # chaining: the harmonic mean is itself a base; its composition is approximate (see SculptedProcess)
        hm = (sculpt(bases, clf, (0, 1), 0.5) if clf is not None else sculpt(bases, plain, (0, 1))).process
        chain_clf, _ = _get_classifier(out, "chained", [hm, sigmoid], 2, False, schedule, seed, progress_bar, log)
        row, _, proc = _evaluate([hm, sigmoid], chain_clf, (0, 0), None, 0, seed)
        row["op"] = "(P1 x P2) contrast P2"
        results["chained"] = row
        log(_format(row) + "  [chained: approximate by construction]")
        panels.append((f"(P1xP2) contrast P2\nL1={row['exact_l1']:.3f}", proc.exact_terminal_distribution()))
    grid_heatmaps(panels, 32, out / "two_models.png", ncols=6, suptitle="Sculpting 2 GFlowNets (exact, guided)")
    if schedule.three_models:
        circles = trained_bases(out, ["circle1", "circle2", "circle3"], schedule, seed, progress_bar, log)
        clf3, secs3 = _get_classifier(out, "three_models", circles, 3, False, schedule, seed, progress_bar, log)
        results["three_models_classifier_seconds"] = secs3
        panels = [(f"P{k + 1}: circle {k + 1}", c.exact_terminal_distribution()) for k, c in enumerate(circles)]
        for label in schedule.three_model_ops:
            y = tuple(int(c) - 1 for c in label) + (None,) * (3 - len(label))
            row, target, proc = _evaluate(circles, clf3, y, None, schedule.particles, seed)
            row["op"] = f"y={label}"
            results["three_models"].append(row)
            log(_format(row))
            panels.append((f"y={label}\nL1={row['exact_l1']:.3f}", proc.exact_terminal_distribution()))
        ncols = 5 if len(panels) > 8 else 4
        grid_heatmaps(panels, 32, out / "three_models.png", ncols=ncols, suptitle="Sculpting 3 GFlowNets")
    results["total_seconds"] = time.perf_counter() - start
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown_table(results))
    log(markdown_table(results))
    log(
        f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'two_models.png'}"
        + (f", {out / 'three_models.png'}" if schedule.three_models else "")
    )
    return results


def _format(row: dict) -> str:
    s = f"{row['op']:>17} alpha={row['alpha']}: exact L1 {row['exact_l1']:.4f} (mixture {row['mixture_l1']:.3f})"
    if "smc_empirical_l1" in row:
        s += (
            f" | empirical L1 guided {row['guided_empirical_l1']:.4f}, SMC {row['smc_empirical_l1']:.4f}"
            f" (terminal head {row['smc_classifier_terminal_l1']:.4f}), floor {row['floor_l1']:.4f},"
            f" ESS {row['smc_ess']:.0f}, k {row['smc_pareto_k']:.2f}"
            f" | classifier-free: guided {row['cf_guided_empirical_l1']:.4f}, SMC {row['cf_smc_empirical_l1']:.4f}"
            f" (min ESS {row['cf_smc_min_ess']:.0f}, {row['cf_smc_resamples']} resamplings,"
            f" {row['cf_smc_seconds']:.1f}s)"
        )
    return s


def markdown_table(results: dict) -> str:
    """The results as Markdown tables."""
    lines = []
    for key, title in (
        ("two_models", "Two models (Shubert, sigmoid)"),
        ("three_models", "Three models (circles)"),
    ):
        rows = results.get(key) or []
        if not rows:
            continue
        lines += [
            f"### {title}",
            "",
            "| operation | alpha | exact L1 | mixture L1 | guided emp. L1 | SMC emp. L1 | SMC emp. L1 (terminal head) "
            "| floor | SMC ESS | Pareto k | classifier-free guided emp. L1 | classifier-free SMC emp. L1 (min ESS, "
            "resamplings, seconds) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            emp = (
                (
                    f"{r['guided_empirical_l1']:.4f} | {r['smc_empirical_l1']:.4f} | "
                    f"{r['smc_classifier_terminal_l1']:.4f} | {r['floor_l1']:.4f} | "
                    f"{r['smc_ess']:.0f} | {r['smc_pareto_k']:.2f}"
                )
                if "smc_empirical_l1" in r
                else "- | - | - | - | - | -"
            )
            emp += (
                (
                    f" | {r['cf_guided_empirical_l1']:.4f} | {r['cf_smc_empirical_l1']:.4f} "
                    f"({r['cf_smc_min_ess']:.0f}, {r['cf_smc_resamples']}, {r['cf_smc_seconds']:.1f})"
                )
                if "cf_smc_empirical_l1" in r
                else " | - | -"
            )
            alpha = "-" if r["alpha"] is None else r["alpha"]
            lines.append(f"| {r['op']} | {alpha} | {r['exact_l1']:.4f} | {r['mixture_l1']:.3f} | {emp} |")
        lines.append("")
    if results.get("chained"):
        r = results["chained"]
        lines.append(
            f"Chained composition {r['op']} (a sculpted GFlowNet used as a base; approximate by construction): "
            f"exact L1 {r['exact_l1']:.4f} to the closed form of its learned parts (mixture "
            f"{r['mixture_l1']:.3f})."
        )
        lines.append("")
    return "\n".join(lines)


def main(
    out: Path,
    full: bool,
    seed: int,
    progress_bar: bool,
    particles: Optional[int] = None,
    two_only: bool = False,
    all_ops: bool = False,
) -> dict:
    """The ``pyro-sculpt grid`` command.

    :param full: the paper's training settings and every operation (:func:`paper_schedule`).
    :param all_ops: every operation with the reduced training (:func:`reduced_schedule` with ``all_ops=True``);
        otherwise the default run's operations (:func:`default_operations`).
    :param particles: particles of the empirical L1s (0: exact L1 only); default 100,000.
    :param two_only: skip the 3-model experiment.
    """
    schedule = paper_schedule() if full else reduced_schedule(all_ops)
    if particles is not None:
        schedule.particles = particles
    if two_only:
        schedule.three_models = False
    return run(out, schedule, seed, progress_bar)
