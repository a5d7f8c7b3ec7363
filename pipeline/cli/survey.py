"""``lenspipe`` commands that make or run a survey: ``simulate``, ``validate``, ``run``, ``demo``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pipeline.cli.common import EXIT_CODES_HELP, EXIT_USAGE, CommandExit
from pipeline.exc import RunInterrupted

if TYPE_CHECKING:
    from pipeline.flow.config import Config
    from pipeline.flow.discover import DatasetSpec

__all__ = ["demo", "run", "simulate", "validate"]

_CONFIG = click.Path(dir_okay=False, path_type=Path)


@click.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--n", "n", type=click.IntRange(1, 1_000_000), default=10, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--kind",
    type=click.Choice(["manifest", "euclid-mef"]),
    default="manifest",
    show_default=True,
    help="manifest: one folder of FITS files per lens, a manifest and a config. euclid-mef: "
    "one 8-band multi-extension cutout per lens (EUC_MER_*.fits, NaN edges, flag maps), for "
    "configs/euclid_mef.yaml.",
)
def simulate(out: Path, n: int, seed: int, kind: str) -> None:
    """Write a mock survey: OUT/<name>/{data,noise_map,psf}.fits, OUT/manifest.csv, OUT/survey.yaml
    (or, with --kind euclid-mef, OUT/EUC_MER_<id>.fits)."""
    if kind == "euclid-mef":
        from pipeline.mock import simulate_euclid_cutouts

        paths = simulate_euclid_cutouts(out, n, seed=seed)
        click.echo(
            f"Simulated {len(paths)} 8-band cutouts into {out}/; configs/euclid_mef.yaml reads "
            "them from euclid/cutouts beside configs/"
        )
        return
    from pipeline.mock import simulate_survey

    config = simulate_survey(out, n, seed=seed)
    click.echo(f"Simulated {n} lenses into {out}/; run them with: lenspipe run {config}")


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("config_path", metavar="CONFIG", type=_CONFIG)
def validate(config_path: Path) -> None:
    """Check CONFIG and every dataset's input files, without running anything.

    Lists the datasets found and every problem at once: the config's keys; per dataset, missing
    files, missing HDUs (listing those present), HDUs that are not 2-D images, inputs whose
    shape differs from the data's, flag maps that are not integers, PSFs of even shape or larger
    than the image, a data header without a pixel scale under `pixel_scales: header`, an
    explicit pixel scale more than 1% from the header's (a warning; an error with
    `pixel_scales_check: strict`), a mask that leaves no pixel. With psf.trim_to or
    psf.trim_fraction set, prints the operator-size saving of PSF trimming. Reads headers only
    (and the PSFs' pixels for psf.trim_fraction); starts no cluster. Exit 2 when there is any
    error, 0 with warnings alone."""
    from pipeline.flow.config import load_config
    from pipeline.flow.discover import discover
    from pipeline.flow.plan import check_store_location

    config = load_config(config_path)
    found = discover(config)
    check_store_location(config, found)  # a store overlapping the inputs is an error here too
    click.echo(
        f"{config_path}: config valid. {len(found.specs)} datasets found; store {config.store_location}"
    )
    _echo_skipped(found.skipped)
    for name, message in found.problems:
        click.echo(f"  problem: {name}: {message}")
    _check_inputs(config, found.specs, len(found.problems))


def _check_inputs(config: Config, specs: list[DatasetSpec], n_problems: int) -> None:
    """Print every problem of the datasets' input files (:mod:`pipeline.flow.preflight`) and
    the PSF-trimming saving; exit 2 when they or the ``n_problems`` of discovery hold an
    error."""
    from pipeline.flow.preflight import preflight

    start = time.perf_counter()
    checked = preflight(config, specs)
    errors, warnings = len(checked.errors), len(checked.warnings)
    click.echo(
        f"inputs: {checked.n_files} files of {len(specs)} datasets read in "
        f"{time.perf_counter() - start:.1f} s: {_count(errors, 'error')}, "
        f"{_count(warnings, 'warning')}"
    )
    for problem in checked.problems:
        click.echo(f"  {problem.severity}: {problem}")
    if checked.trimming is not None:
        click.echo(checked.trimming.line())
    if errors or n_problems:
        datasets = len({p.dataset for p in checked.errors}) + n_problems
        click.echo(
            f"error: {_count(errors + n_problems, 'error')} in {_count(datasets, 'dataset')} "
            "(listed above): a run would fail them; fix them first",
            err=True,
        )
        raise CommandExit(EXIT_USAGE)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("config_path", metavar="CONFIG", type=_CONFIG)
@click.option(
    "--workers",
    type=click.IntRange(1, 1024),
    default=None,
    help="Worker processes of the embedded cluster (cluster.kind: local), instead of the "
    "config's cluster.n_workers. An error for other clusters: their workers are started "
    "outside lenspipe (address) or set by cluster.jobs and options.processes (slurm, pbs).",
)
@click.option("--overwrite", is_flag=True, help="Recompute every dataset already in the store.")
@click.option(
    "--overwrite-dataset",
    "overwrite_names",
    multiple=True,
    metavar="NAME",
    help="Recompute dataset NAME even if it is complete (repeat for several).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Accepted for old scripts; resuming is what every run does (complete datasets and "
    "finished batches are kept). Refused with --overwrite, which recomputes everything.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the plan (and a SLURM/PBS job script) and check every input file as validate "
    "does (exit 2 on any error); run nothing.",
)
@click.option(
    "--no-progress",
    is_flag=True,
    help="No progress output (by default: bars on a terminal, else a line every 30 s).",
)
@click.option(
    "--verify",
    is_flag=True,
    help="Decode every stored operator chunk, also of complete datasets, and redo damaged batches "
    "(as run.verify: true).",
)
def run(
    config_path: Path,
    workers: int | None,
    overwrite: bool,
    overwrite_names: tuple[str, ...],
    resume: bool,
    dry_run: bool,
    no_progress: bool,
    verify: bool,
) -> None:
    """Run (or resume) the survey described by CONFIG.

    Every run resumes: complete datasets are skipped (unless their input files changed),
    finished operator batches are kept, failed datasets are prepared again. Progress goes to
    stderr: bars on a terminal, a plain line every 30 s otherwise (a log file)."""
    from pipeline.flow.config import load_config
    from pipeline.flow.plan import with_workers

    if resume and overwrite:
        raise click.UsageError(
            "--resume keeps what is done and --overwrite recomputes it all: choose one"
        )
    config = with_workers(load_config(config_path), workers)
    which: bool | tuple[str, ...] = True if overwrite else overwrite_names
    if dry_run:
        _dry_run(config, which)
        return
    from pipeline.flow.run import run_survey

    try:
        summary = run_survey(
            config,
            overwrite=which or False,
            progress=False if no_progress else None,
            verify=True if verify else None,
        )
    except RunInterrupted as stop:
        click.echo(
            f"{stop}: stopped before any task ran; nothing was computed. Resume with: "
            f"lenspipe run {config_path}",
            err=True,
        )
        raise CommandExit(stop.exit_code) from None
    click.echo(summary.table())
    if summary.stopped:
        click.echo(f"Resume with: lenspipe run {config_path}", err=True)
    raise CommandExit(summary.exit_code)


def _echo_skipped(skipped: list[tuple[str, str]], limit: int = 50) -> None:
    """What under the input root is not a dataset, each once with the reason (the first
    ``limit``; discovery logs every one at INFO)."""
    for path, reason in skipped[:limit]:
        click.echo(f"  skipped: {path}: {reason}")
    if len(skipped) > limit:
        click.echo(f"  ... and {len(skipped) - limit} more skipped (not datasets)")


def _dry_run(config: Config, overwrite: bool | tuple[str, ...]) -> None:
    from pipeline.flow.cluster import default_n_workers, job_script
    from pipeline.flow.config import JobqueueCluster, LocalClusterConfig
    from pipeline.flow.discover import discover
    from pipeline.flow.plan import check_store_location, plan_run
    from pipeline.io.store import open_store, store_exists

    location = config.store_location
    options = config.output.storage_options or None
    found = discover(config)
    check_store_location(config, found)
    if not store_exists(location, storage_options=options):
        click.echo(f"plan: {len(found.specs)} datasets to prepare into a new store {location}")
        problems = found.problems
    else:
        # an existing store that is not ours, or of a newer schema, is an error here as in a run
        root = open_store(location, storage_options=options)
        plan = plan_run(config, root, overwrite=overwrite or False, found=found)
        click.echo(
            f"plan: prepare {len(plan.to_prepare)}, resume {len(plan.to_resume)} "
            f"({sum(len(v) for v in plan.to_resume.values())} batches), finalize "
            f"{len(plan.to_finalize)}, skip {len(plan.skipped_complete)} complete; "
            f"{len(plan.conflicts)} with changed settings, {len(plan.changed)} with changed "
            f"inputs, {len(plan.rebuilt)} damaged (prepared again)"
        )
        for name, reason in list(plan.changed.items())[:20]:
            click.echo(f"  changed: {name}: {reason}")
        for name, reason in list(plan.rebuilt.items())[:20]:
            click.echo(f"  damaged: {name}: {reason}")
        problems = plan.problems
    _echo_skipped(found.skipped)
    for name, message in problems:
        click.echo(f"  problem: {name}: {message}")
    cluster = config.cluster
    if isinstance(cluster, LocalClusterConfig):
        n = cluster.n_workers or default_n_workers()
        click.echo(f"cluster: embedded LocalCluster, {n} worker process(es)")
    if isinstance(cluster, JobqueueCluster):
        jobs = f"{cluster.jobs} job(s)"
        if cluster.adapt is not None:
            jobs = f"adaptive: {cluster.adapt.minimum} to {cluster.adapt.maximum} job(s)"
        script = job_script(cluster)
        click.echo(f"\n{cluster.kind.upper()} job script ({jobs}):\n")
        click.echo(script)
    _check_inputs(config, found.specs, len(problems))


@click.command()
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("lenspipe-demo"),
    show_default=True,
    help="Folder for the survey.",
)
@click.option(
    "--n",
    "n",
    type=click.IntRange(1, 10_000),
    default=8,
    show_default=True,
    help="Number of mock lenses.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    default=None,
    help="Local workers (default: one per core).",
)
def demo(out: Path, n: int, seed: int, workers: int | None) -> None:
    """Simulate a small survey into OUT and run it on a local Dask cluster (OUT/survey.zarr)."""
    from pipeline.flow.config import load_config
    from pipeline.flow.run import run_survey
    from pipeline.mock import simulate_survey

    config_path = simulate_survey(out, n, seed=seed, n_workers=workers)
    click.echo(f"Simulated {n} lenses into {out}/ ({config_path.name}, manifest.csv)")
    summary = run_survey(load_config(config_path))
    click.echo(summary.table())
    click.echo(
        f"\nInspect it: lenspipe status {out / 'survey.zarr'}; in Python: "
        f"pipeline.open_imaging('{out / 'survey.zarr'}', 'lens_{seed:05d}')"
    )
    raise CommandExit(summary.exit_code)
