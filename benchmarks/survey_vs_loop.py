"""Whole-survey throughput against what users would write instead: prints a Markdown table.

On the same mock survey (``lenspipe simulate``: ``--n`` lenses, 0.1"/px, 11x11 PSFs, circular
masks from the manifest, over-sampling 4/4), in one run:

* **autoarray loop**: the plain script a PyAutoLens user writes, run in the Python environment
  that has autoarray (``--autoarray-python``; the interop work's Python 3.12 environment)::

      for row in manifest:
          dataset = aa.Imaging.from_fits(data_path=..., noise_map_path=..., psf_path=...,
                                         pixel_scales=0.1)
          dataset = dataset.apply_mask(aa.Mask2D.circular(..., radius=row.mask_radius))
          dataset = dataset.apply_over_sampling(over_sample_size_lp=4,
                                                over_sample_size_pixelization=4)
          dataset = dataset.apply_sparse_operator_cpu()
          np.savez(out / f"{row.name}.npz", ...)

* **lenspipe loop**: the same script ported to ``import pipeline as lp`` (same calls), one thread;
* **lenspipe run**: ``lenspipe run survey.yaml --workers W`` (a LocalCluster, the Zarr store, every
  check and record of the pipeline), wall time of the whole command.

Every side runs with single-threaded BLAS/numba per process. Reported: wall seconds, cores used,
datasets per second and datasets per second per core (the figure that carries to a cluster), and
the ratio to the autoarray loop. One lens's W is compared across all three to show that they did
the same work.

Usage: ``python benchmarks/survey_vs_loop.py [--n 200] [--workers 2] [--autoarray-python PATH]``
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

# benchmarks/pipeline.py is named like the package: keep this folder off the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import numpy as np  # noqa: E402

PIXEL_SCALE = 0.1
OVER_SAMPLING = 4


def plain_loop(library: str, survey: Path, out: Path) -> dict:
    """The hand-written loop over the manifest with ``library`` (``autoarray`` or ``pipeline``):
    seconds for the whole loop (imports excluded) and the datasets done."""
    if library == "autoarray":
        import autoarray as lib
    else:
        import pipeline as lib
    rows = list(csv.DictReader(open(survey / "manifest.csv")))
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for row in rows:
        dataset = lib.Imaging.from_fits(
            data_path=survey / row["data"],
            noise_map_path=survey / row["noise_map"],
            psf_path=survey / row["psf"],
            pixel_scales=PIXEL_SCALE,
        )
        mask = lib.Mask2D.circular(
            shape_native=dataset.shape_native,
            pixel_scales=PIXEL_SCALE,
            radius=float(row["mask_radius"]),
        )
        dataset = dataset.apply_mask(mask=mask)
        dataset = dataset.apply_over_sampling(
            over_sample_size_lp=OVER_SAMPLING, over_sample_size_pixelization=OVER_SAMPLING
        )
        if library == "autoarray":
            dataset = dataset.apply_sparse_operator_cpu()
            operator = dataset.sparse_operator
            arrays = {
                "values": np.asarray(operator.psf_precision_operator_sparse),
                "indexes": np.asarray(operator.indexes),
                "lengths": np.asarray(operator.lengths),
            }
        else:
            dataset = dataset.apply_sparse_operator_cpu(n_threads=1)
            arrays = {"values": dataset.sparse_operator.values}
        np.savez(
            out / f"{row['name']}.npz",
            data=np.asarray(dataset.data.native),
            noise_map=np.asarray(dataset.noise_map.native),
            mask=np.asarray(mask),
            **arrays,
        )
    return {"seconds": time.perf_counter() - start, "datasets": len(rows)}


def _loop_in(python: str, library: str, survey: Path, out: Path) -> dict:
    done = subprocess.run(
        [python, __file__, "--loop", library, str(survey), str(out)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"the {library} loop failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _lenspipe_run(survey: Path, workers: int) -> dict:
    lenspipe = Path(sys.executable).with_name("lenspipe")
    command = [str(lenspipe) if lenspipe.exists() else "lenspipe", "run", "survey.yaml"]
    start = time.perf_counter()
    done = subprocess.run(
        [*command, "--workers", str(workers)],
        cwd=survey,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"lenspipe run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return {"seconds": seconds}


def _same_work(survey: Path, name: str, loops: dict[str, Path]) -> str:
    """The largest difference, relative to max |W|, between the three sides' W for ``name``."""
    from pipeline.io.store import open_imaging
    from pipeline.operators import OperatorLayout

    ours = np.load(loops["lenspipe"] / f"{name}.npz")
    values = ours["values"]
    stored = open_imaging(survey / "survey.zarr", name).sparse_operator.values
    diffs = {"lenspipe run": float(np.abs(np.asarray(stored) - values).max())}
    if "autoarray" in loops:
        theirs = np.load(loops["autoarray"] / f"{name}.npz")
        layout = OperatorLayout(ours["mask"], _psf_shape(survey, name))
        band = layout.from_autoarray_layout(theirs["values"], theirs["indexes"], theirs["lengths"])
        diffs["autoarray loop"] = float(np.abs(band - values).max())
    scale = float(np.abs(values).max())
    return ", ".join(f"{side} {diff / scale:.1e}" for side, diff in diffs.items())


def _psf_shape(survey: Path, name: str) -> tuple[int, int]:
    from astropy.io import fits

    with fits.open(survey / name / "psf.fits") as hdul:
        return tuple(hdul[0].data.shape)  # type: ignore[return-value]


def _autoarray_python(given: str | None) -> str | None:
    """The interpreter with autoarray: ``given``, this one, or None (that column is left out)."""
    candidates = [given] if given else [sys.executable]
    for python in candidates:
        probe = subprocess.run([python, "-c", "import autoarray"], capture_output=True, text=True)
        if probe.returncode == 0:
            return python
        if given:
            raise SystemExit(f"--autoarray-python {given}: cannot import autoarray there")
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="mock lenses")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--autoarray-python", help="a Python that can import autoarray")
    parser.add_argument("--dir", help="where to write the survey (default: a temporary folder)")
    parser.add_argument("--loop", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loop:
        library, survey, out = args.loop
        print(json.dumps(plain_loop(library, Path(survey), Path(out))))
        return

    python = _autoarray_python(args.autoarray_python)
    root = Path(tempfile.mkdtemp(prefix="survey-vs-loop-", dir=args.dir))
    try:
        survey = root / "survey"
        from pipeline.cli import main as lenspipe

        if lenspipe(["simulate", str(survey), "--n", str(args.n)]) != 0:
            raise SystemExit("lenspipe simulate failed")
        results: dict[str, dict] = {}
        outputs: dict[str, Path] = {}
        if python:
            outputs["autoarray"] = root / "autoarray"
            results["autoarray loop"] = {
                **_loop_in(python, "autoarray", survey, outputs["autoarray"]),
                "cores": 1,
            }
        outputs["lenspipe"] = root / "lenspipe"
        results["lenspipe loop"] = {
            **_loop_in(sys.executable, "pipeline", survey, outputs["lenspipe"]),
            "cores": 1,
        }
        results[f"lenspipe run --workers {args.workers}"] = {
            **_lenspipe_run(survey, args.workers),
            "datasets": args.n,
            "cores": args.workers,
        }
        check = _same_work(survey, "lens_00000", outputs)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"Python {platform.python_version()}; {args.n} mock lenses (lenspipe simulate); "
        f"autoarray side: {python or 'not importable (column left out)'}\n"
    )
    print(
        "| side | wall s | cores | datasets/s | datasets/s per core | per core / autoarray loop |"
    )
    print("|---|---|---|---|---|---|")
    reference = results.get("autoarray loop")
    base = reference["datasets"] / reference["seconds"] if reference else None
    for side, r in results.items():
        rate = r["datasets"] / r["seconds"]
        per_core = rate / r["cores"]
        ratio = f"{per_core / base:.1f}x" if base else ""
        print(
            f"| {side} | {r['seconds']:.1f} | {r['cores']} | {rate:.2f} | {per_core:.2f} | "
            f"{ratio} |"
        )
    print(f"\nW of lens_00000, max difference / max |W| against the lenspipe loop: {check}")


if __name__ == "__main__":
    main()
