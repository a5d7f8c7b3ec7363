"""Benchmark of the curvature matrix F = A^T W A and data vector D = A^T H^T N^-1 d computed from the
band of W: prints a Markdown table.

For N ~ 5k, 15k, 30k unmasked pixels (circular masks), 21x21 and 41x41 PSFs, S = 500, 1,000, 2,500
source pixels and k = 3 (Delaunay-like) and 10 (over-sampled rectangular-like) source pixels per
image pixel:

* our ``curvature_matrix_from`` and ``data_vector_from`` per call (best of 7, after a warm-up;
  with autoarray, its call and ours alternate, so that both see the same machine);
* where ``autoarray`` is importable (run with the Python 3.12 environment that has it), its
  ``curvature_matrix_via_sparse_operator_from`` (numba) on the same W (our
  ``to_autoarray_layout()``) and the same A (its ``data_to_pix_unique`` layout), the ratio, and
  the largest difference of the two F relative to max |F| (must be <= 1e-10);
* the first call in a fresh process (JIT loaded from numba's cache), after ``import numba`` and
  numba's own one-off start-up (timed apart: any numba function pays them once per process, in
  a PyAutoLens fit autoarray's mappers do), and the peak memory of one F call (numpy allocations
  traced by tracemalloc, plus the kernel's own arrays: padded image buffer, A by columns and by
  cell) against the budget 2 S^2 8 bytes (beyond the band values).

The mapping is that of a singular isothermal sphere lens (Einstein radius half the mask radius):
S source points drawn uniformly over the source-plane extent of the mask, each image pixel mapped to
its k nearest points with inverse-distance weights, so source pixels near the caustic are imaged
into arcs and rings as in a real lens. W's band values are random (uniform in [0.1, 1) on the
stored pairs, 0 where the pair leaves the mask): the timings depend only on where W is zero.

Usage: ``python benchmarks/curvature.py [--quick]`` (single-threaded, as in a Dask worker)
"""

from __future__ import annotations

import os

# one thread everywhere, as in a Dask worker (set before numpy/numba load)
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import json
import platform
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path as _Path

# benchmarks/pipeline.py is named like the package: keep this folder off the import path
sys.path[:] = [p for p in sys.path if _Path(p or ".").resolve() != _Path(__file__).parent.resolve()]

import numpy as np

RADII = {5_000: 40, 15_000: 70, 30_000: 98}  # circle radius in pixels -> N ~ pi r^2
KERNELS = (21, 41)
SOURCES = (500, 1_000, 2_500)
PER_PIXEL = (3, 10)


def _best(fn, repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        if times[-1] > 2.0:  # a slow reference: one timing is enough
            break
    return min(times)


def _best_pair(first, second, repeats: int = 7) -> tuple[float, float]:
    """The best times of two calls timed alternately (first, second, first, ...)."""
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for which, fn in enumerate((first, second)):
            start = time.perf_counter()
            fn()
            best[which] = min(best[which], time.perf_counter() - start)
        if min(best) > 2.0:  # slow calls: one timing of each is enough
            break
    return best[0], best[1]


def _start_up_probe(x: float) -> float:
    return x + 1.0


def _lens_mapping(mask: np.ndarray, s: int, k: int, seed: int):
    from scipy.spatial import cKDTree

    centre = (np.array(mask.shape) - 1) / 2
    theta = np.argwhere(~mask) - centre
    radius = np.hypot(theta[:, 0], theta[:, 1])[:, None]
    einstein = 0.5 * radius.max()
    beta = theta - einstein * theta / np.maximum(radius, 1e-9)
    points = np.random.default_rng(seed).uniform(beta.min(axis=0), beta.max(axis=0), (s, 2))
    distance, index = cKDTree(points).query(beta, k)
    weights = 1.0 / np.maximum(distance, 1e-3)
    weights /= weights.sum(axis=1, keepdims=True)
    return index.astype(np.int64), weights


def measure(radius: int, k_psf: int) -> list[dict]:
    """In a fresh process: F and D for every S and k on one mask and PSF size."""
    from pipeline.operators import ImagingSparseOperator, OperatorLayout
    from pipeline.operators.mappings import MapperLayout

    size = 2 * radius + k_psf + 4
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    mask = yy**2 + xx**2 >= radius**2
    layout = OperatorLayout(mask, (k_psf, k_psf))
    n = layout.n_pixels
    rng = np.random.default_rng(k_psf)
    values = rng.uniform(0.1, 1.0, (n, layout.n_offsets)) * layout.valid()
    operator = ImagingSparseOperator(values, layout, rng.normal(size=n))
    try:
        from autoarray.inversion.inversion.imaging_numba import inversion_imaging_numba_util

        reference = inversion_imaging_numba_util.curvature_matrix_via_sparse_operator_from
        aa_w = operator.to_autoarray_layout()
    except ImportError:
        reference = None

    rows = []
    for s in SOURCES:
        for k in PER_PIXEL:
            index, weights = _lens_mapping(mask, s, k, seed=s + k)
            mapping = MapperLayout(index, weights, np.full(n, k), s)
            row: dict = {"n": n, "k_psf": k_psf, "s": s, "k": k}
            if not rows:  # the first call of this process: numba imported, kernels from cache
                start = time.perf_counter()
                import numba

                row["numba_import_s"] = time.perf_counter() - start
                # numba's own one-off start-up (its CPU target), paid by the first call of any
                # numba function in a process (in a PyAutoLens fit, by autoarray's mappers)
                start = time.perf_counter()
                numba.njit(cache=True)(_start_up_probe)(1.0)  # loaded from numba's cache
                row["numba_init_s"] = time.perf_counter() - start
                start = time.perf_counter()
                operator.curvature_matrix_from(mapping)
                row["first_s"] = time.perf_counter() - start
            f = operator.curvature_matrix_from(mapping)
            ours = lambda m=mapping: operator.curvature_matrix_from(m)  # noqa: E731
            if reference is None:
                row["f_s"] = _best(ours)
            else:  # side by side: alternate the two calls, so both see the same machine
                args = (*aa_w, index, weights, np.full(n, k, dtype=np.int64), s)
                f_aa = reference(*args)  # compiles (or loads) autoarray's kernel
                row["f_s"], row["aa_s"] = _best_pair(ours, lambda a=args: reference(*a))
                row["diff"] = float(np.abs(f_aa - f).max() / np.abs(f_aa).max())
            row["d_s"] = _best(lambda m=mapping: operator.data_vector_from(m))
            tracemalloc.start()
            operator.curvature_matrix_from(mapping)
            row["peak_mb"] = (
                tracemalloc.get_traced_memory()[1] + _scratch(layout, index.size, s)
            ) / 2**20
            tracemalloc.stop()
            row["budget_mb"] = 2 * s * s * 8 / 2**20
            rows.append(row)
    return rows


def _scratch(layout, nnz: int, s: int) -> int:
    """Bytes the numba kernel allocates outside tracemalloc's view: the padded image buffer and
    its row spans, A by columns (int32 rows, float64 weights) and by cell, the Morton order."""
    ry, rx = 2 * (layout.kernel_shape[0] // 2), 2 * (layout.kernel_shape[1] // 2)
    ny, nx = layout.shape_native
    cells = (ny + ry) * (nx + 2 * rx)
    return 8 * (2 * cells + 2 * (ny + ry) + 7 * s) + 16 * nnz


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N ~ 15k and 21x21 only")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        radius, k_psf = (int(v) for v in args.worker.split(":"))
        print(json.dumps(measure(radius, k_psf)))
        return

    # compile (or load) every kernel once, so that each worker's first call loads from the cache
    subprocess.run([sys.executable, __file__, "--worker", "20:5"], capture_output=True, check=True)
    sizes = [15_000] if args.quick else list(RADII)
    kernels = (21,) if args.quick else KERNELS
    print(
        f"machine: {_cpu_name()}, {os.cpu_count()} cores; Python {platform.python_version()}, "
        f"numpy {np.__version__}; single thread\n"
    )
    print(
        "| PSF | N | S | k | ours F ms | ours D ms | autoarray F ms | autoarray / ours "
        "| max diff | peak MB (budget) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    firsts = []
    for k_psf in kernels:
        for size in sizes:
            out = subprocess.run(
                [sys.executable, __file__, "--worker", f"{RADII[size]}:{k_psf}"],
                capture_output=True,
                text=True,
                check=True,
            )
            for r in json.loads(out.stdout.strip().splitlines()[-1]):
                aa = f"{1e3 * r['aa_s']:.1f}" if "aa_s" in r else "-"
                ratio = f"{r['aa_s'] / r['f_s']:.2f}x" if "aa_s" in r else "-"
                diff = f"{r['diff']:.1e}" if "diff" in r else "-"
                print(
                    f"| {k_psf}x{k_psf} | {r['n']} | {r['s']} | {r['k']} | {1e3 * r['f_s']:.1f} "
                    f"| {1e3 * r['d_s']:.2f} | {aa} | {ratio} | {diff} "
                    f"| {r['peak_mb']:.1f} ({r['budget_mb']:.1f}) |",
                    flush=True,
                )
                if "first_s" in r:
                    firsts.append(r)
    print("\nFirst call in a fresh process (kernels loaded from numba's cache):\n")
    print(
        "| PSF | N | S | k | import numba s | numba start-up s | first F s | later F s "
        "| first - later s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in firsts:
        print(
            f"| {r['k_psf']}x{r['k_psf']} | {r['n']} | {r['s']} | {r['k']} "
            f"| {r['numba_import_s']:.2f} | {r['numba_init_s']:.2f} | {r['first_s']:.2f} "
            f"| {r['f_s']:.3f} "
            f"| {r['first_s'] - r['f_s']:.2f} |"
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
