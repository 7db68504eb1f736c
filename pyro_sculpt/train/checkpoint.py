"""Checkpoint files: a dictionary saved by :func:`torch.save` with a format name and a format version, written
atomically, and :class:`Checkpointable`, the ``save`` / ``load`` mixin of every trainable model."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, ClassVar, TypeVar, Union

import torch
from torch import nn

PathLike = Union[str, Path]

C = TypeVar("C", bound="Checkpointable")


def atomic_torch_save(obj: Any, path: PathLike) -> None:
    """:func:`torch.save` ``obj`` to ``path`` atomically: the bytes go to a temporary file in the same directory,
    which then replaces ``path`` in one :func:`os.replace`.

    A write that fails or is interrupted leaves neither a partial file at ``path`` (an earlier file there is kept
    as it was) nor the temporary file, so that a rerun never takes a truncated checkpoint for a cached one.

    Example::

        ps.train.atomic_torch_save({"w": torch.zeros(3)}, "weights.pt")  # never a half-written file
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:  # "x": never clobber; permissions follow the umask like any new file
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(err, OSError) and err.errno is not None and os.fspath(err.filename or "") == os.fspath(tmp):
            # name the file the caller asked for, not the temporary one
            raise type(err)(err.errno, f"{err.strerror} (saving to {path})", os.fspath(path)) from err
        raise


def save_checkpoint(path: PathLike, kind: str, version: int, payload: dict) -> None:
    """Save ``payload`` (tensors, numbers, strings, lists and dicts) as a ``pyro_sculpt.{kind}`` checkpoint, atomically
    (:func:`atomic_torch_save`).

    Inside a data-parallel run (a :func:`~pyro_sculpt.train.distributed` context, or during a distributed
    :func:`~pyro_sculpt.train.fit_loop`), only rank 0 writes: the weights are the same on every process, and the
    checkpoint does not depend on the world size (any number of processes loads it; docs/distributed.md).

    Example::

        ps.train.save_checkpoint("model.pt", "mymodel", 1, {"w": torch.zeros(3), "config": {"dim": 3}})
    """
    from pyro_sculpt.train.data_parallel import is_main_process

    if not is_main_process():
        return
    atomic_torch_save({"format": f"pyro_sculpt.{kind}", "version": version, **payload}, path)


def load_checkpoint(path: PathLike, kind: str, version: int) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (with ``weights_only=True``: no code is executed).

    :raises ValueError: for an unreadable file, a file of another format (another kind of model), or another
        format version.

    Example::

        ps.train.save_checkpoint("model.pt", "mymodel", 1, {"w": torch.zeros(3)})
        payload = ps.train.load_checkpoint("model.pt", "mymodel", 1)  # checks the kind and version
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
    """Raise a :class:`ValueError` if ``env`` (when given) is not the environment a checkpoint was trained on
    (``saved``: the environment's config stored in the checkpoint).

    Example::

        saved = ps.train.load_checkpoint("gfn.pt", kind="GFlowNet", version=1)  # a file of GFlowNet.save
        ps.train.check_env("gfn.pt", saved["env"], ps.HyperGrid(2, 32))  # raises for another environment
    """
    if env is not None and env.config() != saved:
        raise ValueError(f"checkpoint {path} was trained on env {saved}, but env={env.config()} was given")


def cpu_state_dict(module: nn.Module) -> dict:
    """``module.state_dict()`` with every tensor detached and on the CPU (what a checkpoint stores).

    Example::

        state = ps.train.cpu_state_dict(ps.nn.MLP(4, 1))
    """
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


class Checkpointable:
    """The ``save`` / ``load`` pair of every trainable model.

    A subclass names its format (:attr:`checkpoint_format`; the file records ``pyro_sculpt.<format>``) and its
    :attr:`checkpoint_version`, and implements two methods:

    * :meth:`checkpoint_payload`, the dictionary to save (configuration, weights, training history);
    * :meth:`_from_checkpoint`, a classmethod that rebuilds the model from that dictionary. Its extra arguments are
      those of :meth:`load` after the path (an environment to check the checkpoint against, a device, ...).

    :meth:`save` writes atomically (a temporary file in the same directory, then :func:`os.replace`): an
    interrupted run never leaves a file that a rerun takes as cached. :meth:`load` reads with
    ``weights_only=True`` and raises a :class:`ValueError` for an unreadable file, another model's checkpoint or
    another format version.

    Example::

        model.save("model.pt")
        again = type(model).load("model.pt")
    """

    #: the format name stored in the file (``pyro_sculpt.<checkpoint_format>``)
    checkpoint_format: ClassVar[str]
    #: the version of the payload's layout; bump it when the layout changes incompatibly
    checkpoint_version: ClassVar[int] = 1

    def checkpoint_payload(self) -> dict:  # pragma: no cover - abstract
        """The dictionary to save: tensors (on the CPU), numbers, strings, lists and dicts only."""
        raise NotImplementedError

    @classmethod
    def _from_checkpoint(cls: type[C], path: PathLike, data: dict, *args, **kwargs) -> C:  # pragma: no cover
        """Rebuild a model from the dictionary ``data`` read from ``path``."""
        raise NotImplementedError

    def save(self, path: PathLike) -> None:
        """Save this model to ``path`` (format :attr:`checkpoint_format`, version :attr:`checkpoint_version`),
        atomically."""
        save_checkpoint(path, self.checkpoint_format, self.checkpoint_version, self.checkpoint_payload())

    @classmethod
    def load(cls: type[C], path: PathLike, *args, **kwargs) -> C:
        """Load a checkpoint written by :meth:`save`; further arguments go to the class's
        :meth:`_from_checkpoint` (see the class's documentation).

        :returns: the model, in evaluation mode (as :meth:`fit` leaves it).
        :raises ValueError: for a file that is not a checkpoint of this class (for instance another model's), or
            of another format version.
        """
        data = load_checkpoint(path, cls.checkpoint_format, cls.checkpoint_version)
        try:
            model = cls._from_checkpoint(path, data, *args, **kwargs)
        except KeyError as err:
            raise ValueError(
                f"checkpoint {path} lacks the entry {err} of a {cls.checkpoint_format} checkpoint"
            ) from None
        if isinstance(model, torch.nn.Module):
            model.eval()  # as after fit: dropout or batch norm in a (custom) network must not act at inference
        return model
