"""`catsdogs label` on generated photo folders: the uncertain band, sorting by copy, link and
move, same names in different subfolders, files already in the target, unreadable files and an
interrupted move that a rerun finishes."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from catsdogs_batch.labelling import label as label_module
from catsdogs_batch.cli import main
from catsdogs_batch.errors import UserError
from catsdogs_batch.labelling.label import Sorter, label_folder, partial_copy
from catsdogs_batch.options import EngineOptions, LabelOptions, Labelling
from catsdogs_batch.inference.tables import COLUMNS, SOURCE_COLUMNS, label_for, read_table

from conftest import write_image

QUIET = EngineOptions(progress=False, batch_size=4, shard_size=4)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A camera dump: the same file names in several subfolders, and two unreadable files."""
    folder = tmp_path / "photos"
    for n, album in enumerate(["2023", "2024", "2024/holiday"]):
        write_image(folder / album / "IMG_0001.jpg", 0, seed=n)
        write_image(folder / album / "IMG_0002.jpg", 1, seed=10 + n)
    write_image(folder / "cat.jpg", 0, seed=20)
    write_image(folder / "dog.png", 1, seed=21)
    (folder / "2024" / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not an image")
    return folder


def files_under(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_label_rule():
    band = Labelling(threshold=0.5, uncertain=(0.3, 0.7))
    assert [label_for(p, band) for p in (0.1, 0.3, 0.5, 0.7, 0.71)] == ["cat", "uncertain", "uncertain", "uncertain", "dog"]
    strict = Labelling(threshold=0.9)
    assert [label_for(p, strict) for p in (0.5, 0.89, 0.9)] == ["cat", "cat", "dog"]


def test_labels_every_image_with_an_uncertain_band(tiny_model, photos, tmp_path):
    plain = label_folder(LabelOptions(tiny_model, photos, tmp_path / "plain.csv", engine=QUIET))
    assert plain.rows == 10 and sum(plain.labels.values()) == 8 and set(plain.labels) <= {"cat", "dog"}
    assert sorted(plain.unreadable) == [("2024/empty.jpg", "empty file"), ("notes.jpg", "not an image file")]

    # The model is sure of its dogs (their p_dog, rounded to 6 places, are often equal) but less
    # of its cats: a band from between the two least doggy images to between the 4th and 5th
    # holds 3 images, with one cat below it and four dogs above; its edges lie halfway between
    # neighbours, so rounding cannot move an image across them.
    p = read_table(tmp_path / "plain.csv")["p_dog"].dropna().sort_values().to_numpy()
    assert p[0] < p[1] and p[3] < p[4], p
    low, high = (p[0] + p[1]) / 2, (p[3] + p[4]) / 2
    band = Labelling(threshold=(low + high) / 2, uncertain=(low, high))
    summary = label_folder(LabelOptions(tiny_model, photos, tmp_path / "band.parquet", band, engine=QUIET))
    table = read_table(tmp_path / "band.parquet")
    assert list(table.columns) == COLUMNS and len(table) == 10
    ok = table[table["status"] == "ok"]
    expected = np.where(
        ok["p_dog"].between(low, high), "uncertain", np.where(ok["p_dog"] >= band.threshold, "dog", "cat")
    )
    assert (ok["label"] == expected).all()
    assert summary.labels == {"cat": 1, "uncertain": 3, "dog": 4}
    confidence = np.select([ok["label"] == "dog", ok["label"] == "cat"], [ok["p_dog"], 1 - ok["p_dog"]],
                           np.maximum(ok["p_dog"], 1 - ok["p_dog"]))  # fmt: skip
    assert np.allclose(ok["confidence"], confidence)
    assert "3 uncertain" in summary.describe() and "2 errors" in summary.describe()


def test_sorting_by_copy_keeps_paths_and_never_overwrites(tiny_model, photos, tmp_path, capsys):
    sorted_dir = tmp_path / "sorted"
    for label in ("cat", "dog"):  # whatever 2023/IMG_0001.jpg is labelled, its place is taken
        (sorted_dir / label / "2023").mkdir(parents=True)
        (sorted_dir / label / "2023" / "IMG_0001.jpg").write_bytes(b"someone else's photo")
    before = files_under(photos)
    table = tmp_path / "labels.csv"
    args = ["label", str(tiny_model), str(photos), "--out", str(table), "--sort-into", str(sorted_dir), "--no-progress"]

    assert main(args) == 3  # a readable image was not placed
    printed, errors = capsys.readouterr()
    assert "1 readable images were not sorted" in errors
    assert "7 placed" in printed and "1 left in place" in printed
    assert "2023/IMG_0001.jpg: not sorted" in printed and "notes.jpg: not an image file" in printed
    assert files_under(photos) == before  # a copy leaves the folder alone
    rows = read_table(table).set_index("path")
    placed = files_under(sorted_dir)
    for label in ("cat", "dog"):
        assert placed.pop(f"{label}/2023/IMG_0001.jpg") == b"someone else's photo"
    assert placed == {f"{rows.loc[path, 'label']}/{path}": before[path] for path in rows.index
                      if rows.loc[path, "status"] == "ok" and path != "2023/IMG_0001.jpg"}  # fmt: skip


def test_link_mode_makes_hard_links(tiny_model, photos, tmp_path):
    summary = label_folder(LabelOptions(tiny_model, photos, tmp_path / "l.csv", sort_into=tmp_path / "s", mode="link", engine=QUIET))
    assert summary.sorting.placed == 8
    table = read_table(tmp_path / "l.csv")
    for row in table[table["status"] == "ok"].itertuples():
        assert os.path.samefile(photos / row.path, tmp_path / "s" / row.label / row.path)


def test_an_interrupted_move_finishes_on_rerun_with_every_image_exactly_once(tiny_model, photos, tmp_path, monkeypatch, capsys):
    before = files_under(photos)
    sorted_dir = tmp_path / "sorted"
    table = tmp_path / "labels.csv"
    args = ["label", str(tiny_model), str(photos), "--out", str(table), "--sort-into", str(sorted_dir),
            "--mode", "move", "--uncertain", "0.45", "0.55", "--no-progress"]  # fmt: skip

    removed = []

    def remove_then_stop(source: Path, target: Path) -> None:  # Ctrl-C after the third image is in place
        if len(removed) == 2:
            raise KeyboardInterrupt
        removed.append(source)
        source.unlink()

    monkeypatch.setattr(label_module, "_remove_source", remove_then_stop)
    assert main(args) == 130
    moved, left = files_under(sorted_dir), files_under(photos)
    assert len(moved) == 3 and len(left) == 10 - 2  # one image is in both places
    assert (tmp_path / "labels.csv.sorting.json").exists()
    monkeypatch.undo()

    assert main(args) == 0  # the same command again
    printed = capsys.readouterr().out
    assert "0 predicted" in printed and "5 placed, 3 already there" in printed
    assert set(files_under(photos)) == {"2024/empty.jpg", "notes.jpg"}  # unreadable: left in place
    rows = read_table(table).set_index("path")
    ok = rows[rows["status"] == "ok"]
    assert files_under(sorted_dir) == {f"{ok.loc[p, 'label']}/{p}": before[p] for p in ok.index}
    assert not (tmp_path / "labels.csv.sorting.json").exists()
    assert main(args) == 1  # finished: a new run must say --overwrite
    assert "already exists" in capsys.readouterr().err


def test_a_move_across_file_systems_copies_before_removing(tmp_path, monkeypatch):
    real_link = os.link

    def link_within_a_folder_only(src, dst):  # as if target were another file system
        if Path(src).parent != Path(dst).parent:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_link(src, dst)

    monkeypatch.setattr(os, "link", link_within_a_folder_only)
    photo = write_image(tmp_path / "in" / "a" / "x.jpg", 1)
    content = photo.read_bytes()
    mover = Sorter(tmp_path / "in", tmp_path / "out", "move")
    (tmp_path / "out" / "dog" / "a").mkdir(parents=True)
    partial_copy(tmp_path / "out" / "dog" / "a" / "x.jpg").write_bytes(b"half a file from a killed run")
    mover.place("a/x.jpg", "dog")
    assert not photo.exists() and files_under(tmp_path / "out") == {"dog/a/x.jpg": content}

    write_image(tmp_path / "in" / "y.jpg", 0)
    with pytest.raises(UserError, match="different file systems"):
        Sorter(tmp_path / "in", tmp_path / "out", "link").place("y.jpg", "cat")


def test_a_folder_or_fifo_where_a_photo_goes_is_named_as_such(tmp_path):
    photo = write_image(tmp_path / "in" / "x.jpg", 1)
    (tmp_path / "out" / "dog" / "x.jpg").mkdir(parents=True)  # a folder in the photo's place
    os.mkfifo(tmp_path / "out" / "dog" / "y.jpg")
    write_image(tmp_path / "in" / "y.jpg", 1)
    for mode in ("copy", "move"):
        sorter = Sorter(tmp_path / "in", tmp_path / "out", mode)
        sorter.place("x.jpg", "dog")
        sorter.place("y.jpg", "dog")
        (x, x_why), (y, y_why) = sorter.counts.problems
        assert (x, y) == ("x.jpg", "y.jpg") and "other content" not in x_why + y_why
        assert re.fullmatch(r"not sorted: \S+/dog/x\.jpg is a folder, in the place of the photo", x_why), x_why
        assert re.fullmatch(r"not sorted: \S+/dog/y\.jpg is not a regular file, in the place of the photo", y_why), y_why
        assert photo.exists()


def test_bad_options_are_refused_before_any_work(tiny_model, photos, tmp_path, capsys):
    run = ["label", str(tiny_model), str(photos), "--out", str(tmp_path / "t.csv")]
    for extra, message in [
        (["--sort-into", str(photos / "sorted")], "overlaps"),
        (["--sort-into", str(photos)], "overlaps"),
        (["--mode", "move"], "--mode needs --sort-into"),
        (["--uncertain", "0.7", "0.3"], "LOW <= HIGH"),
    ]:
        assert main(run + extra) == 1
        assert message in capsys.readouterr().err
    assert main(run + ["--threshold", "1.5"]) == 2  # a usage error, from the parser
    assert "--threshold: 1.5 is out of range" in capsys.readouterr().err
    assert not (tmp_path / "t.csv").exists()


# --- trust: a move never loses a photo, and never reaches outside the folder ---------------


def test_a_move_into_a_folder_that_links_back_keeps_every_photo(tiny_model, photos, tmp_path, capsys):
    """DIR/cat/2024 and DIR/dog/2024 are links to SOURCE/2024: "placing" a photo there would
    find the photo itself, and removing the source would delete the only copy."""
    before = files_under(photos)
    sorted_dir = tmp_path / "sorted"
    for label in ("cat", "dog"):
        (sorted_dir / label).mkdir(parents=True)
        os.symlink(photos / "2024", sorted_dir / label / "2024")
    args = ["label", str(tiny_model), str(photos), "--out", str(tmp_path / "t.csv"),
            "--sort-into", str(sorted_dir), "--mode", "move", "--no-progress"]  # fmt: skip
    assert main(args) == 3
    printed = capsys.readouterr().out
    assert "2024/IMG_0001.jpg: not sorted:" in printed and "is a link" in printed
    left = files_under(photos)
    assert {p: before[p] for p in before if p.startswith("2024/")} == {p: left[p] for p in left if p.startswith("2024/")}
    assert all(files_under(sorted_dir / label / "2024") == {
        p.removeprefix("2024/"): b for p, b in before.items() if p.startswith("2024/")
    } for label in ("cat", "dog"))  # untouched through the links  # fmt: skip


def test_a_move_leaves_what_links_point_to_where_it_is(tiny_model, tmp_path, capsys):
    """A linked folder and a linked file inside SOURCE point elsewhere: they are predicted and
    listed, a copy copies them, but a move leaves them (and their targets) alone."""
    elsewhere = tmp_path / "elsewhere"
    write_image(elsewhere / "album" / "a.jpg", 0, seed=1)
    write_image(elsewhere / "single.jpg", 1, seed=2)
    source = tmp_path / "inbox"
    write_image(source / "own.jpg", 1, seed=3)
    os.symlink(elsewhere / "album", source / "album")
    os.symlink(elsewhere / "single.jpg", source / "single.jpg")
    outside = files_under(elsewhere)

    copied = label_folder(LabelOptions(tiny_model, source, tmp_path / "c.csv", sort_into=tmp_path / "copies", engine=QUIET))
    assert copied.rows == 3 and copied.sorting.placed == 3
    assert sorted(files_under(tmp_path / "copies").values()) == sorted([*outside.values(), (source / "own.jpg").read_bytes()])

    args = ["label", str(tiny_model), str(source), "--out", str(tmp_path / "m.csv"),
            "--sort-into", str(tmp_path / "moved"), "--mode", "move", "--no-progress"]  # fmt: skip
    assert main(args) == 3
    printed, errors = capsys.readouterr()
    assert "album/a.jpg: inside a linked folder: left in place" in printed
    assert "single.jpg: a link: left in place" in printed and "2 readable images were not sorted" in errors
    assert files_under(elsewhere) == outside and (source / "album").is_symlink() and (source / "single.jpg").is_symlink()
    moved = [p for p in (tmp_path / "moved").rglob("*") if not p.is_dir()]
    assert [p.name for p in moved] == ["own.jpg"] and not moved[0].is_symlink()
    assert not (source / "own.jpg").exists()


def test_a_refused_label_run_leaves_no_job_behind(photos, tmp_path, capsys):
    table = tmp_path / "t.csv"
    args = ["label", str(tmp_path / "no-model"), str(photos), "--out", str(table), "--sort-into", str(tmp_path / "s")]
    assert main(args) == 1
    assert "no model" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]


def test_a_hand_edited_table_cannot_send_files_anywhere(tiny_model, tmp_path, monkeypatch, capsys):
    """An interrupted move is continued from its table; rows edited to name other labels, hidden
    names or paths out of the folder are refused one by one, and no photo is lost."""
    source = tmp_path / "src"
    for n in range(3):
        write_image(source / f"cat.{n}.jpg", 0, seed=n)
    write_image(source / ".cat.0.jpg.catsdogs-partial", 1, seed=9, format="JPEG")  # hidden: the walk skips it
    sorted_dir, table = tmp_path / "D", tmp_path / "T.csv"
    (tmp_path / "elsewhere").mkdir()
    args = ["label", str(tiny_model), str(source), "--out", str(table), "--sort-into", str(sorted_dir),
            "--mode", "move", "--no-progress"]  # fmt: skip

    def stop(source: Path, target: Path) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(label_module, "_remove_source", stop)
    assert main(args) == 130  # the first photo is in place, its source not yet removed
    monkeypatch.undo()
    os.symlink(tmp_path / "elsewhere", sorted_dir / "x")
    header = ",".join(COLUMNS)
    table.write_text(header + "\n" + "".join(f"{path},,0.9,{label},0.9,,,,48,48,ok,\n" for path, label in [
        (".cat.0.jpg.catsdogs-partial", "dog"), ("cat.0.jpg", "dog"), ("cat.1.jpg", str(tmp_path / "elsewhere")),
        ("cat.2.jpg", "../outside"), ("cat.2.jpg", "x/y"), ("../../etc/passwd", "dog"),
    ]))  # fmt: skip
    before = files_under(source)
    assert main(args) == 3
    printed = capsys.readouterr().out
    assert printed.count("not one of cat, dog, neither, both, uncertain") == 3 and "not a path the folder's walk gives" in printed
    assert files_under(tmp_path / "elsewhere") == {} and not (tmp_path / "outside").exists()
    after = files_under(source) | {p.split("/", 1)[1]: b for p, b in files_under(sorted_dir).items()}
    assert after == before  # every photo is somewhere, once


def test_a_bad_sort_target_is_refused_before_predicting(tiny_model, photos, tmp_path, capsys):
    (tmp_path / "a-file").write_text("mine")
    args = ["label", str(tiny_model), str(photos), "--out", str(tmp_path / "t.csv"), "--sort-into"]
    for target in (tmp_path / "a-file", tmp_path / "a-file" / "sorted"):
        assert main(args + [str(target)]) == 1
        assert "a-file is not a folder" in capsys.readouterr().err and not (tmp_path / "t.csv").exists()
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    assert main(args + [str(tmp_path / "dangling")]) == 1
    assert "a link to nothing" in capsys.readouterr().err and not (tmp_path / "t.csv").exists()


def test_a_copy_killed_after_placing_leaves_no_hidden_duplicate(tiny_model, photos, tmp_path, capsys):
    sorted_dir, table = tmp_path / "s", tmp_path / "t.csv"
    args = ["label", str(tiny_model), str(photos), "--out", str(table), "--sort-into", str(sorted_dir), "--no-progress"]
    assert main(args) == 0
    placed = next(sorted_dir.glob("*/cat.jpg"))
    os.link(placed, partial_copy(placed))  # killed between link and unlink
    # and its sorting's job file still there, the record it writes when it finishes
    table.with_name("t.csv.sorting.json").write_text(table.with_name("t.csv.sorted.json").read_text())
    assert main(args) == 0
    assert "0 placed, 8 already there" in capsys.readouterr().out
    assert not list(sorted_dir.rglob(".*"))


def test_damaged_job_files_are_one_line_and_overwrite_recovers(tiny_model, photos, tmp_path, capsys):
    table = tmp_path / "t.csv"
    args = ["label", str(tiny_model), str(photos), "--out", str(table), "--sort-into", str(tmp_path / "s"), "--no-progress"]
    table.with_name("t.csv.sorting.json").write_text("garbage")
    assert main(args) == 1
    assert "is damaged" in capsys.readouterr().err
    parts = table.with_name("t.csv.parts")
    parts.mkdir()
    (parts / "job.json").write_text("{")
    assert main(args + ["--overwrite"]) == 0
    assert len(read_table(table)) == 10 and not parts.exists()


# --- corrections: a person's label wins ------------------------------------------------------


def test_corrections_win_when_sorting_and_skip_stays_in_place(tiny_model, photos, tmp_path, caplog):
    """A review's corrections.csv: its labels are sorted by (the model's are not asked), a
    person's neither and both go to their folders, `skip` images stay where they are, and the
    table says who gave each label."""
    plain = tmp_path / "plain.csv"
    label_folder(LabelOptions(tiny_model, photos, plain, engine=QUIET))
    model = read_table(plain).set_index("path")["label"]
    other = {"cat": "dog", "dog": "cat"}
    corrections = tmp_path / "corrections.csv"
    corrections.write_text(
        "path,label\n"
        f"2023/IMG_0001.jpg,{other[model['2023/IMG_0001.jpg']]}\n"  # the model was wrong
        f"cat.jpg,{model['cat.jpg']}\n"  # the model was right
        "2024/IMG_0002.jpg,skip\n"
        "2024/holiday/IMG_0001.jpg,neither\n"
        "dog.png,both\n"
        "gone.jpg,dog\n"  # not in the folder: counted, not an error
    )  # fmt: skip
    before = files_under(photos)
    table, sorted_dir = tmp_path / "labels.csv", tmp_path / "sorted"
    args = ["label", str(tiny_model), str(photos), "--out", str(table), "--sort-into", str(sorted_dir),
            "--corrections", str(corrections), "--no-progress"]  # fmt: skip
    assert main(args) == 0

    rows = read_table(table).set_index("path")
    assert list(rows.reset_index().columns) == SOURCE_COLUMNS
    human = rows[rows["source"] == "human"]
    assert dict(human["label"]) == {
        "2023/IMG_0001.jpg": other[model["2023/IMG_0001.jpg"]], "cat.jpg": model["cat.jpg"], "2024/IMG_0002.jpg": "skip",
        "2024/holiday/IMG_0001.jpg": "neither", "dog.png": "both",
    }  # fmt: skip
    assert rows.loc[["2024/holiday/IMG_0001.jpg", "dog.png"], "confidence"].isna().all()  # no cat-or-dog answer
    assert (rows.loc[rows["status"] == "ok", "source"] != "").all() and (rows.loc[rows["status"] != "ok", "source"] == "").all()
    machine = rows[rows["source"] == "model"]
    assert (machine["label"] == model[machine.index]).all()
    assert np.isnan(rows.loc["2024/IMG_0002.jpg", "confidence"])  # skip: the model gave no such answer
    p = rows.loc["2023/IMG_0001.jpg", "p_dog"]
    assert rows.loc["2023/IMG_0001.jpg", "confidence"] == pytest.approx(p if human.loc["2023/IMG_0001.jpg", "label"] == "dog" else 1 - p)
    sorted_files = files_under(sorted_dir)
    assert sorted_files == {f"{rows.loc[path, 'label']}/{path}": before[path] for path in rows.index
                            if rows.loc[path, "status"] == "ok" and path != "2024/IMG_0002.jpg"}  # fmt: skip
    assert files_under(photos) == before

    job = json.loads(table.with_name("labels.csv.job.json").read_text())
    sha = hashlib.sha256(corrections.read_bytes()).hexdigest()
    assert job["corrections_sha256"] == sha
    assert "gone.jpg" not in caplog.text and "1 corrections name no readable image" in caplog.text

    again = tmp_path / "again.parquet"
    summary = label_folder(LabelOptions(tiny_model, photos, again, engine=QUIET, corrections=corrections))
    assert read_table(again).set_index("path")["source"].to_dict() == rows["source"].to_dict()
    counts = summary.corrections
    assert (counts.given, counts.applied, counts.changed, counts.unknown) == (6, 5, 4, 1)  # skip, neither, both change it too
    assert summary.labels["skip"] == 1 and "1 skip" in summary.describe()


def test_hidden_files_are_left_out_and_counted_once(tiny_model, photos, tmp_path, caplog):
    """A hidden photo has no row (as before), but the run says how many hidden names it left out."""
    write_image(photos / ".cat.9.jpg", 0)
    write_image(photos / "2024" / ".trash" / "dog.1.jpg", 1)
    (photos / "._cat.jpg").write_bytes(b"AppleDouble")
    with caplog.at_level("INFO"):
        summary = label_folder(LabelOptions(tiny_model, photos, tmp_path / "labels.csv", engine=QUIET))
    assert summary.rows == 10 and not any(".cat.9" in p for p in read_table(tmp_path / "labels.csv")["path"])
    said = [m for m in caplog.messages if m.startswith("skipped")]
    assert said == [f"skipped 2 hidden files and 1 hidden folder in {photos} (names starting with '.')"]


def test_a_skipped_image_has_no_confidence_in_the_table():
    """`skip` is a person's "neither": the table keeps the model's p_dog but gives no confidence,
    which would read as the model's certainty of a label it never gave; cat and dog keep theirs."""
    from catsdogs_batch.inference.tables import DTYPES

    frame = pd.DataFrame({
        "path": ["a.jpg", "b.jpg", "c.jpg", "d.jpg"], "id": [None] * 4, "p_dog": [0.9, 0.9, 0.2, np.nan],
        "label": ["dog", "dog", "cat", ""], "confidence": [0.9, 0.9, 0.8, np.nan],
        "imagenet_dog": [np.nan] * 4, "imagenet_cat": [np.nan] * 4, "imagenet_top": [""] * 4, "width": [48, 48, 48, None],
        "height": [48, 48, 48, None], "status": ["ok", "ok", "ok", "error"], "error": ["", "", "", "empty file"],
    }).astype(DTYPES)  # fmt: skip
    relabelled = label_module.relabeller({"a.jpg": "skip", "b.jpg": "cat", "d.jpg": "dog"})(frame).set_index("path")
    assert relabelled["label"].tolist() == ["skip", "cat", "cat", ""]
    assert relabelled["source"].tolist() == ["human", "human", "model", ""]
    assert relabelled["p_dog"].tolist()[:3] == [0.9, 0.9, 0.2]
    assert relabelled.loc["a.jpg", "confidence"] is pd.NA or np.isnan(relabelled.loc["a.jpg", "confidence"])
    assert relabelled.loc[["b.jpg", "c.jpg"], "confidence"].tolist() == pytest.approx([0.1, 0.8])


def test_an_interrupted_sorting_continues_only_with_the_same_corrections(tiny_model, photos, tmp_path, monkeypatch, capsys):
    corrections = tmp_path / "corrections.csv"
    corrections.write_text("path,label\ncat.jpg,dog\n")
    table, sorted_dir = tmp_path / "labels.csv", tmp_path / "sorted"
    args = ["label", str(tiny_model), str(photos), "--out", str(table), "--sort-into", str(sorted_dir),
            "--mode", "move", "--corrections", str(corrections), "--no-progress"]  # fmt: skip

    def stop(source: Path, target: Path) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(label_module, "_remove_source", stop)
    assert main(args) == 130
    monkeypatch.undo()
    job = json.loads(table.with_name("labels.csv.sorting.json").read_text())
    assert job["corrections"] == {"file": str(corrections.resolve()), "sha256": hashlib.sha256(corrections.read_bytes()).hexdigest()}
    corrections.write_text("path,label\ncat.jpg,cat\n")  # other corrections: not the interrupted job
    assert main(args) == 1
    assert "unfinished sorting with other settings" in capsys.readouterr().err
    corrections.write_text("path,label\ncat.jpg,dog\n")
    assert main(args) == 0
    assert (sorted_dir / "dog" / "cat.jpg").exists() and not (photos / "cat.jpg").exists()


def test_a_bad_corrections_file_is_refused_before_predicting(tiny_model, photos, tmp_path, capsys):
    corrections = tmp_path / "corrections.csv"
    args = ["label", str(tiny_model), str(photos), "--out", str(tmp_path / "t.csv"), "--corrections", str(corrections)]
    assert main(args) == 1 and "No such file" in capsys.readouterr().err
    corrections.write_text("path,label\ncat.jpg,uncertain\n")
    assert main(args) == 1 and "is not path,cat|dog|neither|both|skip" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrections.csv", "photos"]


def test_corrections_in_a_folder_with_names_that_are_not_utf8(tiny_model, photos, tmp_path):
    odd = photos / os.fsdecode(b"caf\xe9.jpg")
    shutil.copyfile(photos / "cat.jpg", odd)
    corrections = tmp_path / "corrections.csv"
    with open(corrections, "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write(f"path,label\n{odd.name},dog\n")
    table = tmp_path / "labels.csv"
    args = ["label", str(tiny_model), str(photos), "--out", str(table), "--corrections", str(corrections), "--no-progress"]
    assert main(args) == 0
    rows = read_table(table).set_index("path")
    assert rows.loc[odd.name, "label"] == "dog" and rows.loc[odd.name, "source"] == "human"


@pytest.mark.parametrize("names", [[b"b\xff.jpg", b"b\\xff.jpg"], [b"b\xff.jpg"]], ids=["with-its-escape", "alone"])
def test_a_parquet_move_sorts_names_that_are_not_utf8(tiny_model, tmp_path, names, capsys):
    """A raw 0xFF byte and the four characters `\\xff` are two names, both sorted, in either format."""
    folder = tmp_path / "photos"
    for n, name in enumerate(names):
        write_image(folder / os.fsdecode(name), n % 2, seed=n)
    before = {os.fsdecode(name): (folder / os.fsdecode(name)).read_bytes() for name in names}
    table, sorted_dir = tmp_path / "labels.parquet", tmp_path / "sorted"
    args = ["label", str(tiny_model), str(folder), "--out", str(table), "--sort-into", str(sorted_dir),
            "--mode", "move", "--no-progress"]  # fmt: skip

    assert main(args) == 0
    assert f"{len(names)} placed, 0 already there, 0 left in place" in capsys.readouterr().out
    assert os.listdir(folder) == []
    labels = read_table(table).set_index("path")["label"]
    assert sorted(labels.index) == sorted(before)
    assert {name: (sorted_dir / labels[name] / name).read_bytes() for name in before} == before


def sorting_args(model: Path, folder: Path, tmp_path: Path, name: str, mode: str) -> list[str]:
    """`catsdogs label` sorting `folder` with a table and a sorted folder of its own."""
    return ["label", str(model), str(folder), "--out", str(tmp_path / f"{name}.csv"),
            "--sort-into", str(tmp_path / name), "--mode", mode, "--no-progress", "--no-content-check"]  # fmt: skip


def sorted_photos(photos: Path, *sorted_dirs: Path) -> list[tuple[str, bytes]]:
    """(path relative to the photo folder, content) of every file in it and in the sorted folders."""
    found = list(files_under(photos).items())
    return sorted(found + [(p.split("/", 1)[1], c) for d in sorted_dirs if d.exists() for p, c in files_under(d).items()])


@pytest.mark.parametrize("first_mode, second_mode", [("move", "move"), ("move", "copy"), ("copy", "move"), ("copy", "copy")])
def test_a_second_run_sorting_the_folder_a_move_is_sorting_stops_at_once(tiny_model, photos, tmp_path, monkeypatch, capsys, first_mode, second_mode):
    """Two runs sorting one folder at once (other tables, other sorted folders): while one moves
    files out, the other stops with one line, and every photo is sorted once; copies share it."""
    before = files_under(photos)
    first = sorting_args(tiny_model, photos, tmp_path, "first", first_mode)
    second = sorting_args(tiny_model, photos, tmp_path, "second", second_mode)
    place, answers = Sorter.place, []

    def place_while_the_second_runs(self: Sorter, relative: str, label: str) -> None:
        if not answers:  # the first run is sorting: start the second now
            answers.append(None)
            answers[0] = (main(second), capsys.readouterr())
        place(self, relative, label)

    monkeypatch.setattr(Sorter, "place", place_while_the_second_runs)
    assert main(first) == 0
    assert "8 placed, 0 already there, 0 left in place" in capsys.readouterr().out
    code, (printed, errors) = answers[0]
    if "move" in (first_mode, second_mode):
        assert code == 1 and errors.count("\n") == 1 and printed == ""
        assert errors.startswith("catsdogs label: error: another catsdogs run is") and str(photos) in errors, errors
        assert not (tmp_path / "second").exists() and not (tmp_path / "second.csv").exists()
        copies = 1 if first_mode == "move" else 2  # a copy leaves the photo where it was
    else:
        assert code == 0 and "8 placed" in printed
        copies = 3
    unreadable = ["2024/empty.jpg", "notes.jpg"]  # never sorted
    readable = [(path, content) for path, content in before.items() if path not in unreadable]
    expected = readable * copies + [(path, before[path]) for path in unreadable]
    assert sorted_photos(photos, tmp_path / "first", tmp_path / "second") == sorted(expected)


@pytest.mark.parametrize("killed", ["before the table's record", "after the table"])
def test_a_move_killed_once_its_table_is_written_is_finished_by_the_rerun(tiny_model, photos, tmp_path, monkeypatch, capsys, killed):
    """Issue 31, item 7: killed right after the table was written, the rerun said "t.csv already
    exists: pass --overwrite", sorted nothing and left t.csv.parts/ (and no t.csv.job.json)."""
    import catsdogs_batch.inference.shards as shards
    import catsdogs_batch.labelling.label as label

    before = files_under(photos)
    args = sorting_args(tiny_model, photos, tmp_path, "sorted", "move")
    table = tmp_path / "sorted.csv"
    if killed == "before the table's record":
        write_record = shards.atomic_write_json

        def killed_at_the_record(path, data):
            if path == table.with_name(table.name + ".job.json"):
                raise KeyboardInterrupt  # as kill -9 between the table and its record
            write_record(path, data)

        monkeypatch.setattr(shards, "atomic_write_json", killed_at_the_record)
    else:
        predict = label.predict_folder

        def killed_after(*args, **kwargs):
            predict(*args, **kwargs)
            raise KeyboardInterrupt

        monkeypatch.setattr(label, "predict_folder", killed_after)
    assert main(args) == 130 and table.exists() and files_under(photos) == before
    monkeypatch.undo()
    capsys.readouterr()
    assert main(args) == 0, capsys.readouterr().err
    assert "8 placed" in capsys.readouterr().out
    assert sorted_photos(photos, tmp_path / "sorted") == sorted(before.items())
    assert set(files_under(photos)) == {"2024/empty.jpg", "notes.jpg"}
    assert not table.with_name("sorted.csv.parts").exists() and table.with_name("sorted.csv.job.json").exists()
    assert table.with_name("sorted.csv.sorted.json").exists()


def test_the_lock_of_a_killed_move_never_blocks_the_next(tiny_model, photos, tmp_path, capsys):
    """The lock is the folder's own, held by a process: nothing is written into the folder, and
    kill -9 of the run that holds it frees it."""
    before = files_under(photos)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from catsdogs_batch.labelling.label import sorting_lock
        with sorting_lock({str(photos)!r}, "move"):  # as a move that is sorting it
            print("held", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline() == "held\n"
        args = sorting_args(tiny_model, photos, tmp_path, "sorted", "move")
        assert main(args) == 1
        assert f"another catsdogs run is sorting {photos}" in capsys.readouterr().err
        assert files_under(photos) == before and not (tmp_path / "sorted").exists()
    finally:
        holder.kill()  # kill -9
        holder.wait()
    assert main(args) == 0
    assert "8 placed" in capsys.readouterr().out
    assert set(files_under(photos)) == {"2024/empty.jpg", "notes.jpg"}


# `catsdogs ARGV` killed -9 just before the temporary file of ENDING is renamed onto it
KILLED_BEFORE_A_RENAME = """
import os, signal, sys
from catsdogs_batch.cli import main
replace = os.replace
def killed_there(source, target, **kwargs):
    if os.fsdecode(target).endswith(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)
    replace(source, target, **kwargs)
os.replace = killed_there
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow  # a subprocess each: TensorFlow starts four times
@pytest.mark.parametrize("written", ["sorted.csv", "sorted.csv.sorting.json", "sorted.csv.job.json", "sorted.csv.sorted.json"])
def test_what_a_run_killed_while_writing_leaves_half_written_goes_with_the_rerun(tiny_model, photos, tmp_path, capsys, written):
    """Issue 31, found by the property tests: killed -9 while a table or one of its side files was
    being written (its temporary file `.<name>.XXXXXXXX.tmp` complete, not yet renamed), the run
    left that file beside the table for good. The rerun removes it (under the table's lock), and
    nothing else: not a file of another name, not a link."""
    args = sorting_args(tiny_model, photos, tmp_path, "sorted", "move")
    killed = subprocess.run([sys.executable, "-c", KILLED_BEFORE_A_RENAME, written, *args], capture_output=True)
    assert killed.returncode == -9, killed.stderr[-500:]
    left = [n for n in os.listdir(tmp_path) if n.startswith(f".{written}.") and n.endswith(".tmp")]
    assert len(left) == 1, os.listdir(tmp_path)
    (tmp_path / ".sorted.csv.mine.tmp").write_text("a file of mine")
    os.symlink(photos / "cat.jpg", tmp_path / ".sorted.csv.12345678.tmp")
    assert main(args) == 0, capsys.readouterr().err
    assert set(os.listdir(tmp_path)) == {"photos", "sorted", "sorted.csv", "sorted.csv.job.json", "sorted.csv.sorted.json",
                                         ".sorted.csv.mine.tmp", ".sorted.csv.12345678.tmp"}  # fmt: skip
    assert set(files_under(photos)) == {"2024/empty.jpg", "notes.jpg"} and len(files_under(tmp_path / "sorted")) == 8


@pytest.mark.parametrize("held, sorted_here", [
    ("photos", "photos/2024"),  # a move of the folder, then one of a folder inside it
    ("photos/2024", "photos"),  # a move of a folder inside, then one of the whole
    ("photos", None),  # a move, then a label without sorting that would see its files go
])  # fmt: skip
def test_a_move_locks_the_folders_inside_and_around_it(tiny_model, photos, tmp_path, capsys, held, sorted_here):
    """Issue 31, item 13: a move of a folder and a move of a folder inside it were not locked
    against each other (nothing lost, but "file not found" rows); nor a label without sorting."""
    from catsdogs_batch.labelling.label import sorting_lock

    before = files_under(photos)
    folder = tmp_path / (sorted_here or "photos")
    args = sorting_args(tiny_model, folder, tmp_path, "sorted", "move")
    if sorted_here is None:
        args = args[: args.index("--sort-into")] + ["--no-progress", "--no-content-check"]
    with sorting_lock(tmp_path / held, "move"):  # as a move of that folder holds it
        assert main(args) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "another catsdogs run is" in error, error
    assert files_under(photos) == before and not (tmp_path / "sorted").exists() and not (tmp_path / "sorted.csv").exists()
    assert main(args) == 0  # once the other has finished


@pytest.mark.slow
def test_two_moves_of_one_folder_started_together(tiny_model, tmp_path):
    """The report's case, as two real processes: however they meet, no photo is lost or reported
    missing (exit 3); a run either sorts everything or stops with one line before touching any."""
    photos = tmp_path / "photos"
    for n in range(48):
        write_image(photos / f"{n // 10}" / f"{n}.jpg", n % 2, seed=n)
    before = files_under(photos)
    runs = [subprocess.Popen([sys.executable, "-m", "catsdogs_batch.cli", *sorting_args(tiny_model, photos, tmp_path, name, "move")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in ("first", "second")]  # fmt: skip
    finished = [(run.wait(timeout=300), *run.communicate()) for run in runs]
    for code, printed, errors in finished:
        assert code in (0, 1), errors
        if code == 1:  # stopped by the other's lock, or started once the other had emptied the folder
            assert "another catsdogs run is sorting" in errors or "no image files in" in errors, errors
        else:
            assert "48 placed, 0 already there, 0 left in place" in printed
    assert 0 in [code for code, _, _ in finished]
    assert sorted_photos(photos, tmp_path / "first", tmp_path / "second") == sorted(before.items())


@pytest.mark.parametrize("mode", ["copy", "link", "move"])
def test_names_up_to_the_file_systems_limit_are_sorted_in_every_mode(tmp_path, mode):
    """Issue 31, item 9: a copy's hidden partial name outgrew 255 bytes for names of 238-255."""
    names = ["c" * 251 + ".jpg", "x" + "é" * 125 + ".jpg"]  # 255 bytes each (é is two in UTF-8)
    for k, name in enumerate(names):
        assert len(os.fsencode(name)) == 255
        write_image(tmp_path / "in" / name, k % 2, seed=k)
    content = {name: (tmp_path / "in" / name).read_bytes() for name in names}
    sorter = Sorter(tmp_path / "in", tmp_path / "out", mode)
    for name in names:
        sorter.place(name, "cat")
    assert files_under(tmp_path / "out") == {f"cat/{name}": data for name, data in content.items()}
    assert all(len(os.fsencode(partial_copy(tmp_path / "out" / "cat" / name).name)) < 64 for name in names)
