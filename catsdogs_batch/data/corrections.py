"""A review's corrections as `label`, `train` and `audit` read them: path -> cat|dog|neither|both|skip, the
last decision of each path, in a compact index instead of a dict.

A dict of Python strings costs about 330 bytes a row (a 3-million-row file took over 1 GB in
`label`); the index about 50: the paths' bytes in one buffer, each label as one byte, and the
paths' hashes sorted for the search, whose hits are confirmed against the bytes (two names with
one hash stay apart). The file is read as a stream (`HashedReader`), so its bytes and their text
are never held whole either. scripts/benchmark_corrections.py measures both.

The file itself, `corrections.csv` (`path,label`, one row per decided image), is read and
written here too (`Corrections`, `read_corrections`), below the review page that writes it and
the commands that read it."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import stat
from array import array
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import UserError
from ..files import TEXT, CsvWriter, atomic_path, atomic_write_json, shown
from ..side_files import corrections_record, read_record
from ..inference.tables import ANSWERS

CORRECTIONS_FILE = "corrections.csv"
CORRECTIONS_COLUMNS = ["path", "label"]
# a person's answers: what the photo holds (cat, dog, neither or both), or skip (unusable, undecided)
DECISIONS = (*ANSWERS, "skip")
_CODES = {label: code for code, label in enumerate(DECISIONS)}
# A name's hash: Python's own, cached on each string and the same within a process (an index
# that crosses to another process computes its hashes there again: see __reduce__).
_hash = hash


def _encoded(path: str) -> bytes | None:
    """A name's bytes as the file system has them; None for a string no file name can be."""
    try:
        return path.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return None


class CorrectionsIndex(Mapping[str, str]):
    """path -> cat|dog|neither|both|skip, read-only: made by `builder()`, read with `get_many` (a shard of
    paths at a time) or as any mapping."""

    def __init__(self, blob: bytearray, ends: np.ndarray, codes: np.ndarray, rows: np.ndarray, hashes: np.ndarray):
        self._blob, self._ends, self._codes = blob, ends, codes  # every row added, in order
        self._rows, self._hashes = rows, hashes  # the last row of each path, by its path's hash

    @staticmethod
    def builder() -> IndexBuilder:
        return IndexBuilder()

    def _path(self, row: int) -> bytearray:
        return self._blob[self._ends[row - 1] if row else 0 : self._ends[row]]

    def _find(self, path: str, key: int, at: int) -> str | None:
        """The label of `path`, whose hash is `key`, from `at` (the first place of that hash)."""
        encoded = _encoded(path)
        while encoded is not None and at < len(self._hashes) and self._hashes[at] == key:
            row = self._rows[at]
            if self._path(row) == encoded:
                return DECISIONS[self._codes[row]]
            at += 1
        return None

    def get_many(self, paths: Sequence[str]) -> np.ndarray:
        """The label of each of `paths` (None where it has none), as an object array: one search
        for a whole shard of paths."""
        found = np.full(len(paths), None, dtype=object)
        if not len(self._hashes) or not len(paths):
            return found
        keys = np.fromiter((_hash(path) for path in paths), np.int64, len(paths))
        at = np.searchsorted(self._hashes, keys)
        hits = np.flatnonzero(self._hashes[np.minimum(at, len(self._hashes) - 1)] == keys)
        rows = self._rows[at[hits]].astype(np.int64)  # each hit's first candidate, checked at once
        starts = np.where(rows > 0, self._ends[np.maximum(rows - 1, 0)], 0).tolist()
        for i, start, end, code in zip(hits.tolist(), starts, self._ends[rows].tolist(), self._codes[rows].tolist()):
            if self._blob[start:end] == _encoded(paths[i]):
                found[i] = DECISIONS[code]
            else:  # another name with that hash: the next ones of it, if any
                found[i] = self._find(paths[i], keys[i], at[i] + 1)
        return found

    def __getitem__(self, path: str) -> str:
        label = self.get_many([path])[0]
        if label is None:
            raise KeyError(path)
        return label

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[str]:
        for row in np.sort(self._rows):  # in the order of each path's last decision
            yield self._path(row).decode("utf-8", "surrogateescape")

    def __reduce__(self):
        return _rebuilt, (self._blob, self._ends, self._codes, self._rows)


def _rebuilt(blob: bytearray, ends: np.ndarray, codes: np.ndarray, rows: np.ndarray) -> CorrectionsIndex:
    """An index unpickled in another process: the hashes are this process's."""
    index = CorrectionsIndex(blob, ends, codes, rows, np.empty(0, np.int64))
    keys = np.fromiter((_hash(index._path(row).decode("utf-8", "surrogateescape")) for row in rows), np.int64, len(rows))
    order = np.argsort(keys, kind="stable")
    return CorrectionsIndex(blob, ends, codes, rows[order], keys[order])


class IndexBuilder:
    """Decisions added in file order (`builder[path] = label`, as into a dict), then `build()`."""

    def __init__(self):
        self._blob, self._codes = bytearray(), bytearray()
        self._ends, self._hashes = array("q"), array("q")

    def __setitem__(self, path: str, label: str) -> None:
        self._blob += path.encode("utf-8", "surrogateescape")
        self._ends.append(len(self._blob))
        self._codes.append(_CODES[label])
        self._hashes.append(_hash(path))

    def build(self) -> CorrectionsIndex:
        blob, codes = self._blob, np.frombuffer(self._codes, dtype=np.uint8)
        offsets = np.uint32 if len(blob) < 2**32 else np.int64  # 4 bytes a row where they do
        ends = np.frombuffer(self._ends, dtype=np.int64).astype(offsets) if len(self._ends) else np.empty(0, offsets)
        hashes = np.frombuffer(self._hashes, dtype=np.int64) if len(self._hashes) else np.empty(0, np.int64)
        order = np.argsort(hashes, kind="stable")  # rows of one hash side by side, in file order
        keys = hashes[order]
        order = order.astype(offsets)
        del hashes
        self._blob, self._codes, self._ends, self._hashes = bytearray(), bytearray(), array("q"), array("q")
        index = CorrectionsIndex(blob, ends, codes, order, keys)
        same = np.diff(np.concatenate(([0], keys[1:] == keys[:-1], [0])).astype(np.int8))
        if not same.any():
            return index
        keep = np.ones(len(order), dtype=bool)
        for start, stop in zip(np.flatnonzero(same == 1), np.flatnonzero(same == -1)):
            # one path decided more than once (the last decision wins), or names with one hash
            last = {bytes(index._path(order[at])): at for at in range(start, stop + 1)}
            keep[start : stop + 1] = False
            keep[list(last.values())] = True
        return CorrectionsIndex(blob, ends, codes, order[keep], keys[keep])


class HashedReader(io.RawIOBase):
    """A binary file read through SHA-256: `sha256` is of exactly the bytes read, so a file
    streamed once gives its decisions and the hash of the bytes they came from."""

    def __init__(self, file: BinaryIO):
        self._file, self._digest = file, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._file.readinto(buffer)
        self._digest.update(memoryview(buffer)[:n])
        return n

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()


# --- the corrections -----------------------------------------------------------------------


class Corrections:
    """`corrections.csv`: the last decision per path, rewritten whole and fsynced on each
    change, so that no decision is lost and the file is never half written. Rows of paths the
    table does not list (an earlier table's) are kept; a row that cannot be read is an error,
    never dropped. `owner` ({"folder", "table"}) is recorded in `<file>.json` with the first
    decision, so that another folder's review does not mix its paths in."""

    def __init__(
        self, path: Path, owner: dict | None = None, data: bytes | BinaryIO | None = None,
        labels: MutableMapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        """`data`: the file's bytes, or a binary stream of them, when the caller has read or
        opened it; `labels`: what the decisions are put in (a dict unless given)."""
        self.path, self.owner = path, owner
        self.labels: MutableMapping[str, str] = {} if labels is None else labels
        if data is None:
            try:
                info = os.stat(path)
            except FileNotFoundError:
                return
            if not stat.S_ISREG(info.st_mode):  # a FIFO would block the read below
                raise UserError(f"{shown(path)} is not a regular file: name a corrections file with --corrections")
            data = path.read_bytes()
        self._read(data)

    def _read(self, data: bytes | BinaryIO) -> None:
        # -sig: Excel's BOM; surrogateescape: names that are not UTF-8 keep their bytes; read as a
        # stream, never decoded whole (a StringIO holds 4 bytes a character)
        stream = io.BytesIO(data) if isinstance(data, bytes) else data
        with io.TextIOWrapper(stream, "utf-8-sig", TEXT["errors"], newline="") as f:
            rows = csv.reader(f)
            try:
                header = next(rows, None)
                if header not in (None, CORRECTIONS_COLUMNS):
                    raise UserError(
                        f"{shown(self.path)} is not a corrections file (its header is {shown(','.join(header))}): move it away"
                    )
                for row in rows:
                    label = row[1].strip().lower() if len(row) == 2 else None
                    if label in DECISIONS:
                        self.labels[row[0]] = label  # the last decision wins
                    elif row:  # blank lines aside, a row edited by hand: the user's to fix, never to drop
                        raise UserError(
                            f"line {rows.line_num} of {shown(self.path)} is not path,cat|dog|neither|both|skip "
                            f"({shown(','.join(row))[:80]}): correct or remove it"
                        )
            except csv.Error as e:
                raise UserError(f"line {rows.line_num} of {shown(self.path)} cannot be read as CSV: {e}") from None

    @property
    def sidecar(self) -> Path:
        return corrections_record(self.path)

    def set(self, path: str, label: str | None) -> str | None:
        """Record `label` for `path` (None removes its row) and return what it was before."""
        if label is not None and label not in DECISIONS:
            raise ValueError(f"not a decision: {label!r}")
        previous = self.labels.get(path)
        self._put(path, label)
        try:
            if self.owner is not None and not self.sidecar.exists():
                atomic_write_json(self.sidecar, self.owner)
            self._write()
        except BaseException:  # a full disk, say: memory keeps saying what the file says
            self._put(path, previous)
            raise
        return previous

    def _put(self, path: str, label: str | None) -> None:
        if label is None:
            self.labels.pop(path, None)
        else:
            self.labels[path] = label

    def _write(self) -> None:
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="", **TEXT) as f:
                writer = CsvWriter(f)
                writer.writerow(CORRECTIONS_COLUMNS)
                writer.writerows(self.labels.items())
                f.flush()
                os.fsync(f.fileno())
        folder = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)  # the rename itself survives a power cut
        finally:
            os.close(folder)


@dataclass(frozen=True)
class CorrectionsFile:
    """A corrections file as `label` and `train` use it: path -> cat|dog|neither|both|skip (a compact index,
    for files of millions of rows), and the SHA-256 of the bytes those labels were read from
    (what a job records)."""

    path: Path
    labels: CorrectionsIndex
    sha256: str

    def record(self) -> dict:
        return {"file": str(self.path.resolve()), "sha256": self.sha256}


def read_corrections(path: Path, folder: Path, option: str = "--corrections") -> CorrectionsFile:
    """Read a corrections file about the images of `folder` with the review's reader (a missing
    file, another header, a row that is not path,cat|dog|neither|both|skip, or a file its review made for
    another folder is a one-line error) and the SHA-256 of the bytes it read."""
    path = corrections_file(path, option)  # its record of the folder sits beside the file, not a link
    try:
        info = os.stat(path)
    except OSError as e:
        raise UserError(f"{option} {shown(path)}: {e.strerror or e}") from None
    if not stat.S_ISREG(info.st_mode):  # a FIFO would block the read, a device never end
        raise UserError(f"{option} {shown(path)} is not a regular file")
    refuse_another_folder(path, folder, "its paths would name other images")
    labels = CorrectionsIndex.builder()
    try:
        with open(path, "rb") as file:  # read once, as a stream: the labels come from the bytes the hash is of
            hashed = HashedReader(file)
            Corrections(path, data=io.BufferedReader(hashed, 1 << 20), labels=labels)
    except OSError as e:
        raise UserError(f"{option} {shown(path)}: {e.strerror or e}") from None
    return CorrectionsFile(path, labels.build(), hashed.sha256)


def corrections_file(path: Path, option: str = "--corrections") -> Path:
    """The file `path` names, symbolic links followed: whatever link leads to a corrections file,
    it has one lock, one record of its folder, and its saves replace the file, never the link."""
    real = Path(os.path.realpath(path))
    if real.is_symlink():  # realpath stops at a loop
        raise UserError(f"{option} {shown(path)} is a loop of symbolic links")
    return real


def refuse_another_folder(corrections: Path, images: Path, hint: str) -> None:
    """Paths in a corrections file are relative to the folder its review showed (recorded in
    `<file>.json`): refuse to apply them to, or mix them with, another folder's images."""
    sidecar = corrections_record(corrections)
    if not sidecar.exists():
        return
    owner = read_record(sidecar)
    folder = owner.get("folder") if owner is not None else None
    if not isinstance(folder, str):
        raise UserError(
            f"{shown(sidecar)} is damaged: it should record the folder whose images {shown(corrections)} "
            f'is about ({{"folder": ...}}); remove it only if that folder is {shown(images)}'
        )
    if folder != str(images.resolve()):
        raise UserError(
            f"{shown(corrections)} holds decisions about the images in {shown(folder)}, not {shown(images)}: {hint}"
        )
