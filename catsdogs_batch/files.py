"""Files the tool writes: never half of one (write beside, then rename), with the permissions
the umask gives, one writer at a time (a lock file), and names shown escaped.

POSIX only, as the package (setup.cfg's classifiers): the locks are flock(2) on a lock file
opened with O_NOFOLLOW, or on a folder itself, which Windows has neither of. Tested on Linux."""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import UserError

log = logging.getLogger(__name__)

# CSV files hold file names byte for byte, like the file system: UTF-8, except names that are not.
TEXT = {"encoding": "utf-8", "errors": "surrogateescape"}


class CsvWriter:
    """csv.writer with "\n" line ends that also quotes the fields holding a carriage return
    (csv quotes only the characters of its own line end, and a lone "\r" splits a row when read)."""

    def __init__(self, file: Any):
        self._plain = csv.writer(file, lineterminator="\n")
        self._quoted = csv.writer(file, lineterminator="\n", quoting=csv.QUOTE_ALL)

    def writerow(self, row: Any) -> None:
        row = list(row)
        quote = any(isinstance(value, str) and "\r" in value for value in row)
        (self._quoted if quote else self._plain).writerow(row)

    def writerows(self, rows: Any) -> None:
        for row in rows:
            self.writerow(row)


def umask_mode(mode: int = 0o666) -> int:
    """`mode` as the umask leaves it, the permissions `open()` would give a new file."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, umask_mode())  # mkstemp makes 0600 files; these are meant for people
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_unfinished_writes(paths: Iterable[Path]) -> None:
    """Remove the temporary files a run killed inside `atomic_path` left beside `paths` (mkstemp's
    names, `.<name>.XXXXXXXX.tmp`): regular files of that pattern only. Call it only while
    holding the lock of whoever writes `paths`, so that no live run's write is cut."""
    by_folder: dict[Path, set[str]] = {}
    for path in paths:
        by_folder.setdefault(path.parent, set()).add(path.name)
    removed = []
    for folder, names in by_folder.items():
        pattern = re.compile(rf"\.({'|'.join(map(re.escape, sorted(names)))})\.[a-z0-9_]{{8}}\.tmp")
        with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(folder) as entries:
            for entry in entries:
                if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                        removed.append(entry.name)
    if removed:
        log.info("removed %d unfinished write(s) a stopped run left: %s", len(removed), shown(", ".join(removed)))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def sha256(path: str | os.PathLike) -> str:
    """The file's SHA-256, read a block at a time."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@contextlib.contextmanager
def made_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Make the folder `path` (and its missing parents) for the block; those this made and that are
    empty when the block ends are removed again, so a run refused in it leaves no empty folder."""
    path = Path(path)
    made = [folder for folder in (path, *path.parents) if not folder.exists() and not folder.is_symlink()]
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    finally:
        for folder in made:  # the deepest first; one that holds anything ends the walk
            try:
                folder.rmdir()
            except OSError:
                break


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold the lock file `path` (removed afterwards) for the block, or stop at once with a one-line
    error naming `what` if another run holds it. The kernel drops a dead process's lock: no stale one."""
    path = Path(path)
    while True:
        try:  # O_NOFOLLOW: a link planted at `path` would make us create or lock its target
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)  # the umask applies
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise UserError(f"{shown(path)} is a link, not a lock file catsdogs made: remove it") from None
            raise UserError(f"cannot open the lock file {shown(path)}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise UserError(
                    f"another catsdogs run is writing {what} (it holds {path}): "
                    "wait for it to finish"
                ) from None
            raise
        try:  # the holder before us may have removed the file after we opened it: lock anew
            if os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # while still held, so no one locks a removed file
        os.close(fd)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, busy: str, *, shared: bool = False, if_readable: bool = False) -> Iterator[None]:
    """Hold a shared or exclusive flock on `folder` itself for the block (nothing written; dropped
    when the run dies), or stop at once with the one-line error `busy`. `if_readable`: a folder this
    user cannot open (a parent one may only pass through) is left unlocked instead of an error."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        if if_readable:
            yield
            return
        raise UserError(f"cannot open the folder {shown(folder)}: {e.strerror}") from None
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise UserError(busy) from None
            # A file system without locks on folders (NFS): go on as without one
            log.warning("cannot lock the folder %s (%s): another run could sort it at the same time",
                        shown(folder), e.strerror)  # fmt: skip
        yield
    finally:
        os.close(fd)


def printable(text: object) -> str:
    """`text` safe to print: bytes that are not UTF-8 as \\xNN, control and other invisible
    characters (a terminal's escape sequences, right-to-left marks) as escapes. Every line the
    commands print goes through it (cli.say, its log handler, argparse's messages)."""
    text = str(text).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def shown(name: object) -> str:
    """A name (a path, a file's name, a label read from a table) as messages and pages show it:
    `printable`, with its backslashes doubled first, so that no two names show alike (a file
    named backslash-x-f-f shows `\\\\xff`, one named by the byte 0xFF `\\xff`)."""
    return printable(str(name).replace("\\", "\\\\"))


def plain_relative(name: str) -> bool:
    """Whether `name` is a plain relative path below a folder, as a walk gives it: not empty,
    not absolute, no `..`, `.` or empty parts (the POSIX spelling of itself)."""
    path = PurePosixPath(name)
    return bool(path.parts) and not path.is_absolute() and ".." not in path.parts and path.as_posix() == name


def resolves_inside(folder: str | os.PathLike, path: str | os.PathLike) -> Path | None:
    """`path` with every link resolved, if that is `folder` (itself resolved) or below it; else
    None. The one test of "a link never leads out of the folder the user named"."""
    real = Path(os.path.realpath(path))
    return real if real.is_relative_to(os.path.realpath(folder)) else None


def put_in_place(work: Path, target: Path, remove_old: Callable[[Path], None]) -> bool:
    """Rename the finished folder `work` to `target`, and return whether there was an earlier one: it
    is renamed aside first (`.<name>.old-<pid>`), put back if the rename fails, and handed to
    `remove_old` (which removes only what its command wrote) once the new one is in place."""
    if not (target.exists() or target.is_symlink()):
        os.rename(work, target)
        return False
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.rename(target, old)
    try:
        os.rename(work, target)
    except BaseException:
        os.rename(old, target)
        raise
    remove_old(old)
    return True
