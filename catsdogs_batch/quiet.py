"""What other libraries print while a command runs (NNCF's progress bars and log, Keras' download
notice), held back unless `catsdogs -v`: each command prints its own lines only. Their errors
still reach the command as exceptions, and so its one-line message."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator

log = logging.getLogger(__name__)


@contextlib.contextmanager
def held_back(*loggers: str) -> Iterator[None]:
    """For the block, unless this package logs at DEBUG (`-v`): what is printed on sys.stdout is
    dropped, and the named loggers (those that print on handlers of their own) say only errors."""
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    quieted = [(logger, logger.level) for logger in map(logging.getLogger, loggers)]
    for logger, _ in quieted:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for logger, level in quieted:
            logger.setLevel(level)
