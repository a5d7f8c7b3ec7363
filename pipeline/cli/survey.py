"""``lenspipe`` commands that make or run a survey: ``simulate``, ``validate``, ``run``, ``demo``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from pipeline.cli.common import EXIT_CODES_HELP, CommandExit
from pipeline.exc import RunInterrupted

if TYPE_CHECKING:
    from pipeline.flow.config import Config

__all__ = ["demo", "run", "simulate", "validate"]

_CONFIG = click.Path(dir_okay=False, path_type=Path)


@click.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--n", "n", type=click.IntRange(1, 1_000_000), default=10, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def simulate(out: Path, n: int, seed: int) -> None:
    """Write a mock survey: OUT/<name>/{data,noise_map,psf}.fits, OUT/manifest.csv, OUT/survey.yaml."""
    from pipeline.mock import simulate_survey

    config = simulate_survey(out, n, seed=seed)
    click.echo(f"Simulated {n} lenses into {out}/; run them with: lenspipe run {config}")


@click.command()
@click.argument("config_path", metavar="CONFIG", type=_CONFIG)
def validate(config_path: Path) -> None:
    """Check a config file and list what it would process, without running anything."""
    from pipeline.flow.config import load_config
    from pipeline.flow.discover import discover
    from pipeline.flow.plan import check_store_location

    config = load_config(config_path)
    found = discover(config)
    check_store_location(config, found)  # a store overlapping the inputs is an error here too
    click.echo(
        f"{config_path}: valid. {len(found.specs)} datasets found; store {config.store_location}"
    )
    _echo_skipped(found.skipped)
    for name, message in found.problems:
        click.echo(f"  problem: {name}: {message}")


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
    "--dry-run", is_flag=True, help="Print the plan (and a SLURM/PBS job script); run nothing."
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
        click.echo(f"\n{cluster.kind.upper()} job script ({cluster.jobs} job(s)):\n")
        click.echo(job_script(cluster))


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
