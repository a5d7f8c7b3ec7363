"""What every ``lenspipe`` command shares: the exit codes and their help text, and the exception
a command raises to end with a given code."""

from __future__ import annotations

__all__ = [
    "EXIT_CODES_HELP",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_USAGE",
    "CommandExit",
]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3

# shown by `lenspipe --help` and `lenspipe run --help` (\b: click keeps the lines as they are)
EXIT_CODES_HELP = """\b
Exit codes:
  0    every dataset complete (run, demo); any other command: done
  3    the run finished, some datasets failed (listed in the summary)
  2    usage, configuration or input error, or the store is locked by a
       running run (nothing was run or removed)
  1    unexpected error, no worker alive for cluster.start_timeout, or a
       confirmation declined
  130  stopped by SIGINT (Ctrl-C), 143 by SIGTERM, 129 by SIGHUP: re-run to resume
"""


class CommandExit(Exception):
    """Ends a command with exit status ``code`` (:func:`pipeline.cli.main` returns it)."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code
