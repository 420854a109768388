"""The `catsdogs` command: one subcommand per user job. It only parses options and calls the
library; expected problems become a one-line message and a non-zero exit, never a traceback.

Exit statuses: 0 done, 1 an error (one line on stderr), 2 bad usage (argparse), 3 `label
--sort-into` left readable images unsorted (listed), 130 interrupted (Ctrl-C)."""

from .app import build_parser, main
from .flags import options_from, say, say_error

__all__ = ["build_parser", "main", "options_from", "say", "say_error"]
