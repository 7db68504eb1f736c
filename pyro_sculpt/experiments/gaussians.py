"""Sculpting 2D Gaussian-mixture diffusion models (issue 4; Garipov et al. 2023, §4.2; docs/math.md §1.3).

Base models are 2D Gaussian mixtures on a 3x3 lattice of modes (two and three models). Every composition is measured
against the exact composed density of the *true* base distributions on a fine grid, in these variants:

* ``oracle``: exact scores (:class:`~pyro_sculpt.diffusion.GaussianMixtureOracle`) and the exact time-conditioned
  classifier (:class:`~pyro_sculpt.diffusion.GaussianMixtureClassifier`): only the sampler's discretisation errs;
* ``trained``: score networks (:class:`~pyro_sculpt.diffusion.ScoreModel`) trained on samples of the bases, and a
  :class:`~pyro_sculpt.sculpting.DiffusionObservationClassifier` trained on their reverse chains (docs/math.md §1.2).
  The classifier learns from the states of every noise level (``max_time=1``). A second one, trained only up to
  diffusion time 0.7 as in the reference implementation (the library's default) and unused beyond it, is reported for
  comparison: with this VP schedule and modes 3 to 6 apart, part of the choice between modes is made at
  :math:`t > 0.7` (:math:`\\alpha_{0.7} \\cdot 6 \\approx 0.5\\, \\sigma_{0.7}`), and the sharpest operation (the
  3-fold contrast) loses its mode weights there;
* ``energy`` (not run by default): the same, with energy-parameterised score networks
  (:class:`~pyro_sculpt.diffusion.EnergyScoreModel`, :math:`s = -\\nabla_x E`, trained the same way) and a classifier
  trained on their chains. Their score is a gradient field by construction, so the log-densities tracked along a path
  converge to the model's own; a plain score network's need not be one where the data are thin, and compositions that
  raise a density to a power (``y = (3, 3, 3)``) show it (docs/diffusion.md).

Classifier-free compositions (docs/math.md §1.6; docs/diffusion.md): beside every classifier-guided row, the same
operation as a :class:`~pyro_sculpt.sculpting.diffusion.ComposedDiffusionProcess` of Euler-Maruyama samplers, no
classifier, sampled alone ("classifier-free guided": the guided score from each particle's posterior over bases) and
corrected by :func:`pyro_sculpt.infer.smc` ("classifier-free SMC": exact densities for the oracles, the Itô path
densities for the trained score models; resampling at ESS < 0.9 N; the sample-based metrics on ``res.resample(n)``).
The product :math:`P_1 P_2` and the negation :math:`P_1 (P_1 / P_2)^a` are reported the same way (reverse diffusion
alone, biased, beside SMC). Euler-Maruyama, because the ancestral step on a uniform time grid breaks SMC weights (its
last steps are narrower than the true reverse kernel; docs/diffusion.md). Reduce, Reuse, Recycle's 2D product task
(a ring of 8 Gaussians times a Gaussian; Du et al. 2023) is reported against its closed-form product.

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

from pyro_sculpt.diffusion import (
    AncestralSampler,
    DDIMSampler,
    EnergyScoreModel,
    EulerMaruyamaSampler,
    GaussianMixtureOracle,
    ScoreModel,
    VPSchedule,
)
from pyro_sculpt.experiments.exact_targets import operator_log_density, rrr_ring_product_task
from pyro_sculpt.infer import smc
from pyro_sculpt.mcmc import IndependenceRejuvenation
from pyro_sculpt.metrics import (
    assign_modes,
    energy_distance,
    grid_probabilities,
    mmd,
    mode_weight_tv,
    mode_weights,
)
from pyro_sculpt.processes import ProcessDistribution
from pyro_sculpt.sculpting import (
    DiffusionObservationClassifier,
    compose,
    mixture,
    product,
    sculpt,
)
from pyro_sculpt.sculpting.diffusion import GaussianMixtureClassifier
from pyro_sculpt.sculpting.log_operators import Base, LogOperator, Negation, Product, Sculpt
from pyro_sculpt.utils import check_positive_int

#: the 3x3 lattice of mode positions
LATTICE = torch.tensor([[x, y] for y in (-3.0, 0.0, 3.0) for x in (-3.0, 0.0, 3.0)])
BOUNDS = [(-5.5, 5.5), (-5.5, 5.5)]
#: bandwidth of the MMD kernel (about one mode's width)
MMD_BANDWIDTH = 0.5
#: 2-model operations: (label, y); ``y = None``: an operation without a classifier (classifier-free rows only)
TWO_MODEL_OPS = [("mixture", (None, None)), ("harmonic mean", (0, 1)), ("contrast", (0, 0)),
                 ("reverse contrast", (1, 1)), ("product", None), ("negation", None)]  # fmt: skip
#: 3-model operations (the paper's labels are 1-based)
THREE_MODEL_OPS = [("y=123", (0, 1, 2)), ("y=12", (0, 1, None)), ("y=333", (2, 2, 2))]
#: what produced a row's samples
CLASSIFIER, CF_GUIDED, CF_SMC = "classifier", "classifier-free guided", "classifier-free SMC"
#: classifier-free SMC followed by final independence moves from the particles (``Schedule.final_moves``)
CF_MOVES = "classifier-free SMC + moves"
METHODS = (CLASSIFIER, CF_GUIDED, CF_SMC, CF_MOVES)


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


def operator_of(op: str, y: Optional[Sequence], num_bases: int, negation_a: float = 1.0) -> LogOperator:
    """The composition operator :math:`\\Phi` of operation ``op`` on ``num_bases`` bases: the sculpting operator of
    ``y`` (all ``None``: the mixture), the product of all bases, or the negation :math:`P_1 (P_1 / P_2)^a`."""
    bases = [Base(i, num_bases) for i in range(num_bases)]
    if op == "product":
        return Product(*bases)
    if op == "negation":
        if num_bases != 2:
            raise ValueError(f"the negation reads 2 bases, got num_bases={num_bases}")
        return Negation(bases[0], bases[1], negation_a)
    if y is None:
        raise ValueError(f"operation {op!r} needs its observations y")
    return Sculpt(bases, y)


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
    #: what to run: ``"oracle"``, ``"trained"``, ``"energy"`` (the module docstring)
    variants: tuple = ("oracle", "trained")
    #: the classifier-free rows (composed process alone, and SMC) and the product and negation
    classifier_free: bool = True
    #: Euler-Maruyama steps of the classifier-free compositions (a stochastic sampler: SMC weights its steps)
    cf_sampler_steps: int = 100
    #: resample when the ESS falls below this fraction (0.9: docs/diffusion.md's recommended setting)
    cf_resample_threshold: float = 0.9
    #: particles of the classifier-free rows (None: ``particles``)
    cf_particles: Optional[int] = None
    #: strength a of the negation P1 (P1 / P2)^a
    negation_a: float = 1.0
    #: final independence moves from the particles after the classifier-free SMC (0: no such rows): steps per
    #: particle, the proposal's bandwidth factor, and the probability-flow steps of the score networks' densities
    final_moves: int = 0
    final_moves_bandwidth: float = 0.5
    final_moves_ode_steps: int = 50
    #: Reduce, Reuse, Recycle's ring-times-Gaussian product (oracle densities)
    rrr: bool = True
    rrr_steps: int = 100
    #: reverse diffusion alone: (particles, seeds)
    rrr_plain: tuple = (4000, 5)
    #: SMC runs: (particles, resample threshold, seeds)
    rrr_smc: tuple = ((4000, 0.9, 5), (4000, 1.0, 5), (16000, 0.9, 3))


def _null_tv(weights: torch.Tensor, n: int) -> float:
    """Expected mode-weight TV of n exact samples (normal approximation: :math:`E|\\hat w_k - w_k| =
    \\sqrt{2 w_k (1 - w_k) / (\\pi n)}`)."""
    w = weights.double()
    return float(0.5 * torch.sqrt(2 * w * (1 - w) / (math.pi * n)).sum())


def weighted_mode_tv(x: torch.Tensor, log_weights: torch.Tensor, target: torch.Tensor, means: torch.Tensor) -> float:
    """Mode-weight TV of weighted particles (nearest mode): :math:`\\tfrac12 \\sum_k |\\sum_{j \\to k} \\bar w_j -
    w_k|` with the normalised weights :math:`\\bar w`."""
    w = torch.softmax(log_weights.double().cpu(), 0)
    k = assign_modes(x.detach().double().cpu(), means)
    est = torch.zeros(len(means), dtype=torch.float64).index_add_(0, k, w)
    return float(0.5 * (est - target.double()).abs().sum())


class Reference:
    """An exact target on the grid, evaluated once: its mode weights (nearest lattice mode) and three exact samples of
    ``n`` points (seeded by ``seed``): a reference for the energy distance and MMD, and two more for their nulls.
    The same draws as :func:`~pyro_sculpt.metrics.grid_mode_weights` and three
    :func:`~pyro_sculpt.metrics.sample_grid` calls with one generator, from one evaluation of the density."""

    def __init__(self, log_density: Callable, n: int, seed: int, resolution: int = 440):
        pts, probs = grid_probabilities(log_density, BOUNDS, resolution)
        self.target = torch.zeros(len(LATTICE), dtype=torch.float64).index_add_(0, assign_modes(pts, LATTICE), probs)
        g = torch.Generator().manual_seed(seed)
        widths = torch.tensor([(hi - lo) / resolution for lo, hi in BOUNDS], dtype=torch.float64)
        draws = []
        for _ in range(3):
            idx = torch.multinomial(probs, n, replacement=True, generator=g)
            jitter = (torch.rand(n, len(BOUNDS), generator=g, dtype=torch.float64) - 0.5) * widths
            draws.append(pts[idx] + jitter)
        self.ref, a, b = draws
        self.n = n
        d_ab = torch.cdist(a, b)
        k_ab = torch.exp(-(d_ab**2) / (2 * MMD_BANDWIDTH**2)).mean()
        self.energy_null = float(2.0 / n * d_ab.mean())
        self.mmd_null = float(torch.sqrt(2.0 / n * (1 - k_ab)))


def _metrics(x: torch.Tensor, reference: Reference) -> dict:
    """TV of mode weights, energy distance and MMD against an exact sample, with their nulls: the values expected
    between two independent exact samples of the same size (V-statistics: :math:`E\\,\\mathcal E = (2/n)\\, E|X -
    X'|` and :math:`E\\,\\mathrm{MMD}^2 = (2/n)(1 - E k(X, X'))`, estimated from two more exact samples)."""
    target, n = reference.target, reference.n
    x = x.detach().double().cpu()
    return {
        "tv": mode_weight_tv(x, target, LATTICE),
        "tv_null": _null_tv(target, n),
        "energy": energy_distance(x, reference.ref),
        "energy_null": reference.energy_null,
        "mmd": mmd(x, reference.ref, MMD_BANDWIDTH),
        "mmd_null": reference.mmd_null,
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


def classifier_free_rows(
    models: Sequence,
    oracles: Sequence,
    op: str,
    y: Optional[Sequence],
    schedule: Schedule,
    seed: int,
    densities: str,
    reference: Optional[Reference] = None,
) -> tuple[list[dict], dict]:
    """The classifier-free rows of one operation: the composed process of Euler-Maruyama samplers of ``models``
    sampled alone (:data:`CF_GUIDED`) and corrected by SMC (:data:`CF_SMC`), against the exact composition of the
    true bases ``oracles``; with ``schedule.final_moves``, also the SMC followed by that many independence moves
    from the particles (:data:`CF_MOVES`; :class:`~pyro_sculpt.mcmc.IndependenceRejuvenation` with
    ``proposal="particles"``: they target the composition of the leaves' exact densities, or of the score networks'
    probability-flow densities, the same SMC run up to its final resampling).

    :param densities: of the SMC weights: ``"exact"`` (oracle models) or ``"tracked"`` (score networks).
    :param reference: the exact target (:class:`Reference`) of ``n`` points; by default built from the operator's
        exact log-density with seed ``seed + 7``.
    :returns: the rows (metrics; the SMC row also its ESS, resamplings and weighted mode TV, the moves row their
        acceptance rates) and their samples (the SMC row's: ``res.resample(n)``, equally weighted; the moves row's:
        its particles, equally weighted after the final resampling).
    """
    n = schedule.cf_particles or schedule.particles
    operator = operator_of(op, y, len(models), schedule.negation_a)
    dist = compose([EulerMaruyamaSampler(m, schedule.cf_sampler_steps) for m in models], operator)
    if reference is None:
        reference = Reference(operator_log_density(oracles, operator), n, seed + 7)
    if reference.n != n:
        raise ValueError(f"reference has {reference.n} points, expected the rows' {n}")
    pyro.set_rng_seed(seed)
    start = time.perf_counter()
    x = dist.sample((n,))
    guided_seconds = time.perf_counter() - start
    start = time.perf_counter()
    res = smc(dist, n, seed=seed, resample_threshold=schedule.cf_resample_threshold, densities=densities)
    smc_seconds = time.perf_counter() - start
    torch.manual_seed(seed + 1)
    xs = res.resample(n)
    common = {"op": op, "y": None if y is None else list(y)}
    guided = {**common, "method": CF_GUIDED, "sample_seconds": guided_seconds, **_metrics(x, reference)}
    m = _metrics(xs, reference)
    weighted = weighted_mode_tv(res.x, res.log_weights, reference.target, LATTICE)
    smc_row = {**common, "method": CF_SMC, "sample_seconds": smc_seconds, **m, "tv_weighted": weighted,
               "ess": res.ess, "min_ess": min(res.ess_history), "resamples": res.num_resamples,
               "pareto_k": res.pareto_k, "densities": densities}  # fmt: skip
    rows, samples = [guided, smc_row], {CF_GUIDED: x.detach().cpu(), CF_SMC: xs.detach().cpu()}
    if schedule.final_moves:
        moves = IndependenceRejuvenation(schedule.final_moves, proposal="particles",
                                         bandwidth=schedule.final_moves_bandwidth,
                                         ode_steps=schedule.final_moves_ode_steps)  # fmt: skip
        start = time.perf_counter()
        # final moves need the whole population in one process: under torchrun every rank runs it alone (same seed)
        moved = smc(dist, n, seed=seed, resample_threshold=schedule.cf_resample_threshold, densities=densities,
                    moves=moves, distributed=False)  # fmt: skip
        rows.append({**common, "method": CF_MOVES, "sample_seconds": time.perf_counter() - start,
                     **_metrics(moved.x, reference), "moves": schedule.final_moves,
                     "acceptance": [float(a) for a in moves.history], "densities": densities})  # fmt: skip
        samples[CF_MOVES] = moved.x.detach().cpu()
    return rows, samples


def _train_bases(oracles, schedule: Schedule, seed: int, progress_bar: bool, log, model_class=ScoreModel):
    """One ``model_class`` (:class:`~pyro_sculpt.diffusion.ScoreModel` or
    :class:`~pyro_sculpt.diffusion.EnergyScoreModel`) per oracle, trained on its samples: ``(models, info)``."""
    models, info = [], {}
    for k, o in enumerate(oracles):
        start = time.perf_counter()
        model = model_class(2, o.schedule, seed=seed + k).fit(
            o.sample, **schedule.score, seed=seed + k, progress_bar=progress_bar
        )
        seconds = time.perf_counter() - start
        pyro.set_rng_seed(seed + k)
        xs = ProcessDistribution(DDIMSampler(model, schedule.sampler_steps)).sample((schedule.particles,))
        m = _metrics(xs, Reference(lambda z, o=o: o.log_prob(z), schedule.particles, seed + 100 + k))
        info[f"P{k + 1}"] = {"train_seconds": seconds, **m}
        log(f"trained {model_class.__name__} P{k + 1} in {seconds:.1f}s: TV {m['tv']:.4f}, energy {m['energy']:.5f} "
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


def _run_setting(name, oracles, ops, schedule: Schedule, seed, progress_bar, log, models=None, energy_models=None):
    """Every operation of one setting (2 or 3 models) in every variant: classifier-guided rows, and the
    classifier-free rows (of the ``oracle``, ``trained`` and ``energy`` variants) if ``schedule.classifier_free``."""
    n_obs = len(next(y for _, y in ops if y is not None))
    out: dict = {"rows": [], "samples": {}, "classifier_seconds": {}}
    variants = []
    if "oracle" in schedule.variants:
        exact = GaussianMixtureClassifier(oracles, n_obs, quadrature_points=schedule.quadrature_points,
                                          chunk_size=8192)  # fmt: skip
        variants.append(("oracle", oracles, exact, "exact"))
    if "trained" in schedule.variants:
        for k, mt in enumerate((schedule.max_time,) + tuple(schedule.compare_max_times)):
            clf, secs = _train_classifier(models, n_obs, mt, schedule, seed, progress_bar, log)
            label = "trained" if k == 0 else f"trained, max_time={mt}"
            out["classifier_seconds"][label] = secs
            variants.append((label, models, clf, None if k else "tracked"))
    if "energy" in schedule.variants:
        clf, secs = _train_classifier(energy_models, n_obs, schedule.max_time, schedule, seed, progress_bar, log)
        out["classifier_seconds"]["energy"] = secs
        variants.append(("energy", energy_models, clf, "tracked"))
    cf_n = schedule.cf_particles or schedule.particles
    references: dict = {}

    def reference(op, y, n):  # one exact target per operation and sample size, shared by every row
        if (op, n) not in references:
            f = operator_log_density(oracles, operator_of(op, y, len(oracles), schedule.negation_a))
            references[(op, n)] = Reference(f, n, seed + 7)
        return references[(op, n)]

    for label, bases, clf, densities in variants:
        samplers = [DDIMSampler(md, schedule.sampler_steps) for md in bases]
        for op, y in ops:
            common = {"setting": name, "variant": label}
            if y is not None and not (label.startswith("trained, max_time") and op == "mixture"):
                # (the mixture uses no classifier: not repeated for the comparison classifiers)
                x, seconds = _compose(samplers, clf, y, schedule.particles, seed)
                row = {**common, "op": op, "method": CLASSIFIER, "y": list(y), "sample_seconds": seconds,
                       **_metrics(x, reference(op, y, schedule.particles))}  # fmt: skip
                out["rows"].append(row)
                out["samples"][(label, CLASSIFIER, op)] = x.detach().cpu()
                log(_format(row))
            if schedule.classifier_free and densities is not None:
                rows, samples = classifier_free_rows(bases, oracles, op, y, schedule, seed, densities,
                                                    reference(op, y, cf_n))  # fmt: skip
                for row in rows:
                    row = {**common, **row}
                    out["rows"].append(row)
                    out["samples"][(label, row["method"], op)] = samples[row["method"]]
                    log(_format(row))
    return out


def _format(r: dict) -> str:
    extra = ""
    if r["method"] == CF_SMC:
        extra = (f" | weighted TV {r['tv_weighted']:.4f}, ESS {r['ess']:.0f} (min {r['min_ess']:.0f}), "
                 f"{r['resamples']} resamplings")  # fmt: skip
    elif r["method"] == CF_MOVES:
        extra = f" | {r['moves']} moves, acceptance {r['acceptance'][0]:.2f} -> {r['acceptance'][-1]:.2f}"
    return (f"{r['setting']:>8} {r['variant']:>22} {r['method']:>22} {r['op']:>17}: TV {r['tv']:.4f} "
            f"(null {r['tv_null']:.4f}) | energy {r['energy']:.5f} (null {r['energy_null']:.5f}) | MMD {r['mmd']:.4f} "
            f"(null {r['mmd_null']:.4f}) | {r['sample_seconds']:.1f}s{extra}")  # fmt: skip


# ----- Reduce, Reuse, Recycle's 2D product -----


def rrr_product(schedule: Schedule, seed: int = 0, log=print) -> dict:
    """Reduce, Reuse, Recycle's 2D product task (Du et al. 2023; :func:`~pyro_sculpt.experiments.exact_targets.
    rrr_ring_product_task`) with oracle densities: the mode-weight TV (nearest ring mode) against the closed-form
    product's component weights, of reverse diffusion alone (summed scores) and of SMC (weighted particles), each
    the mean over seeds ``seed, seed + 1, ...``."""
    ring, gauss, exact = rrr_ring_product_task()
    target = exact.weights.double()
    dist = product(EulerMaruyamaSampler(ring, schedule.rrr_steps), EulerMaruyamaSampler(gauss, schedule.rrr_steps))
    zero = torch.zeros(())

    def tv(x, log_w=None):
        return weighted_mode_tv(x, zero.expand(x.shape[0]) if log_w is None else log_w, target, ring.means)

    out: dict = {"target_weights": [round(float(w), 4) for w in target], "steps": schedule.rrr_steps}
    n, seeds = schedule.rrr_plain
    values, start = [], time.perf_counter()
    for s in range(seeds):
        pyro.set_rng_seed(seed + s)
        values.append(tv(dist.sample((n,))))
    out["plain"] = {"particles": n, "tv": values, "mean_tv": sum(values) / seeds, "tv_null": _null_tv(target, n),
                    "seconds": (time.perf_counter() - start) / seeds}  # fmt: skip
    log(f"RRR ring x Gaussian, reverse diffusion alone ({n} particles): mean TV {out['plain']['mean_tv']:.4f}")
    out["smc"] = []
    for n, threshold, seeds in schedule.rrr_smc:
        values, ess, start = [], [], time.perf_counter()
        for s in range(seeds):
            res = smc(dist, n, seed=seed + s, resample_threshold=threshold, densities="exact")
            values.append(tv(res.x, res.log_weights))
            ess.append(res.ess)
        run = {"particles": n, "resample_threshold": threshold, "tv": values, "mean_tv": sum(values) / seeds,
               "tv_null": _null_tv(target, n), "mean_ess": sum(ess) / seeds,
               "seconds": (time.perf_counter() - start) / seeds}  # fmt: skip
        out["smc"].append(run)
        log(f"RRR ring x Gaussian, SMC ({n} particles, resample at ESS < {threshold} N): mean TV "
            f"{run['mean_tv']:.4f}, ESS {run['mean_ess']:.0f}")  # fmt: skip
    return out


# ----- tables and figure -----


def _find(rows, variant, op, method) -> Optional[dict]:
    return next((r for r in rows if r["variant"] == variant and r["op"] == op and r["method"] == method), None)


def markdown_table(results: dict) -> str:
    """The results as Markdown tables (per setting: mode-weight TV of every method, then every metric)."""
    sch = results["schedule"]
    lines = [f"Machine: {results['machine']}. {sch['particles']} particles per composition; the classifier rows: "
             f"DDIM (probability-flow) sampler with {sch['sampler_steps']} steps; the classifier-free rows: "
             f"Euler-Maruyama with {sch.get('cf_sampler_steps')} steps, {sch.get('cf_particles') or sch['particles']} "
             f"particles, SMC resampling at ESS < {sch.get('cf_resample_threshold')} N (exact densities for the "
             "oracle, tracked Itô densities for the trained models; sample metrics on res.resample(n)). Metrics "
             "against the exact composition of the true bases (grid of 440x440 cells over [-5.5, 5.5]^2); the TV null "
             "is the TV expected between n exact samples and the exact mode weights, the energy and MMD nulls the "
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
        with_moves = any(r["method"] == CF_MOVES for r in rows)
        moves_head = " SMC + moves (acceptance first -> last) |" if with_moves else ""
        lines += [f"#### {title}: mode-weight TV", "",
                  "| variant | operation | TV null | classifier | classifier-free guided | classifier-free SMC "
                  f"(weighted) | SMC ESS (min) | resamplings |{moves_head} seconds (classifier / cf guided / cf SMC"
                  f"{' / moves' if with_moves else ''}) |",
                  "|---|---|---|---|---|---|---|---|---|" + ("---|" if with_moves else "")]  # fmt: skip
        for variant in dict.fromkeys(r["variant"] for r in rows):
            for op in dict.fromkeys(r["op"] for r in rows if r["variant"] == variant):
                c, g, s, mv = (_find(rows, variant, op, m) for m in METHODS)
                null = next(r for r in (c, g, s) if r is not None)["tv_null"]
                tv = ["-" if r is None else f"{r['tv']:.4f}" for r in (c, g)]
                smc_cells = ["-", "-", "-"] if s is None else [
                    f"{s['tv']:.4f} ({s['tv_weighted']:.4f})", f"{s['ess']:.0f} ({s['min_ess']:.0f})",
                    str(s["resamples"])]  # fmt: skip
                if with_moves:
                    smc_cells.append(
                        "-"
                        if mv is None
                        else f"{mv['tv']:.4f} ({mv['acceptance'][0]:.2f} -> {mv['acceptance'][-1]:.2f})"
                    )
                runs = (c, g, s, mv) if with_moves else (c, g, s)
                secs = " / ".join("-" if r is None else f"{r['sample_seconds']:.1f}" for r in runs)
                lines.append(f"| {variant} | {op} | {null:.4f} | {tv[0]} | {tv[1]} | {' | '.join(smc_cells)} | "
                             f"{secs} |")  # fmt: skip
        lines.append("")
        lines += [f"#### {title}: every metric", "",
                  "| variant | method | operation | TV (null) | energy (null) | MMD (null) | sample s |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in rows:
            lines.append(f"| {r['variant']} | {r['method']} | {r['op']} | {r['tv']:.4f} ({r['tv_null']:.4f}) | "
                         f"{r['energy']:.5f} ({r['energy_null']:.5f}) | {r['mmd']:.4f} ({r['mmd_null']:.4f}) | "
                         f"{r['sample_seconds']:.1f} |")  # fmt: skip
        lines.append("")
    rrr = results.get("rrr")
    if rrr:
        plain = rrr["plain"]
        lines += ["#### Reduce, Reuse, Recycle's 2D product (ring of 8 Gaussians times a Gaussian, oracle densities)",
                  "", f"Euler-Maruyama with {rrr['steps']} steps; mode-weight TV against the closed-form product "
                  "(SMC: weighted particles), mean over seeds.", "",
                  "| method | particles | resample at ESS < | seeds | mean TV | TV null | mean ESS | s per run |",
                  "|---|---|---|---|---|---|---|---|",
                  f"| reverse diffusion alone | {plain['particles']} | - | {len(plain['tv'])} | "
                  f"{plain['mean_tv']:.4f} | {plain['tv_null']:.4f} | - | {plain['seconds']:.1f} |"]  # fmt: skip
        for r in rrr["smc"]:
            lines.append(
                f"| SMC | {r['particles']} | {r['resample_threshold']} N | {len(r['tv'])} | "
                f"{r['mean_tv']:.4f} | {r['tv_null']:.4f} | {r['mean_ess']:.0f} | {r['seconds']:.1f} |"
            )
        lines.append("")
    lines.append(f"Total {results['total_seconds']:.0f} s; trained variants {results['trained_seconds']:.0f} s "
                 f"(training and sampling); classifier-free rows {results.get('classifier_free_seconds', 0):.0f} s; "
                 f"ring product {results.get('rrr_seconds', 0):.0f} s.")  # fmt: skip
    return "\n".join(lines)


def figure(oracles: Sequence, settings: dict, path: Path, max_points: int = 1500, negation_a: float = 1.0) -> Path:
    """Panels of samples over the exact target densities: one row per (setting, variant, method)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = 200
    axes_ = [torch.linspace(lo, hi, res) for lo, hi in BOUNDS]
    gx, gy = torch.meshgrid(*axes_, indexing="xy")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)
    rows = []
    for name, (ops, out, k) in settings.items():
        for variant, method in dict.fromkeys((v, m) for v, m, _ in out["samples"]):
            rows.append((name, variant, method, ops, out, k))
    ncols = max(len(ops) for *_, ops, _, _ in rows) + 1 if rows else 1
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.4 * ncols, 2.5 * len(rows)), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for r, (name, variant, method, ops, out, k) in enumerate(rows):
        ax = axes[r, 0]
        for j, o in enumerate(oracles[:k]):
            ax.contour(gx, gy, o.log_prob(pts).exp().reshape(res, res), levels=4, colors=f"C{j}", linewidths=0.6)
        ax.set_title(f"{name}: bases P1..P{k}", fontsize=7)
        ax.set_ylabel(f"{variant}\n{method}", fontsize=7)
        for c, (op, y) in enumerate(ops, 1):
            ax = axes[r, c]
            f = operator_log_density(oracles[:k], operator_of(op, y, k, negation_a))
            dens = f(pts.double())
            dens = (dens - dens.max()).exp().reshape(res, res)
            ax.imshow(dens, origin="lower", extent=[*BOUNDS[0], *BOUNDS[1]], cmap="Greys", aspect="auto")
            ax.set_xlim(*BOUNDS[0])
            ax.set_ylim(*BOUNDS[1])
            x = out["samples"].get((variant, method, op))
            if x is not None:
                x = x[:max_points]
                ax.scatter(x[:, 0], x[:, 1], s=1.0, c="C3", alpha=0.6, linewidths=0)
                row = _find(out["rows"], variant, op, method)
                ax.set_title(f"{op}\nTV {row['tv']:.3f}", fontsize=7)
            else:
                ax.set_title(op, fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
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
    energy_models = None
    if "energy" in schedule.variants:
        t = time.perf_counter()
        energy_models, info = _train_bases(oracles[:k], schedule, seed, progress_bar, log, EnergyScoreModel)
        results["bases"].update({f"{name} (energy)": v for name, v in info.items()})
        trained_seconds += time.perf_counter() - t
    settings = {}
    plan = [("2 models", oracles[:2], TWO_MODEL_OPS, "two_models")]
    if schedule.three_models:
        plan.append(("3 models", oracles, THREE_MODEL_OPS, "three_models"))
    for name, bases, ops, key in plan:
        if not schedule.classifier_free:
            ops = [(op, y) for op, y in ops if y is not None]
        res = _run_setting(name, bases, ops, schedule, seed, progress_bar, log,
                           None if models is None else models[: len(bases)],
                           None if energy_models is None else energy_models[: len(bases)])  # fmt: skip
        results[key] = res["rows"]
        results[f"{key}_classifier_seconds"] = res["classifier_seconds"]
        trained_seconds += sum(res["classifier_seconds"].values())
        trained_seconds += sum(r["sample_seconds"] for r in res["rows"] if r["variant"] != "oracle")
        settings[name] = (ops, res, len(bases))
    results["trained_seconds"] = trained_seconds
    results["classifier_free_seconds"] = sum(
        r["sample_seconds"] for key in ("two_models", "three_models") for r in results[key] if r["method"] != CLASSIFIER
    )
    if schedule.rrr:
        t = time.perf_counter()
        results["rrr"] = rrr_product(schedule, seed, log)
        results["rrr_seconds"] = time.perf_counter() - t
    results["total_seconds"] = time.perf_counter() - start
    figure(oracles, settings, out / "gaussians.png", negation_a=schedule.negation_a)
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
    final_moves: int = 0,
    ring_product: bool = True,
) -> dict:
    """The ``pyro-sculpt gaussians`` command.

    :param variants: among ``"oracle"``, ``"trained"``, ``"energy"`` (at least one; repeats are run once).
    :param final_moves: independence moves after each classifier-free SMC, an integer >= 0 (0: no such rows).
    :param ring_product: also run Reduce, Reuse, Recycle's ring-times-Gaussian product (oracle densities, its own
        particle counts: 4,000 and 16,000, whatever ``particles``; about a minute on one core).
    """
    variants = tuple(dict.fromkeys(variants))
    bad = [v for v in variants if v not in ("oracle", "trained", "energy")]
    if bad or not variants:
        raise ValueError(f"variants must be among ['oracle', 'trained', 'energy'], got {list(variants)}")
    check_positive_int("final_moves", final_moves, 0)
    schedule = Schedule(variants=variants, three_models=not two_only, final_moves=final_moves, rrr=ring_product)
    if particles is not None:
        schedule.particles = particles
    if not compare_max_time:
        schedule.compare_max_times = ()
    if not math.isfinite(schedule.particles) or schedule.particles < 2:
        raise ValueError(f"particles must be >= 2, got {schedule.particles}")
    return run(out, schedule, seed, progress_bar)
