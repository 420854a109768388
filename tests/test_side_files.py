"""The side files beside a table or a corrections file: their names, and the one reader of their
records, which passes a damaged record over as none (one debug line says why) and lets the caller
decide what that means."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from catsdogs_batch import side_files
from catsdogs_batch.labelling.review_queue import recorded_job


def test_each_side_file_has_the_name_the_documents_give_it(tmp_path):
    table = tmp_path / "out" / "r.csv"
    assert side_files.lock_file(table) == tmp_path / "out" / "r.csv.lock"
    assert side_files.job_file(table) == tmp_path / "out" / "r.csv.job.json"
    assert side_files.parts_folder(table) == tmp_path / "out" / "r.csv.parts"
    assert side_files.parts_job_file(table) == tmp_path / "out" / "r.csv.parts" / "job.json"
    assert side_files.shard_rows_file(table, 3) == tmp_path / "out" / "r.csv.parts" / "shard-000003.csv"
    assert side_files.shard_marker(table, 3) == tmp_path / "out" / "r.csv.parts" / "shard-000003.json"
    assert side_files.sorting_file(table) == tmp_path / "out" / "r.csv.sorting.json"
    assert side_files.sorted_file(table) == tmp_path / "out" / "r.csv.sorted.json"
    corrections = tmp_path / "corrections.csv"
    assert side_files.corrections_record(corrections) == tmp_path / "corrections.csv.json"
    assert side_files.lock_file(corrections) == tmp_path / "corrections.csv.lock"
    assert side_files.folder_lock_file(tmp_path / "models" / "run-1") == tmp_path / "models" / ".run-1.lock"


def test_the_done_markers_are_the_shards_json_files_only(tmp_path):
    table = tmp_path / "r.csv"
    parts = tmp_path / "r.csv.parts"
    parts.mkdir()
    for name in ("job.json", "shard-000000.csv", "shard-000000.json", "shard-000001.csv", "notes.json"):
        (parts / name).write_text("{}")
    assert sorted(p.name for p in side_files.shard_markers(table)) == ["shard-000000.json"]
    assert list(side_files.shard_markers(tmp_path / "none.csv")) == []


def test_a_record_is_read_as_written(tmp_path, caplog):
    record = tmp_path / "r.csv.job.json"
    record.write_text('{"folder": "/data/test", "threshold": 0.5}\n')
    with caplog.at_level(logging.DEBUG):
        assert side_files.read_record(record) == {"folder": "/data/test", "threshold": 0.5}
    assert caplog.text == ""


@pytest.mark.parametrize("where", ["r.csv.job.json", "r.csv.parts/job.json", "a-file/job.json"])
def test_a_missing_record_is_none_and_said_nowhere(tmp_path, caplog, where):
    (tmp_path / "a-file").write_text("not a folder")
    with caplog.at_level(logging.DEBUG):
        assert side_files.read_record(tmp_path / where) is None
    assert caplog.text == ""


@pytest.mark.parametrize("content, why", [
    (b"", "not JSON"), (b'{"folder": "/da', "not JSON"), (b"\xff{}", "not JSON"),
    (b"[]", "not a JSON object"), (b"null", "not a JSON object"), (b'"a table"', "not a JSON object"),
])  # fmt: skip
def test_a_damaged_record_is_none_and_one_line_naming_it(tmp_path, caplog, content, why):
    record = tmp_path / "r.csv.sorting.json"
    record.write_bytes(content)
    with caplog.at_level(logging.DEBUG):
        assert side_files.read_record(record) is None
    assert [r.getMessage() for r in caplog.records] == [f"{record} is damaged ({why}): not used"]


def test_a_folder_in_the_place_of_a_record_is_damaged(tmp_path, caplog):
    (tmp_path / "r.csv.job.json").mkdir()
    with caplog.at_level(logging.DEBUG):
        assert side_files.read_record(tmp_path / "r.csv.job.json") is None
    assert len(caplog.records) == 1 and "r.csv.job.json is damaged (Is a directory)" in caplog.text


def test_review_passes_over_a_damaged_record_to_the_next_one(tmp_path, caplog):
    """A table's job record cut short: review finds its folder in the unfinished sorting's record
    (and -v says which record it could not use)."""
    table = tmp_path / "labels.csv"
    Path(f"{table}.job.json").write_text('{"folder": "/photos", "thr')
    Path(f"{table}.sorting.json").write_text('{"folder": "/photos/sorted-from", "mode": "copy"}')
    with caplog.at_level(logging.DEBUG):
        job = recorded_job(table)
    assert job == {"folder": "/photos/sorted-from", "mode": "copy", "_file": tmp_path / "labels.csv.sorting.json"}
    assert "labels.csv.job.json is damaged (not JSON): not used" in caplog.text
