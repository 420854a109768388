"""The per-image results table: its columns, the shard files a run writes as it goes, and the
final table merged from them (CSV, or Parquet when the name ends in .parquet)."""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Iterable
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import pandas as pd

from .errors import UserError
from .files import atomic_path


@dataclass(frozen=True)
class Row:
    path: str  # relative to the folder, POSIX separators
    id: int | None  # Kaggle id where the file name is a number (test/123.jpg)
    p_dog: float | None
    label: str  # cat / dog (or uncertain, for `catsdogs label`); empty for errors
    confidence: float | None  # probability of the label given: max(p_dog, 1 - p_dog)
    width: int | None
    height: int | None
    status: str  # ok / error
    error: str


COLUMNS = [f.name for f in fields(Row)]
DTYPES = {
    "path": "string",
    "id": "Int64",
    "p_dog": "float64",
    "label": "string",
    "confidence": "float64",
    "width": "Int64",
    "height": "Int64",
    "status": "string",
    "error": "string",
}


def kaggle_id(relative_path: str) -> int | None:
    stem = Path(relative_path).stem
    return int(stem) if stem.isdigit() else None


def ok_row(relative_path: str, p_dog: float, width: int, height: int, label: str | None = None) -> Row:
    p = round(float(p_dog), 6)
    return Row(
        relative_path, kaggle_id(relative_path), p, label or ("dog" if p >= 0.5 else "cat"),
        round(max(p, 1 - p), 6), width, height, "ok", "",
    )  # fmt: skip


def error_row(relative_path: str, error: str) -> Row:
    return Row(relative_path, kaggle_id(relative_path), None, "", None, None, None, "error", error)


def write_shard(path: Path, rows: Iterable[Row]) -> None:
    """One shard's rows as CSV, atomically: a shard file is either complete or absent."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows(["" if v is None else v for v in astuple(row)] for row in rows)


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """A results table (CSV or Parquet) with the column types above."""
    path = Path(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path).astype(DTYPES)
    return pd.read_csv(path, dtype=DTYPES, keep_default_na=False, na_values={"p_dog": [""], "confidence": [""]})


def merge_shards(shards: list[Path], out: Path) -> None:
    """Concatenate shard files in order into `out`, streaming (memory holds one shard at a
    time); written atomically."""
    with atomic_path(out) as tmp:
        if out.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            writer = None
            for shard in shards:
                frame = read_table(shard)
                table = pa.Table.from_pandas(frame, preserve_index=False)
                writer = writer or pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
            if writer is None:
                pq.write_table(pa.Table.from_pandas(pd.DataFrame(columns=COLUMNS).astype(DTYPES)), tmp)
            else:
                writer.close()
        else:
            with open(tmp, "w", newline="") as f:
                f.write(",".join(COLUMNS) + "\n")
                for shard in shards:
                    with open(shard, newline="") as s:
                        next(s)  # header
                        shutil.copyfileobj(s, f)


def check_table_name(path: Path) -> None:
    if path.suffix not in (".csv", ".parquet"):
        raise UserError(f"{path}: the results table must end in .csv or .parquet")
