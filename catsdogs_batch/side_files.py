"""The side files: what the commands keep beside a results table or a corrections file (locks,
the work folder of an unfinished run, the records of what a table was computed from). Each kind
is named by one function here, which says who writes it, who reads it and when it goes, and
their JSON records are read by one reader with one rule for a damaged file (`read_record`).
Only files.py and the standard library are imported, so every command can use it."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

from .files import shown

log = logging.getLogger(__name__)

# What `catsdogs evaluate` writes into its folder (and `review` reads from it); `submission`'s
# folder has its results.csv too
RESULTS_FILE, METRICS_FILE, REPORT_FILE = "results.csv", "metrics.json", "report.html"


def _beside(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def lock_file(path: Path) -> Path:
    """`<path>.lock`: held (files.exclusive_lock) by the one run writing `path`, a results table
    (engine.table_lock: predict, label, submission, audit, a run's validation table) or a
    corrections file (review); removed when that run ends. Its content is never read."""
    return _beside(path, ".lock")


def folder_lock_file(folder: Path) -> Path:
    """`.<folder>.lock` beside a folder a command makes whole: held (files.exclusive_lock) by the
    one `catsdogs train` writing a run folder (a --resume included), or the one `catsdogs
    download` writing a competition folder (from before the download to the end); beside, not
    inside, so that it exists before the folder does and outlives its replacement. Removed when
    that run ends; its content is never read."""
    return folder.with_name(f".{folder.name}.lock")


def job_file(table: Path) -> Path:
    """`<table>.job.json`: what a finished table was computed from (the folder, models and
    settings). Written just after the table (shards.merge_table, audit, a run's validation
    table) and removed just before it is replaced; read by review (the images folder, band and
    threshold), submission and evaluate (whether the table can be reused)."""
    return _beside(table, ".job.json")


def parts_folder(table: Path) -> Path:
    """`<table>.parts/`: the work folder of a predict that has not finished (shards.PartsFolder),
    holding its job record and, per shard, a rows file and a done marker. A rerun of the same
    job resumes it, --overwrite discards it; removed once the shards are merged into the table."""
    return _beside(table, ".parts")


def removed_parts_folder(table: Path) -> Path:
    """`.<table>.parts.removing/`: a work folder being removed (shards.discard_parts renames it
    so first: a run stopped while removing it leaves no half of a work folder that a rerun could
    take for one). The next run writing the table removes a leftover (engine.table_lock)."""
    return table.with_name(f".{table.name}.parts.removing")


def parts_job_file(table: Path) -> Path:
    """`<table>.parts/job.json`: the job of the unfinished run (shards.job_description), written
    when the work folder is made; read by the next run (resume or start over) and by review (the
    images folder of a table still being predicted); goes with the folder."""
    return parts_folder(table) / "job.json"


# What a work folder holds besides its job.json: shards' rows files and done markers, and the
# temporary file of one being written (files.atomic_path: `.<name>.XXXXXXXX.tmp`)
SHARD_FILE = re.compile(r"shard-\d{6,}\.(csv|json)|\.(shard-\d{6,}\.(csv|json)|job\.json)\.\w{8}\.tmp")


def shard_name(shard_id: int) -> str:
    """`shard-N` (N: six to twelve digits, a hash of the shard's first file's name, see
    shards.iter_shards): the shard's rows file and done marker are named by it (and logs say it)."""
    return f"shard-{shard_id:06d}"


def shard_rows_file(table: Path, shard_id: int) -> Path:
    """`<table>.parts/shard-N.csv`: the rows of one shard, written by the driver
    (shards.PartsFolder.finish) once the engine has returned them all; merged, in order, into
    the table, then removed with the folder."""
    return parts_folder(table) / f"{shard_name(shard_id)}.csv"


def shard_marker(table: Path, shard_id: int) -> Path:
    """`<table>.parts/shard-N.json`: the shard's done marker (its files' fingerprints and
    its counts), written only after its rows file is complete; a rerun skips the shards that
    have one (shards.PartsFolder.done) and removes a damaged or out-of-date one to predict the
    shard again. Removed with the folder."""
    return parts_folder(table) / f"{shard_name(shard_id)}.json"


def shard_markers(table: Path) -> Iterator[Path]:
    """The done markers in the work folder: one there means finished work that only --overwrite
    may discard."""
    return parts_folder(table).glob("shard-*.json")


def sorting_file(table: Path) -> Path:
    """`<table>.sorting.json`: what `label --sort-into` is sorting (folder, models, target, mode,
    settings), written before the first image is placed; a rerun with the same job finishes it
    (label._sorting_left) and review finds the images folder or moved images by it. Removed once
    the sorting is done (sorted_file takes over), or when a run is refused before it placed any."""
    return _beside(table, ".sorting.json")


def sorted_file(table: Path) -> Path:
    """`<table>.sorted.json`: the job of the last finished sorting, the same record as
    sorting_file; written by label when every image is placed, read by review (where `--mode
    move` put the images). The next finished sorting replaces it."""
    return _beside(table, ".sorted.json")


def corrections_record(corrections: Path) -> Path:
    """`<corrections>.json`: the folder (and table) whose images a corrections file is about,
    written by review with the first decision (corrections.Corrections); read by every command
    that takes corrections (corrections.refuse_another_folder). Never removed."""
    return _beside(corrections, ".json")


def read_record(path: Path) -> dict | None:
    """The JSON object a side file (or a run's run.json) holds; None when there is none: missing, or damaged (cut
    short, not JSON, not an object, unreadable; one debug line names it and says why). Callers
    decide what None means (start over, refuse, nothing recorded) and say so where it matters."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        why = e.strerror or str(e)
    except ValueError:  # UnicodeDecodeError included
        why = "not JSON"
    else:
        if isinstance(data, dict):
            return data
        why = "not a JSON object"
    log.debug("%s is damaged (%s): not used", shown(path), why)
    return None
