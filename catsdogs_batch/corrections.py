"""A review's corrections as `label`, `train` and `audit` read them: path -> cat|dog|skip, the
last decision of each path, in a compact index instead of a dict.

A dict of Python strings costs about 330 bytes a row (a 3-million-row file took over 1 GB in
`label`); the index about 50: the paths' bytes in one buffer, each label as one byte, and the
paths' hashes sorted for the search, whose hits are confirmed against the bytes (two names with
one hash stay apart). The file is read as a stream (`HashedReader`), so its bytes and their text
are never held whole either. scripts/benchmark_corrections.py measures both."""

from __future__ import annotations

import hashlib
import io
from array import array
from collections.abc import Iterator, Mapping, Sequence
from typing import BinaryIO

import numpy as np

DECISIONS = ("cat", "dog", "skip")  # skip: neither, or unusable
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
    """path -> cat|dog|skip, read-only: made by `builder()`, read with `get_many` (a shard of
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
