"""`catsdogs`: the parser of every command, and `main`, which runs one."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import warnings

from ..errors import UserError
from ..files import printable
from ..quiet import QuietTensorFlowStart
from . import data_jobs, image_jobs
from .flags import EXIT_ERROR, EXIT_INTERRUPTED, Parser, say, say_error


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="catsdogs",
        description="Kaggle Dogs vs. Cats: download the data, train the CNN, predict in batches, "
        "write submissions and bulk-label photo folders.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for parse_command in (
        data_jobs.parse_download, data_jobs.parse_train, image_jobs.parse_predict, image_jobs.parse_submission, data_jobs.parse_submit, image_jobs.parse_label, image_jobs.parse_evaluate,
        data_jobs.parse_export, image_jobs.parse_review, image_jobs.parse_audit,
    ):  # fmt: skip
        parse_command(sub)
    return parser


class EscapedFormatter(logging.Formatter):
    """Log messages are one line each: escaped whole, names included."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


def own_or_error(record: logging.LogRecord) -> bool:
    """Without --verbose, a command prints its own lines: this package's messages, and only the
    errors of the libraries it runs (not matplotlib's "generated new fontManager", nor
    TensorFlow's notices)."""
    return record.name.partition(".")[0] == __package__.partition(".")[0] or record.levelno >= logging.ERROR


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or a usage error argparse has printed
        return int(e.code or 0)
    handler = logging.StreamHandler()
    handler.setFormatter(EscapedFormatter("%(message)s"))
    with contextlib.ExitStack() as quiet:
        if not args.verbose:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
            if "tensorflow" not in sys.modules:
                start = QuietTensorFlowStart()
                sys.meta_path.insert(0, start)
                quiet.callback(lambda: start in sys.meta_path and sys.meta_path.remove(start))
            # Libraries' warnings (Keras' one per layer of a weights file it cannot match, Pillow's
            # about photos of 90 to 180 megapixels, decoded all the same) are theirs, not the
            # command's: its errors still end it with one line.
            quiet.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")
            handler.addFilter(own_or_error)
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler])
        try:
            return args.func(args) or 0
        except UserError as e:
            say_error(args.command, e)
            return EXIT_ERROR
        except OSError as e:  # a full disk, a read-only folder, ...: the system's words, one line
            if args.verbose:
                raise
            where = f": {e.filename}" if e.filename else ""
            say_error(args.command, f"{e.strerror or e}{where}")
            return EXIT_ERROR
        except KeyboardInterrupt:
            say(f"catsdogs {args.command}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED

