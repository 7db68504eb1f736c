"""Energy-based composition of 2D diffusion models across samplers (issue 9; Du et al. 2023, "Reduce, Reuse,
Recycle"; docs/math.md §2; docs/mcmc.md).

Three tasks, each an operator :math:`\\Phi` on the log-densities of Gaussian-mixture oracles (exact scores and
energies at every noise level) whose exact target :math:`\\propto \\exp \\Phi(\\log p_1, \\log p_2)` is integrated on
a grid:

* ``product``: Reduce, Reuse, Recycle's ring of 8 Gaussians times :math:`\\mathcal N((0.6, 0.3), 0.5^2 I)`
  (:func:`~pyro_sculpt.experiments.exact_targets.rrr_ring_product_task`);
* ``mixture``: the ring OR a cross of 4 Gaussians (std 0.2 at distance 2), equal weights;
* ``negation``: the ring NOT the Gaussian, :math:`p_1 (p_1 / p_2)^{1/2}` (the modes near the Gaussian lose weight).

Every task is sampled by reverse diffusion (Euler-Maruyama on the operator's score: summed scores for the product)
alone, with MCMC correctors after every reverse step (ULA, MALA, U-HMC, HMC targeting the level's
:math:`\\pi_t \\propto \\exp\\Phi(\\log q_{1,t}, \\log q_{2,t})`; :func:`corrected_reverse_diffusion`), by SMC
(:func:`~pyro_sculpt.infer.smc`) and by SMC with MALA moves after each resampling. Metrics: mode-weight TV (nearest
mode) and energy distance against an exact sample, each with its exact-sample null, and the wall time per sample.

Trained energy models: :func:`run` takes ``models``, a mapping from task name to the two leaf models to use in place
of the oracles (anything with ``log_prob(x, t)`` and ``score(x, t)`` for the correctors and SMC, e.g. energy-
parameterised diffusion models); their rows are labelled with the variant name. :func:`train_energy_models` trains
one small :class:`~pyro_sculpt.diffusion.EnergyScoreModel` per base (ring, Gaussian, cross) on exact samples of it
(through the model's own ``fit``), cached in the output directory; ``pyro-sculpt energy2d --models oracle trained``
adds their rows. The trained rows are measured against the same exact target (the oracles' composition), so they
show the models' error and the sampler's together. An energy model's log-density is known up to a constant per noise
level, which cancels for the product and the negation but not for the mixture (a log-sum-exp): there the trained
rows are reverse diffusion (posterior weights from tracked densities) and SMC with tracked densities; the correctors
and SMC with MALA moves, which need exact level densities, are skipped (logged).
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import pyro
import torch

from pyro_sculpt.diffusion import EnergyScoreModel, EulerMaruyamaSampler, GaussianMixtureOracle
from pyro_sculpt.experiments.cache import load_or_train
from pyro_sculpt.experiments.exact_targets import operator_log_density, rrr_ring_product_task
from pyro_sculpt.infer import smc
from pyro_sculpt.infer.smc import as_twist
from pyro_sculpt.mcmc import Rejuvenation
from pyro_sculpt.metrics import assign_modes, energy_distance, grid_probabilities
from pyro_sculpt.sculpting import compose
from pyro_sculpt.sculpting.log_operators import Base, LogOperator, Mixture, Negation, Product
from pyro_sculpt.utils import check_positive_int

BOUNDS = [(-3.0, 3.0), (-3.0, 3.0)]
#: the cross of the mixture task: 4 Gaussians of std 0.2 at distance 2 on the axes
CROSS_MEANS = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, 0.0], [0.0, -2.0]])
CROSS_STD = 0.2
#: strength of the negation task, p1 (p1 / p2)^a
NEGATION_A = 0.5
#: the samplers of the table, in order
SAMPLERS = ("reverse diffusion", "ULA corrector", "MALA corrector", "U-HMC corrector", "HMC corrector",
            "MALA corrector (late)", "SMC", "SMC + MALA")  # fmt: skip
#: kernel and options of each corrector row
CORRECTORS = {
    "ULA corrector": ("ula", {}),
    "MALA corrector": ("mala", {}),
    "U-HMC corrector": ("uhmc", {"num_leapfrog": 1}),
    "HMC corrector": ("hmc", {"num_leapfrog": 3}),
    "MALA corrector (late)": ("mala", {}),
}
#: the correctors whose steps per level follow :meth:`Size.late_schedule` (the rest take ``corrector_steps`` at every
#: level)
LATE_CORRECTORS = ("MALA corrector (late)",)
#: the samplers that need the level's exact log-density up to one constant shared by all particles
EXACT_ONLY = (*CORRECTORS, "SMC + MALA")
#: the oracle bases each task composes, by name (:func:`bases`)
TASK_BASES = {"product": ("ring", "gaussian"), "mixture": ("ring", "cross"), "negation": ("ring", "gaussian")}


@dataclass
class Task:
    """A composition of two leaf models with its exact target.

    :ivar name: the task's name.
    :ivar leaves: the two oracles (exact ``log_prob(x, t)`` and ``score(x, t)``).
    :ivar operator: :math:`\\Phi` on their log-densities.
    :ivar modes: ``(K, 2)`` mode centres for the mode-weight TV (nearest mode).
    """

    name: str
    leaves: list
    operator: LogOperator
    modes: torch.Tensor


def bases() -> dict[str, GaussianMixtureOracle]:
    """The oracle bases of the tasks by name: ``ring``, ``gaussian`` (Reduce, Reuse, Recycle's product task) and
    ``cross``."""
    ring, gauss, _ = rrr_ring_product_task()
    return {"ring": ring, "gaussian": gauss, "cross": GaussianMixtureOracle(CROSS_MEANS, stds=CROSS_STD)}


def tasks() -> dict[str, Task]:
    """The three tasks of the module docstring, by name."""
    b = bases()
    ring, gauss, cross = b["ring"], b["gaussian"], b["cross"]
    b0, b1 = Base(0, 2), Base(1, 2)
    return {
        "product": Task("product", [ring, gauss], Product(b0, b1), ring.means.double()),
        "mixture": Task("mixture", [ring, cross], Mixture([b0, b1]), torch.cat([ring.means, cross.means]).double()),
        "negation": Task("negation", [ring, gauss], Negation(b0, b1, NEGATION_A), ring.means.double()),
    }


class Reference:
    """The exact target of a task on a grid over :data:`BOUNDS`: its mode weights and three exact samples of ``n``
    points (a reference for the energy distance and two more for its null, :math:`(2/n)\\, E|X - X'|`)."""

    def __init__(self, task: Task, n: int, seed: int, resolution: int = 400):
        log_density = operator_log_density(task.leaves, task.operator)
        pts, probs = grid_probabilities(log_density, BOUNDS, resolution)
        k = task.modes.shape[0]
        self.weights = torch.zeros(k, dtype=torch.float64).index_add_(0, assign_modes(pts, task.modes), probs)
        g = torch.Generator().manual_seed(seed)
        widths = torch.tensor([(hi - lo) / resolution for lo, hi in BOUNDS], dtype=torch.float64)
        draws = []
        for _ in range(3):
            idx = torch.multinomial(probs, n, replacement=True, generator=g)
            draws.append(pts[idx] + (torch.rand(n, 2, generator=g, dtype=torch.float64) - 0.5) * widths)
        self.sample, a, b = draws
        self.n = n
        self.energy_null = float(2.0 / n * torch.cdist(a, b).mean())
        w = self.weights
        self.tv_null = float(0.5 * torch.sqrt(2 * w * (1 - w) / (math.pi * n)).sum())


def weighted_tv(x: torch.Tensor, log_weights: Optional[torch.Tensor], target: torch.Tensor, modes: torch.Tensor):
    """Mode-weight TV (nearest mode) of (weighted) particles against ``target``."""
    x = x.detach().double().cpu()
    w = torch.full((x.shape[0],), 1.0 / x.shape[0], dtype=torch.float64)
    if log_weights is not None:
        w = torch.softmax(log_weights.double().cpu(), 0)
    est = torch.zeros(len(modes), dtype=torch.float64).index_add_(0, assign_modes(x, modes), w)
    return float(0.5 * (est - target).abs().sum())


def corrected_reverse_diffusion(dist: Any, num_samples: int, moves: Rejuvenation) -> torch.Tensor:
    """Reverse diffusion of a classifier-free composition with MCMC correctors after every reverse step: each step
    of the composition's own proposal (the operator's score) is followed by ``moves.num_steps`` kernel steps targeting
    the new level's :math:`\\pi_t \\propto \\exp \\Phi(\\log q_{1,t}, \\dots)` (Du et al. 2023; docs/mcmc.md). The
    SMC weights are ignored: this is the corrector sampler, biased where the kernel mixes too slowly.

    A thin function, to be replaced by a Pyro-handler version of the correctors: it drives the composition's SMC
    twist with ``when="step"`` moves (exact leaf densities) and keeps the particles' positions only.

    :param dist: ``ps.product(...)``, ``ps.sculpting.compose(...)``: a composition of diffusion samplers whose
        leaves have exact ``log_prob(x, t)`` and ``score(x, t)``.
    :param num_samples: particles.
    :param moves: the corrector, :class:`~pyro_sculpt.mcmc.Rejuvenation` with ``when="step"``.
    """
    if not isinstance(moves, Rejuvenation) or moves.when != "step":
        raise ValueError(f"moves must be a pyro_sculpt.mcmc.Rejuvenation with when='step', got {moves!r}")
    twist = as_twist(dist, densities="exact", moves=moves)
    with torch.no_grad():
        particles = twist.init(num_samples)
        for t in range(twist.max_steps):
            particles, _, done = twist.step(particles, t)
            if bool(done.all()):
                break
    return twist.terminal(particles)


@dataclass
class Size:
    """Settings of one run."""

    particles: int = 4000
    steps: int = 100
    seeds: int = 3
    corrector_steps: int = 3
    #: the late correctors: ``late_steps`` kernel steps per level at noise levels t <= ``late_below``,
    #: ``corrector_steps`` above (docs/mcmc.md: the level targets' mode weights move until t of about 0.02, and
    #: local moves stop crossing between the ring's modes below about 0.03)
    late_steps: int = 200
    late_below: float = 0.1
    smc_mala_steps: int = 5
    step_size: float = 0.05
    resolution: int = 400
    #: the trained energy models (:func:`train_energy_models`): exact training samples per base, network, steps
    train_samples: int = 50_000
    hidden: int = 128
    layers: int = 3
    train_steps: int = 3000
    batch_size: int = 256
    lr: float = 1e-3

    @classmethod
    def named(cls, name: str) -> "Size":
        """``"full"`` (the defaults) or ``"tiny"`` (a few seconds, for tests)."""
        if name == "full":
            return cls()
        if name == "tiny":
            return cls(particles=300, steps=10, seeds=1, corrector_steps=1, late_steps=2, late_below=0.3,
                       smc_mala_steps=1, resolution=120,
                       train_samples=1000, hidden=16, layers=2, train_steps=30, batch_size=128)  # fmt: skip
        raise ValueError(f"size must be 'full' or 'tiny', got {name!r}")

    def late_schedule(self, level: float) -> int:
        """Kernel steps of the late correctors at noise level ``level``."""
        return self.late_steps if level <= self.late_below else self.corrector_steps


@dataclass
class Row:
    task: str
    variant: str
    sampler: str
    tv: list = field(default_factory=list)
    energy: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    evaluations: float = 0.0
    tv_null: float = 0.0
    energy_null: float = 0.0

    @property
    def mean_tv(self) -> float:
        return sum(self.tv) / len(self.tv)

    @property
    def mean_energy(self) -> float:
        return sum(self.energy) / len(self.energy)

    @property
    def ms_per_sample(self) -> float:
        return 1000 * sum(self.seconds) / len(self.seconds)


def _sample(sampler: str, dist: Any, size: Size) -> tuple[torch.Tensor, Optional[torch.Tensor], float]:
    """``(x, log_weights or None, evaluations per particle)`` of one sampler."""
    n, steps = size.particles, size.steps
    if sampler == "reverse diffusion":
        return dist.sample((n,)), None, float(steps)
    if sampler in CORRECTORS:
        kernel, options = CORRECTORS[sampler]
        per_level = size.late_schedule if sampler in LATE_CORRECTORS else size.corrector_steps
        moves = Rejuvenation(kernel, per_level, size.step_size, when="step", **options)
        x = corrected_reverse_diffusion(dist, n, moves)
        return x, None, steps + moves.num_evaluations
    if sampler == "SMC":
        # exact level densities where they are known up to a shared constant; else (energy models under a mixture)
        # the tracked (Itô) densities
        res = smc(dist, n, densities="auto")
        return res.x, res.log_weights, float(steps)
    if sampler == "SMC + MALA":
        moves = Rejuvenation("mala", size.smc_mala_steps, size.step_size)
        res = smc(dist, n, densities="exact", moves=moves)
        return res.x, res.log_weights, steps + moves.num_evaluations
    raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")


def run_task(
    task: Task,
    size: Size,
    seed: int = 0,
    variant: str = "oracle",
    leaves: Optional[Sequence[Any]] = None,
    samplers: Sequence[str] = SAMPLERS,
    log: Callable = print,
) -> tuple[list[Row], dict]:
    """Every sampler on ``task`` over ``size.seeds`` seeds: ``(rows, samples)`` (the first seed's samples by
    sampler, for the figure).

    :param leaves: the two leaf models (default: the task's oracles); the target stays the oracles' composition.
    """
    models = list(task.leaves if leaves is None else leaves)
    dist = compose([EulerMaruyamaSampler(m, size.steps) for m in models], task.operator)
    ref = Reference(task, size.particles, seed + 1000, size.resolution)
    rows, samples = [], {}
    exact = task.operator.linear or all(getattr(m, "log_prob_normalised", True) for m in models)
    for name in samplers:
        if name in EXACT_ONLY and not exact:
            log(f"{task.name:9s} {variant:7s} {name:18s} skipped: the {task.name} needs normalised level densities, "
                "and these models' are known up to a constant per level")  # fmt: skip
            continue
        row = Row(task.name, variant, name, tv_null=ref.tv_null, energy_null=ref.energy_null)
        for s in range(size.seeds):
            pyro.set_rng_seed(seed + s)
            start = time.perf_counter()
            x, log_w, evals = _sample(name, dist, size)
            row.seconds.append((time.perf_counter() - start) / size.particles)
            row.evaluations = evals
            row.tv.append(weighted_tv(x, log_w, ref.weights, task.modes))
            xs = x if log_w is None else x[torch.multinomial(log_w.double().exp(), x.shape[0], replacement=True)]
            row.energy.append(energy_distance(xs.detach().double().cpu(), ref.sample))
            if s == 0:
                samples[name] = xs.detach().double().cpu()
        rows.append(row)
        log(f"{task.name:9s} {variant:7s} {name:18s} TV {row.mean_tv:.4f} (null {row.tv_null:.4f})  energy "
            f"{row.mean_energy:.2e} (null {row.energy_null:.2e})  {row.ms_per_sample:.3f} ms/sample")  # fmt: skip
    return rows, samples


def _key(*parts: Any) -> str:
    """A short hash of the settings a cached model depends on (part of its file name)."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


def train_energy_models(
    out: Path,
    size: Size,
    seed: int = 0,
    names: Sequence[str] = ("ring", "gaussian", "cross"),
    progress_bar: bool = False,
    log: Callable = print,
) -> dict[str, EnergyScoreModel]:
    """One :class:`~pyro_sculpt.diffusion.EnergyScoreModel` per base of :func:`bases`, trained by its own ``fit``
    (the shared training loop) on ``size.train_samples`` exact samples of the base, and cached in ``out`` as
    ``energy_{name}_{key}.pt`` (``key``: a hash of the settings; reused when usable, see
    :func:`~pyro_sculpt.experiments.cache.load_or_train`).

    :param names: the bases to train.
    :returns: the models by base name (EMA weights, evaluation mode).
    """
    all_bases = bases()
    unknown = [n for n in names if n not in all_bases]
    if unknown:
        raise ValueError(f"names must be among {sorted(all_bases)}, got {unknown}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    models = {}
    for name in names:
        k = list(all_bases).index(name)  # each base its own seed, whichever bases are asked for
        cfg = dict(samples=size.train_samples, hidden=size.hidden, layers=size.layers, steps=size.train_steps,
                   batch_size=size.batch_size, lr=size.lr, seed=seed + k)  # fmt: skip
        path = out / f"energy_{name}_{_key(name, cfg)}.pt"

        def train(name=name, cfg=cfg):
            oracle = all_bases[name]
            data = oracle.sample(cfg["samples"], generator=torch.Generator().manual_seed(cfg["seed"]))
            log(f"training the energy model of {name} ({cfg['hidden']}x{cfg['layers']}, {cfg['steps']} steps)")
            model = EnergyScoreModel(2, hidden=cfg["hidden"], layers=cfg["layers"], seed=cfg["seed"])
            return model.fit(data.float(), steps=cfg["steps"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                             seed=cfg["seed"], progress_bar=progress_bar)  # fmt: skip

        model, _ = load_or_train(path, EnergyScoreModel.load, train, log)
        models[name] = model.eval()
    return models


def markdown_table(rows: Sequence[Row]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| task | models | sampler | mode TV (mean; per seed) | TV null | energy distance | energy null | "
        "ms / sample | evaluations / sample |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per = ", ".join(f"{v:.3f}" for v in r.tv)
        lines.append(
            f"| {r.task} | {r.variant} | {r.sampler} | {r.mean_tv:.3f} ({per}) | {r.tv_null:.3f} | "
            f"{r.mean_energy:.2e} | {r.energy_null:.2e} | {r.ms_per_sample:.3f} | {r.evaluations:.0f} |"
        )
    return "\n".join(lines)


def figure(all_tasks: dict, samples: dict, rows: Sequence[Row], path: Path, max_points: int = 1500) -> Path:
    """One row per (task, variant): the exact target, then every sampler's samples over it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = 200
    gx, gy = torch.meshgrid(*[torch.linspace(lo, hi, res, dtype=torch.float64) for lo, hi in BOUNDS], indexing="xy")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)
    keys = list(samples)
    ncols = 1 + max((len(samples[k]) for k in keys), default=0)
    fig, axes = plt.subplots(len(keys), ncols, figsize=(2.2 * ncols, 2.3 * len(keys)), squeeze=False)
    by_key = {(r.task, r.variant, r.sampler): r for r in rows}
    for i, (task_name, variant) in enumerate(keys):
        task = all_tasks[task_name]
        dens = operator_log_density(task.leaves, task.operator)(pts)
        img = (dens - dens.max()).exp().reshape(res, res).numpy()
        for j in range(ncols):
            ax = axes[i, j]
            ax.imshow(img, origin="lower", extent=[*BOUNDS[0], *BOUNDS[1]], cmap="Greys", aspect="auto")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 0].set_title(f"{task_name}: exact", fontsize=7)
        axes[i, 0].set_ylabel(variant, fontsize=7)
        for j, (name, x) in enumerate(samples[(task_name, variant)].items(), 1):
            x = x[:max_points].numpy()
            axes[i, j].scatter(x[:, 0], x[:, 1], s=1.0, c="C3", alpha=0.5, linewidths=0)
            axes[i, j].set_title(f"{name}\nTV {by_key[(task_name, variant, name)].mean_tv:.3f}", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run(
    out: Path,
    size: Size,
    seed: int = 0,
    task_names: Sequence[str] = ("product", "mixture", "negation"),
    samplers: Sequence[str] = SAMPLERS,
    models: Optional[dict] = None,
    variant: str = "trained",
    log: Callable = print,
    oracle: bool = True,
) -> dict:
    """Run the tasks, write ``results.md``, ``results.json`` and ``energy2d.png`` into ``out``.

    :param models: the hook for trained energy models: ``{task name: [leaf 1, leaf 2]}``; each task listed is run a
        second time with these leaves (rows labelled ``variant``), against the same exact target.
    :param oracle: also run the tasks with the oracles (rows ``oracle``).
    """
    all_tasks = tasks()
    unknown = [t for t in task_names if t not in all_tasks]
    if unknown:
        raise ValueError(f"tasks must be among {sorted(all_tasks)}, got {unknown}")
    bad = [s for s in samplers if s not in SAMPLERS]
    if bad:
        raise ValueError(f"samplers must be among {list(SAMPLERS)}, got {bad}")
    start = time.perf_counter()
    rows: list[Row] = []
    samples: dict = {}
    for name in task_names:
        variants = [("oracle", None)] if oracle else []
        variants += [(variant, models[name])] if models and name in models else []
        for var, leaves in variants:
            r, s = run_task(all_tasks[name], size, seed, var, leaves, samplers, log)
            rows += r
            samples[(name, var)] = s
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(rows)
    header = (
        f"Energy-based composition, 2D (n = {size.particles}, {size.steps} reverse steps, {size.seeds} seeds; "
        f"correctors: {size.corrector_steps} kernel steps per level, the late ones {size.late_steps} at t <= "
        f"{size.late_below:g}; SMC + MALA: {size.smc_mala_steps} steps after "
        f"each resampling). Machine: {platform.machine()}, torch {torch.__version__}; "
        f"{time.perf_counter() - start:.0f} s in all."
    )
    (out / "results.md").write_text(header + "\n\n" + table + "\n")
    data = {"size": asdict(size), "rows": [asdict(r) for r in rows], "seconds": time.perf_counter() - start}
    (out / "results.json").write_text(json.dumps(data, indent=1))
    figure(all_tasks, samples, rows, out / "energy2d.png")
    log(header)
    log(table)
    return {"rows": rows, "table": table}


def main(
    out: Path,
    size: str = "full",
    seed: int = 0,
    tasks_: Optional[Sequence[str]] = None,
    corrector_steps: Optional[int] = None,
    variants: Sequence[str] = ("oracle",),
    progress_bar: bool = False,
    seeds: Optional[int] = None,
) -> dict:
    """The ``pyro-sculpt energy2d`` command.

    :param variants: ``"oracle"`` (the tasks' exact models) and/or ``"trained"`` (energy models trained on samples
        of the bases, :func:`train_energy_models`).
    :param seeds: sampling seeds per row (default: the size's).
    """
    names = tuple(dict.fromkeys(tasks_)) if tasks_ else ("product", "mixture", "negation")  # once each, in order
    variants = tuple(dict.fromkeys(variants))
    bad = [v for v in variants if v not in ("oracle", "trained")]
    if bad or not variants:
        raise ValueError(f"variants must be among ['oracle', 'trained'], got {list(variants)}")
    for arg, value in (("corrector_steps", corrector_steps), ("seeds", seeds)):
        if value is not None:  # (None: the size's)
            check_positive_int(arg, value)
    settings = Size.named(size)
    if corrector_steps is not None:
        settings.corrector_steps = corrector_steps
    if seeds is not None:
        settings.seeds = seeds
    models = None
    if "trained" in variants:
        needed = sorted({b for n in names for b in TASK_BASES.get(n, ())})
        trained = train_energy_models(out, settings, seed, needed, progress_bar)
        models = {n: [trained[b] for b in TASK_BASES[n]] for n in names if n in TASK_BASES}
    return run(out, settings, seed, names, models=models, variant="trained", oracle="oracle" in variants)
