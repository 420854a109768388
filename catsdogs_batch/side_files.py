"""The side files kept beside a results table or a corrections file (locks, work folders, records):
each named by one function here, which says who writes, reads and removes it; their JSON read by one
rule (`read_record`). Imports only files.py, so that every command can use it."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

from .files import shown

log = logging.getLogger(__name__)

# Files of evaluate's folder (review reads them); submission's folder has a results.csv too
RESULTS_FILE, METRICS_FILE, REPORT_FILE = "results.csv", "metrics.json", "report.html"


def _beside(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def lock_file(path: Path) -> Path:
    """`<path>.lock`: held (files.exclusive_lock) by the one run writing `path`, a results table
    (engine.table_lock) or a corrections file (review); removed when that run ends, never read."""
    return _beside(path, ".lock")


def folder_lock_file(folder: Path) -> Path:
    """`.<folder>.lock`: held (files.exclusive_lock) by the one `train` writing a run folder (a
    --resume too) or `download` writing a competition folder; beside it, not inside, so that it
    exists before the folder and outlives its replacement. Removed when that run ends, never read."""
    return folder.with_name(f".{folder.name}.lock")


def job_file(table: Path) -> Path:
    """`<table>.job.json`: what a finished table was computed from (folder, models, settings);
    written just after the table (shards.merge_table, audit, validation), removed just before it is
    replaced; read by review (images folder, band, threshold), submission and evaluate (reuse)."""
    return _beside(table, ".job.json")


def parts_folder(table: Path) -> Path:
    """`<table>.parts/`: an unfinished predict's work folder (shards.PartsFolder): its job and each
    shard's rows and done marker. A rerun resumes it, --overwrite discards it; gone once merged."""
    return _beside(table, ".parts")


def removed_parts_folder(table: Path) -> Path:
    """`.<table>.parts.removing/`: a work folder being removed, renamed first (shards.discard_parts) so
    that a stopped removal leaves no half work folder; the next engine.table_lock removes a leftover."""
    return table.with_name(f".{table.name}.parts.removing")


def parts_job_file(table: Path) -> Path:
    """`<table>.parts/job.json`: the unfinished run's job (shards.job_description), written with the
    folder; read by the next run (resume or start over) and review (the images folder)."""
    return parts_folder(table) / "job.json"


# What a work folder holds besides its job.json: shards' rows files and done markers, and the
# temporary file of one being written (files.atomic_path: `.<name>.XXXXXXXX.tmp`)
SHARD_FILE = re.compile(r"shard-\d{6,}\.(csv|json)|\.(shard-\d{6,}\.(csv|json)|job\.json)\.\w{8}\.tmp")


def shard_name(shard_id: int) -> str:
    """`shard-N` (N: six to twelve digits, a hash of its first file's name, shards.iter_shards),
    which names the shard's rows file and done marker, and logs."""
    return f"shard-{shard_id:06d}"


def shard_rows_file(table: Path, shard_id: int) -> Path:
    """`<table>.parts/shard-N.csv`: one shard's rows, written (shards.PartsFolder.finish) once the
    engine returned them all; merged in order into the table, removed with the folder."""
    return parts_folder(table) / f"{shard_name(shard_id)}.csv"


def shard_marker(table: Path, shard_id: int) -> Path:
    """`<table>.parts/shard-N.json`: the shard's done marker (its files' fingerprints, counts), written
    only after its rows file is complete; a rerun skips the shards that have one (shards.PartsFolder.done)
    and predicts again one with a damaged or out-of-date marker. Removed with the folder."""
    return parts_folder(table) / f"{shard_name(shard_id)}.json"


def shard_markers(table: Path) -> Iterator[Path]:
    """The work folder's done markers: finished work that only --overwrite may discard."""
    return parts_folder(table).glob("shard-*.json")


def sorting_file(table: Path) -> Path:
    """`<table>.sorting.json`: what `label --sort-into` is sorting (folder, models, target, mode,
    settings), written before the first image is placed; a rerun of the job finishes it, review finds
    the images by it. Removed when done (sorted_file takes over) or refused before placing any."""
    return _beside(table, ".sorting.json")


def sorted_file(table: Path) -> Path:
    """`<table>.sorted.json`: the last finished sorting's record (as sorting_file), written when every
    image is placed; review reads where `--mode move` put them. The next finished sorting replaces it."""
    return _beside(table, ".sorted.json")


def corrections_record(corrections: Path) -> Path:
    """`<corrections>.json`: the folder (and table) a corrections file is about, written by review
    with the first decision; read by every command that takes corrections. Never removed."""
    return _beside(corrections, ".json")


def read_record(path: Path) -> dict | None:
    """The JSON object a side file (or a run's run.json) holds; None when missing or damaged (cut
    short, not JSON, not an object, unreadable: one debug line says why). Callers decide what None
    means (start over, refuse, nothing recorded)."""
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
