"""Benchmark of the sparse-operator row kernels: prints a Markdown table.

For N ~ 1.3k, 5k, 15k, 30k unmasked pixels (circular masks) and 11x11 to 49x49 PSFs, each backend
computes all rows of W in batches (one process per measurement, single-threaded BLAS/numba/XLA).
``numpy`` is the numpy backend as it chooses (band products, or the DFT along x above
``DFT_CROSSOVER``); ``numpy-band`` and ``numpy-dft`` force one method; ``numpy-threads`` is the
numpy backend on every core (``n_threads=None``, the default of ``apply_sparse_operator_cpu()``;
its useful GFLOP/s is still compared with one core's matmul). ``autoarray`` (when
importable: run this script with the Python 3.12 environment that has it) times the reference's
``Imaging.apply_sparse_operator_cpu()`` on the same mask, noise map and kernel; its column is
measured only where one call is expected to take under ``--autoarray-budget`` seconds. Reported:

* seconds, and seconds per 1000 pixels;
* useful GFLOP/s: 2 * N * (ky kx)**2 / 2 flops, i.e. the N (ky kx)**2 / 2 multiply-adds of the
  exact kernel-overlap sums counted once per stored pair (each multiply-add = 2 flops);
* that rate as a fraction of this machine's single-thread float64 matmul GFLOP/s (measured in the
  same run), so results compare across machines;
* peak resident memory of the measuring process (includes the interpreter and libraries; the
  baseline after imports is printed separately).

Usage: ``python benchmarks/operator.py [--quick] [--kernels 21,49] [--sizes 15000]
[--backends numpy,numpy-band,numpy-dft,numba,jax,autoarray]``
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

RADII = {1_300: 20, 5_000: 40, 15_000: 70, 30_000: 98}  # circle radius in pixels -> N ~ pi r^2
KERNELS = (11, 21, 33, 41, 49)
BATCH = {
    "numpy": 1024,
    "numpy-band": 1024,
    "numpy-dft": 1024,
    "numpy-threads": 1024,
    "numba": 1024,
    "jax": 128,  # apply_sparse_operator()'s default
}
# seconds of one numba-backend call per pixel and kernel pixel**2, to skip slow measurements
NUMBA_SECONDS_PER_PIXEL_K4 = 0.12 / 5000 / 21**4


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


def case_arrays(radius: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mask, noise map, kernel) of one measurement: a circle of ``radius`` pixels, a noise map
    drawn from ``k``, an elongated normalised Gaussian of ``k x k`` pixels."""
    size = 2 * radius + k + 4
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    mask = yy**2 + xx**2 >= radius**2
    rng = np.random.default_rng(k)
    noise = rng.uniform(0.5, 2.0, size=mask.shape)
    yk, xk = np.mgrid[:k, :k] - k // 2
    kernel = np.exp(-(yk**2 + 0.7 * xk**2) / (2 * (k / 6) ** 2))
    return mask, noise, kernel / kernel.sum()


def _runner(backend: str, mask, noise, kernel):
    """(N, a function computing every row of W) for one backend."""
    from pipeline.operators import BatchGeometry, OperatorInputs, compute_values
    from pipeline.operators.numpy_rows import rows_numpy

    if backend == "autoarray":
        import autoarray as aa

        def build():
            scales = (1.0, 1.0)
            dataset = aa.Imaging(
                data=aa.Array2D.no_mask(values=noise.copy(), pixel_scales=scales),
                noise_map=aa.Array2D.no_mask(values=noise.copy(), pixel_scales=scales),
                psf=aa.Convolver(
                    kernel=aa.Array2D.no_mask(values=kernel.copy(), pixel_scales=scales)
                ),
            )
            return dataset.apply_mask(mask=aa.Mask2D(mask=mask, pixel_scales=scales))

        dataset = build()
        return int((~mask).sum()), dataset.apply_sparse_operator_cpu
    inputs = OperatorInputs.from_noise_map(noise, mask, kernel)
    n = inputs.layout.n_pixels
    if backend in ("numpy-band", "numpy-dft"):
        method = backend.split("-")[1]

        def forced() -> np.ndarray:
            out = np.empty((n, inputs.layout.n_offsets))
            for start, stop in BatchGeometry(n, BATCH[backend]):
                rows_numpy(inputs, start, stop, out[start:stop], method=method)  # type: ignore[arg-type]
            return out

        return n, forced
    if backend == "numpy-threads":  # apply_sparse_operator_cpu()'s default: every core
        return n, lambda: compute_values(inputs, "numpy", batch_size=BATCH[backend], n_threads=None)
    return n, lambda: compute_values(inputs, backend, batch_size=BATCH[backend])


def measure(backend: str, radius: int, k: int) -> dict:
    """Run in a fresh process: build inputs, warm up (compilation), time all rows."""
    mask, noise, kernel = case_arrays(radius, k)
    n, run = _runner(backend, mask, noise, kernel)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # a full warm-up run (JIT compilation, first-touch page faults), then the best of two runs
    # (one for the reference): the steady state of a worker that processes many shards
    run()
    seconds = min(_timed(run) for _ in range(1 if backend == "autoarray" else 2))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "n": n,
        "seconds": seconds,
        "peak_mb": peak,
        "baseline_mb": baseline,
        "output_mb": n * (((2 * k - 1) ** 2 + 1) // 2) * 8 / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N ~ 5k and 11x11, 21x21 only")
    parser.add_argument("--backends", default="numpy-band,numpy-dft,numpy-threads,numba,autoarray")
    parser.add_argument(
        "--autoarray-budget",
        type=float,
        default=15.0,
        help="measure the reference (and the numba backend) only where one call is expected to "
        "take under this many seconds",
    )
    parser.add_argument("--kernels", help="comma-separated kernel sizes (default: all)")
    parser.add_argument(
        "--sizes", help="comma-separated N: 1300, 5000, 15000, 30000 (default: all)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        backend, radius, k = args.worker.split(":")
        print(json.dumps(measure(backend, int(radius), int(k))))
        return

    sizes = [5_000] if args.quick else list(RADII)
    kernels = (11, 21) if args.quick else KERNELS
    if args.sizes:
        sizes = [int(size) for size in args.sizes.split(",")]
        unknown = sorted(set(sizes) - set(RADII))
        if unknown:
            parser.error(f"--sizes: {unknown} not among {sorted(RADII)}")
    if args.kernels:
        kernels = tuple(int(k) for k in args.kernels.split(","))
    backends = args.backends.split(",")
    peak = matmul_gflops()
    cpu = _cpu_name()
    print(
        f"machine: {cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, "
        f"numpy {np.__version__}; single-thread float64 matmul: {peak:.1f} GFLOP/s\n"
    )
    from pipeline.operators.numpy_rows import rows_method

    print(
        "| kernel | N | backend | seconds | s / 1000 px | useful GFLOP/s | / matmul "
        "| peak RSS MB (baseline) | output MB | autoarray / this |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for k in kernels:
        for size in sizes:
            expected = size * k**4 * NUMBA_SECONDS_PER_PIXEL_K4
            rows = []
            for backend in backends:
                slow = backend in ("autoarray", "numba") and expected > args.autoarray_budget
                if backend == "autoarray" and not _has_autoarray():
                    continue
                if slow:
                    print(f"| {k}x{k} | ~{size} | {backend} | not measured (~{expected:.0f} s "
                          "expected) | | | | | | |", flush=True)  # fmt: skip
                    continue
                out = subprocess.run(
                    [sys.executable, __file__, "--worker", f"{backend}:{RADII[size]}:{k}"],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                rows.append((backend, json.loads(out.stdout.strip().splitlines()[-1])))
            reference = dict(rows).get("autoarray")
            for backend, r in rows:
                useful = r["n"] * (k * k) ** 2 / r["seconds"] / 1e9
                name = f"numpy ({rows_method((k, k))})" if backend == "numpy" else backend
                if backend == "numpy-threads":
                    name = f"numpy ({rows_method((k, k))}), {_cores()} threads"
                if backend == f"numpy-{rows_method((k, k))}":
                    name += " (auto)"  # what the numpy backend and apply_sparse_operator_cpu run
                ratio = f"{reference['seconds'] / r['seconds']:.1f}x" if reference else ""
                print(
                    f"| {k}x{k} | {r['n']} | {name} | {r['seconds']:.3f} | "
                    f"{1000 * r['seconds'] / r['n']:.4f} | {useful:.1f} | {useful / peak:.0%} | "
                    f"{r['peak_mb']:.0f} ({r['baseline_mb']:.0f}) | {r['output_mb']:.0f} | {ratio} |",
                    flush=True,
                )


def _cores() -> int:
    from pipeline.operators.rows import threads_from

    return threads_from(None)


def _has_autoarray() -> bool:
    import importlib.util

    return importlib.util.find_spec("autoarray") is not None


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
