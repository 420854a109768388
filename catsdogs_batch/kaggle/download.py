"""The data stage: fetch the competition archive (or import one, or the competition folder Kaggle
mounts under /kaggle/input/<competition>/, only read) and unpack it into DATA_DIR/<competition>/:
train/, test/, the csv and manifest.json (docs/commands.md has the rules, --force's included).

Everything is checked before anything is unpacked (archives.py), into a hidden folder renamed into
place at the end; manifest.json, written last, lists every file there, so a folder without one is
never complete. A downloaded archive is deleted once unpacked or found broken or unsafe, and kept
when unpacking fails otherwise (a re-run reuses it). `.<competition>.lock` beside the folder, held
from before the download to the end, lets one run in at a time and proves a hidden work folder
beside it a dead run's leftover, safe to remove."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from ..errors import UserError
from ..files import exclusive_lock, put_in_place, resolves_inside, shown, umask_mode
from ..side_files import folder_lock_file
from . import archives
from .archives import ArchiveError, check_space
from ..options import SAMPLE_SUBMISSIONS, DownloadOptions, check_options

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
KAGGLE_INPUT_VARIABLE = "CATSDOGS_KAGGLE_INPUT"  # where Kaggle notebooks mount competitions
KAGGLE_INPUT = "/kaggle/input"


def download(options: DownloadOptions) -> Path:
    """Make DATA_DIR/<competition>/ hold the unpacked competition data; return that folder."""
    check_options(options)
    target = options.data_dir / options.competition
    if _nothing_to_do(options, target):
        return target
    if options.archive is not None and options.archive.is_dir():  # before the target's own checks
        _check_apart(options.archive, target)
    _check_replaceable(target)
    try:
        options.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _os_error(e, options.data_dir) from None
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


def _install(archive: Path, target: Path, competition: str, source: str) -> None:
    """Check ARCHIVE (a zip or a competition folder), unpack it into a hidden folder next to
    TARGET (removed again on any failure), then swap it into place. The caller holds TARGET's lock."""
    _remove_leftovers(target)
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
        os.chmod(work, umask_mode(0o777))  # mkdtemp makes it 0700; the data is meant for people
    except OSError as e:
        raise _os_error(e, target.parent) from None
    try:
        manifest = _unpack(archive, work, competition, source)
        _write_manifest(work / MANIFEST, manifest)  # last: it marks the folder complete
        _check_replaceable(target)  # again: an old TARGET is removed, once WORK is in its place, only if all ours
        if put_in_place(work, target, _remove):
            log.info("Replaced the previous %s", target)
    except BaseException as e:
        shutil.rmtree(work, ignore_errors=True)
        if isinstance(e, OSError):
            raise _os_error(e, target.parent) from None
        raise
    log.info(
        "%s is ready: %d train and %d test files",
        target,
        manifest["train_files"],
        manifest["test_files"],
    )


def _unpack(archive: Path, work: Path, competition: str, source: str) -> dict:
    """Check everything first, then unpack train/, test/ and the csv into WORK."""
    with contextlib.ExitStack() as stack:
        name = archive.name
        if archive.is_dir():
            parts, csv, record = archives.folder_parts(archive, stack)
        else:
            parts, csv, record = archives.archive_parts(archive, work, stack)
        needed = sum(m.size for _, members in parts.values() for m in members)
        check_space(work, needed, "unpacking the images")
        written: set[str] = set()  # as the manifest lists them
        for part, (label, members) in parts.items():
            written |= archives.extract(members, work / part, label, part)
        if csv is not None:
            archives.copy_member(csv, work / csv.rel[-1], name)
            written.add(csv.rel[-1])
        else:
            log.warning("%s has no sample submission csv (%s)", name, " or ".join(SAMPLE_SUBMISSIONS))
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


def _write_manifest(path: Path, manifest: dict) -> None:
    with open(path, "w") as f:
        f.write(json.dumps(manifest, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _relative_files(folder: Path, *, with_folders: bool = False) -> list[str]:
    """The entries below FOLDER as posix paths relative to it (links not followed; folders only if asked)."""
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


def _os_error(e: OSError, data_dir: Path) -> UserError:
    if e.errno == errno.ENOSPC:
        return UserError(f"no space left on device while unpacking into {data_dir}: free some space")
    where = f": {e.filename}" if e.filename else ""
    return UserError(f"{e.strerror or e}{where}")
