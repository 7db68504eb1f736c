"""Data-parallel worlds over :mod:`torch.distributed` (docs/distributed.md).

A :class:`Distributed` names this process's place in a world of ``world_size`` processes launched together (by
``torchrun``), with the collectives that the training loop (:func:`~pyro_sculpt.train.fit_loop`) and sharded SMC
(:func:`~pyro_sculpt.infer.smc`) use: gradient averaging, all-reduces of log-weights, gathers of particles.

Three ways to ask for one:

* ``with ps.train.distributed(): model.fit(...)``: every :func:`fit_loop` and :func:`~pyro_sculpt.infer.smc` inside
  runs data-parallel (checkpoints written inside are written by rank 0 only);
* ``fit_loop(..., distributed=True)`` / ``smc(..., distributed=True)`` for one call;
* :func:`init_distributed` for the :class:`Distributed` itself (rank, world size, device).

``True`` initialises the default process group from ``torchrun``'s environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) unless it is initialised already, with gloo on CPU and NCCL when
CUDA is available. :meth:`Distributed.single_process` runs the shards of a world one after another in this process:
the same training as that many processes, a reference and a debugging aid.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator, Optional, Union

import numpy as np
import torch

#: what ``distributed=`` accepts: ``None`` (the active :func:`distributed` context, else one process), ``False`` (one
#: process), ``True`` (the default process group, initialised from torchrun's environment if needed) or a
#: :class:`Distributed`
DistributedLike = Union[None, bool, "Distributed"]


@dataclass(frozen=True)
class Distributed:
    """This process's place in a data-parallel world.

    :ivar rank: this process's rank, in ``[0, world_size)``.
    :ivar world_size: the number of processes.
    :ivar local_rank: the rank on this machine (``LOCAL_RANK``; selects the CUDA device with NCCL).
    :ivar backend: ``"gloo"``, ``"nccl"``, ..., or ``"single_process"`` (:meth:`single_process`).
    :ivar group: the process group (``None``: the default group).

    Example::

        world = ps.train.init_distributed()          # under torchrun
        world.rank, world.world_size
        shards = ps.train.Distributed.single_process(2)   # the two shards, one after another in this process
    """

    rank: int
    world_size: int
    local_rank: int = 0
    backend: str = "gloo"
    group: Any = None

    @classmethod
    def single_process(cls, world_size: int) -> "Distributed":
        """A world of ``world_size`` shards run one after another in this process: :func:`fit_loop` draws each
        shard's batch with that rank's generators and averages the shards' gradients, which is the training of
        ``world_size`` processes (exactly, for losses that keep no state between steps; docs/distributed.md)."""
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size must be an integer >= 1, got {world_size!r}")
        return cls(rank=0, world_size=world_size, backend="single_process")

    @property
    def emulated(self) -> bool:
        """Whether the shards run in this one process (:meth:`single_process`)."""
        return self.backend == "single_process"

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the process that shows progress bars and writes checkpoints)."""
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        """The device of this process's collectives: ``cuda:<local_rank>`` with NCCL, else the CPU."""
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    # ----- collectives (no-ops in a world of one process) -----

    def _real(self) -> bool:
        return not self.emulated and self.world_size > 1

    def all_reduce_(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """All-reduce ``tensor`` in place (``op``: ``"sum"`` or ``"max"``) and return it."""
        if self._real():
            import torch.distributed as dist

            dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM, group=self.group)
        return tensor

    def broadcast_(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Overwrite ``tensor`` with rank ``src``'s, in place, and return it."""
        if self._real():
            import torch.distributed as dist

            dist.broadcast(tensor, src, group=self.group)
        return tensor

    def all_gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's ``tensor`` (``(n_r,) + shape``, ``n_r`` may differ) concatenated along the first dimension
        in rank order, on every rank."""
        if not self._real():
            return tensor
        import torch.distributed as dist

        sizes = torch.tensor([tensor.shape[0]], dtype=torch.int64, device=self.device)
        all_sizes = [torch.zeros_like(sizes) for _ in range(self.world_size)]
        dist.all_gather(all_sizes, sizes, group=self.group)
        counts = [int(s) for s in all_sizes]
        longest = max(counts)
        pad = tensor.new_zeros((longest - tensor.shape[0],) + tuple(tensor.shape[1:]))
        padded = torch.cat([tensor, pad], 0).contiguous()
        out = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(out, padded, group=self.group)
        return torch.cat([o[:c] for o, c in zip(out, counts)], 0)

    def all_gather_object(self, obj: Any) -> list:
        """Every rank's picklable ``obj``, in rank order, on every rank."""
        if not self._real():
            return [obj]
        import torch.distributed as dist

        out: list = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.group)
        return out

    def barrier(self) -> None:
        """Wait for every process."""
        if self._real():
            import torch.distributed as dist

            dist.barrier(group=self.group)


_ACTIVE: contextvars.ContextVar[Optional[Distributed]] = contextvars.ContextVar("pyro_sculpt_distributed", default=None)

_ENV_HELP = (
    "launch the script with torchrun (e.g. `torchrun --nproc_per_node 2 script.py`), which sets RANK, WORLD_SIZE, "
    "LOCAL_RANK, MASTER_ADDR and MASTER_PORT, or call torch.distributed.init_process_group yourself first"
)


def _env_int(name: str) -> int:
    text = os.environ.get(name)
    if text is None:
        raise RuntimeError(f"distributed training needs the environment variable {name}, which is not set: {_ENV_HELP}")
    try:
        return int(text)
    except ValueError:
        raise RuntimeError(f"the environment variable {name} must be an integer, got {text!r}") from None


def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (or another launcher that sets ``RANK`` and
    ``WORLD_SIZE``).

    Example::

        if ps.train.launched_by_torchrun():
            world = ps.train.init_distributed()
    """
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def check_backend(backend: str) -> str:
    """Raise a :class:`RuntimeError` naming ``backend`` unless this torch build and machine can run it."""
    import torch.distributed as dist

    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this torch build: distributed runs are impossible")
    if backend == "nccl" and not torch.cuda.is_available():
        raise RuntimeError("backend='nccl' needs CUDA, which is not available on this machine; use backend='gloo'")
    available = getattr(dist, "is_backend_available", None)
    ok = available(backend) if available is not None else backend in ("gloo", "nccl", "mpi")
    if not ok:
        raise RuntimeError(
            f"the torch.distributed backend {backend!r} is not available in this torch build "
            f"(gloo: {dist.is_gloo_available()}, nccl: {dist.is_nccl_available()}, mpi: {dist.is_mpi_available()})"
        )
    return backend


def _from_group(group: Any = None) -> Distributed:
    import torch.distributed as dist

    backend = str(dist.get_backend(group))
    local = int(os.environ.get("LOCAL_RANK", 0))
    return Distributed(dist.get_rank(group), dist.get_world_size(group), local, backend, group)


def init_distributed(backend: Optional[str] = None, *, timeout: Optional[float] = None) -> Distributed:
    """This process's :class:`Distributed`, initialising the default process group from ``torchrun``'s environment
    (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) unless it is initialised already.

    :param backend: ``"gloo"`` (CPU), ``"nccl"`` (CUDA), ...; ``None``: NCCL when CUDA is available, else gloo. With
        NCCL, this process's CUDA device becomes ``cuda:<LOCAL_RANK>``.
    :param timeout: seconds a collective waits for the other processes (``None``: torch's default).
    :raises RuntimeError: when torch.distributed or the backend is not available, or the environment lacks the
        launcher's variables.

    Example (``torchrun --nproc_per_node 2 train.py``)::

        world = ps.train.init_distributed()
        with ps.train.distributed(world):
            gfn.fit(steps=2000, batch_size=64, seed=0)  # each process draws 32 trajectories per step

    Example::

        # torchrun --nproc_per_node 2 train.py
        world = ps.train.init_distributed()          # gloo on CPU, NCCL with CUDA
        res = ps.infer.smc(composition, 100_000, distributed=world)  # or fit_loop(..., distributed=world)
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return _from_group()
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    check_backend(backend)
    rank, world_size = _env_int("RANK"), _env_int("WORLD_SIZE")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if "MASTER_ADDR" not in os.environ:
        raise RuntimeError(
            f"distributed training needs the environment variable MASTER_ADDR, which is not set: {_ENV_HELP}"
        )
    _env_int("MASTER_PORT")
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    kwargs = {} if timeout is None else {"timeout": timedelta(seconds=timeout)}
    dist.init_process_group(backend, rank=rank, world_size=world_size, **kwargs)
    return Distributed(rank, world_size, local_rank, backend)


def resolve_distributed(spec: DistributedLike) -> Optional[Distributed]:
    """The :class:`Distributed` that ``distributed=spec`` asks for, or ``None`` for one process.

    :raises TypeError: for anything but ``None``, a bool or a :class:`Distributed`.
    """
    if spec is None:
        spec = _ACTIVE.get()
        return spec if spec is not None and spec.world_size > 1 else None
    if spec is False:
        return None
    if spec is True:
        world = init_distributed()
        return world if world.world_size > 1 else None
    if isinstance(spec, Distributed):
        return spec if spec.world_size > 1 else None
    raise TypeError(f"distributed must be None, True, False or a ps.train.Distributed, got {spec!r}")


def active_distributed() -> Optional[Distributed]:
    """The world of the innermost :func:`distributed` context, or ``None``.

    Example::

        with ps.train.distributed():
            assert ps.train.active_distributed() is not None
    """
    return _ACTIVE.get()


@contextlib.contextmanager
def distributed(world: Union[bool, Distributed] = True) -> Iterator[Optional[Distributed]]:
    """Run every :func:`~pyro_sculpt.train.fit_loop` (hence every model's ``fit``) and every
    :func:`~pyro_sculpt.infer.smc` inside data-parallel, and write checkpoints from rank 0 only.

    :param world: a :class:`Distributed`, ``True`` (:func:`init_distributed`: the default group, from torchrun's
        environment if not initialised yet) or ``False`` (one process: a no-op context).
    :returns: the world (``None`` for ``False``).

    Example (``torchrun --nproc_per_node 2 script.py``)::

        with ps.train.distributed():
            clf = ps.ObservationClassifier.for_bases([p1, p2], 2).fit(steps=2000, batch_size=128, seed=0)
            clf.save("clf.pt")  # written by rank 0 only

    Example::

        with ps.train.distributed():                 # every fit and smc inside runs data-parallel
            gfn.fit(steps=1000, batch_size=128)
            res = ps.infer.smc(ps.harmonic_mean(p1, p2), 1_000_000)
    """
    if world is False:
        token = _ACTIVE.set(None)
        resolved = None
    else:
        resolved = init_distributed() if world is True else world
        if not isinstance(resolved, Distributed):
            raise TypeError(f"world must be True, False or a ps.train.Distributed, got {world!r}")
        token = _ACTIVE.set(resolved)
    try:
        yield resolved
    finally:
        _ACTIVE.reset(token)


@contextlib.contextmanager
def _activated(world: Optional[Distributed]) -> Iterator[None]:
    """Make ``world`` the active one for the duration (so that checkpoints written meanwhile are rank 0's)."""
    if world is None:
        yield
        return
    token = _ACTIVE.set(world)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def is_main_process() -> bool:
    """``False`` only on the ranks other than 0: of the active :func:`distributed` world (a real one, not
    :meth:`Distributed.single_process`), or, outside such a context, of torch's initialised default process group
    (:func:`init_distributed`, or ``torch.distributed.init_process_group``): what should print, draw progress bars
    and write files.

    Example::

        if ps.train.is_main_process():
            print(res.ess)                           # once, on rank 0
    """
    world = _ACTIVE.get()
    if world is not None:
        return world.emulated or world.is_main
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s generators in a run seeded with ``seed``: ``seed`` itself for rank 0 (so that a
    world of one process is the plain run), a hash of both for the others."""
    if rank == 0:
        return int(seed)
    digest = hashlib.sha256(f"pyro_sculpt:{int(seed)}:{int(rank)}".encode()).digest()
    return int.from_bytes(digest[:4], "little")  # < 2**32, as NumPy's and Pyro's seeding require


def shard_sizes(total: int, world_size: int) -> list[int]:
    """``total`` items split over ``world_size`` ranks as evenly as possible (the first ranks get one more)."""
    return [total // world_size + (r < total % world_size) for r in range(world_size)]


def local_batch_size(batch_size: int, world_size: int, name: str = "batch_size") -> int:
    """This rank's share ``batch_size / world_size`` of a batch that the ranks split.

    :raises ValueError: naming ``name`` unless ``world_size`` divides ``batch_size`` (the split would not be the
        full batch's gradient otherwise).
    """
    if batch_size % world_size:
        raise ValueError(
            f"{name}={batch_size} must be divisible by the world size {world_size}: each of the {world_size} "
            f"processes draws {name} / {world_size} of the batch, so that their averaged gradients are the full "
            f"batch's; use a multiple of {world_size} (e.g. {batch_size - batch_size % world_size or world_size})"
        )
    return batch_size // world_size


class RngStreams:
    """Separate states of the global generators (Python, NumPy, torch's CPU and CUDA), one per shard of a
    :meth:`Distributed.single_process` world: shard ``k`` draws what rank ``k`` would.

    :param seeds: each stream's seed; ``None``: the generators' current state.
    """

    def __init__(self, seeds: list[Optional[int]]):
        outer = self._get()
        self.states = []
        for s in seeds:
            if s is None:  # this stream continues the generators' current state
                self.states.append(outer)
                continue
            random.seed(s)
            np.random.seed(s % 2**32)
            torch.manual_seed(s)
            self.states.append(self._get())
        self._set(outer)

    @staticmethod
    def _get():
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        return random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda

    @staticmethod
    def _set(state) -> None:
        py, npy, cpu, cuda = state
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)

    def continue_global(self, k: int) -> None:
        """Leave the global generators where stream ``k`` is (the stream that continued them, when its seed was
        ``None``): later draws then follow the run's, as a real rank's would, instead of repeating them."""
        self._set(self.states[k])

    @contextlib.contextmanager
    def use(self, k: int) -> Iterator[None]:
        """Draw from shard ``k``'s generators for the duration, keeping their new state for next time."""
        outer = self._get()
        self._set(self.states[k])
        try:
            yield
        finally:
            self.states[k] = self._get()
            self._set(outer)


def seed_streams(world: Distributed, seed: Optional[int]) -> list[int]:
    """The seeds of every rank's generators for a run seeded with ``seed`` (``None``: a base seed drawn from rank
    0's torch generator and broadcast, so that the ranks still draw different batches)."""
    if seed is None:
        base = torch.randint(0, 2**31, (1,), dtype=torch.int64).to(world.device)
        seed = int(world.broadcast_(base)[0])
    return [rank_seed(seed, r) for r in range(world.world_size)]


def seed_this_rank(world: Distributed, seed: Optional[int]) -> None:
    """Seed this process's generators with its rank's stream (:func:`seed_streams`); with ``seed=None``, rank 0
    keeps its generators as they are."""
    from pyro_sculpt.utils import set_seed

    seeds = seed_streams(world, seed)
    if seed is not None or world.rank != 0:
        set_seed(seeds[world.rank])
