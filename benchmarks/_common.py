"""Helpers shared by the benchmarks: timing with repeats, and a description of the machine."""

from __future__ import annotations

import os
import platform
import time

import torch


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"python {platform.python_version()}"
    )


def best_of(fn, repeats: int = 5, warmup: int = 1) -> float:
    """Best wall time of ``repeats`` calls (after ``warmup`` calls)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def interleaved(fns: dict, repeats: int = 5) -> dict:
    """Best time of each function, measured in interleaved rounds so that machine noise hits all alike."""
    for f in fns.values():
        f()
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


#: the size flags of ``run_main``: command-line name -> (keyword of ``main``, help)
SIZE_FLAGS = {
    "particles": ("n", "particles"),
    "steps": ("steps", "sampler steps"),
    "repeats": ("repeats", "interleaved repeats (the best is kept)"),
}


def run_main(main, doc: str, flags: tuple) -> None:
    """Run a benchmark's ``main`` with the size flags ``flags`` (names of :data:`SIZE_FLAGS`) read from the command
    line; a flag left out keeps ``main``'s default."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for flag in flags:
        parser.add_argument(f"--{flag}", type=int, default=None, help=f"{SIZE_FLAGS[flag][1]} (default: main's)")
    args = vars(parser.parse_args())
    main(**{SIZE_FLAGS[flag][0]: args[flag] for flag in flags if args[flag] is not None})
