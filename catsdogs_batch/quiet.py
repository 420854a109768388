"""What other libraries print while a command runs (NNCF's progress bars and log, Keras' download
notice, TensorFlow's start-up lines), held back unless `catsdogs -v`: each command prints its own
lines only. Their errors still reach the command as exceptions, and so its one-line message."""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import io
import logging
import os
import sys
import tempfile
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


class QuietTensorFlowStart(importlib.abc.MetaPathFinder):
    """TensorFlow 2.21's first import, and its devices' start, write lines ("oneDNN custom operations
    are on", "failed call to cuInit") straight to descriptor 2, before TF_CPP_MIN_LOG_LEVEL applies:
    for that import only (devices started), descriptor 2 goes to an unnamed temporary file, shown
    if the import fails. All else reaches the terminal as written."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once, and not found again by the lookup below
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _StartedQuietly(spec.loader)
        return spec


class _StartedQuietly(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def __getattr__(self, name: str) -> object:  # resources, source: the real loader's
        return getattr(self.loader, name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> object:
        return self.loader.create_module(spec)

    def exec_module(self, module: object) -> None:
        with tempfile.TemporaryFile() as held:
            if sys.stderr is not None:
                sys.stderr.flush()
            terminal = os.dup(2)
            os.dup2(held.fileno(), 2)
            try:
                self.loader.exec_module(module)
                module.config.list_physical_devices()  # its devices start, and say so, now
            except BaseException:
                os.dup2(terminal, 2)
                os.write(2, held.read() if held.seek(0) == 0 else b"")
                raise
            finally:
                os.dup2(terminal, 2)
                os.close(terminal)
