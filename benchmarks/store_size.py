"""Size and speed of the stored sparse operator: prints a Markdown table.

For simulated lenses with 11x11 and 21x21 PSFs (140x140 frame at 0.1"/px, circular mask of radius
6.5", N ~ 13k unmasked pixels), the operator values are written to a local store with each storage
setting (float64/float32; Blosc-LZ4 level 5, Zstandard levels 1 and 3, no compression; float32 with
``keep_bits=12``) by ``write_operator_batch`` in batches of 1024 rows, as pipeline tasks do. Per
setting:

* bytes per masked pixel: the ``sparse_operator/values`` chunk files on disk / N;
* compression ratio: uncompressed bytes in the stored dtype (N * n_offsets * itemsize) / chunk bytes;
* write and read MB/s: those uncompressed bytes per second, one process with zarr limited to one
  thread (``async.concurrency`` = ``threading.max_workers`` = 1) and single-threaded Blosc, as in a
  Dask worker; best of ``--repeats`` runs. Reads come from the page cache (decode speed, not disk).

For comparison, the reference library (PyAutoArray) stores every nonzero entry of the upper triangle
(diagonal included) as a float64 value and an int64 index: 16 * nnz / N bytes per pixel.

Usage: ``python benchmarks/store_size.py [--repeats 3] [--dir DIR]``
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys as _sys  # noqa: E402
import tempfile
import time
from pathlib import Path
from pathlib import Path as _Path  # noqa: E402

import numcodecs
import numcodecs.blosc

# benchmarks/pipeline.py is named like the package: keep this folder off the import path
_sys.path[:] = [
    p for p in _sys.path if _Path(p or ".").resolve() != _Path(__file__).parent.resolve()
]

import numpy as np
import zarr

from pipeline import Mask2D
from pipeline.io.store import (
    OperatorStorage,
    create_store,
    open_store,
    prepare_dataset,
    write_operator_batch,
)
from pipeline.mock import simulate_lens

SHAPE, SCALE, RADIUS = (140, 140), 0.1, 6.5
BATCH = 1024
STORAGES = [
    OperatorStorage("float64", "lz4", 5),
    OperatorStorage("float64", "zstd", 1),
    OperatorStorage("float64", "zstd", 3),
    OperatorStorage("float64", "none"),
    OperatorStorage("float32", "lz4", 5),
    OperatorStorage("float32", "zstd", 1),
    OperatorStorage("float32", "zstd", 3),
    OperatorStorage("float32", "none"),
    OperatorStorage("float32", "lz4", 5, keep_bits=12),
    OperatorStorage("float32", "zstd", 1, keep_bits=12),
]


def _label(storage: OperatorStorage) -> str:
    codec = "none" if storage.codec == "none" else f"{storage.codec} {storage.level}"
    bits = f", keep_bits={storage.keep_bits}" if storage.keep_bits is not None else ""
    return f"{storage.dtype} {codec}{bits}"


def _chunk_bytes(path: Path) -> int:
    chunks = path / "datasets" / "lens" / "sparse_operator" / "values" / "c"
    return sum(p.stat().st_size for p in chunks.rglob("*") if p.is_file())


def measure(imaging, storage: OperatorStorage, workdir: Path, repeats: int) -> dict:
    """Write the operator ``repeats`` times (fresh store each time), then read it back."""
    values = imaging.sparse_operator.values
    path = workdir / "bench.zarr"
    writes = []
    for _ in range(repeats):
        shutil.rmtree(path, ignore_errors=True)
        root = create_store(path)
        prepare_dataset(root, "lens", imaging, batch_size=BATCH, operator_storage=storage)
        t = time.perf_counter()
        for index, start in enumerate(range(0, len(values), BATCH)):
            write_operator_batch(root, "lens", index, values[start : start + BATCH])
        writes.append(time.perf_counter() - t)
    stored = _chunk_bytes(path)
    array = open_store(path)["datasets/lens/sparse_operator/values"]
    reads = []
    for _ in range(repeats):
        t = time.perf_counter()
        array[...]
        reads.append(time.perf_counter() - t)
    raw = values.size * np.dtype(storage.dtype).itemsize
    return {
        "bytes_per_pixel": stored / len(values),
        "ratio": raw / stored,
        "write_mb_s": raw / min(writes) / 1e6,
        "read_mb_s": raw / min(reads) / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", help="where to write the stores (default: a temporary directory)")
    args = parser.parse_args()

    # a single-threaded worker: zarr's own concurrency and Blosc's threads off (PITFALLS "Zarr v3")
    zarr.config.set({"async.concurrency": 1, "threading.max_workers": 1})
    numcodecs.blosc.use_threads = False
    numcodecs.blosc.set_nthreads(1)
    workdir = Path(tempfile.mkdtemp(prefix="store-size-", dir=args.dir))
    print(
        f"machine: {_cpu_name()}, {os.cpu_count()} cores; Python {platform.python_version()}, "
        f"numpy {np.__version__}, zarr {zarr.__version__}, numcodecs {numcodecs.__version__}; "
        f"stores in {workdir}; MB/s = uncompressed bytes in the stored dtype, best of "
        f"{args.repeats}\n"
    )
    print("| PSF | N | n_offsets | storage | bytes / pixel | ratio | write MB/s | read MB/s |")
    print("|---|---|---|---|---|---|---|---|")
    try:
        for k in (11, 21):
            imaging = (
                simulate_lens(SHAPE, SCALE, psf_shape=(k, k))
                .apply_mask(Mask2D.circular(shape_native=SHAPE, pixel_scales=SCALE, radius=RADIUS))
                .apply_sparse_operator(batch_size=256, backend="numpy")
            )
            op = imaging.sparse_operator
            head = f"| {k}x{k} | {op.n_pixels} | {op.layout.n_offsets} "
            for storage in STORAGES:
                r = measure(imaging, storage, workdir, args.repeats)
                print(
                    f"{head}| {_label(storage)} | {r['bytes_per_pixel']:.0f} | {r['ratio']:.2f} "
                    f"| {r['write_mb_s']:.0f} | {r['read_mb_s']:.0f} |",
                    flush=True,
                )
            nnz = len(op.to_autoarray_layout()[0])
            print(
                f"{head}| reference: f64 value + i64 index, {nnz} pairs "
                f"| {16 * nnz / op.n_pixels:.0f} | | | |",
                flush=True,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
