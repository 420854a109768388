"""The per-image results table: its columns, the shard files a run writes as it goes, and the
final table merged from them (CSV, or Parquet when the name ends in .parquet)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
import operator
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import UserError
from ..files import TEXT, CsvWriter, atomic_path
from ..data.images import CLASS_NAMES
from ..options import THRESHOLD, Labelling


@dataclass(frozen=True)
class Row:
    path: str  # relative to the folder, POSIX separators
    id: int | None  # Kaggle id where the file name is a number (test/123.jpg)
    p_dog: float | None
    label: str  # cat / dog / neither / both (or uncertain, with --uncertain); empty for errors
    confidence: float | None  # probability of cat or dog given (max(p_dog, 1 - p_dog) if uncertain); none for neither, both
    # The ImageNet classifier's word (content.py; empty without the content check): its share of
    # probability on the dog breeds and on the cats, and its most likely class
    imagenet_dog: float | None
    imagenet_cat: float | None
    imagenet_top: str
    width: int | None
    height: int | None
    status: str  # ok / error
    error: str


COLUMNS = [f.name for f in fields(Row)]
# A row's values in column order (dataclasses.astuple deep-copies each one: 45 us a row)
row_values = operator.attrgetter(*COLUMNS)
# `catsdogs evaluate` writes the true label (from the file's name or folder) beside the prediction.
EVALUATE_COLUMNS = [*COLUMNS[: COLUMNS.index("label") + 1], "true_label", *COLUMNS[COLUMNS.index("label") + 1 :]]
# `catsdogs label --corrections` says who gave each label: `model`, or `human` (a corrections file).
SOURCE_COLUMNS = [*COLUMNS[: COLUMNS.index("label") + 1], "source", *COLUMNS[COLUMNS.index("label") + 1 :]]
# `catsdogs audit`: evaluate's columns, then how likely the given label is right and cleanlab's verdict.
AUDIT_COLUMNS = [*EVALUATE_COLUMNS, "label_quality", "label_issue"]
# Each column's type, from its field's: strings are Python strings, not Arrow ones (a file name
# that is not UTF-8 keeps its bytes, as surrogates, so that the table leads back to the file),
# numbers nullable.
_DTYPE_OF = {"str": "string[python]", "int | None": "Int64", "float | None": "float64"}  # of a field's type
DTYPES = {f.name: _DTYPE_OF[f.type] for f in fields(Row)}
OPTIONAL_DTYPES = {
    "true_label": "string[python]",
    "source": "string[python]",
    "label_quality": "float64",
    "label_issue": "boolean",
}
ALL_DTYPES = {**DTYPES, **OPTIONAL_DTYPES}  # of any column a table of this tool may have
_READ_CSV = {
    "dtype": ALL_DTYPES, "keep_default_na": False,
    "na_values": {column: [""] for column, dtype in ALL_DTYPES.items() if dtype == "float64"},  # an empty number
    "encoding": "utf-8", "encoding_errors": "surrogateescape",
}  # fmt: skip
_LARGEST_ID = 2**53  # ids above it would not survive a float column (an id missing in a row makes one)


def kaggle_id(relative_path: str) -> int | None:
    """The number a Kaggle test file is named by (`123.jpg` -> 123); None for other names,
    including digits other than 0-9 and numbers too large for the table to keep exactly."""
    stem = Path(relative_path).stem
    if not (stem.isascii() and stem.isdigit()) or len(stem) > 16:  # (int() refuses 4,300 digits)
        return None
    number = int(stem)
    return number if number <= _LARGEST_ID else None


ANSWERS = ("cat", "dog", "neither", "both")  # what a photo holds, as the label column says it
NOT_CAT_OR_DOG = ("neither", "both")  # answers that are no cat-or-dog label: no confidence, left out of training


@dataclass(frozen=True)
class ImageNetWord:
    """The ImageNet classifier's word on one image (content.py): the row's imagenet_* columns."""

    dog: float
    cat: float
    top: str


def ok_row(
    relative_path: str, p_dog: float, width: int, height: int, label: str | None = None,
    imagenet: ImageNetWord | None = None,
) -> Row:  # fmt: skip
    p = round(float(p_dog), 6)
    label = label or ("dog" if p >= THRESHOLD else "cat")
    confidence = None if label in NOT_CAT_OR_DOG else round({"dog": p, "cat": 1 - p}.get(label, max(p, 1 - p)), 6)
    dog, cat, top = (round(imagenet.dog, 6), round(imagenet.cat, 6), imagenet.top) if imagenet else (None, None, "")
    return Row(
        relative_path, kaggle_id(relative_path), p, label, confidence, dog, cat, top, width, height, "ok", "",
    )  # fmt: skip


def confidences(labels: np.ndarray, p_dog: np.ndarray) -> np.ndarray:
    """ok_row's confidence for whole columns: p_dog for dog, 1 - p_dog for cat, none for neither
    and both, the larger of the two for any other label (uncertain), rounded as the table stores it."""
    p = np.asarray(p_dog, dtype=float)
    return np.select(
        [labels == "dog", labels == "cat", np.isin(labels, NOT_CAT_OR_DOG)], [p, 1 - p, np.nan], np.maximum(p, 1 - p)
    ).round(6)


def label_for(p_dog: float, labelling: Labelling, content: str | None = None) -> str:
    """cat, dog or uncertain for one probability, by the threshold and the uncertain band;
    `content` (neither or both, from the content check) comes first."""
    if content is not None:
        return content
    band = labelling.uncertain
    if band is not None and band[0] <= p_dog <= band[1]:
        return "uncertain"
    return "dog" if p_dog >= labelling.threshold else "cat"


def check_band(band: tuple[float, float] | None) -> None:
    """Refuse an uncertain band whose LOW is above its HIGH (each is checked by its setting)."""
    if band is not None and not 0 <= band[0] <= band[1] <= 1:
        raise UserError(f"--uncertain LOW HIGH needs 0 <= LOW <= HIGH <= 1, not {band[0]} {band[1]}")


def error_row(relative_path: str, error: str) -> Row:
    return Row(relative_path, kaggle_id(relative_path), None, "", None, None, None, "", None, None, "error", error)


def write_shard(path: Path, rows: Iterable[Row]) -> None:
    """One shard's rows as CSV, atomically: a shard file is either complete or absent."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", **TEXT) as f:
        writer = CsvWriter(f)
        writer.writerow(COLUMNS)
        writer.writerows(["" if v is None else v for v in row_values(row)] for row in rows)


def read_table(path: str | os.PathLike, *, true_label: bool = False) -> pd.DataFrame:
    """A results table (CSV or Parquet) with the column types above; one that is not such a
    table is a one-line error. A label table may have a `source` column; with `true_label`,
    evaluate's and audit's tables (a `true_label` column after `label`) are accepted too."""
    path = Path(path)
    layouts = _layouts(true_label)
    with _as_table(path):
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            with open(path, "rb") as file:  # a file object: pyarrow takes no name that is not UTF-8
                table = pq.read_table(file)
            return _from_parquet(path, table.to_pandas(), layouts, _escaped_names(table.schema))
        return _checked(path, pd.read_csv(path, **_READ_CSV), layouts)


def iter_table(path: str | os.PathLike, chunk_rows: int = 100_000) -> Iterator[pd.DataFrame]:
    """A results table of predict or label in chunks of rows (column types as in read_table), so
    that memory stays bounded for a table of any length."""
    path = Path(path)
    layouts = _layouts(true_label=False)
    with _as_table(path):
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            with open(path, "rb") as raw:  # a file object: pyarrow takes no name that is not UTF-8
                file = pq.ParquetFile(raw)
                escaped = _escaped_names(file.schema_arrow)
                for batch in file.iter_batches(batch_size=chunk_rows):
                    yield _from_parquet(path, batch.to_pandas(), layouts, escaped)
            return
        for chunk in pd.read_csv(path, chunksize=chunk_rows, **_READ_CSV):
            yield _checked(path, chunk, layouts)


def _layouts(true_label: bool) -> list[list[str]]:
    return [COLUMNS, SOURCE_COLUMNS] + ([EVALUATE_COLUMNS, AUDIT_COLUMNS] if true_label else [])


@contextlib.contextmanager
def _as_table(path: Path) -> Iterator[None]:
    """Reading errors of a file that is not a results table (edited, truncated, another file)
    become one line."""
    try:
        yield
    except (ValueError, KeyError, TypeError, UnicodeError) as e:  # pandas' and Arrow's parse errors
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path} is not a results table of catsdogs: {why}") from None


def _checked(path: Path, frame: pd.DataFrame, layouts: list[list[str]]) -> pd.DataFrame:
    if list(frame.columns) not in layouts:
        raise UserError(f"{path} is not a results table of catsdogs: its columns are {list(frame.columns)}")
    return frame


def _from_parquet(path: Path, frame: pd.DataFrame, layouts: list[list[str]], escaped: bool) -> pd.DataFrame:
    """A Parquet table's frame with the column types above; names escaped by this tool (see
    utf8_name) as the file system has them."""
    frame = _checked(path, frame, layouts)
    if escaped:
        frame = _each_name(frame, name_from_utf8)
    return frame.astype({c: ALL_DTYPES[c] for c in frame.columns})


def merge_shards(shards: list[Path], out: Path, relabel: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> None:
    """Concatenate shard files in order into `out`, streaming (memory holds one shard at a
    time); written atomically. `relabel` rewrites each shard's rows on the way (label's
    corrections). CSV shards as they are go through as text."""
    if relabel is not None or out.suffix == ".parquet":
        frames = (read_table(shard) for shard in shards) if shards else iter([pd.DataFrame(columns=COLUMNS).astype(DTYPES)])
        write_table(out, (relabel(frame) for frame in frames) if relabel is not None else frames)
        return
    with atomic_path(out) as tmp, open(tmp, "w", newline="", **TEXT) as f:
        f.write(",".join(COLUMNS) + "\n")
        for shard in shards:
            with open(shard, newline="", **TEXT) as s:
                next(s)  # header
                shutil.copyfileobj(s, f)


def write_table(out: Path, frames: Iterable[pd.DataFrame]) -> None:
    """Write frames of one layout (at least one) as a CSV or Parquet table, atomically and
    streaming: names keep their bytes in CSV, and are escaped (see utf8_name) in Parquet."""
    with atomic_path(out) as tmp:
        if out.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            writer = None
            with open(tmp, "wb") as file:  # a file object: pyarrow takes no name that is not UTF-8
                for frame in frames:
                    table = pa.Table.from_pandas(_each_name(frame.copy(), utf8_name), preserve_index=False)
                    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _NAMES[0]: _NAMES[1]})
                    writer = writer or pq.ParquetWriter(file, table.schema)
                    writer.write_table(table)
                writer.close()
        else:
            with open(tmp, "w", newline="", **TEXT) as f:
                writer = CsvWriter(f)
                for n, frame in enumerate(frames):
                    if n == 0:
                        writer.writerow(frame.columns)
                    writer.writerows(
                        ["" if pd.isna(v) else v for v in row] for row in frame.itertuples(index=False, name=None)
                    )


# Parquet strings must be UTF-8, which a file name need not be: a byte that is not is written
# \xNN (80-ff, lower case), and a backslash an escape could be read into (one before another
# backslash, an x or such a byte) is written \\. Other names are stored as they are, for other
# programs to read. The schema's metadata marks the tables written so; one without the mark (an
# older version's, another program's) is read as it is.
_NAMES = (b"catsdogs.names", b"escaped")
_TO_ESCAPE = re.compile("\\\\(?=[\\\\x\udc80-\udcff])|[\udc80-\udcff]")
_ESCAPED = re.compile(r"\\(\\|x[89a-f][0-9a-f])")


def utf8_name(text: str) -> str:
    """`text` (surrogates for bytes that are not UTF-8) as valid UTF-8 that name_from_utf8
    reverses: how a name is kept wherever only UTF-8 text goes (Parquet, Arrow strings, Ray)."""
    return _TO_ESCAPE.sub(lambda m: "\\\\" if m[0] == "\\" else f"\\x{ord(m[0]) - 0xDC00:02x}", text)


def name_from_utf8(text: str) -> str:
    return _ESCAPED.sub(lambda m: "\\" if m[1] == "\\" else chr(0xDC00 + int(m[1][1:], 16)), text)


def _escaped_names(schema: Any) -> bool:
    return (schema.metadata or {}).get(_NAMES[0]) == _NAMES[1]


def _each_name(frame: pd.DataFrame, function: Callable[[str], str]) -> pd.DataFrame:
    """`frame`, changed in place, with `function` of each string of its text columns, as Python
    strings (pandas would make them Arrow's UTF-8, which a name with surrogates is not)."""
    for column in frame.columns:
        if ALL_DTYPES.get(column, "").startswith("string"):
            values = [v if pd.isna(v) else function(v) for v in frame[column].astype(object)]
            frame[column] = pd.Series(values, index=frame.index, dtype="string[python]")
    return frame


def check_table_name(path: Path) -> None:
    if path.suffix not in (".csv", ".parquet"):
        raise UserError(f"{path}: the results table must end in .csv or .parquet")
    if path.is_dir():
        raise UserError(f"{path} is a folder: --out names the results table, a file")


def with_true_labels(results: pd.DataFrame, truth: list[int | None]) -> pd.DataFrame:
    """Evaluate's table: `results` with the true label of each row (0 cat, 1 dog, None: not
    known, an empty cell) in a `true_label` column after `label`."""
    results = results.copy()
    results.insert(
        results.columns.get_loc("label") + 1, "true_label",
        pd.array([CLASS_NAMES[t] if t is not None else "" for t in truth], dtype="string[python]"),
    )  # fmt: skip
    return results
