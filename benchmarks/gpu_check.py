"""The GPU path, exercised: run the CUDA tests and time the guided samplers on the GPU against the CPU.

1. the tests that need CUDA (``tests/diffusion/test_cuda.py`` and every test whose name says ``cuda`` or ``gpu``;
   they are skipped on machines without CUDA, so this is where they run);
2. the guided diffusion sampler through the Pyro guidance handler (``sculpt_guidance`` over ``ps.run`` of the mixture
   of two score models, a learned-classifier network of the size the gaussians experiment trains, 100 ancestral
   steps; random weights: they do not change the cost) at several particle counts, on the CPU and on the GPU;
3. the same sampler under SMC (``ps.infer.smc`` of the harmonic mean with the same classifier).

Writes a small Markdown report (``--out``, default ``benchmarks/gpu_check.md``) naming the GPU. Without a GPU it
says so and exits with status 0, having run nothing. Exit status 1 when a CUDA test fails.

Run: ``python benchmarks/gpu_check.py [--particles 10000 100000] [--smc-particles 1000 10000] [--out FILE]
[--skip-tests]``
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def _no_gpu_message() -> str:
    return (
        f"gpu_check: no CUDA GPU on this machine (torch {torch.__version__}, CUDA build: "
        f"{torch.version.cuda or 'none'}); nothing was run. Run this script on a machine with a GPU."
    )


def run_cuda_tests() -> tuple[int, str]:
    """``pytest`` of the CUDA tests; returns the exit status and the summary line."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "slow or not slow", "-k",
           "cuda or gpu", "tests/"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    print(proc.stdout[-4000:], proc.stderr[-2000:], sep="\n")
    return proc.returncode, lines[-1] if lines else "(no output)"


def _guided(device: str):
    import pyro_sculpt as ps
    from pyro_sculpt.diffusion import AncestralSampler, ScoreModel

    models = [ScoreModel(2, seed=k, device=device) for k in range(2)]
    clf = ps.DiffusionObservationClassifier(
        2, 2, 2, schedule=models[0].schedule, hidden=128, layers=3, max_time=1.0, device=device
    )
    samplers = [AncestralSampler(m, 100) for m in models]
    return ps, clf, samplers


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_samplers(particles: list[int], smc_particles: list[int], repeats: int = 3) -> list[dict]:
    rows = []
    for n in sorted(set(particles) | set(smc_particles)):
        for device in ("cpu", "cuda"):
            ps, clf, samplers = _guided(device)
            mix = ps.mixture(*samplers).process
            hm = ps.harmonic_mean(*samplers, clf)

            def handler(ps=ps, clf=clf, mix=mix, n=n):
                with torch.no_grad(), ps.sculpt_guidance(classifier=clf, y=(0, 1)):
                    return ps.run("x", mix, num_particles=n)

            def smc(ps=ps, hm=hm, n=n):
                return ps.infer.smc(hm, n, seed=0)

            todo = [("guided sampler (Pyro handler)", handler)] if n in particles else []
            todo += [("SMC (harmonic mean)", smc)] if n in smc_particles else []
            for name, fn in todo:
                fn()  # warm-up (CUDA kernels, caches)
                _sync(device)
                best = float("inf")
                for _ in range(repeats if device == "cuda" or n <= 10_000 else 1):
                    t = time.perf_counter()
                    fn()
                    _sync(device)
                    best = min(best, time.perf_counter() - t)
                rows.append({"what": name, "particles": n, "device": device, "seconds": best})
                print(rows[-1], flush=True)
    return rows


def report(gpu: str, tests: tuple[int, str], rows: list[dict]) -> str:
    lines = [
        "# GPU check",
        "",
        f"- GPU: {gpu}; CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} torch threads; torch {torch.__version__} (CUDA {torch.version.cuda})",
        f"- CUDA tests: {tests[1]} (exit status {tests[0]})",
        "",
        "| what | particles | CPU s | GPU s | GPU speed-up |",
        "|---|---:|---:|---:|---:|",
    ]
    keyed = {(r["what"], r["particles"], r["device"]): r["seconds"] for r in rows}
    for what, n in dict.fromkeys((r["what"], r["particles"]) for r in rows):
        cpu, gpu_s = keyed[(what, n, "cpu")], keyed[(what, n, "cuda")]
        lines.append(f"| {what} | {n:,} | {cpu:.3f} | {gpu_s:.3f} | {cpu / gpu_s:.1f}x |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, nargs="+", default=[10_000, 100_000], help="guided sampler")
    parser.add_argument(
        "--smc-particles", type=int, nargs="+", default=[1_000, 10_000], help="SMC (slower per particle on the CPU)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "gpu_check.md")
    parser.add_argument("--skip-tests", action="store_true", help="only time the samplers")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(_no_gpu_message())
        return 0
    sys.path.insert(0, str(ROOT))
    gpu = torch.cuda.get_device_name(0)
    print(f"gpu_check on {gpu}", flush=True)
    tests = (0, "skipped (--skip-tests)") if args.skip_tests else run_cuda_tests()
    rows = time_samplers(args.particles, args.smc_particles)
    text = report(gpu, tests, rows)
    args.out.write_text(text)
    print(text)
    print(f"wrote {args.out}")
    return 1 if tests[0] not in (0, 5) else 0  # 5: no test collected


if __name__ == "__main__":
    raise SystemExit(main())
