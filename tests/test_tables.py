"""The results table: every name a folder can hold comes back from CSV and Parquet as it went in,
and a Parquet table stays readable by other programs."""

from __future__ import annotations

import itertools
import os

import pandas as pd
import pyarrow.parquet as pq
import pytest

from catsdogs_batch.inference.tables import COLUMNS, DTYPES, error_row, iter_table, ok_row, read_table, row_values, write_table

# The characters an escape is made of, and bytes that are not UTF-8 (as os.fsdecode gives them)
ALPHABET = ["\\", "x", "f", "F", "8", os.fsdecode(b"\xff"), os.fsdecode(b"\x80"), "a"]


def every_name(longest: int = 4) -> list[str]:
    """Every string of up to `longest` characters of ALPHABET: all the ways they can meet."""
    return ["".join(p) for n in range(1, longest + 1) for p in itertools.product(ALPHABET, repeat=n)]


def frame_of(paths: list[str]) -> pd.DataFrame:
    """Rows of these paths, every other one unreadable (its error message names it)."""
    rows = [ok_row(path, 0.9, 32, 32) if n % 2 else error_row(path, f"cannot read {path}")
            for n, path in enumerate(paths)]  # fmt: skip
    return pd.DataFrame([row_values(row) for row in rows], columns=COLUMNS, dtype=object).astype(DTYPES)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_every_name_comes_back_byte_for_byte(tmp_path, suffix):
    paths = [f"{name}.jpg" for name in every_name()] + [f"{name}/{name}" for name in every_name(2)]
    paths += [os.fsdecode(b"b\xff.jpg"), "b\\xff.jpg"]  # the second: a backslash, x, f, f
    table = tmp_path / f"t{suffix}"
    write_table(table, [frame_of(paths)])

    for frame in (read_table(table), pd.concat(iter_table(table, chunk_rows=1000))):
        assert list(frame["path"]) == paths
        errors = frame["error"][frame["status"] == "error"]
        assert list(errors) == [f"cannot read {path}" for path in paths[::2]]
    assert len(set(read_table(table)["path"])) == len(paths)


def test_parquet_keeps_the_names_other_programs_can_read_as_they_are(tmp_path):
    names = ["cat/IMG 1.jpg", "café.jpg", "a\\b.jpg", "end\\", os.fsdecode(b"caf\xe9.jpg"), "b\\xff.jpg"]
    table = tmp_path / "t.parquet"
    write_table(table, [frame_of(names)])
    stored = pq.read_table(table).column("path").to_pylist()
    # Only a byte that is not UTF-8 and a backslash an escape could be read into change
    assert stored == ["cat/IMG 1.jpg", "café.jpg", "a\\b.jpg", "end\\", "caf\\xe9.jpg", "b\\\\xff.jpg"]


def test_a_parquet_table_of_another_program_is_read_as_it_is(tmp_path):
    frame = frame_of(["a", "b"])
    frame["path"] = ["b\\xff.jpg", "c\\\\d.jpg"]  # no escapes of this tool: plain names
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    assert list(read_table(tmp_path / "t.parquet")["path"]) == ["b\\xff.jpg", "c\\\\d.jpg"]
