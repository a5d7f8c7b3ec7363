"""The ``lenspipe`` command line.

Exit codes: 0 success (every dataset complete); 3 the run finished but some datasets failed
(partial); 2 usage, configuration or input error; 1 anything else (also: no worker alive for
``cluster.start_timeout``); 130, 143, 129 the run was stopped by SIGINT, SIGTERM, SIGHUP (128 +
the signal number; what was written stays valid, re-run to resume).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from pipeline.exc import ClusterError, ConfigError, PipelineError, RunInterrupted

__all__ = ["main"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3


class _Exit(Exception):
    def __init__(self, code: int):
        self.code = code


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lenspipe")
def cli() -> None:
    """lenspipe: prepare strong-lensing imaging surveys for pixelized lens modelling.

    \b
    Exit codes:
      0    every dataset complete
      3    the run finished, some datasets failed (listed in the summary)
      2    usage, configuration or input error (nothing was run)
      1    unexpected error, or no worker alive for cluster.start_timeout
      130  stopped by SIGINT (Ctrl-C), 143 by SIGTERM, 129 by SIGHUP: re-run to resume
    """


@cli.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--n", "n", type=click.IntRange(1, 1_000_000), default=10, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def simulate(out: Path, n: int, seed: int) -> None:
    """Write a mock survey: OUT/<name>/{data,noise_map,psf}.fits, OUT/manifest.csv, OUT/survey.yaml."""
    from pipeline.mock import simulate_survey

    config = simulate_survey(out, n, seed=seed)
    click.echo(f"Simulated {n} lenses into {out}/; run them with: lenspipe run {config}")


@cli.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False, path_type=Path))
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
    for name, message in found.problems:
        click.echo(f"  problem: {name}: {message}")


@cli.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--resume",
    is_flag=True,
    help="Skip complete datasets and finished batches (the default: settings are hashed, "
    "so resuming is always safe).",
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
    "--dry-run", is_flag=True, help="Print the plan (and a SLURM/PBS job script); run nothing."
)
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option(
    "--verify",
    is_flag=True,
    help="Decode every stored operator chunk, also of complete datasets, and redo damaged batches "
    "(as run.verify: true).",
)
def run(
    config_path: Path,
    resume: bool,
    overwrite: bool,
    overwrite_names: tuple[str, ...],
    dry_run: bool,
    no_progress: bool,
    verify: bool,
) -> None:
    """Run (or resume) the survey described by CONFIG.

    Re-running the same command resumes: complete datasets are skipped (unless their input
    files changed), finished operator batches are kept."""
    from pipeline.flow.config import load_config

    config = load_config(config_path)
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
        raise _Exit(stop.exit_code) from None
    click.echo(summary.table())
    if summary.stopped:
        click.echo(f"Resume with: lenspipe run {config_path}", err=True)
    raise _Exit(summary.exit_code)


def _dry_run(config, overwrite: bool | tuple[str, ...]) -> None:
    from pipeline.flow.cluster import job_script
    from pipeline.flow.config import JobqueueCluster
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
    for name, message in problems:
        click.echo(f"  problem: {name}: {message}")
    if isinstance(config.cluster, JobqueueCluster):
        click.echo(f"\n{config.cluster.kind.upper()} job script ({config.cluster.jobs} job(s)):\n")
        click.echo(job_script(config.cluster))


@cli.command()
@click.argument("store")
@click.option("--json", "as_json", is_flag=True, help="Print {name: status} as JSON.")
def status(store: str, as_json: bool) -> None:
    """Status of every dataset in STORE."""
    from collections import Counter

    from pipeline.io.store import DatasetStatus, dataset_problems, list_datasets

    statuses = list_datasets(store)
    if as_json:
        click.echo(json.dumps(statuses, indent=1, sort_keys=True))
        return
    problems = dataset_problems(store)
    counts = Counter(statuses.values())
    click.echo(
        f"{store}: {len(statuses)} datasets: "
        + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    )
    for name, state in statuses.items():
        if state != DatasetStatus.COMPLETE:
            reason = problems.get(name)
            click.echo(f"  {name}: {state}" + (f": {reason}" if reason else ""))


@cli.command()
@click.argument("store")
@click.argument("name", required=False)
def inspect(store: str, name: str | None) -> None:
    """Summary of STORE, or of dataset NAME in it."""
    from pipeline.io.store import (
        dataset_record,
        last_run,
        list_datasets,
        open_store,
        store_metadata,
    )

    if name is None:
        root = open_store(store)
        meta = store_metadata(root)
        click.echo(
            f"{store}: lenspipe store, schema_version {meta.get('schema_version')}, "
            f"created {meta.get('created')}"
        )
        statuses = list_datasets(store)
        click.echo(f"  {len(statuses)} datasets")
        last = last_run(root)
        if last:
            click.echo(
                f"  last run {last['run_id']}: {last['complete']} complete, {last['failed']} failed, "
                f"{last['skipped_complete']} skipped, {last['wall_seconds']:.1f} s wall"
            )
        return
    record = dataset_record(store, name)
    for label, value in record.summary_items():
        click.echo(f"{label:>14}: {value}")
    for source in record.sources:
        click.echo(
            f"{'source':>14}: {source.role}: {source.path} [{source.hdu}] "
            f"sha256 {(source.sha256 or '')[:16]}…"
        )


@cli.command()
@click.argument("store")
@click.argument("name", required=False)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Image file to write (PNG; .pdf and .svg work too).",
)
@click.option(
    "--kind",
    type=click.Choice(["dataset", "operator", "survey"]),
    default=None,
    help="dataset: data, noise, S/N, PSF, mask, over-sampling; operator: a row of W, the band, "
    "a curvature matrix; survey: statuses, sizes, times. Default: dataset if NAME is given, "
    "else survey.",
)
@click.option(
    "--pixel",
    nargs=2,
    type=int,
    default=None,
    metavar="ROW COL",
    help="operator: the pixel whose row of W is shown (default: the central unmasked pixel).",
)
@click.option("--dpi", type=click.IntRange(30, 600), default=120, show_default=True)
def plot(
    store: str,
    name: str | None,
    output: Path,
    kind: str | None,
    pixel: tuple[int, int] | None,
    dpi: int,
) -> None:
    """Draw dataset NAME of STORE (or the whole survey) into an image file."""
    from pipeline import plots

    kind = kind or ("dataset" if name else "survey")
    if kind == "survey":
        figure = plots.survey_overview(store)
    else:
        if name is None:
            raise click.UsageError(
                f"--kind {kind} needs the dataset NAME (lenspipe status {store})"
            )
        from pipeline.io.store import open_imaging

        imaging = open_imaging(store, name)
        if kind == "dataset":
            figure = plots.dataset_panel(imaging)
        else:
            figure = plots.operator_panel(imaging, pixel=pixel or None)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=dpi)
    click.echo(f"wrote {output}")


@cli.command()
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
    raise _Exit(summary.exit_code)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lenspipe`` console script; returns the exit code."""
    try:
        cli.main(args=argv, standalone_mode=False)
    except _Exit as done:
        return done.code
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return EXIT_ERROR
    except KeyboardInterrupt as stop:  # RunInterrupted (a stop signal) or Ctrl-C elsewhere
        click.echo(f"{stop or 'interrupted'}: stopped.", err=True)
        return int(getattr(stop, "exit_code", 130))
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.ClickException as err:
        err.show()
        return EXIT_USAGE
    except (ConfigError, ClusterError) as err:
        click.echo(f"error: {err}", err=True)
        return EXIT_USAGE
    except PipelineError as err:
        click.echo(f"error: {err}", err=True)
        return EXIT_USAGE
    except Exception as err:  # noqa: BLE001 - the CLI's last resort: one line, exit code 1
        click.echo(f"unexpected error: {type(err).__name__}: {err}", err=True)
        return EXIT_ERROR
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
