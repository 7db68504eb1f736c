"""Figures shared by the experiments (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def grid_heatmaps(
    panels: Sequence[tuple[str, torch.Tensor]],
    height: int,
    path: str | Path,
    ncols: int = 4,
    suptitle: str = "",
) -> Path:
    """Draw distributions over a 2D grid (each a vector of ``height**2`` probabilities) side by side as a PNG."""
    n = len(panels)
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.7 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, p) in zip(axes.flat, panels):
        img = p.detach().double().cpu().reshape(height, height).T.numpy()
        ax.imshow(img, origin="lower", cmap="viridis", interpolation="nearest")
        ax.set_title(title, fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
