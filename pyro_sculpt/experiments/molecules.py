"""Sculpting fragment-molecule GFlowNets (Garipov et al. 2023, §6.2; docs/molecules.md, docs/math.md §5).

Base GFlowNets on fragment trees (the default 72-fragment vocabulary), one per objective (QED, SA and, for the 3-model
conjunction, MW), each a beta-conditioned message-passing policy trained by trajectory balance and sampled at one
beta. Compositions classifier-free (each particle carries its exact posterior over bases, docs/math.md §1.4) and
corrected by SMC (§1.5): the mixture, the harmonic mean QED ⊗ SA, both contrasts QED ◑ SA and QED ◐ SA, and the
3-model conjunction QED ⊗ SA ⊗ MW; the product QED × SA (classifier-free SMC, then pseudo-marginal independence moves
of its final particles that target the product of the molecules' probabilities, docs/mcmc.md); and the same
operations classifier-guided (§1.1) by per-action observation classifiers
(:class:`~pyro_sculpt.sculpting.gflownet.ChildObservationClassifier`) trained on the bases, the harmonic mean also by
twisted SMC. Reported: shares of samples in the paper's bins and in strict bins, beside a
row of uniformly random trees (docs/math.md §5); validity, uniqueness and diversity; an earth mover's distance
matrix between the sample sets; a QED-SA scatter plot and a grid of molecule drawings. Models are cached in the output
directory (an unusable or differently configured file is retrained).

Sizes: ``"tiny"`` (a few fragments, trees of at most 3, seconds; for tests) and ``"full"`` (the default vocabulary,
trees of at most 6 fragments, each base trained for at most 5 minutes and each classifier for at most 3; under 30
minutes on 2 CPU cores). Trees of up
to 9 fragments (``MoleculeSchedule(max_fragments=9)``) cost about three times more per training step, so that the
same budget trains the bases much less (docs/molecules.md).
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from pyro_sculpt.experiments.cache import load_or_train, settings_key
from pyro_sculpt.gflownets import GFlowNet
from pyro_sculpt.gflownets.envs.fragments import FragmentEnv
from pyro_sculpt.gflownets.envs.fragments.rewards import MoleculeReward
from pyro_sculpt.infer import smc
from pyro_sculpt.mcmc import IndependenceRejuvenation
from pyro_sculpt.metrics import molecules as mm
from pyro_sculpt.sculpting import contrast, harmonic_mean, mixture, product, reverse_contrast, sculpt
from pyro_sculpt.sculpting.gflownet import ChildObservationClassifier
from pyro_sculpt.utils import check_positive_int, set_seed

#: the tiny vocabulary of the ``"tiny"`` size: a ring, a linker, a heteroatom and a cap
TINY_VOCABULARY = [("c1ccccc1", [0, 1, 2]), ("CC", [0, 1]), ("N", [0, 0]), ("O", [0]), ("F", [0])]

#: the objectives of the bases
OBJECTIVES = ("qed", "sa", "mw")


@dataclass
class MoleculeSchedule:
    """Settings of one run of the experiment."""

    vocabulary: Optional[list] = None  # None: the default 72 fragments
    max_fragments: int = 6
    hidden: int = 64
    layers: int = 3
    steps: int = 2000
    batch_size: int = 32
    lr: float = 2e-3
    lr_final_factor: float = 0.1
    #: the range of reward exponents a base is trained on, and the one it samples at
    beta_range: tuple = (8.0, 48.0)
    beta: float = 24.0
    #: training time limit of one base, seconds (the run stays within its budget on a slow day)
    time_limit: Optional[float] = 300.0
    particles: int = 1000
    #: molecules per set in the earth mover's distance matrix
    emd_samples: int = 200
    three_models: bool = True
    #: the classifier-guided rows: per-action observation classifiers of the bases (hidden width, message-passing
    #: rounds, training steps, learning rate, time limit in seconds)
    guided: bool = True
    classifier_hidden: int = 64
    classifier_layers: int = 3
    classifier_steps: int = 2000
    classifier_lr: float = 1e-3
    classifier_time_limit: Optional[float] = 180.0
    #: the product QED x SA by classifier-free SMC, then pseudo-marginal independence moves of its final particles
    #: (proposals from the QED base, the SA base's probability estimated from ``product_num_backward`` backward
    #: trajectories; docs/molecules.md)
    product_moves: int = 10
    product_num_backward: int = 4
    #: also the 3-model classifier (27 outputs per action: about 1.2 s per training step at the full size, so that
    #: its time limit leaves it barely trained; docs/molecules.md) and the classifier-guided conjunction
    guided_three_models: bool = False


def schedule(size: str = "full") -> MoleculeSchedule:
    """The settings of ``size``: ``"full"`` or ``"tiny"`` (seconds; for tests).

    :raises ValueError: for another size.
    """
    if size == "full":
        return MoleculeSchedule()
    if size == "tiny":
        return MoleculeSchedule(
            vocabulary=TINY_VOCABULARY,
            max_fragments=3,
            hidden=16,
            layers=1,
            steps=10,
            batch_size=16,
            lr=3e-3,
            beta_range=(2.0, 8.0),
            beta=4.0,
            time_limit=None,
            particles=100,
            emd_samples=30,
            classifier_hidden=16,
            classifier_layers=1,
            classifier_steps=10,
            classifier_lr=3e-3,
            classifier_time_limit=None,
            guided_three_models=True,
            product_moves=2,
            product_num_backward=2,
        )
    raise ValueError(f"size must be 'full' or 'tiny', got {size!r}")


def uniform_random_trees(env: FragmentEnv, n: int) -> torch.Tensor:
    """``n`` trees built by uniformly random valid actions (the stop included, once allowed): the reference row."""
    s = env.initial_state().expand(n, env.state_dim)
    done = torch.zeros(n, dtype=torch.bool)
    for _ in range(env.max_steps):
        mask = env.forward_mask(s)
        a = torch.multinomial(mask.double(), 1).squeeze(-1)
        a = torch.where(done, env.stop_action, a)
        s = env.step(s, a)
        done = done | (a == env.stop_action)
        if bool(done.all()):
            break
    return s


def _train_base(env: FragmentEnv, objective: str, sch: MoleculeSchedule, seed: int, progress: bool) -> GFlowNet:
    reward = MoleculeReward(objective, beta=sch.beta)
    gfn = GFlowNet(env, reward, policy="env", hidden=sch.hidden, layers=sch.layers, beta_range=sch.beta_range)
    return gfn.fit(
        steps=sch.steps,
        batch_size=sch.batch_size,
        lr=sch.lr,
        lr_final_factor=sch.lr_final_factor,
        seed=seed,
        progress_bar=progress,
        time_limit=sch.time_limit,
    )


def _load_base(path: Path, env: FragmentEnv, objective: str, sch: MoleculeSchedule) -> GFlowNet:
    gfn = GFlowNet.load(path, env=env)
    wanted = (sch.hidden, sch.layers, tuple(sch.beta_range), objective)
    have = (gfn.hidden, gfn.layers, gfn.beta_range, getattr(gfn.reward, "objective", None))
    if not gfn.conditional or have != wanted:
        raise ValueError(f"trained with (hidden, layers, beta_range, objective) = {have}, not {wanted}")
    return gfn


def _sub_seed(seed: int, k: int) -> int:
    """The seed of the run's ``k``-th model or sample set: ``seed + k``, wrapped into [0, 2**32)."""
    return (seed + k) % 2**32


def base_path(out: Path, objective: str, sch: MoleculeSchedule, seed: int) -> Path:
    """The cache file of the base of ``objective`` trained from ``seed``: named by a hash of its training settings and
    seed, so that another ``--seed`` or other settings in one ``--out`` train their own bases."""
    parts = (objective, sch.vocabulary, sch.max_fragments, sch.hidden, sch.layers, sch.steps, sch.batch_size, sch.lr,
             sch.lr_final_factor, sch.beta_range, sch.time_limit, seed)  # fmt: skip
    return out / f"gfn_{objective}_{settings_key(*parts)}.pt"


def _classifier_path(out: Path, objectives, bases: list, sch: MoleculeSchedule, seed: int) -> Path:
    """The cache file of the classifier of ``objectives`` trained from ``seed``: named by a hash of the bases' weights,
    the classifier's settings and its seed, so that retrained bases, other settings or another seed retrain it (the
    weights in memory, not the files: under torchrun only rank 0 writes files, and every rank's weights are equal)."""
    h = hashlib.sha256()
    for base in bases:
        for name, value in sorted(base.state_dict().items()):
            h.update(name.encode())
            h.update(value.detach().cpu().contiguous().numpy().tobytes())
    h.update(repr((sch.classifier_hidden, sch.classifier_layers, sch.classifier_steps, sch.classifier_lr,
                   sch.classifier_time_limit, sch.batch_size, seed)).encode())  # fmt: skip
    return out / f"classifier_{'_'.join(objectives)}_{h.hexdigest()[:12]}.pt"


def _train_classifier(bases: list, sch: MoleculeSchedule, seed: int, progress: bool) -> ChildObservationClassifier:
    n = len(bases)  # n observations of n models: the conjunction y = (0, 1, ..., n-1) and, for two, the contrasts
    clf = ChildObservationClassifier.for_bases(
        bases, num_observations=n, hidden=sch.classifier_hidden, layers=sch.classifier_layers
    )
    return clf.fit(
        steps=sch.classifier_steps,
        batch_size=sch.batch_size,
        lr=sch.classifier_lr,
        ramp=max(1, sch.classifier_steps // 4),
        seed=seed,
        progress_bar=progress,
        time_limit=sch.classifier_time_limit,
    )


def _load_classifier(path: Path, env: FragmentEnv, n: int, sch: MoleculeSchedule) -> ChildObservationClassifier:
    clf = ChildObservationClassifier.load(path, env=env)
    wanted = (n, n, sch.classifier_hidden, sch.classifier_layers)
    have = (clf.num_models, clf.num_observations, clf.hidden, clf.layers)
    if have != wanted:
        raise ValueError(f"trained with (models, observations, hidden, layers) = {have}, not {wanted}")
    return clf


def _smc_samples(
    dist, n: int, seed: int, moves: Optional[IndependenceRejuvenation] = None
) -> tuple[torch.Tensor, dict]:
    t = time.time()
    # final moves need the whole population in one process (distributed SMC refuses them): under torchrun every
    # rank runs that SMC alone, with the same seed, so their results agree
    options = {} if moves is None else {"moves": moves, "distributed": False}
    res = smc(dist, n, seed=seed, **options)
    info = {"min_ess": float(min(res.ess_history)), "final_ess": res.ess, "resamples": res.num_resamples}
    # moves leave n equally weighted particles, resampled before them
    x = res.x if moves is not None else res.resample(n)
    info["seconds"] = time.time() - t
    return x, info


def _row(smiles: list[str], props: dict) -> dict:
    qed, sa, mw = props["qed"], props["sa"], props["mw"]
    valid = ~np.isnan(qed)

    def share(mask):
        return float(np.mean(mask & valid))

    row = {}
    for label, bins in (("paper", mm.HIGH_BINS), ("strict", mm.STRICT_BINS)):
        hq, hs, hm = qed >= bins["qed"], sa >= bins["sa"], mw >= bins["mw"]
        row[label] = {
            "qed": share(hq),
            "sa": share(hs),
            "qed&sa": share(hq & hs),
            "qed&!sa": share(hq & ~hs),
            "sa&!qed": share(hs & ~hq),
            "qed&sa&mw": share(hq & hs & hm),
        }
    row["mean"] = {k: float(np.nanmean(v)) for k, v in props.items()}
    row["validity"] = mm.validity(smiles)
    row["uniqueness"] = mm.uniqueness(smiles)
    row["diversity"] = mm.diversity(smiles[: min(len(smiles), 300)])
    return row


def _table(rows: dict) -> str:
    head = (
        "| samples | QED | SA | QED&SA | QED&!SA | SA&!QED | QED&SA&MW | strict QED | strict SA | strict QED&SA | "
        "strict QED&!SA | strict SA&!QED | strict QED&SA&MW | mean QED | mean SA | unique | diversity |"
    )
    lines = [head, "|" + "---|" * 17]
    for name, r in rows.items():
        p, s = r["paper"], r["strict"]
        cells = [p[k] for k in ("qed", "sa", "qed&sa", "qed&!sa", "sa&!qed", "qed&sa&mw")]
        cells += [s[k] for k in ("qed", "sa", "qed&sa", "qed&!sa", "sa&!qed", "qed&sa&mw")]
        cells += [r["mean"]["qed"], r["mean"]["sa"], r["uniqueness"], r["diversity"]]
        lines.append(f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    return "\n".join(lines)


def _emd_table(names: list[str], matrix: np.ndarray) -> str:
    lines = ["| | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for i, a in enumerate(names):
        lines.append(f"| {a} | " + " | ".join(f"{matrix[i, j]:.3f}" for j in range(len(names))) + " |")
    return "\n".join(lines)


def _scatter(sets: dict, props: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(sets)
    ncols = min(4, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.0 * ncols, 3.0 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        ax.axis("on")
        ax.scatter(props[name]["qed"], props[name]["sa"], s=3, alpha=0.4)
        ax.axvline(mm.STRICT_BINS["qed"], color="grey", lw=0.6, ls="--")
        ax.axhline(mm.STRICT_BINS["sa"], color="grey", lw=0.6, ls="--")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("QED", fontsize=7)
        ax.set_ylabel("SA", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


#: labels of the drawings (RDKit's font has no operator symbols)
ASCII_NAMES = {
    "QED ⊗ SA": "HM(QED, SA)",
    "QED ◑ SA": "contrast(QED, SA)",
    "QED ◐ SA": "contrast(SA, QED)",
    "QED ⊗ SA ⊗ MW": "HM(QED, SA, MW)",
}
ASCII_NAMES.update({f"{k}, classifier": f"{v}, clf" for k, v in list(ASCII_NAMES.items())})
ASCII_NAMES["QED ⊗ SA, classifier + SMC"] = "HM(QED, SA), clf + SMC"
ASCII_NAMES["QED × SA"] = "product(QED, SA)"


def _ascii_name(name: str) -> str:
    """The drawing label of set ``name`` (``"QED × SA + 10 moves"`` -> ``"product(QED, SA) + 10 moves"``)."""
    if name in ASCII_NAMES:
        return ASCII_NAMES[name]
    return next((v + name[len(k) :] for k, v in ASCII_NAMES.items() if name.startswith(k + " ")), name)


def _drawings(sets: dict, path: Path, per_set: int = 4) -> None:
    from rdkit import Chem
    from rdkit.Chem import Draw

    mols, legends = [], []
    for name, smiles in sets.items():
        for smi in list(dict.fromkeys(smiles))[:per_set]:
            mol = Chem.MolFromSmiles(smi)
            if mol is not None:
                mols.append(mol)
                legends.append(_ascii_name(name))
    img = Draw.MolsToGridImage(mols, molsPerRow=per_set, subImgSize=(220, 180), legends=legends)
    img.save(str(path))


def main(
    out: str | Path = "runs/molecules",
    size: str = "full",
    seed: int = 0,
    progress: bool = True,
    particles: Optional[int] = None,
    three_models: Optional[bool] = None,
    guided: Optional[bool] = None,
) -> dict:
    """Run the experiment; write ``results.md``, ``results.json``, ``samples.json`` (the SMILES of every set),
    ``scatter.png`` and ``molecules.png`` to ``out``.

    :param size: ``"full"`` or ``"tiny"`` (:func:`schedule`).
    :param particles: samples per set (default: the schedule's).
    :param three_models: also train the MW base and run the 3-model conjunction (default: the schedule's).
    :param guided: also train the observation classifiers and sample the classifier-guided rows (default: the
        schedule's).
    :returns: the results (also in ``results.json``).
    """
    sch = schedule(size)
    if particles is not None:
        sch.particles = check_positive_int("particles", particles, 2)  # the diversity needs two molecules
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    if three_models is not None:
        sch.three_models = bool(three_models)
    if guided is not None:
        sch.guided = bool(guided)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = print
    t0 = time.time()
    env = FragmentEnv(sch.vocabulary, max_fragments=sch.max_fragments)
    objectives = OBJECTIVES if sch.three_models else OBJECTIVES[:2]
    bases, trained, train_time, trained_here = {}, {}, {}, {}
    for k, obj in enumerate(objectives):
        t = time.time()
        gfn, trained_here[obj] = load_or_train(
            base_path(out, obj, sch, _sub_seed(seed, k)),
            lambda p, obj=obj: _load_base(p, env, obj, sch),
            lambda obj=obj, k=k: _train_base(env, obj, sch, _sub_seed(seed, k), progress),
            log,
        )
        train_time[obj] = time.time() - t
        trained[obj] = gfn
        bases[obj] = gfn.with_beta(sch.beta)
        log(f"base {obj}: {train_time[obj]:.0f} s")
    classifiers = {}
    if sch.guided:  # one classifier for QED and SA (harmonic mean, contrasts), one for the 3-model conjunction
        sets = [objectives[:2], objectives] if sch.three_models and sch.guided_three_models else [objectives[:2]]
        for k, objs in enumerate(sets):
            t = time.time()
            path = _classifier_path(out, objs, [trained[o] for o in objs], sch, _sub_seed(seed, 10 + k))
            label = "classifier " + ", ".join(o.upper() for o in objs)
            classifiers[len(objs)], trained_here[label] = load_or_train(
                path,
                lambda p, objs=objs: _load_classifier(p, env, len(objs), sch),
                lambda objs=objs, k=k: _train_classifier(
                    [bases[o] for o in objs], sch, _sub_seed(seed, 10 + k), progress
                ),
                log,
            )
            train_time[label] = time.time() - t
            log(f"{label}: {train_time[label]:.0f} s")
    n = sch.particles
    set_seed(seed)
    t_sample = time.time()
    states, smc_info = {}, {}
    states["random trees"] = uniform_random_trees(env, n)
    with torch.no_grad():
        for obj in objectives:
            states[obj.upper()] = bases[obj].as_distribution().sample((n,))
        q, s = bases["qed"], bases["sa"]
        states["mixture QED, SA"] = mixture(q, s).sample((n,))
        compositions = {
            "QED ⊗ SA": harmonic_mean(q, s),
            "QED ◑ SA": contrast(q, s),
            "QED ◐ SA": reverse_contrast(q, s),
        }
        if sch.three_models:
            compositions["QED ⊗ SA ⊗ MW"] = sculpt([q, s, bases["mw"]], y=(0, 1, 2))
        for k, (name, dist) in enumerate(compositions.items()):
            states[name], smc_info[name] = _smc_samples(dist, n, _sub_seed(seed, 100 + k))
        states["QED × SA"], smc_info["QED × SA"] = _smc_samples(product(q, s), n, _sub_seed(seed, 150))
        if sch.product_moves:
            name = f"QED × SA + {sch.product_moves} moves"
            moves = IndependenceRejuvenation(sch.product_moves, proposal=0, num_backward=sch.product_num_backward)
            states[name], smc_info[name] = _smc_samples(product(q, s), n, _sub_seed(seed, 150), moves=moves)
            smc_info[name]["acceptance"] = [float(a) for a in moves.history]
        if sch.guided:
            c2 = classifiers[2]
            set_seed(_sub_seed(seed, 200))
            states["QED ⊗ SA, classifier"] = harmonic_mean(q, s, c2).sample((n,))
            states["QED ◑ SA, classifier"] = contrast(q, s, c2).sample((n,))
            states["QED ◐ SA, classifier"] = reverse_contrast(q, s, c2).sample((n,))
            name = "QED ⊗ SA, classifier + SMC"
            states[name], smc_info[name] = _smc_samples(harmonic_mean(q, s, c2), n, _sub_seed(seed, 210))
            if 3 in classifiers:
                conjunction = sculpt([q, s, bases["mw"]], classifiers[3], (0, 1, 2))
                states["QED ⊗ SA ⊗ MW, classifier"] = conjunction.sample((n,))
    sample_time = time.time() - t_sample
    smiles = {name: env.to_smiles(x) for name, x in states.items()}
    props = {name: mm.molecule_properties(smi) for name, smi in smiles.items()}
    rows = {name: _row(smiles[name], props[name]) for name in states}
    names = list(states)
    m = min(sch.emd_samples, n)
    emd = np.zeros((len(names), len(names)))
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            emd[i, j] = emd[j, i] = mm.earth_movers_distance(smiles[names[i]][:m], smiles[names[j]][:m])
    _scatter(states, props, out / "scatter.png")
    _drawings(smiles, out / "molecules.png")
    results = {
        "schedule": asdict(sch),
        "size": size,
        "seed": seed,
        "rows": rows,
        "smc": smc_info,
        "emd": {"names": names, "matrix": emd.tolist(), "samples_per_set": m},
        "train_seconds": train_time,
        # False: loaded from --out (trained by an earlier run of the same settings and seed; its seconds: the load)
        "trained_here": trained_here,
        "sample_seconds": sample_time,
        "total_seconds": time.time() - t0,
        "machine": f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads",
    }
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "samples.json").write_text(json.dumps(smiles))
    text = [
        f"# Molecule sculpting ({size}; {n} samples per set, beta {sch.beta}, at most {sch.max_fragments} fragments)",
        "",
        "Shares of samples in the paper's bins (QED >= 0.25, SA >= 0.6, MW <= 500 Da) and in strict bins "
        "(QED >= 0.7, SA >= 0.8, MW <= 400 Da); compositions by classifier-free SMC, or guided by a per-action "
        "observation classifier (', classifier'; '+ SMC': twisted SMC); QED × SA: the product of the bases by "
        "classifier-free SMC, '+ moves': then pseudo-marginal independence moves of its particles (proposals from the "
        "QED base).",
        "",
        _table(rows),
        "",
        f"Earth mover's distance (1 - Tanimoto, Morgan radius 3, {m} molecules per set):",
        "",
        _emd_table(names, emd),
        "",
        "SMC: "
        + "; ".join(
            f"{k}: min ESS {v['min_ess']:.0f}, final ESS {v['final_ess']:.0f}, {v['seconds']:.0f} s"
            + (
                f", acceptance per move {min(v['acceptance']):.2f}-{max(v['acceptance']):.2f}"
                if "acceptance" in v
                else ""
            )
            for k, v in smc_info.items()
        ),
        "",
        "Training s: "
        + ", ".join(f"{k} {v:.0f}" + ("" if trained_here[k] else " (loaded from --out)") for k, v in train_time.items())
        + ".",
        "",
        f"Time: training {sum(train_time.values()):.0f} s, sampling {sample_time:.0f} s, total "
        f"{results['total_seconds']:.0f} s ({results['machine']}).",
    ]
    (out / "results.md").write_text("\n".join(text) + "\n")
    log("\n".join(text))
    return results
