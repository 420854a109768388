"""A review's corrections, `corrections.csv` (`path,label`, one row per decided image: cat, dog,
neither, both or skip), as the review page writes it and `label`, `train` and `audit` read it:
a dict, path -> the last decision of that path. A person decides a few thousand photos; a
million rows would take about 330 MB and a second or two to read."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..files import TEXT, CsvWriter, atomic_path, atomic_write_json, shown
from ..side_files import corrections_record, read_record
from ..inference.tables import ANSWERS

CORRECTIONS_FILE = "corrections.csv"
CORRECTIONS_COLUMNS = ["path", "label"]
# a person's answers: what the photo holds (cat, dog, neither or both), or skip (unusable, undecided)
DECISIONS = (*ANSWERS, "skip")


class Corrections:
    """`corrections.csv`: the last decision per path, rewritten whole and fsynced on each change
    (no decision lost, never half written). Rows the table does not list are kept; one that cannot
    be read is an error, never dropped. `owner` ({"folder", "table"}) goes to `<file>.json` with the
    first decision, so that another folder's review does not mix its paths in."""

    def __init__(self, path: Path, owner: dict | None = None, data: bytes | None = None) -> None:
        """`data`: the file's bytes, when the caller has read them."""
        self.path, self.owner = path, owner
        self.labels: dict[str, str] = {}
        if data is None:
            try:
                info = os.stat(path)
            except FileNotFoundError:
                return
            if not stat.S_ISREG(info.st_mode):  # a FIFO would block the read below
                raise UserError(f"{shown(path)} is not a regular file: name a corrections file with --corrections")
            data = path.read_bytes()
        self._read(data)

    def _read(self, data: bytes) -> None:
        # -sig: Excel's BOM; surrogateescape: names that are not UTF-8 keep their bytes
        with io.TextIOWrapper(io.BytesIO(data), "utf-8-sig", TEXT["errors"], newline="") as f:
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

    def set(self, path: str, label: str | None) -> str | None:
        """Record `label` for `path` (None removes its row) and return what it was before."""
        if label is not None and label not in DECISIONS:
            raise ValueError(f"not a decision: {label!r}")
        previous = self.labels.get(path)
        self._put(path, label)
        try:
            record = corrections_record(self.path)
            if self.owner is not None and not record.exists():
                atomic_write_json(record, self.owner)
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
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="", **TEXT) as f:
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
    """A corrections file as `label` and `train` use it: path -> cat|dog|neither|both|skip, and
    the SHA-256 of the bytes those labels were read from (what a job records)."""

    path: Path
    labels: dict[str, str]
    sha256: str

    def record(self) -> dict:
        return {"file": str(self.path.resolve()), "sha256": self.sha256}


def read_corrections(path: Path, folder: Path) -> CorrectionsFile:
    """A corrections file about `folder`'s images, read as the review reads it, with the SHA-256 of
    those bytes; a missing or malformed file, or one its review made for another folder, is a one-line error."""
    path = corrections_file(path)  # its record of the folder sits beside the file, not a link
    try:
        info = os.stat(path)
    except OSError as e:
        raise UserError(f"--corrections {shown(path)}: {e.strerror or e}") from None
    if not stat.S_ISREG(info.st_mode):  # a FIFO would block the read, a device never end
        raise UserError(f"--corrections {shown(path)} is not a regular file")
    refuse_another_folder(path, folder, "its paths would name other images")
    try:
        data = path.read_bytes()  # read once: the labels come from the bytes the hash is of
    except OSError as e:
        raise UserError(f"--corrections {shown(path)}: {e.strerror or e}") from None
    return CorrectionsFile(path, Corrections(path, data=data).labels, hashlib.sha256(data).hexdigest())


def corrections_file(path: Path) -> Path:
    """The file `path` names, symbolic links followed: whatever link leads to a corrections file,
    it has one lock, one record of its folder, and its saves replace the file, never the link."""
    real = Path(os.path.realpath(path))
    if real.is_symlink():  # realpath stops at a loop
        raise UserError(f"--corrections {shown(path)} is a loop of symbolic links")
    return real


def refuse_another_folder(corrections: Path, images: Path, hint: str) -> None:
    """Paths in a corrections file are relative to the folder its review showed (recorded in
    `<file>.json`): refuse to apply them to, or mix them with, another folder's images."""
    sidecar = corrections_record(corrections)
    if not sidecar.exists():
        return
    folder = (read_record(sidecar) or {}).get("folder")
    if not isinstance(folder, str):
        raise UserError(
            f"{shown(sidecar)} is damaged: it should record the folder whose images {shown(corrections)} "
            f'is about ({{"folder": ...}}); remove it only if that folder is {shown(images)}'
        )
    if folder != str(images.resolve()):
        raise UserError(
            f"{shown(corrections)} holds decisions about the images in {shown(folder)}, not {shown(images)}: {hint}"
        )
