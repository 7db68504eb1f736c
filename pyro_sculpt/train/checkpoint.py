"""Checkpoint files: a dictionary saved by :func:`torch.save` with a format name and a format version."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import torch

PathLike = Union[str, Path]


def save_checkpoint(path: PathLike, kind: str, version: int, payload: dict) -> None:
    """Save ``payload`` (tensors, numbers, strings, lists and dicts) as a ``pyro_sculpt.{kind}`` checkpoint."""
    torch.save({"format": f"pyro_sculpt.{kind}", "version": version, **payload}, path)


def load_checkpoint(path: PathLike, kind: str, version: int) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (with ``weights_only=True``: no code is executed).

    :raises ValueError: for an unreadable file, a file of another format (another kind of model), or another
        format version.
    """
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is "not a checkpoint"
        raise ValueError(f"{path} is not a readable pyro_sculpt {kind} checkpoint: {err}") from None
    expected = f"pyro_sculpt.{kind}"
    fmt = data.get("format") if isinstance(data, dict) else None
    if fmt != expected:
        raise ValueError(
            f"{path} is not a pyro_sculpt {kind} checkpoint (its format is {fmt!r}, expected {expected!r})"
        )
    if data.get("version") != version:
        raise ValueError(f"{path} has checkpoint format version {data.get('version')}, expected {version}")
    return data


def check_env(path: PathLike, saved: dict, env) -> None:
    """Raise a :class:`ValueError` if ``env`` (when given) is not the environment a checkpoint was trained on."""
    if env is not None and env.config() != saved:
        raise ValueError(f"checkpoint {path} was trained on env {saved}, but env={env.config()} was given")
