"""The data stage: fetch the competition archive (or import one, or a competition folder) and
unpack it into DATA_DIR/<competition>/ as train/, test/, the sample submission csv and
manifest.json.

A competition folder is laid out as Kaggle mounts it under /kaggle/input/<competition>/: the
inner train.zip and test.zip (test1.zip) beside the csv, or the same unpacked into train/ and
test/ (test1/). It is only read, through the same checks as an archive, and a link in it is
followed only where it stays inside the folder. Without Kaggle credentials, the folder under
/kaggle/input (CATSDOGS_KAGGLE_INPUT) is used where it exists.

The archive is checked whole before anything is unpacked: every entry name (no absolute paths,
no `..`, no links, in the outer zip and in the nested train/test zips), every CRC, and that its
files are the competition's (cat.N.jpg and dog.N.jpg in train, numbered images in test).
Unpacking happens in a hidden folder inside DATA_DIR that is renamed into place at the end;
manifest.json is written last, so a folder without one is never complete; it lists every file
the stage wrote, counted in the folder just before (a file that vanished while unpacking fails the
run instead), and an existing folder is replaced (--force) only when it holds nothing else: a
folder this tool cannot prove is its own is refused, never deleted. A downloaded archive
is deleted once unpacked, kept when unpacking fails for another reason than the archive itself
(a re-run then reuses it instead of downloading again), and deleted when it is found broken or
unsafe.

One run at a time works on a competition folder: each holds `.<competition>.lock` beside it
(files.exclusive_lock) from before the download to the end, and a second one stops at once with a
one-line error naming the folder. Holding the lock is also what proves that a hidden work folder
found beside it is a dead run's leftover, and safe to remove.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import BinaryIO, NamedTuple

from tqdm import tqdm

from ..errors import UserError
from ..files import exclusive_lock, plain_relative, put_in_place, resolves_inside, sha256, shown, umask_mode
from ..side_files import folder_lock_file
from ..data.images import CLASS_NAMES, is_image_file, label_from_path
from ..options import SAMPLE_SUBMISSIONS, DownloadOptions, check_options

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
TRAIN_FOLDERS = ("train",)
TEST_FOLDERS = ("test", "test1")  # the 2013 competition `dogs-vs-cats` calls it test1
_TEST_NAME = re.compile(r"\d+\.\w+", re.ASCII)  # test/12.jpg
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, NotImplementedError)
KAGGLE_INPUT_VARIABLE = "CATSDOGS_KAGGLE_INPUT"  # where Kaggle notebooks mount competitions
KAGGLE_INPUT = "/kaggle/input"


class ArchiveError(UserError):
    """The archive (or folder) itself is unusable: not a zip, corrupt, cut short, incomplete,
    unsafe, or not the competition's."""


class _Member(NamedTuple):
    """One file to unpack, from a zip entry or a file of a competition folder."""

    name: str  # as messages show it: the zip entry's name, or the path below the folder
    rel: tuple[str, ...]  # its path below train/ (or test/): ("cat.0.jpg",)
    size: int
    open: Callable[[], BinaryIO]


def download(options: DownloadOptions) -> Path:
    """Make DATA_DIR/<competition>/ hold the unpacked competition data; return that folder."""
    check_options(options)
    target = options.data_dir / options.competition
    if _nothing_to_do(options, target):
        return target
    if options.archive is not None and options.archive.is_dir():  # before the target's own checks
        _check_apart(options.archive, target)
    _check_replaceable(target)
    _make_dir(options.data_dir)
    with exclusive_lock(folder_lock_file(target), shown(target)):  # the download included
        return _download_locked(options, target)


def _download_locked(options: DownloadOptions, target: Path) -> Path:
    """`download`, holding the competition folder's lock."""
    if _nothing_to_do(options, target):  # a run that held the lock just before finished it
        return target
    if options.archive is not None:
        if not options.archive.exists():
            raise UserError(f"archive not found: {options.archive}")
        if not (options.archive.is_file() or options.archive.is_dir()):  # a FIFO would wait for a writer
            raise UserError(
                f"archive {options.archive} is not a regular file (a device, FIFO or socket): "
                "give the zip file or the competition folder itself"
            )
        _install(options.archive, target, options.competition, source=str(options.archive.resolve()))
        return target

    from .api import NoCredentials, Unreachable, download_competition_archive, download_marker

    try:
        archive, fetched = download_competition_archive(options.competition, options.data_dir)
    except Unreachable as e:  # offline: say what would serve instead
        mounted = kaggle_input_folder(options.competition)
        instead = (
            f"the competition is mounted at {shown(mounted)}: import it with --archive {shown(mounted)}"
            if mounted is not None
            else "with the competition's zip or folder you already have, import it with --archive ZIP_OR_FOLDER"
        )
        raise Unreachable(f"{e}; {instead}") from None
    except NoCredentials as e:
        mounted = kaggle_input_folder(options.competition)
        if mounted is None:
            raise NoCredentials(
                f"{e}; or import the competition's zip or folder you already have with "
                "--archive ZIP_OR_FOLDER"
            ) from None
        log.info(
            "No Kaggle credentials: using %s, the competition as a Kaggle notebook mounts it "
            "(%s sets where to look instead of %s)", mounted, KAGGLE_INPUT_VARIABLE, KAGGLE_INPUT,
        )
        _check_apart(mounted, target)
        _install(mounted, target, options.competition, source=str(mounted.resolve()))
        return target
    # Only what this run downloaded is removed: an archive that was there before (put there by
    # the user, or left whole by an earlier run) is theirs to keep or delete.
    try:
        _install(archive, target, options.competition, source="kaggle")
    except ArchiveError:
        if fetched:
            log.info("Deleting the broken download %s", archive)
            archive.unlink(missing_ok=True)
        else:
            log.info("Kept %s: it was there before, not downloaded by this tool", archive)
        download_marker(archive).unlink(missing_ok=True)
        raise
    if fetched:
        archive.unlink()
    else:
        log.info("Kept %s: it was there before, not downloaded by this tool (delete it to free the space)", archive)
    download_marker(archive).unlink(missing_ok=True)
    return target


def _nothing_to_do(options: DownloadOptions, target: Path) -> bool:
    """Whether TARGET is complete (has its manifest) and no --force asks to redo it; says so."""
    if (target / MANIFEST).is_file() and not options.force and not target.is_symlink():
        log.info("%s is complete (it has %s): nothing to do; --force redoes it", target, MANIFEST)
        return True
    return False


def kaggle_input_folder(competition: str) -> Path | None:
    """The competition's folder where a Kaggle notebook mounts it (/kaggle/input/<competition>/,
    or below CATSDOGS_KAGGLE_INPUT), or None where there is none."""
    folder = Path(os.environ.get(KAGGLE_INPUT_VARIABLE) or KAGGLE_INPUT) / competition
    return folder if folder.is_dir() else None


def _check_apart(source: Path, target: Path) -> None:
    """Refuse a SOURCE folder that is TARGET, or holds it, or lies inside it: the source is only
    read, and replacing TARGET must not touch it."""
    if resolves_inside(target, source):
        raise UserError(
            f"{shown(source)} is where download unpacks to ({shown(target)}): move it elsewhere and "
            "import it from there, or choose another --data-dir"
        )
    if resolves_inside(source, target):
        raise UserError(
            f"--data-dir {shown(target.parent)} is inside {shown(source)}, which is only read: choose another"
        )


def _install(archive: Path, target: Path, competition: str, source: str) -> dict:
    """Check ARCHIVE (a zip or a competition folder), unpack it into a hidden folder next to
    TARGET, then swap it into place. The caller holds TARGET's lock (`side_files.folder_lock_file`).

    Returns the manifest. On any failure nothing but the hidden folder was written, and it is
    removed again.
    """
    _remove_leftovers(target)
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
        os.chmod(work, umask_mode(0o777))  # mkdtemp makes it 0700; the data is meant for people
    except OSError as e:
        raise _os_error(e, target.parent) from None
    try:
        manifest = _unpack(archive, work, competition, source)
        _write_manifest(work / MANIFEST, manifest)  # last: it marks the folder complete
        _swap_into_place(work, target)
    except OSError as e:
        shutil.rmtree(work, ignore_errors=True)
        raise _os_error(e, target.parent) from None
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log.info(
        "%s is ready: %d train and %d test files",
        target,
        manifest["train_files"],
        manifest["test_files"],
    )
    return manifest


# --- checking and unpacking ----------------------------------------------------------------


def _unpack(archive: Path, work: Path, competition: str, source: str) -> dict:
    """Check everything first, then unpack train/, test/ and the csv into WORK."""
    with contextlib.ExitStack() as stack:
        name = archive.name
        if archive.is_dir():
            parts, csv, record = _folder_parts(archive, stack)
        else:
            parts, csv, record = _archive_parts(archive, work, stack)
        needed = sum(m.size for _, members in parts.values() for m in members)
        _check_space(work, needed, "unpacking the images")
        written: set[str] = set()  # as the manifest lists them
        for part, (label, members) in parts.items():
            written |= _extract(members, work / part, label, part)
        if csv is not None:
            _copy_member(csv, work / csv.rel[-1], name)
            written.add(csv.rel[-1])
        else:
            wanted = " or ".join(SAMPLE_SUBMISSIONS)
            log.warning("%s has no sample submission csv (%s)", name, wanted)
    shutil.rmtree(work / ".archives", ignore_errors=True)
    files = sorted(_relative_files(work))  # what is there now: the manifest says this, not what was written
    missing = written.difference(files)
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise UserError(
            f"{len(missing)} of the {len(written)} files unpacked into {shown(work)} are gone "
            f"({shown(min(missing))}{more}): another program removed them while this run unpacked; "
            "run the command again"
        )
    return {
        "competition": competition,
        "source": source,
        **record,
        "train_files": sum(f.startswith("train/") for f in files),
        "test_files": sum(f.startswith("test/") for f in files),
        "sample_submission": csv.rel[-1] if csv is not None else None,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": files,  # what --force may replace, and nothing else
    }


_Parts = dict[str, tuple[str, list[_Member]]]  # "train"/"test" -> (label for messages, its files)


def _archive_parts(
    archive: Path, work: Path, stack: contextlib.ExitStack
) -> tuple[_Parts, _Member | None, dict]:
    """The checked parts of a whole-data zip, its csv, and what the manifest records of it."""
    log.info("Checking %s (%.1f MB)", archive, archive.stat().st_size / 1e6)
    record = {"archive": archive.name, "archive_sha256": sha256(archive)}
    outer = stack.enter_context(_open_zip(archive, archive.name))
    _check_zip(outer, archive.name)
    sources = {
        "train": _find_part(outer, TRAIN_FOLDERS, archive.name),
        "test": _find_part(outer, TEST_FOLDERS, archive.name),
    }
    csv = next((i for i in outer.infolist() if _basename(i) in SAMPLE_SUBMISSIONS), None)

    # Nested zips are copied out (reading a zip seeks, which is slow inside another zip)
    # and all checked before any image is written.
    nested_dir = work / ".archives"
    parts = {}
    for part, src in sources.items():
        folders = TRAIN_FOLDERS if part == "train" else TEST_FOLDERS
        if isinstance(src, zipfile.ZipInfo):
            label = f"{archive.name}:{src.filename}"
            _check_space(work, src.file_size, f"copying {label}")
            nested_dir.mkdir(exist_ok=True)
            path = nested_dir / f"{part}.zip"
            _copy_member(_zip_member(outer, src, ()), path, archive.name)
            parts[part] = (label, _nested_zip_members(path, folders, label, stack))
        else:
            members = _part_members(outer, folders, nested=False)
            parts[part] = (archive.name, [_zip_member(outer, i, rel) for i, rel in members])
        _check_part(part, *parts[part])
    csv_member = _zip_member(outer, csv, (_basename(csv),)) if csv is not None else None
    return parts, csv_member, record


def _folder_parts(
    folder: Path, stack: contextlib.ExitStack
) -> tuple[_Parts, _Member | None, dict]:
    """The checked parts of a competition folder (inner zips, or train/ and test/ unpacked), its
    csv, and what the manifest records of it. Nothing in FOLDER is written."""
    log.info("Checking the folder %s", folder)
    root, name = folder.resolve(), folder.name
    parts = {}
    for part, folders in (("train", TRAIN_FOLDERS), ("test", TEST_FOLDERS)):
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
            rel = path.relative_to(real).parts
            if os.path.isdir(path):  # a link to a folder inside ROOT
                _inside(root, path, label)
                log.warning("Leaving out %s: a link to a folder", shown(path))
                continue
            members.append(_file_member(root, path, rel, label))
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


def _check_part(part: str, label: str, members: list[_Member]) -> None:
    if not members:
        raise ArchiveError(f"{label} holds no {part} files")
    _check_names(part, members, label)


@contextlib.contextmanager
def _open_zip(path: Path, label: str) -> Iterator[zipfile.ZipFile]:
    try:
        zf = zipfile.ZipFile(path)
    except _ZIP_ERRORS as e:
        raise ArchiveError(f"{label} is not a zip file, or it was cut short ({e})") from None
    with zf:
        # zipfile looks for the end record anywhere near the end: in a cut-short archive it
        # finds the one of the last nested zip and silently reads that zip instead.
        if not _ends_with_end_record(path, zf):
            raise ArchiveError(f"{label} is not a zip file, or it was cut short (no end record)")
        yield zf


def _ends_with_end_record(path: Path, zf: zipfile.ZipFile) -> bool:
    """Whether the end-of-central-directory record zipfile used is the last thing in the file."""
    at = path.stat().st_size - 22 - len(zf.comment)
    with open(path, "rb") as f:
        f.seek(max(at, 0))
        return at >= 0 and f.read(4) == b"PK\x05\x06"


def _check_zip(zf: zipfile.ZipFile, label: str) -> None:
    """Refuse unsafe entry names before anything is extracted, then verify every CRC."""
    for info in zf.infolist():
        reason = _unsafe(info)
        if reason:
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
    """Where train (or test) is: a nested `train.zip` entry, or else (LABEL) a top-level
    `train/` folder of the outer zip itself."""
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
    """The files of one part with their path below it: `train/cat.0.jpg` -> ("cat.0.jpg",).

    A nested zip may also hold its files at the top level; anything else (e.g. __MACOSX/) is
    left out.
    """
    files = [i for i in zf.infolist() if not i.is_dir()]
    members = [(i, p[1:]) for i, p in ((i, _parts(i)) for i in files) if len(p) > 1 and p[0] in folders]
    if not members and nested:
        members = [(i, _parts(i)) for i in files if len(_parts(i)) == 1]
    skipped = len(files) - len(members) if nested else 0
    if skipped:
        log.debug("Leaving out %d entries outside %s/", skipped, "/".join(folders))
    return members


def _check_names(part: str, members: list[_Member], label: str) -> None:
    """Refuse an archive or folder that is not the competition's, before anything is unpacked: train needs
    cat.N.jpg and dog.N.jpg images, test only numbered ones (other files, e.g. .DS_Store, pass)."""
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


def _extract(members: list[_Member], dest: Path, label: str, part: str) -> set[str]:
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
        _copy_member(member, out, label)
        written.add(f"{part}/{name}")
    return written


def _copy_member(member: _Member, out: Path, label: str) -> None:
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



# --- folders -------------------------------------------------------------------------------


def _write_manifest(path: Path, manifest: dict) -> None:
    with open(path, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def _relative_files(folder: Path, *, with_folders: bool = False) -> list[str]:
    """The entries below FOLDER (links not followed; folders only if asked), as posix paths
    relative to it."""
    return [
        (Path(root) / name).relative_to(folder).as_posix()
        for root, dirs, files in os.walk(folder)
        for name in files + [d for d in dirs if with_folders or os.path.islink(os.path.join(root, d))]
    ]


def _check_replaceable(target: Path) -> None:
    """Refuse (one line) unless TARGET is missing, empty, or holds only what this stage wrote,
    as its manifest lists it: --force re-downloads, it never deletes what the user put there."""
    if target.is_symlink():
        raise UserError(f"{shown(target)} is a link, which this tool does not replace: remove it or choose another --data-dir")
    if not target.exists():
        return
    if not target.is_dir():
        raise UserError(f"{shown(target)} exists and is not a folder: move it away or choose another --data-dir")
    present = _relative_files(target, with_folders=True)
    if not present:
        return
    try:
        listed = json.loads((target / MANIFEST).read_text())["files"]
        ours = {name for name in listed if isinstance(name, str)} | {MANIFEST}
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(
            f"{shown(target)} exists and this tool cannot tell that it wrote it (no {MANIFEST} "
            "listing its files): move it away or choose another --data-dir"
        ) from None
    ours |= {str(parent) for name in ours for parent in PurePosixPath(name).parents}
    foreign = [
        name
        for name in present
        if name not in ours or (target / name).is_symlink()
    ]
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise UserError(
            f"{shown(target)} holds files this tool did not write ({shown(min(foreign))}{more}): "
            "move them out or choose another --data-dir; --force replaces only what this tool wrote"
        )


def _swap_into_place(work: Path, target: Path) -> None:
    """Rename the finished WORK folder to TARGET; an old TARGET, checked again to hold only what
    this stage wrote, is removed only afterwards."""
    _check_replaceable(target)
    if put_in_place(work, target, _remove):
        log.info("Replaced the previous %s", target)


def _remove_leftovers(target: Path) -> None:
    """Remove hidden work folders that an interrupted earlier run left next to TARGET."""
    for pattern in (f".{target.name}.partial-*", f".{target.name}.old-*"):
        for leftover in target.parent.glob(pattern):
            log.info("Removing %s, left by an interrupted run", leftover)
            _remove(leftover)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _os_error(e, path) from None


def _check_space(folder: Path, needed: int, what: str) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise UserError(
            f"not enough space in {folder} for {what}: {needed / 1e9:.1f} GB needed, "
            f"{free / 1e9:.1f} GB free"
        )


def _os_error(e: OSError, data_dir: Path) -> UserError:
    if e.errno == errno.ENOSPC:
        return UserError(f"no space left on device while unpacking into {data_dir}: free some space")
    where = f": {e.filename}" if e.filename else ""
    return UserError(f"{e.strerror or e}{where}")
