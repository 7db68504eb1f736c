"""Convolutional networks for small images: a U-Net noise predictor :math:`\\hat\\epsilon(x, t)` and a CNN classifier
that reads rows ``[x, conditioning]`` (the feature rows of the observation classifiers), plain torch."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from pyro_sculpt.nn.embeddings import SinusoidalTimeEmbedding
from pyro_sculpt.utils import DeviceLike, as_device, check_positive_int


def _groups(channels: int, groups: int) -> int:
    """The largest divisor of ``channels`` that is at most ``groups`` (GroupNorm's group count)."""
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return g


def _check_image_shape(event_shape: Sequence[int], levels: int, name: str = "event_shape") -> tuple[int, int, int]:
    shape = tuple(int(s) for s in event_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{name} must be an image shape (C, H, W), got {tuple(event_shape)}")
    c, h, w = shape
    f = 2 ** (levels - 1)
    if h % f or w % f:
        raise ValueError(
            f"{name} {shape}: with {levels} resolution levels the height and width must be divisible by {f}"
        )
    return c, h, w


class ResidualBlock(nn.Module):
    """GroupNorm, SiLU, 3x3 convolution, GroupNorm, a scale and shift of every channel from a conditioning vector
    (FiLM, Perez et al. 2018; the scale-shift norm of Nichol & Dhariwal 2021), SiLU, 3x3 convolution, with a residual
    connection (Ho et al. 2020's block without attention).

    :param in_channels: input channels.
    :param out_channels: output channels.
    :param cond_dim: size of the conditioning vector (0: none).
    :param groups: GroupNorm groups (at most).

    Example::

        block = ResidualBlock(16, 32, cond_dim=64)
        block(torch.randn(4, 16, 28, 28), torch.randn(4, 64)).shape   # torch.Size([4, 32, 28, 28])
    """

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int = 0, groups: int = 8):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_channels, groups), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.cond = nn.Linear(cond_dim, 2 * out_channels) if cond_dim else None
        self.norm2 = nn.GroupNorm(_groups(out_channels, groups), out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.norm2(self.conv1(self.act(self.norm1(x))))
        if self.cond is not None:  # scale and shift after the normalisation, which would remove a shift before it
            scale, shift = self.cond(cond)[:, :, None, None].chunk(2, 1)
            h = h * (1 + scale) + shift
        h = self.conv2(self.act(h))
        return h + self.skip(x)


class UNet(nn.Module):
    """A small U-Net :math:`\\hat\\epsilon(x, t)` for images ``(C, H, W)`` (Ronneberger et al. 2015; the DDPM
    variant of Ho et al. 2020 without attention), the noise predictor of a
    :class:`~pyro_sculpt.diffusion.ScoreModel` of images.

    One :class:`ResidualBlock` per level on the way down (then a stride-2 convolution), one in the middle, and one
    per level on the way up (nearest-neighbour upsampling, then the block on the concatenated skip connection). The
    time enters every block through an MLP of its sinusoidal embedding
    (:class:`~pyro_sculpt.nn.SinusoidalTimeEmbedding`). For 28x28 and ``channels=(32, 64, 64)`` the levels are
    28x28, 14x14 and 7x7.

    :param event_shape: ``(C, H, W)``; ``H`` and ``W`` divisible by :math:`2^{L-1}` for ``L = len(channels)``.
    :param channels: channels of each resolution level.
    :param time_embedding_dim: size of the sinusoidal embedding (the MLP maps it to ``4 * channels[0]``).
    :param groups: GroupNorm groups (at most).
    :param device: where the weights live.

    Example::

        net = UNet((3, 28, 28), channels=(16, 32))
        net(torch.randn(4, 3, 28, 28), torch.rand(4)).shape      # torch.Size([4, 3, 28, 28])
        model = ps.diffusion.ScoreModel(event_shape=(3, 28, 28), network=net)
    """

    def __init__(
        self,
        event_shape: Sequence[int] = (3, 28, 28),
        channels: Sequence[int] = (32, 64, 64),
        time_embedding_dim: int = 64,
        groups: int = 8,
        device: DeviceLike = None,
    ):
        super().__init__()
        channels = tuple(check_positive_int(f"channels[{k}]", c) for k, c in enumerate(channels))
        if not channels:
            raise ValueError("channels must name at least one level")
        c_in, _, _ = _check_image_shape(event_shape, len(channels))
        self.event_shape = torch.Size(event_shape)
        self.channels = channels
        self.time_embedding_dim = check_positive_int("time_embedding_dim", time_embedding_dim, 2)
        self.groups = check_positive_int("groups", groups)
        emb = 4 * channels[0]
        self.embed = SinusoidalTimeEmbedding(time_embedding_dim)
        self.time_mlp = nn.Sequential(nn.Linear(time_embedding_dim, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.stem = nn.Conv2d(c_in, channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        prev = channels[0]
        for k, c in enumerate(channels):
            self.down.append(ResidualBlock(prev, c, emb, groups))
            prev = c
            if k < len(channels) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.middle = ResidualBlock(prev, prev, emb, groups)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for k in reversed(range(len(channels))):
            c = channels[k]
            if k < len(channels) - 1:
                self.upsample.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                                   nn.Conv2d(prev, prev, 3, padding=1)))  # fmt: skip
            self.up.append(ResidualBlock(prev + c, c, emb, groups))
            prev = c
        self.head = nn.Sequential(
            nn.GroupNorm(_groups(prev, groups), prev), nn.SiLU(), nn.Conv2d(prev, c_in, 3, padding=1)
        )
        self.to(as_device(device))

    def config(self) -> dict:
        """The constructor's arguments (what a checkpoint needs to rebuild the network)."""
        return {"type": "UNet", "event_shape": list(self.event_shape), "channels": list(self.channels),
                "time_embedding_dim": self.time_embedding_dim, "groups": self.groups}  # fmt: skip

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """:param x: ``(B, C, H, W)``. :param t: ``(B,)`` (or a scalar). :returns: ``(B, C, H, W)``."""
        if x.dim() != 4 or x.shape[1:] != self.event_shape:
            want = ", ".join(str(s) for s in self.event_shape)
            raise ValueError(f"x must have shape (B, {want}), got {tuple(x.shape)}")
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.dim() > 1 or (t.dim() == 1 and t.shape[0] not in (1, x.shape[0])):
            raise ValueError(
                f"t must be a scalar or have shape ({x.shape[0]},), one time per image, got {tuple(t.shape)}"
            )
        t = t.reshape(-1).expand(x.shape[0])
        emb = self.time_mlp(self.embed(t))
        h = self.stem(x)
        skips = []
        for k, block in enumerate(self.down):
            h = block(h, emb)
            skips.append(h)
            if k < len(self.downsample):
                h = self.downsample[k](h)
        h = self.middle(h, emb)
        for k, block in enumerate(self.up):
            if k > 0:
                h = self.upsample[k - 1](h)
            h = block(torch.cat([h, skips.pop()], 1), emb)
        return self.head(h)


class ConvClassifierNet(nn.Module):
    """A CNN on rows ``[x, c]``: the first :math:`C H W` entries of a row are an image ``(C, H, W)`` (flattened in C
    order) and the remaining ``cond_dim`` a conditioning vector, which enters every :class:`ResidualBlock` through an
    MLP; the image goes through one block at each resolution level (stride-2 convolutions between them), then the
    last level's feature map, flattened, through a hidden layer of width ``hidden`` to ``out_dim`` outputs.

    This is the row layout of :class:`~pyro_sculpt.sculpting.DiffusionObservationClassifier`'s network (``[x, e(t),
    terminal flag(, logit alpha)]``, so ``cond_dim = time_embedding_dim + 1 (+ 1)``), which makes it that
    classifier's time-conditioned image network; with ``cond_dim=0`` it is a plain image classifier.

    :param event_shape: ``(C, H, W)``.
    :param cond_dim: size of the conditioning vector (0: none).
    :param out_dim: outputs.
    :param channels: channels of each resolution level.
    :param hidden: width of the conditioning MLP and of the hidden layer of the head.
    :param groups: GroupNorm groups (at most).
    :param device: where the weights live.

    Example::

        net = ConvClassifierNet((3, 28, 28), cond_dim=33, out_dim=6)
        clf = ps.DiffusionObservationClassifier(event_shape=(3, 28, 28), time_embedding_dim=32, network=net)
        plain = ConvClassifierNet((3, 28, 28), cond_dim=0, out_dim=20)
        plain(torch.randn(5, 3 * 28 * 28)).shape     # torch.Size([5, 20])
    """

    def __init__(
        self,
        event_shape: Sequence[int] = (3, 28, 28),
        cond_dim: int = 0,
        out_dim: int = 2,
        channels: Sequence[int] = (32, 64),
        hidden: int = 128,
        groups: int = 8,
        device: DeviceLike = None,
    ):
        super().__init__()
        channels = tuple(check_positive_int(f"channels[{k}]", c) for k, c in enumerate(channels))
        if not channels:
            raise ValueError("channels must name at least one level")
        c_in, h, w = _check_image_shape(event_shape, 1)
        self.event_shape = torch.Size(event_shape)
        self.image_dim = c_in * h * w
        self.cond_dim = check_positive_int("cond_dim", cond_dim, 0)
        self.out_dim = check_positive_int("out_dim", out_dim)
        self.channels, self.hidden = channels, check_positive_int("hidden", hidden)
        groups = check_positive_int("groups", groups)
        self.cond = (
            nn.Sequential(nn.Linear(self.cond_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden)) if cond_dim else None
        )
        emb = hidden if cond_dim else 0
        self.stem = nn.Conv2d(c_in, channels[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        self.downsample = nn.ModuleList()
        prev = channels[0]
        for k, c in enumerate(channels):
            self.blocks.append(ResidualBlock(prev, c, emb, groups))
            prev = c
            if k < len(channels) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        f = 2 ** (len(channels) - 1)
        cells = prev * -(-h // f) * -(-w // f)  # the last level's map, flattened (stride-2 convolutions round up)
        # no normalisation before the head: it would remove each channel's level (the colour)
        self.head = nn.Sequential(nn.SiLU(), nn.Flatten(), nn.Linear(cells, hidden), nn.SiLU())
        self.out = nn.Linear(hidden, self.out_dim)
        self.to(as_device(device))
        self.groups = groups

    def config(self) -> dict:
        """The constructor's arguments (what a checkpoint needs to rebuild the network)."""
        return {"type": "ConvClassifierNet", "event_shape": list(self.event_shape), "cond_dim": self.cond_dim,
                "out_dim": self.out_dim, "channels": list(self.channels), "hidden": self.hidden,
                "groups": self.groups}  # fmt: skip

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """:param rows: ``batch_shape + (C H W + cond_dim,)``. :returns: ``batch_shape + (out_dim,)``."""
        width = self.image_dim + self.cond_dim
        if rows.shape[-1] != width:
            want = ", ".join(str(s) for s in self.event_shape)
            raise ValueError(
                f"rows must have {width} features (an image ({want}) flattened, then {self.cond_dim} conditioning "
                f"entries), got shape {tuple(rows.shape)}"
            )
        batch = rows.shape[:-1]
        rows = rows.reshape(-1, width)
        x = rows[:, : self.image_dim].reshape((-1,) + tuple(self.event_shape))
        c = self.cond(rows[:, self.image_dim :]) if self.cond is not None else None
        h = self.stem(x)
        for k, block in enumerate(self.blocks):
            h = block(h, c)
            if k < len(self.downsample):
                h = self.downsample[k](h)
        h = self.head(h)
        return self.out(h).reshape(batch + (self.out_dim,))
