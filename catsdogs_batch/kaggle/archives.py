"""The competition's data as `catsdogs download` finds it, checked before anything is unpacked:
a Kaggle archive (zip files inside a zip) or a competition folder as Kaggle mounts it, its
train/ and test/ members (names, labels, CRC, no paths out, no links), and their extraction."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import shutil
import stat
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO, NamedTuple

from tqdm import tqdm

from ..data.images import CLASS_NAMES, is_image_file, label_from_path
from ..errors import UserError
from ..files import plain_relative, resolves_inside, sha256, shown
from ..options import SAMPLE_SUBMISSIONS

log = logging.getLogger(__name__)

PARTS = {"train": ("train",), "test": ("test", "test1")}  # their folders; the 2013 `dogs-vs-cats` has test1
_TEST_NAME = re.compile(r"\d+\.\w+", re.ASCII)  # test/12.jpg
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, NotImplementedError)


class ArchiveError(UserError):
    """The archive (or folder) itself is unusable: not a zip, corrupt, cut short, incomplete,
    unsafe, or not the competition's."""


class _Member(NamedTuple):
    """One file to unpack, from a zip entry or a file of a competition folder."""

    name: str  # as messages show it: the zip entry's name, or the path below the folder
    rel: tuple[str, ...]  # its path below train/ (or test/): ("cat.0.jpg",)
    size: int
    open: Callable[[], BinaryIO]


_Parts = dict[str, tuple[str, list[_Member]]]  # "train"/"test" -> (label for messages, its files)


def archive_parts(
    archive: Path, work: Path, stack: contextlib.ExitStack
) -> tuple[_Parts, _Member | None, dict]:
    """The checked parts of a whole-data zip, its csv, and what the manifest records of it."""
    log.info("Checking %s (%.1f MB)", archive, archive.stat().st_size / 1e6)
    record = {"archive": archive.name, "archive_sha256": sha256(archive)}
    outer = stack.enter_context(_open_zip(archive, archive.name))
    _check_zip(outer, archive.name)
    sources = {part: _find_part(outer, folders, archive.name) for part, folders in PARTS.items()}
    csv = next((i for i in outer.infolist() if _basename(i) in SAMPLE_SUBMISSIONS), None)

    # Nested zips are copied out (reading a zip seeks, which is slow inside another zip)
    # and all checked before any image is written.
    nested_dir = work / ".archives"
    parts = {}
    for part, src in sources.items():
        folders = PARTS[part]
        if isinstance(src, zipfile.ZipInfo):
            label = f"{archive.name}:{src.filename}"
            check_space(work, src.file_size, f"copying {label}")
            nested_dir.mkdir(exist_ok=True)
            path = nested_dir / f"{part}.zip"
            copy_member(_zip_member(outer, src, ()), path, archive.name)
            parts[part] = (label, _nested_zip_members(path, folders, label, stack))
        else:
            members = _part_members(outer, folders, nested=False)
            parts[part] = (archive.name, [_zip_member(outer, i, rel) for i, rel in members])
        _check_part(part, *parts[part])
    csv_member = _zip_member(outer, csv, (_basename(csv),)) if csv is not None else None
    return parts, csv_member, record


def folder_parts(
    folder: Path, stack: contextlib.ExitStack
) -> tuple[_Parts, _Member | None, dict]:
    """The checked parts of a competition folder (inner zips, or train/ and test/ unpacked), its
    csv, and what the manifest records of it. Nothing in FOLDER is written."""
    log.info("Checking the folder %s", folder)
    root, name = folder.resolve(), folder.name
    parts = {}
    for part, folders in PARTS.items():
        zips = [root / f"{f}.zip" for f in folders if os.path.lexists(root / f"{f}.zip")]
        dirs = [root / f for f in folders if os.path.lexists(root / f)]
        if len(zips) > 1 or (not zips and len(dirs) > 1):
            raise ArchiveError(f"{name} has more than one of {', '.join(p.name for p in zips or dirs)}")
        if zips:
            label = f"{name}/{zips[0].name}"
            path = _inside(root, zips[0], name)
            if not path.is_file():
                raise ArchiveError(f"{label} is not a regular file")
            if dirs:
                log.info("Using %s (the %s/ folder beside it is left alone)", label, dirs[0].name)
            parts[part] = (label, _nested_zip_members(path, folders, label, stack))
        elif dirs:
            parts[part] = (name, _folder_members(root, dirs[0], folders, name))
        else:
            held = ", ".join(sorted(p.name for p in root.iterdir())[:8]) or "nothing"
            wanted = " or ".join(f"{f}.zip or {f}/" for f in folders)
            raise ArchiveError(f"{name} has no {wanted} (it holds: {held})")
        _check_part(part, *parts[part])
    csv = next((root / c for c in SAMPLE_SUBMISSIONS if os.path.lexists(root / c)), None)
    if csv is not None:
        csv = _file_member(root, csv, (csv.name,), name)
    return parts, csv, {"archive": None, "archive_sha256": None, "folder": name}


def _nested_zip_members(
    path: Path, folders: tuple[str, ...], label: str, stack: contextlib.ExitStack
) -> list[_Member]:
    """The checked files of an inner train.zip (test.zip) at PATH, kept open on STACK."""
    zf = stack.enter_context(_open_zip(path, label))
    _check_zip(zf, label)
    return [_zip_member(zf, info, rel) for info, rel in _part_members(zf, folders, nested=True)]


def _folder_members(root: Path, part_dir: Path, folders: tuple[str, ...], label: str) -> list[_Member]:
    """The files below an unpacked train/ (test/) folder, links followed only inside ROOT;
    train/train/ (a zip unpacked into a folder of its name) counts as train/."""
    real = _inside(root, part_dir, label)
    if not real.is_dir():
        raise ArchiveError(f"{label}: {part_dir.name} is not a folder")
    inner = list(real.iterdir())
    if len(inner) == 1 and inner[0].name in folders and inner[0].is_dir() and not inner[0].is_symlink():
        real = inner[0]
    members = []
    for where, dirs, files in os.walk(real):  # linked folders are not entered, as the default says
        dirs.sort()
        for entry in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(where, d))]:
            path = Path(where, entry)
            if os.path.isdir(path):  # a link to a folder inside ROOT
                _inside(root, path, label)
                log.warning("Leaving out %s: a link to a folder", shown(path))
                continue
            members.append(_file_member(root, path, path.relative_to(real).parts, label))
    return members


def _file_member(root: Path, path: Path, rel: tuple[str, ...], label: str) -> _Member:
    real = _inside(root, path, label)
    info = real.stat()
    if not stat.S_ISREG(info.st_mode):  # reading a FIFO would wait for a writer, a device never end
        raise ArchiveError(f"refusing {label}: {_below(root, path)!r} is not a regular file")
    return _Member(_below(root, path), rel, info.st_size, functools.partial(open, real, "rb"))


def _inside(root: Path, path: Path, label: str) -> Path:
    """PATH with its links resolved, refused (one line) where that leads out of ROOT."""
    real = resolves_inside(root, path)
    if real is None:
        raise ArchiveError(
            f"refusing {label}: {_below(root, path)!r} is a link that leads out of it "
            f"(to {shown(os.path.realpath(path))})"
        )
    return real


def _below(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, rel: tuple[str, ...]) -> _Member:
    return _Member(info.filename, rel, info.file_size, functools.partial(zf.open, info))


@contextlib.contextmanager
def _open_zip(path: Path, label: str) -> Iterator[zipfile.ZipFile]:
    try:
        zf = zipfile.ZipFile(path)
    except _ZIP_ERRORS as e:
        raise ArchiveError(f"{label} is not a zip file, or it was cut short ({e})") from None
    with zf:
        # zipfile looks for the end record anywhere near the end: in a cut-short archive it
        # finds the one of the last nested zip and silently reads that zip instead.
        at = path.stat().st_size - 22 - len(zf.comment)  # where the end record must start
        with open(path, "rb") as f:
            f.seek(max(at, 0))
            if at < 0 or f.read(4) != b"PK\x05\x06":
                raise ArchiveError(f"{label} is not a zip file, or it was cut short (no end record)")
        yield zf


def _check_zip(zf: zipfile.ZipFile, label: str) -> None:
    """Refuse unsafe entry names before anything is extracted, then verify every CRC."""
    for info in zf.infolist():
        if reason := _unsafe(info):
            raise ArchiveError(f"refusing {label}: entry {info.filename!r} {reason}")
    try:
        bad = zf.testzip()
    except _ZIP_ERRORS as e:
        raise ArchiveError(f"{label} is corrupt or cut short ({e})") from None
    if bad is not None:
        raise ArchiveError(f"{label} is corrupt: entry {bad!r} fails its CRC check")


def _unsafe(info: zipfile.ZipInfo) -> str | None:
    """Why an entry must not be unpacked (escapes the folder or is not a plain file), or None."""
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "has an absolute path"
    if ".." in name.split("/"):
        return "points outside the folder (..)"
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return "is not a regular file"
    return None


def _find_part(
    outer: zipfile.ZipFile, folders: tuple[str, ...], label: str
) -> zipfile.ZipInfo | str:
    """Where train (or test) is: a nested `train.zip` entry, or else (LABEL) the outer zip's own
    top-level `train/` folder."""
    zips = [i for i in outer.infolist() if _basename(i) in {f"{f}.zip" for f in folders}]
    if len(zips) > 1:
        raise ArchiveError(f"{label} has more than one of {', '.join(i.filename for i in zips)}")
    if zips:
        return zips[0]
    if any(_parts(i)[0] in folders for i in outer.infolist() if len(_parts(i)) > 1):
        return label
    names = ", ".join(sorted(i.filename for i in outer.infolist())[:8]) or "nothing"
    wanted = " or ".join(f"{f}.zip" for f in folders)
    raise ArchiveError(f"{label} has no {wanted} (it holds: {names})")


def _part_members(
    zf: zipfile.ZipFile, folders: tuple[str, ...], nested: bool
) -> list[tuple[zipfile.ZipInfo, tuple[str, ...]]]:
    """The files of one part with their path below it: `train/cat.0.jpg` -> ("cat.0.jpg",). A
    nested zip may also hold them at its top level; anything else (e.g. __MACOSX/) is left out."""
    files = [i for i in zf.infolist() if not i.is_dir()]
    members = [(i, p[1:]) for i, p in ((i, _parts(i)) for i in files) if len(p) > 1 and p[0] in folders]
    if not members and nested:
        members = [(i, _parts(i)) for i in files if len(_parts(i)) == 1]
    skipped = len(files) - len(members) if nested else 0
    if skipped:
        log.debug("Leaving out %d entries outside %s/", skipped, "/".join(folders))
    return members


def _check_part(part: str, label: str, members: list[_Member]) -> None:
    """Refuse an archive or folder that is not the competition's, before anything is unpacked: train needs
    cat.N.jpg and dog.N.jpg images, test only numbered ones (other files, e.g. .DS_Store, pass)."""
    if not members:
        raise ArchiveError(f"{label} holds no {part} files")
    images = [(m, m.rel[-1]) for m in members if is_image_file(m.rel[-1])]
    wrong = f"{label} is not the competition's data"
    if part == "train":
        kinds = {label_from_path(name) for _, name in images}  # the names training reads labels from
        missing = " and ".join(f"{name}.N.jpg" for label, name in enumerate(CLASS_NAMES) if label not in kinds)
        if missing:
            raise ArchiveError(f"{wrong}: no {missing} images in train")
    elif not images:
        raise ArchiveError(f"{wrong}: no numbered test images (1.jpg, 2.jpg, ...)")
    else:
        bad = next((m.name for m, name in images if not _TEST_NAME.fullmatch(name)), None)
        if bad is not None:
            raise ArchiveError(f"{wrong}: test image {bad!r} is not named by a number (like 1.jpg)")


def extract(members: list[_Member], dest: Path, label: str, part: str) -> set[str]:
    """Write each member below DEST, the work folder's PART (names were checked by _check_zip);
    return the paths written, as the manifest lists them ("train/cat.0.jpg")."""
    log.info("Unpacking %d %s files from %s", len(members), part, label)
    dest.mkdir()
    folders, written = {dest}, set()
    for member in tqdm(members, desc=part, unit="file", disable=None, leave=False):
        name = "/".join(member.rel)
        if not plain_relative(name):  # cannot happen after _check_zip (DEST, ours, holds no links)
            raise ArchiveError(f"refusing {label}: entry {member.name!r} points outside")
        out = dest.joinpath(*member.rel)
        if out.parent not in folders:
            out.parent.mkdir(parents=True, exist_ok=True)
            folders.add(out.parent)
        copy_member(member, out, label)
        written.add(f"{part}/{name}")
    return written


def copy_member(member: _Member, out: Path, label: str) -> None:
    try:
        with member.open() as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except _ZIP_ERRORS as e:
        raise ArchiveError(f"{label} is corrupt: entry {member.name!r} ({e})") from None


def _parts(info: zipfile.ZipInfo) -> tuple[str, ...]:
    return tuple(p for p in PurePosixPath(info.filename.replace("\\", "/")).parts if p not in ("", "."))


def _basename(info: zipfile.ZipInfo) -> str:
    parts = _parts(info)
    return parts[-1] if parts and not info.is_dir() else ""


def check_space(folder: Path, needed: int, what: str) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise UserError(
            f"not enough space in {folder} for {what}: {needed / 1e9:.1f} GB needed, "
            f"{free / 1e9:.1f} GB free"
        )
