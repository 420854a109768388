"""`catsdogs audit` on generated labelled folders with deliberately flipped names, the table it
writes as review reads it, and the corrections file that label and train read."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from catsdogs_batch.audit import audit
from catsdogs_batch.cli import main
from catsdogs_batch.errors import UserError
from catsdogs_batch.options import AuditOptions, ReviewOptions
from catsdogs_batch.review import open_session, read_corrections, recorded_job
from catsdogs_batch.tables import AUDIT_COLUMNS, SOURCE_COLUMNS, read_table, write_table

from conftest import write_image

FLIPPED = ["dog.3.png", "cat.7.png", "dog.11.png"]  # a cat named dog, a dog named cat, ...


@pytest.fixture
def mislabelled(tmp_path: Path) -> Path:
    """40 cats and 40 dogs named like Kaggle's, three of them under the other class's name, and
    one unreadable file."""
    folder = tmp_path / "labelled"
    for n in range(40):
        for label, name in ((0, "cat"), (1, "dog")):
            flipped = f"{name}.{n}.png" in FLIPPED
            write_image(folder / f"{name}.{n}.png", 1 - label if flipped else label, size=32, seed=100 * label + n)
    (folder / "cat.broken.jpg").write_bytes(b"not a jpeg")
    return folder


FAST = AuditOptions(Path(), folds=3, epochs=6, image_size=32, arch="seed", batch_size=16, learning_rate=3e-3)


@pytest.mark.slow
def test_the_flipped_labels_come_first_and_review_shows_them(mislabelled, tmp_path):
    out = tmp_path / "audit.csv"
    options = AuditOptions(**{**FAST.__dict__, "data": mislabelled, "out": out})
    summary = audit(options)
    assert (summary.images, summary.unreadable) == (80, 1) and summary.issues >= 3

    table = read_table(out, true_label=True)
    assert list(table.columns) == AUDIT_COLUMNS and len(table) == 81
    assert set(table["path"][:3]) == set(FLIPPED), table.head(6)
    assert table["label_issue"][:3].all() and (np.diff(table["label_quality"][:80]) >= 0).all()
    flipped = table.set_index("path").loc[FLIPPED]
    assert (flipped["label"] != flipped["true_label"]).all()  # the model saw through the names
    last = table.iloc[-1]
    assert (last["path"], last["status"], last["true_label"]) == ("cat.broken.jpg", "error", "cat")

    job = recorded_job(out)
    assert job["folder"] == str(mislabelled.resolve()) and job["folds"] == 3 and job["seed"] == 0
    with open_session(ReviewOptions(out)) as session:  # review finds the images through the job
        queue = session.queue
        assert session.images == mislabelled.resolve() and queue.uncertain == 0 and len(queue) == summary.issues
        assert [queue.paths[row] for row in queue.order[:3]] == list(table["path"][:3])
        assert session.page(0)[0]["true_label"] == table["true_label"][0]
        assert session.image(int(queue.order[0]))[:2] == b"\xff\xd8"  # a JPEG thumbnail

    # Another audit of the same folder is refused without --overwrite, and leaves the table alone.
    before = out.read_bytes()
    with pytest.raises(UserError, match="already exists"):
        audit(options)
    assert out.read_bytes() == before

    # The review's decisions: two names fixed, one image skipped. The audit after them holds them.
    corrections = tmp_path / "corrections.csv"
    corrections.write_text(f"path,label\n{FLIPPED[0]},cat\n{FLIPPED[1]},dog\n{FLIPPED[2]},skip\n")
    again = tmp_path / "again.csv"
    audit(AuditOptions(**{**options.__dict__, "out": again, "corrections": corrections}))
    table = read_table(again, true_label=True).set_index("path")
    assert len(table) == 80 and FLIPPED[2] not in table.index
    assert table.loc[FLIPPED[:2], "true_label"].tolist() == ["cat", "dog"]
    job = recorded_job(again)["corrections"]
    assert (job["changed"], job["skipped"], job["sha256"]) == (2, 1, read_corrections(corrections, mislabelled).sha256)


def test_bad_audit_options_are_one_line_before_any_work(mislabelled, tmp_path, capsys):
    run = ["audit", str(mislabelled), "--out", str(tmp_path / "a.csv")]
    for extra, message in [
        (["--out", str(tmp_path / "a.txt")], "must end in .csv or .parquet"),
        (["--folds", "41"], "--folds 41 needs at least 41 of each"),
        (["--image-size", "40", "--arch", "nope"], "invalid choice"),
        (["--weights", str(tmp_path / "none.h5")], "--weights is for pretrained backbones"),
        (["--arch", "mobilenetv3-small", "--weights", str(tmp_path / "none.h5")], "none.h5: no such file"),
    ]:
        assert main(run + extra) in (1, 2)
        assert message in capsys.readouterr().err
    assert main(run + ["--folds", "1"]) == 2 and "out of range" in capsys.readouterr().err
    assert main(["audit", str(tmp_path / "missing")]) == 1 and "is not a folder" in capsys.readouterr().err
    (tmp_path / "c.csv").write_text("path,label\ncat.1.png,maybe\n")
    assert main(run + ["--corrections", str(tmp_path / "c.csv")]) == 1
    assert "is not path,cat|dog|skip" in capsys.readouterr().err
    assert not (tmp_path / "a.csv").exists()


def test_audit_and_corrected_tables_keep_names_byte_for_byte(tmp_path):
    name = b"caf\xe9/\x1b[31m.jpg".decode("utf-8", "surrogateescape")  # not UTF-8, and an escape
    frame = read_table(_audit_csv(tmp_path / "in.csv", name), true_label=True)
    for out in (tmp_path / "out.csv", tmp_path / "out.parquet"):
        write_table(out, [frame])
        again = read_table(out, true_label=True)
        assert list(again.columns) == AUDIT_COLUMNS and again["label_issue"].tolist() == [True, False]
        assert again["path"][0] == (name if out.suffix == ".csv" else "caf\\xe9/\x1b[31m.jpg")
    assert (tmp_path / "out.csv").read_bytes() == (tmp_path / "in.csv").read_bytes()
    source = tmp_path / "label.csv"
    source.write_text(",".join(SOURCE_COLUMNS) + "\na.jpg,,0.9,cat,human,0.1,48,48,ok,\n")
    assert read_table(source)["source"].tolist() == ["human"]


def _audit_csv(path: Path, name: str) -> Path:
    with open(path, "w", encoding="utf-8", errors="surrogateescape", newline="") as f:
        f.write(",".join(AUDIT_COLUMNS) + "\n")
        f.write(f"{name},,0.9,dog,cat,0.9,,,ok,,0.1,True\n")
        f.write("dog.1.jpg,,,,dog,,,,error,empty file,,False\n")
    return path


# --- the corrections file that label and train read ----------------------------------------


def test_a_corrections_file_is_read_strictly_and_hashed(tmp_path):
    good = tmp_path / "corrections.csv"
    good.write_bytes(b"path,label\ncat.1.jpg,dog\nsub/x.jpg,skip\ncat.1.jpg,cat\n")
    read = read_corrections(good, tmp_path)
    assert read.labels == {"cat.1.jpg": "cat", "sub/x.jpg": "skip"}  # the last decision wins
    assert read.sha256 == hashlib.sha256(good.read_bytes()).hexdigest()
    assert read.record() == {"file": str(good.resolve()), "sha256": read.sha256}
    for content, message in [
        (b"file,label\na.jpg,cat\n", "is not a corrections file"),
        (b"path,label\na.jpg,cat\nb.jpg,horse\nc.jpg\n", "line 3 of"),
        (b"path,label\n\"a.jpg,cat\n", "line 2 of"),  # a quote never closed
    ]:
        bad = tmp_path / "bad.csv"
        bad.write_bytes(content)
        with pytest.raises(UserError, match=re.escape(message)):
            read_corrections(bad, tmp_path)
    for missing in (tmp_path / "nothing.csv", tmp_path):
        with pytest.raises(UserError, match="--corrections"):
            read_corrections(missing, tmp_path)



def test_the_audit_table_of_names_that_are_not_utf8(tmp_path):
    """audit_table builds its columns itself: a name that is not UTF-8 must survive it."""
    from catsdogs_batch.audit import audit_table
    from catsdogs_batch.train import LabelledImage

    name = b"cat.caf\xe9.jpg".decode("utf-8", "surrogateescape")
    kept = [LabelledImage(name, 0), LabelledImage("dog.1.jpg", 1)]
    unreadable = [{"path": b"dog.\xff.jpg".decode("utf-8", "surrogateescape"), "error": "empty file"}]
    items = kept + [LabelledImage(unreadable[0]["path"], 1)]
    table = audit_table(kept, np.array([0.9, 0.8]), np.array([0.1, 0.8]), np.array([True, False]), unreadable, items)
    assert table["path"].tolist() == [name, "dog.1.jpg", unreadable[0]["path"]]
    write_table(tmp_path / "a.csv", [table])
    assert name.encode("utf-8", "surrogateescape") in (tmp_path / "a.csv").read_bytes()


def test_a_corrections_file_that_is_not_a_regular_file_is_refused_at_once(tmp_path):
    """A FIFO would block the read forever; this runs in a child process with a timeout."""
    fifo = tmp_path / "corrections.csv"
    os.mkfifo(fifo)
    code = f"from catsdogs_batch.review import read_corrections; from pathlib import Path; read_corrections(Path({str(fifo)!r}), Path('.'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "is not a regular file" in done.stderr
