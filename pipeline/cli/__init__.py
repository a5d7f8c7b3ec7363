"""The ``lenspipe`` command line.

Commands live in :mod:`.survey` (``simulate``, ``validate``, ``run``, ``demo``) and :mod:`.store`
(``status``, ``inspect``, ``plot``, ``rm``) and :mod:`.files`
(``hdus``) and :mod:`.report` (``report``); :func:`main` runs one and turns its outcome into the
exit code (:mod:`.common`): 0 success (for ``run``: every dataset complete); 3 the run finished
but some datasets failed (partial); 2 usage, configuration or input error, or a store locked by a
running run; 1 anything else (also: no worker alive for ``cluster.start_timeout``, a confirmation
declined); 130, 143, 129 the run was stopped by SIGINT, SIGTERM, SIGHUP (128 + the signal number;
what was written stays valid, re-run to resume).
"""

from __future__ import annotations

import click

from pipeline.cli.common import (
    EXIT_CODES_HELP,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_USAGE,
    CommandExit,
)
from pipeline.cli.files import hdus
from pipeline.cli.report import report
from pipeline.cli.store import inspect, plot, rm, status
from pipeline.cli.survey import demo, run, simulate, validate
from pipeline.exc import PipelineError

__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_PARTIAL", "EXIT_USAGE", "cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
@click.version_option(package_name="lenspipe", message="%(prog)s %(version)s")
def cli() -> None:
    """lenspipe: prepare strong-lensing imaging surveys for pixelized lens modelling."""


for _command in (simulate, validate, run, demo, status, inspect, plot, rm, hdus, report):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lenspipe`` console script; returns the exit code."""
    try:
        code = cli.main(args=argv, prog_name="lenspipe", standalone_mode=False)
    except CommandExit as done:
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
    except PipelineError as err:  # ConfigError, ClusterError, StoreError (a locked store), ...
        click.echo(f"error: {err}", err=True)
        return EXIT_USAGE
    except Exception as err:  # noqa: BLE001 - the CLI's last resort: one line, exit code 1
        click.echo(f"unexpected error: {type(err).__name__}: {err}", err=True)
        return EXIT_ERROR
    # standalone_mode=False: --help and --version return click's exit status (0)
    return code if isinstance(code, int) else EXIT_OK
