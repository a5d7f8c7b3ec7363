"""Benchmark of the sparse-operator row kernels: prints a Markdown table.

For N ~ 5k, 15k, 30k unmasked pixels (circular masks) and 11x11, 21x21, 41x41 PSFs, each backend
computes all rows of W in batches (one process per measurement, single-threaded BLAS/numba/XLA):

* seconds, and seconds per 1000 pixels;
* useful GFLOP/s: 2 * N * (ky kx)**2 / 2 flops, i.e. the N (ky kx)**2 / 2 multiply-adds of the
  exact kernel-overlap sums counted once per stored pair (each multiply-add = 2 flops);
* that rate as a fraction of this machine's single-thread float64 matmul GFLOP/s (measured in the
  same run), so results compare across machines;
* peak resident memory of the measuring process (includes the interpreter and libraries; the
  baseline after imports is printed separately).

Usage: ``python benchmarks/operator.py [--quick] [--backends numpy,numba,jax]``
"""

from __future__ import annotations

import os

# one thread everywhere, as in a Dask worker (set before numpy/numba/jax load)
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import sys as _sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path as _Path  # noqa: E402

# benchmarks/pipeline.py is named like the package: keep this folder off the import path
_sys.path[:] = [
    p for p in _sys.path if _Path(p or ".").resolve() != _Path(__file__).parent.resolve()
]

import numpy as np  # noqa: E402

RADII = {5_000: 40, 15_000: 70, 30_000: 98}  # circle radius in pixels -> N ~ pi r^2
KERNELS = (11, 21, 41)
BATCH = {"numpy": 256, "numba": 1024, "jax": 256}


def matmul_gflops(n: int = 2000, repeats: int = 3) -> float:
    a = np.random.default_rng(0).random((n, n))
    b = np.random.default_rng(1).random((n, n))
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(backend: str, radius: int, k: int) -> dict:
    """Run in a fresh process: build inputs, warm up (compilation), time all rows."""
    from pipeline.operators import OperatorInputs, compute_values

    size = 2 * radius + k + 4
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    mask = yy**2 + xx**2 >= radius**2
    rng = np.random.default_rng(k)
    noise = rng.uniform(0.5, 2.0, size=mask.shape)
    yk, xk = np.mgrid[:k, :k] - k // 2
    kernel = np.exp(-(yk**2 + 0.7 * xk**2) / (2 * (k / 6) ** 2))
    kernel /= kernel.sum()
    inputs = OperatorInputs.from_noise_map(noise, mask, kernel)
    n = inputs.layout.n_pixels
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # a full warm-up run (JIT compilation, first-touch page faults), then the best of two runs:
    # the steady state of a worker that processes many shards
    run = lambda: compute_values(inputs, backend, batch_size=BATCH[backend])  # noqa: E731
    run()
    seconds = min(_timed(run) for _ in range(2))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "n": n,
        "seconds": seconds,
        "peak_mb": peak,
        "baseline_mb": baseline,
        "output_mb": n * inputs.layout.n_offsets * 8 / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N ~ 5k and 11x11, 21x21 only")
    parser.add_argument("--backends", default="numpy,numba,jax")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        backend, radius, k = args.worker.split(":")
        print(json.dumps(measure(backend, int(radius), int(k))))
        return

    sizes = [5_000] if args.quick else list(RADII)
    kernels = (11, 21) if args.quick else KERNELS
    backends = args.backends.split(",")
    peak = matmul_gflops()
    cpu = _cpu_name()
    print(
        f"machine: {cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, "
        f"numpy {np.__version__}; single-thread float64 matmul: {peak:.1f} GFLOP/s\n"
    )
    print(
        "| kernel | N | backend | seconds | s / 1000 px | useful GFLOP/s | / matmul "
        "| peak RSS MB (baseline) | output MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for k in kernels:
        for size in sizes:
            for backend in backends:
                out = subprocess.run(
                    [sys.executable, __file__, "--worker", f"{backend}:{RADII[size]}:{k}"],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                r = json.loads(out.stdout.strip().splitlines()[-1])
                useful = r["n"] * (k * k) ** 2 / r["seconds"] / 1e9
                print(
                    f"| {k}x{k} | {r['n']} | {backend} | {r['seconds']:.3f} | "
                    f"{1000 * r['seconds'] / r['n']:.4f} | {useful:.1f} | {useful / peak:.0%} | "
                    f"{r['peak_mb']:.0f} ({r['baseline_mb']:.0f}) | {r['output_mb']:.0f} |",
                    flush=True,
                )


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
