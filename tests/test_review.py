"""`catsdogs review`: the queue's order, the corrections file, what the server refuses, a table of
100,000 rows served page by page, and the page itself in a headless Chromium."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from catsdogs_batch.errors import UserError
from catsdogs_batch.files import TEXT, CsvWriter
from catsdogs_batch.options import ReviewOptions
from catsdogs_batch.data.corrections import Corrections
from catsdogs_batch.labelling.review import ReviewServer, Session, create_app, open_session
from catsdogs_batch.labelling.review_queue import review_queue
from catsdogs_batch.inference.tables import COLUMNS, EVALUATE_COLUMNS, read_table

from conftest import write_image

REPOSITORY = Path(__file__).resolve().parents[1]
# Starlette 1.x prefers httpx2 for its TestClient and warns about httpx, which older ones need
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")


def write_table(path: Path, rows: list[dict], true_label: bool = False) -> Path:
    """A results table (evaluate's, with `true_label`) from rows giving path, p_dog and
    optionally label, true_label, status and error; the rest follows from p_dog."""
    with open(path, "w", newline="", **TEXT) as f:
        writer = CsvWriter(f)
        columns = EVALUATE_COLUMNS if true_label else COLUMNS
        writer.writerow(columns)
        for row in rows:
            p = row.get("p_dog")
            full = {
                "id": "", "width": 48 if p is not None else "", "height": 48 if p is not None else "",
                "status": "ok", "error": "", "true_label": "", "imagenet_dog": "", "imagenet_cat": "", "imagenet_top": "",
                "label": "" if p is None else ("dog" if p >= 0.5 else "cat"),
                "confidence": "" if p is None else max(p, 1 - p),
                **{k: v for k, v in row.items()},
            }  # fmt: skip
            writer.writerow("" if full[c] is None else full[c] for c in columns)
    return path


def opened(options: ReviewOptions) -> Session:
    """open_session's session, its lock released at once: for a test that holds no other."""
    with open_session(options) as session:
        return session


def read_corrections(path: Path) -> list[list[str]]:
    with open(path, newline="", **TEXT) as f:
        return list(csv.reader(f))


# --- the order -----------------------------------------------------------------------------


def test_uncertain_band_first_then_the_most_confident_disagreements(tmp_path):
    table = write_table(tmp_path / "results.csv", [
        {"path": "a.jpg", "p_dog": 0.55, "true_label": "dog"},  # band, 0.05 from 0.5
        {"path": "b.jpg", "p_dog": 0.30, "true_label": "dog"},  # band, 0.20
        {"path": "c.jpg", "p_dog": 0.95, "true_label": "cat"},  # wrong, 0.95 sure
        {"path": "d.jpg", "p_dog": 0.02, "true_label": "dog"},  # wrong, 0.98 sure
        {"path": "e.jpg", "p_dog": 0.50, "true_label": ""},  # band, 0.00
        {"path": "f.jpg", "p_dog": None, "status": "error", "error": "not an image file"},
        {"path": "g.jpg", "p_dog": 0.90, "true_label": "dog"},  # right and sure: not shown
        {"path": "h.jpg", "p_dog": 0.10, "true_label": "cat"},
        {"path": "i.jpg", "p_dog": 0.79, "true_label": "cat"},  # band (and wrong): once, in the band
        {"path": "j.jpg", "p_dog": 0.85, "true_label": "cat"},  # wrong, 0.85 sure
        {"path": "k.jpg", "p_dog": 0.02, "true_label": "dog"},  # as sure as d.jpg: after it, in table order
    ], true_label=True)  # fmt: skip
    queue = review_queue(read_table(table, true_label=True), (0.2, 0.8))
    assert [queue.paths[r] for r in queue.order] == ["e.jpg", "a.jpg", "b.jpg", "i.jpg", "d.jpg", "k.jpg", "c.jpg", "j.jpg"]
    assert queue.uncertain == 4 and [queue.section(n) for n in (3, 4)] == ["uncertain", "disagrees"]
    assert [queue.model_label[r] for r in queue.order[:3]] == ["dog", "dog", "cat"]


def test_the_content_checks_neither_and_both_are_reviewed_first_and_can_be_decided(tmp_path):
    """Photos the content check called neither or both are in the first section whatever their
    p_dog (a moon at 0.99); a person can answer neither, both, or accept them."""
    photos = tmp_path / "photos"
    for n, name in enumerate(["moon.jpg", "pair.jpg", "dog.jpg", "cat.jpg"]):
        write_image(photos / name, n % 2, seed=n)
    table = write_table(tmp_path / "labels.csv", [
        {"path": "moon.jpg", "p_dog": 0.99, "label": "neither", "confidence": ""},
        {"path": "pair.jpg", "p_dog": 0.03, "label": "both", "confidence": ""},
        {"path": "dog.jpg", "p_dog": 0.97},  # sure, and only cat or dog: not asked
        {"path": "cat.jpg", "p_dog": 0.45},  # the band
    ])  # fmt: skip
    with open_session(ReviewOptions(table, images=photos)) as session:
        queue = session.queue
        assert [queue.paths[r] for r in queue.order] == ["cat.jpg", "pair.jpg", "moon.jpg"]
        assert queue.uncertain == 3 and [queue.model_label[r] for r in queue.order] == ["cat", "both", "neither"]
        assert session.decide(2, "accept", "tab")["decision"] == "neither"
        assert session.decide(1, "neither", "tab")["decision"] == "neither"
        assert session.decide(0, "both", "tab")["decision"] == "both"
    assert dict(read_corrections(tmp_path / "corrections.csv")[1:]) == {"moon.jpg": "neither", "pair.jpg": "neither", "cat.jpg": "both"}


def test_a_label_table_uses_its_recorded_band_folder_and_uncertain_rows(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    table = write_table(tmp_path / "labels.csv", [
        {"path": "a.jpg", "p_dog": 0.62, "label": "uncertain"},
        {"path": "b.jpg", "p_dog": 0.75},  # outside the recorded band 0.4-0.65, inside the default one
        {"path": "c.jpg", "p_dog": 0.45, "label": "uncertain"},
    ])  # fmt: skip
    (tmp_path / "labels.csv.sorting.json").write_text(json.dumps({"folder": str(photos), "uncertain": [0.4, 0.65]}))
    with open_session(ReviewOptions(table)) as session:
        assert (tmp_path / "corrections.csv.lock").exists()  # held while the session is used
    assert session.images == photos.resolve() and not (tmp_path / "corrections.csv.lock").exists()
    assert [session.queue.paths[r] for r in session.queue.order] == ["c.jpg", "a.jpg"]
    assert list(session.queue.model_label[session.queue.order]) == ["cat", "dog"]
    assert session.corrections.path == tmp_path / "corrections.csv"

    wider = opened(ReviewOptions(table, uncertain=(0.2, 0.8)))
    assert [wider.queue.paths[r] for r in wider.queue.order] == ["c.jpg", "a.jpg", "b.jpg"]


def test_the_band_is_ordered_around_the_recorded_threshold_once_per_path(tmp_path):
    table = write_table(tmp_path / "t.csv", [
        {"path": "a.jpg", "p_dog": 0.5},   # 0.2 from the threshold 0.7
        {"path": "b.jpg", "p_dog": 0.72},  # 0.02
        {"path": "a.jpg", "p_dog": 0.69},  # a second row of a.jpg: the first one wins
        {"path": "c.jpg", "p_dog": None},  # read but without a probability: not reviewable
        {"path": "d.jpg", "p_dog": 0.6},   # 0.1
    ])  # fmt: skip
    queue = review_queue(read_table(table), (0.2, 0.8), threshold=0.7)
    assert [queue.paths[r] for r in queue.order] == ["b.jpg", "d.jpg", "a.jpg"]
    assert list(queue.order) == [1, 4, 0]


@pytest.mark.parametrize("recorded", [{"uncertain": ["low", "high"]}, {"uncertain": [0.2]}, {"threshold": "half"}])
def test_a_hand_edited_sidecar_is_a_one_line_error(tmp_path, recorded):
    table = write_table(tmp_path / "t.csv", [{"path": "a.jpg", "p_dog": 0.5}])
    (tmp_path / "t.csv.sorting.json").write_text(json.dumps({"folder": str(tmp_path), **recorded}))
    with pytest.raises(UserError, match="t.csv.sorting.json records"):
        opened(ReviewOptions(table))


def test_the_images_folder_is_needed_when_none_is_recorded(tmp_path):
    table = write_table(tmp_path / "photos.csv", [{"path": "a.jpg", "p_dog": 0.5}])
    with pytest.raises(UserError, match="pass --images DIR"):
        opened(ReviewOptions(table))
    with pytest.raises(UserError, match="is not a folder"):
        opened(ReviewOptions(table, images=tmp_path / "missing"))
    (tmp_path / "other.csv").write_text("name,score\nx,1\n")
    with pytest.raises(UserError, match="not a results table"):
        opened(ReviewOptions(tmp_path / "other.csv", images=tmp_path))
    session = opened(ReviewOptions(table, images=tmp_path))
    assert len(session.queue) == 1


def test_a_model_file_is_not_a_table_and_its_run_folder_is_named_instead(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("model.keras", "run.json", "split.csv"):
        (run / name).write_text("")
    with pytest.raises(UserError, match=r"model\.keras is a model, not a results table: .*review its run folder .*run \(the folder with run\.json and split\.csv\)") as error:
        opened(ReviewOptions(run / "model.keras"))
    assert "--images" not in str(error.value)
    lone = tmp_path / "exported" / "model.onnx"  # no run beside it
    lone.parent.mkdir()
    lone.write_text("")
    with pytest.raises(UserError, match=r"model\.onnx is a model, not a results table: .*training run folder \(the folder with run\.json and split\.csv\)"):
        opened(ReviewOptions(lone))


def test_a_training_run_is_reviewed_on_its_validation_images(tiny_model, second_model, tmp_path):
    """The run's split.csv names the validation images and the labels it trained against; its
    model's p_dog of them must be what `catsdogs predict` gives for the same files."""
    import shutil

    from catsdogs_batch.inference.engine import predict_folder
    from catsdogs_batch.options import PredictOptions

    run = tmp_path / "run"
    shutil.copytree(tiny_model, run)  # the review writes into the run folder
    with open(run / "split.csv", newline="", **TEXT) as f:
        validation = {row["path"]: row["label"] for row in csv.DictReader(f) if row["subset"] == "val"}
    data = Path(json.loads((run / "run.json").read_text())["config"]["data"])

    session = opened(ReviewOptions(run))
    table = read_table(run / "validation.csv", true_label=True)
    assert session.images == data.resolve() and session.table == run / "validation.csv"
    assert len(validation) == 12 and dict(zip(table["path"], table["true_label"])) == validation
    predict_folder(PredictOptions(run, data, tmp_path / "all.csv"))
    predicted = read_table(tmp_path / "all.csv").set_index("path")["p_dog"]
    assert np.allclose(table["p_dog"], predicted.loc[list(table["path"])], atol=2e-6)

    written = (run / "validation.csv").stat().st_mtime_ns
    opened(ReviewOptions(run))  # the same model: the table is kept
    assert (run / "validation.csv").stat().st_mtime_ns == written
    shutil.copyfile(second_model / "model.keras", run / "model.keras")  # another model: predicted again
    opened(ReviewOptions(run))
    again = read_table(run / "validation.csv", true_label=True)
    assert not np.allclose(again["p_dog"], table["p_dog"])

    moved = tmp_path / "moved"
    shutil.copytree(data, moved)
    record = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps(record | {"config": {**record["config"], "data": str(tmp_path / "gone")}}))
    with pytest.raises(UserError, match="pass --images DIR"):
        opened(ReviewOptions(run))
    assert opened(ReviewOptions(run, images=moved)).images == moved.resolve()  # another folder: predicted again
    assert json.loads((run / "validation.csv.job.json").read_text())["folder"] == str(moved.resolve())
    (run / "run.json").write_text(json.dumps(record | {"config": {**record["config"], "data": None}}))
    with pytest.raises(UserError, match="not recorded in its run.json: pass --images DIR"):
        opened(ReviewOptions(run))

    (run / "validation.csv.job.json").unlink()  # a validation.csv this tool did not write is kept
    mine = (run / "validation.csv").read_bytes()
    with pytest.raises(UserError, match="not written by catsdogs review"):
        opened(ReviewOptions(run, images=moved))
    assert (run / "validation.csv").read_bytes() == mine

    (run / "split.csv").unlink()
    (run / "validation.csv").unlink()
    with pytest.raises(UserError, match="has no split.csv"):
        opened(ReviewOptions(run))


def test_a_table_with_corrections_shows_the_models_answer_and_the_correction_apart(tiny_model, tmp_path):
    """`label --corrections` writes a person's label into the table's `label` column (source
    human): the page still shows the model's own answer as "model", the applied correction
    beside it, and `accept` (space) records the model's label, not the person's."""
    from starlette.testclient import TestClient

    from catsdogs_batch.cli import main

    photos = tmp_path / "photos"
    for n in range(3):
        write_image(photos / f"cat.{n}.jpg", 0, seed=n)
        write_image(photos / f"dog.{n}.jpg", 1, seed=100 + n)
    band = ["--uncertain", "0", "1", "--no-progress"]  # every image in the band: all of them queued
    assert main(["label", str(tiny_model), str(photos), "--out", str(tmp_path / "plain.csv"), *band]) == 0
    plain = read_table(tmp_path / "plain.csv").set_index("path")["p_dog"]
    model = {path: "dog" if p >= 0.5 else "cat" for path, p in plain.items()}  # the model's own answers
    other = {"cat": "dog", "dog": "cat"}
    given = tmp_path / "given.csv"
    given.write_text(f"path,label\ncat.0.jpg,{other[model['cat.0.jpg']]}\ndog.1.jpg,skip\n")
    table = tmp_path / "out" / "labels.csv"
    assert main(["label", str(tiny_model), str(photos), "--out", str(table), "--corrections", str(given), *band]) == 0
    assert read_table(table).set_index("path").loc["cat.0.jpg", "source"] == "human"

    with open_session(ReviewOptions(table)) as session, TestClient(
        create_app(session, "t"), base_url="http://127.0.0.1"
    ) as client:
        items = client.get("/api/page?page=0", headers={"X-Review-Token": "t"}).json()["items"]
        assert len(items) == 6
        assert {item["name"]: item["label"] for item in items} == model  # "model: ..." on the page
        corrected = {"cat.0.jpg": other[model["cat.0.jpg"]], "dog.1.jpg": "skip"}
        assert {item["name"]: item.get("corrected") for item in items} == {path: corrected.get(path) for path in model}
        position = {item["name"]: item["position"] for item in items}
        for path in ("cat.0.jpg", "dog.1.jpg", "cat.2.jpg"):
            answer = client.post("/api/decide", json={"position": position[path], "label": "accept"},
                                 headers={"X-Review-Token": "t", "X-Review-Client": "tab"})  # fmt: skip
            assert answer.json()["decision"] == model[path]
    assert dict(read_corrections(table.with_name("corrections.csv"))[1:]) == {
        path: model[path] for path in ("cat.0.jpg", "dog.1.jpg", "cat.2.jpg")
    }


# --- the corrections -----------------------------------------------------------------------


@pytest.fixture
def session(tmp_path):
    """A review of four images (one a name that is not UTF-8), the second one unreadable."""
    photos = tmp_path / "photos"
    names = ["cat.1.jpg", "dog.2.jpg", "caf\udce9.jpg", "sub/dog.3.jpg"]  # \udce9: the Latin-1 byte of é
    for n, name in enumerate(names):
        write_image(photos / name, n % 2, seed=n)
    rows = [{"path": name, "p_dog": p} for name, p in zip(names, (0.45, 0.6, 0.5, 0.3))]
    rows.insert(1, {"path": "broken.jpg", "p_dog": None, "status": "error", "error": "empty file"})
    table = write_table(tmp_path / "photos.csv", rows)
    with open_session(ReviewOptions(table, images=photos, page_size=2)) as session:
        yield session


def test_every_decision_is_on_disk_the_last_one_wins_and_undo_restores(session, tmp_path):
    corrections = tmp_path / "corrections.csv"
    in_order = [session.queue.paths[r] for r in session.queue.order]
    assert in_order == ["caf\udce9.jpg", "cat.1.jpg", "dog.2.jpg", "sub/dog.3.jpg"]
    assert session.decide(0, "dog", "tab") == {"position": 0, "decision": "dog", "reviewed": 1}
    assert session.decide(1, "accept", "tab")["decision"] == "cat"  # the model's label for p_dog 0.45
    assert session.decide(0, "skip", "tab")["reviewed"] == 2
    assert read_corrections(corrections) == [["path", "label"], ["caf\udce9.jpg", "skip"], ["cat.1.jpg", "cat"]]
    assert b"caf\xe9.jpg,skip\n" in corrections.read_bytes()  # the name's own bytes

    assert session.undo("tab") == {"position": 0, "decision": "dog", "reviewed": 2}  # the decision before
    assert session.undo("tab") == {"position": 1, "decision": None, "reviewed": 1}  # none before: row removed
    assert read_corrections(corrections) == [["path", "label"], ["caf\udce9.jpg", "dog"]]
    assert session.undo("tab")["decision"] is None and session.undo("tab")["position"] is None  # nothing left
    assert read_corrections(corrections) == [["path", "label"]]


def test_each_page_undoes_its_own_decisions(session):
    session.decide(0, "dog", "tab-1")
    session.decide(1, "cat", "tab-2")
    assert session.undo("tab-1")["position"] == 0
    assert session.undo("tab-1")["position"] is None  # tab-2's decision is not tab-1's to undo
    assert session.undo("tab-2") == {"position": 1, "decision": None, "reviewed": 0}


def test_an_undo_that_cannot_be_written_can_be_tried_again(session, monkeypatch):
    session.decide(0, "dog", "tab")
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(OSError):
        session.undo("tab")
    monkeypatch.undo()
    assert session.undo("tab") == {"position": 0, "decision": None, "reviewed": 0}


def test_earlier_decisions_are_shown_and_kept(tmp_path):
    (tmp_path / "corrections.csv").write_text("path,label\ncat.1.jpg,dog\nelsewhere.jpg,cat\ncat.1.jpg,cat\n")
    table = write_table(tmp_path / "t.csv", [{"path": "cat.1.jpg", "p_dog": 0.4}, {"path": "sub/dog.3.jpg", "p_dog": 0.6}])
    session = opened(ReviewOptions(table, images=tmp_path))
    assert session.corrections.labels == {"cat.1.jpg": "cat", "elsewhere.jpg": "cat"}
    summary = session.summary()
    assert (summary["reviewed"], summary["total"], summary["start"]) == (1, 2, 1)  # starts at the first undecided
    assert [item["decision"] for item in session.page(0)] == ["cat", None]
    session.decide(1, "dog", "tab")
    rows = read_corrections(tmp_path / "corrections.csv")[1:]
    assert rows == [["cat.1.jpg", "cat"], ["elsewhere.jpg", "cat"], ["sub/dog.3.jpg", "dog"]]


def test_labels_written_by_hand_are_read_and_rows_that_are_not_refuse_to_start(tmp_path):
    path = tmp_path / "corrections.csv"
    path.write_bytes(b"\xef\xbb\xbfpath,label\r\nimg0.jpg,Cat\r\nimg1.jpg, dog \r\n\r\nimg 2.jpg,SKIP\r\n")  # Excel's
    assert Corrections(path).labels == {"img0.jpg": "cat", "img1.jpg": "dog", "img 2.jpg": "skip"}

    for text, line in (
        ("path,label\na.jpg,cat\nother.jpg,dog,note\n", 3),
        ("path,label\na.jpg,cat\nb.jpg,do", 3),  # cut short
        ("path,label\na.jpg,cow\n", 2),
    ):
        path.write_text(text)
        with pytest.raises(UserError, match=f"line {line} of .*corrections.csv is not path,cat\\|dog\\|neither\\|both\\|skip") as error:
            Corrections(path)
        assert "\n" not in str(error.value)
        assert path.read_text() == text  # the user's rows are never dropped

    path.write_text("path,label\n" + "a" * 200_000 + ",cat\n")  # over csv's field limit
    with pytest.raises(UserError, match="line 2 of .*corrections.csv"):
        Corrections(path)


def test_a_header_that_is_not_utf_8_is_shown_with_its_bytes(tmp_path):
    path = tmp_path / "corrections.csv"
    path.write_bytes(b"\xff\xfe\x80garbage,x\n")
    with pytest.raises(UserError, match=r"its header is \\xff\\xfe\\x80garbage,x\)") as error:
        Corrections(path)
    assert "udc" not in str(error.value) and "[" not in str(error.value)


def test_a_damaged_record_of_the_corrections_folder_is_one_clear_line(tmp_path):
    table = write_table(tmp_path / "t.csv", [{"path": "a.jpg", "p_dog": 0.5}])
    for damaged in ("[]", '{"folder": 3}', "{}", "null"):
        (tmp_path / "corrections.csv.json").write_text(damaged)
        with pytest.raises(UserError, match=r"corrections\.csv\.json is damaged: .*folder") as error:
            opened(ReviewOptions(table, images=tmp_path))
        assert "None" not in str(error.value) and "\n" not in str(error.value)


def test_a_corrections_path_that_is_not_a_regular_file_is_refused(tmp_path):
    os.mkfifo(tmp_path / "fifo.csv")  # opening it would wait for a writer forever
    (tmp_path / "folder.csv").mkdir()
    for name in ("fifo.csv", "folder.csv"):
        with pytest.raises(UserError, match=f"{name} is not a regular file"):
            Corrections(tmp_path / name)


def test_a_decision_that_cannot_be_written_is_not_taken(session, tmp_path, monkeypatch):
    session.decide(0, "cat", "tab")

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        session.decide(0, "dog", "tab")
    with pytest.raises(OSError):
        session.decide(1, "dog", "tab")
    monkeypatch.undo()
    assert session.corrections.labels == {"caf\udce9.jpg": "cat"} and session.reviewed() == 1
    assert read_corrections(tmp_path / "corrections.csv")[1:] == [["caf\udce9.jpg", "cat"]]
    assert session.undo("tab")["decision"] is None  # the decision that was taken


def test_another_file_named_like_the_corrections_is_not_overwritten(tmp_path):
    (tmp_path / "corrections.csv").write_text("id,label\n1,0.5\n")
    with pytest.raises(UserError, match="not a corrections file"):
        Corrections(tmp_path / "corrections.csv")


@pytest.mark.slow
def test_a_kill_at_any_moment_loses_no_saved_decision(tmp_path):
    """A process deciding as fast as it can, killed -9 in the middle: the file it leaves is
    complete, and holds at least every decision it had reported saved."""
    path = tmp_path / "corrections.csv"
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from catsdogs_batch.data.corrections import Corrections
        corrections = Corrections(Path({str(path)!r}))
        for n in range(1_000_000):
            corrections.set(f"photo-{{n:07d}}.jpg", "cat")
            print(n, flush=True)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    saved = -1
    for line in process.stdout:
        saved = int(line)
        if saved >= 300:
            break
    process.send_signal(signal.SIGKILL)
    process.wait()
    rows = read_corrections(path)
    assert rows[0] == ["path", "label"] and all(len(r) == 2 and r[1] == "cat" for r in rows[1:])
    assert len(rows) - 1 >= saved + 1
    assert Corrections(path).labels.keys() >= {f"photo-{n:07d}.jpg" for n in range(saved + 1)}


def test_a_table_of_another_folder_does_not_mix_into_the_same_corrections(tmp_path):
    cats, dogs = tmp_path / "cats", tmp_path / "dogs"
    cats.mkdir(), dogs.mkdir()
    write_table(tmp_path / "cats.csv", [{"path": "a.jpg", "p_dog": 0.5}])
    write_table(tmp_path / "dogs.csv", [{"path": "a.jpg", "p_dog": 0.5}])  # the same name, another image
    with open_session(ReviewOptions(tmp_path / "cats.csv", images=cats)) as session:
        session.decide(0, "cat", "tab")
    owner = json.loads((tmp_path / "corrections.csv.json").read_text())
    assert owner == {"folder": str(cats.resolve()), "table": str(tmp_path / "cats.csv")}
    with pytest.raises(UserError, match="corrections.csv holds decisions about the images in .*cats, not .*dogs"):
        opened(ReviewOptions(tmp_path / "dogs.csv", images=dogs))
    opened(ReviewOptions(tmp_path / "cats.csv", images=cats))  # the same folder again: fine
    with open_session(ReviewOptions(tmp_path / "dogs.csv", images=dogs, corrections=tmp_path / "dogs-corrections.csv")) as session:
        session.decide(0, "dog", "tab")
    assert read_corrections(tmp_path / "corrections.csv")[1:] == [["a.jpg", "cat"]]


def test_the_lock_is_held_before_the_corrections_are_read(tmp_path, monkeypatch):
    table = write_table(tmp_path / "t.csv", [{"path": "a.jpg", "p_dog": 0.5}])
    (tmp_path / "corrections.csv").write_text("path,label\n")
    locked_when_read = []
    read = Corrections._read
    monkeypatch.setattr(Corrections, "_read", lambda self, data: locked_when_read.append(
        (tmp_path / "corrections.csv.lock").exists()) or read(self, data))  # fmt: skip
    ReviewServer(ReviewOptions(table, images=tmp_path)).close()
    assert locked_when_read == [True]


def test_a_second_review_of_the_same_corrections_is_refused(tmp_path):
    table = write_table(tmp_path / "t.csv", [{"path": "a.jpg", "p_dog": 0.5}])
    with ReviewServer(ReviewOptions(table, images=tmp_path)):
        with pytest.raises(UserError, match="another catsdogs run is writing .*corrections.csv"):
            ReviewServer(ReviewOptions(table, images=tmp_path))
    ReviewServer(ReviewOptions(table, images=tmp_path)).close()  # released


def test_a_link_to_the_corrections_is_the_same_review(tmp_path):
    """`--corrections link.csv` (a symbolic link to corrections.csv) is the file it points to:
    a second review of it is refused while the first holds it, and a review through the link
    saves into the file (the link stays a link), so decisions never split between two files."""
    table = write_table(tmp_path / "t.csv", [{"path": "a.jpg", "p_dog": 0.5}, {"path": "b.jpg", "p_dog": 0.45}])
    corrections, link = tmp_path / "corrections.csv", tmp_path / "link.csv"
    corrections.write_text("path,label\n")
    link.symlink_to("corrections.csv")
    with ReviewServer(ReviewOptions(table, images=tmp_path)):
        with pytest.raises(UserError, match="another catsdogs run is writing .*corrections.csv"):
            ReviewServer(ReviewOptions(table, images=tmp_path, corrections=link))
    with open_session(ReviewOptions(table, images=tmp_path, corrections=link)) as session:
        session.decide(0, "cat", "tab")
    assert link.is_symlink() and read_corrections(corrections)[1:] == [["a.jpg", "cat"]]
    with open_session(ReviewOptions(table, images=tmp_path)) as session:
        session.decide(1, "dog", "tab")
    assert read_corrections(link)[1:] == [["a.jpg", "cat"], ["b.jpg", "dog"]]


def test_a_hard_linked_corrections_file_is_refused(tmp_path):
    """Issue 31: a hard link to corrections.csv got a lock of its own, so two reviews could save
    at once, and each save (a new file put in place) parted the two names. A corrections file
    with more than one name is refused, with what to do; the file and its link are untouched."""
    table = write_table(tmp_path / "t.csv", [{"path": "a.jpg", "p_dog": 0.5}])
    corrections, other = tmp_path / "corrections.csv", tmp_path / "elsewhere" / "decisions.csv"
    corrections.write_text("path,label\na.jpg,dog\n")
    other.parent.mkdir()
    os.link(corrections, other)
    for given in (None, other):
        with pytest.raises(UserError, match=r"has 2 names \(hard links\).*review a copy"):
            ReviewServer(ReviewOptions(table, images=tmp_path, corrections=given))
    assert os.stat(corrections).st_ino == os.stat(other).st_ino and corrections.read_text() == "path,label\na.jpg,dog\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrections.csv", "elsewhere", "t.csv"]


def test_the_corrections_of_another_folder_are_refused_through_a_link(tmp_path):
    """The record of which folder a corrections file is about sits beside the file, not the link:
    `label --corrections link.csv` of another folder's decisions is refused like the file itself."""
    from catsdogs_batch.data.corrections import read_corrections as read_for_label

    cats, dogs = tmp_path / "cats", tmp_path / "dogs"
    cats.mkdir(), dogs.mkdir()
    with open_session(ReviewOptions(write_table(tmp_path / "cats.csv", [{"path": "a.jpg", "p_dog": 0.5}]), images=cats)) as session:
        session.decide(0, "cat", "tab")
    (tmp_path / "link.csv").symlink_to(tmp_path / "corrections.csv")
    for given in ("corrections.csv", "link.csv"):
        with pytest.raises(UserError, match="holds decisions about the images in .*cats, not .*dogs"):
            read_for_label(tmp_path / given, dogs)
    assert read_for_label(tmp_path / "link.csv", cats).labels == {"a.jpg": "cat"}


def test_a_save_killed_halfway_leaves_nothing_after_the_next_start(tmp_path):
    """kill -9 while the new version is written leaves `.corrections.csv.*.tmp` (0600) beside
    the file: the next review removes it once it holds the lock, and nothing
    else (other names, folders, links, another file's temporary files)."""
    table = write_table(tmp_path / "t.csv", [{"path": "a.jpg", "p_dog": 0.5}])
    path = tmp_path / "corrections.csv"
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from catsdogs_batch.data.corrections import Corrections
        Corrections(Path({str(path)!r})).set("a.jpg", "cat")  # the first version, complete
        os.fsync = lambda fd: os.kill(os.getpid(), 9)  # killed once written, before the rename
        Corrections(Path({str(path)!r})).set("a.jpg", "dog")
    """)
    assert subprocess.run([sys.executable, "-c", script], cwd=REPOSITORY).returncode == -signal.SIGKILL
    (left,) = tmp_path.glob(".corrections.csv.*.tmp")
    assert left.stat().st_mode & 0o777 == 0o600 and read_corrections(path)[1:] == [["a.jpg", "cat"]]
    others = [".corrections.csv.abcd1234.tmp.keep", ".other.csv.abcd1234.tmp", "corrections.csv.abcd1234.tmp",
              ".corrections.csv.ab.tmp", "notes.txt"]  # fmt: skip
    for name in others:
        (tmp_path / name).write_text("mine")
    (tmp_path / ".corrections.csv.folder12.tmp").mkdir()
    (tmp_path / ".corrections.csv.linklink.tmp").symlink_to("notes.txt")
    with ReviewServer(ReviewOptions(table, images=tmp_path)):
        with pytest.raises(UserError, match="another catsdogs run"):  # a start without the lock removes nothing
            ReviewServer(ReviewOptions(table, images=tmp_path))
    assert not left.exists()
    assert all((tmp_path / name).read_text() == "mine" for name in others)
    assert (tmp_path / ".corrections.csv.folder12.tmp").is_dir() and (tmp_path / ".corrections.csv.linklink.tmp").is_symlink()
    assert read_corrections(path)[1:] == [["a.jpg", "cat"]]


# --- what the server serves and refuses ----------------------------------------------------


@pytest.fixture
def client(session, tmp_path):
    from starlette.testclient import TestClient

    with TestClient(create_app(session, "secret-token"), base_url="http://127.0.0.1") as client:
        yield client


def test_nothing_is_served_without_the_token(client):
    for path in ("/", "/static/review.js", "/api/summary", "/api/page?page=0", "/image/0"):
        assert client.get(path).status_code == 403, path
        assert client.get(path + ("&" if "?" in path else "?") + "token=wrong").status_code == 403, path
    assert client.post("/api/decide", json={"position": 0, "label": "cat"}).status_code == 403
    assert client.get("/", headers={"Host": "evil.example:8000"}, params={"token": "secret-token"}).status_code == 400


TOKEN = {"X-Review-Token": "secret-token"}
CHANGE = {**TOKEN, "X-Review-Client": "tab-1"}


def test_the_token_opens_the_page_and_goes_with_every_request(client):
    page = client.get("/?token=secret-token")
    assert page.status_code == 200 and "set-cookie" not in page.headers  # cookies ignore the port
    assert 'src="/static/review.js?token=secret-token"' in page.text
    client.cookies.set("catsdogs-review-8000", "secret-token")  # what an earlier version set: no key
    assert client.get("/api/summary").status_code == 403
    assert client.get("/static/review.js?token=secret-token").headers["content-type"].startswith("text/javascript")
    summary = client.get("/api/summary", headers=TOKEN).json()
    assert (summary["total"], summary["reviewed"], summary["page_size"]) == (4, 0, 2)
    items = client.get("/api/page?page=1", headers=TOKEN).json()["items"]
    shown = [(i["position"], i["name"], i["section"]) for i in items]
    assert shown == [(2, "dog.2.jpg", "uncertain"), (3, "sub/dog.3.jpg", "uncertain")]
    assert client.get("/api/page?page=0", headers=TOKEN).json()["items"][0]["name"] == "caf\\xe9.jpg"  # escaped for the screen
    jpeg = client.get(f"/image/{items[0]['row']}?token=secret-token")
    assert jpeg.status_code == 200 and jpeg.headers["content-type"] == "image/jpeg" and jpeg.content[:2] == b"\xff\xd8"
    assert jpeg.headers["cache-control"] == "no-cache"  # a file replaced meanwhile is shown anew

    # Changes need the header (a URL's token could come from another site's form), and a page id
    assert client.post("/api/decide?token=secret-token", json={"position": 0, "label": "cat"}).status_code == 403
    assert client.post("/api/decide", json={"position": 0, "label": "cat"}, headers=TOKEN).status_code == 400
    assert client.post("/api/decide", json={"position": 0, "label": "cat"}, headers=CHANGE).json()["reviewed"] == 1
    assert client.post("/api/decide", json={"position": 4, "label": "cat"}, headers=CHANGE).status_code == 404
    assert client.post("/api/decide", json={"position": 0, "label": "cow"}, headers=CHANGE).status_code == 400
    other_tab = {**TOKEN, "X-Review-Client": "tab-2"}
    assert client.post("/api/undo", headers=other_tab).json()["position"] is None
    assert client.post("/api/undo", headers=CHANGE).json() == {"position": 0, "decision": None, "reviewed": 0}


def test_a_decision_that_cannot_be_saved_is_answered_with_the_reason(client, monkeypatch):
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    answer = client.post("/api/decide", json={"position": 0, "label": "cat"}, headers=CHANGE)
    assert answer.status_code == 500 and answer.json() == {"error": "not saved: No space left on device"}


def test_text_that_is_not_utf_8_is_escaped_in_the_answers(tmp_path):
    from starlette.testclient import TestClient

    table = write_table(tmp_path / "t.csv", [{"path": "a.jpg", "p_dog": 0.5, "true_label": "caf\udce9"}], true_label=True)
    with open_session(ReviewOptions(table, images=tmp_path)) as session, TestClient(
        create_app(session, "t"), base_url="http://127.0.0.1"
    ) as client:
        answer = client.get("/api/page?page=0", headers={"X-Review-Token": "t"})
    assert answer.status_code == 200 and answer.json()["items"][0]["true_label"] == "caf\\xe9"


def test_only_the_images_of_the_table_inside_the_folder_are_served(client, session, tmp_path):
    client.headers["X-Review-Token"] = "secret-token"
    paths = list(session.queue.paths)
    assert client.get(f"/image/{paths.index('cat.1.jpg')}").status_code == 200
    for refused in (
        f"/image/{paths.index('broken.jpg')}",  # an error row
        f"/image/{len(paths)}", "/image/-1", "/image/1.0", "/image/99999999999999999999",
        "/image/..%2F..%2Fetc%2Fpasswd", "/image/0/../../photos.csv", "/photos/cat.1.jpg",
        "/static/review.py", "/static/..%2F__init__.py", "/api/page?page=2", "/api/page?page=-1",
    ):  # fmt: skip
        assert client.get(refused).status_code == 404, refused

    # A row whose file became a link out of the folder, or a FIFO, is refused; a link inside is served
    secret = tmp_path / "secret.jpg"
    write_image(secret, 0)
    (session.images / "cat.1.jpg").unlink()
    (session.images / "cat.1.jpg").symlink_to(secret)
    os.replace(session.images / "sub", tmp_path / "sub-elsewhere")
    (session.images / "sub").symlink_to(tmp_path / "sub-elsewhere")
    os.unlink(session.images / "caf\udce9.jpg")
    os.mkfifo(session.images / "caf\udce9.jpg")
    (session.images / "dog.2.jpg").rename(session.images / "real-dog.jpg")
    (session.images / "dog.2.jpg").symlink_to("real-dog.jpg")
    for name, status in (("cat.1.jpg", 404), ("sub/dog.3.jpg", 404), ("caf\udce9.jpg", 404), ("dog.2.jpg", 200)):
        assert client.get(f"/image/{paths.index(name)}").status_code == status, name


def test_thumbnails_of_images_with_too_many_pixels_are_refused(session, monkeypatch):
    from PIL import Image

    import catsdogs_batch.labelling.review_queue as review

    Image.new("RGB", (600, 600)).save(session.images / "sub" / "dog.3.jpg", "PNG")  # named .jpg, a PNG
    monkeypatch.setattr(review, "THUMBNAIL_MAX_PIXELS", 300_000)
    with pytest.raises(review.NotServed, match="too many pixels"):
        session.image(list(session.queue.paths).index("sub/dog.3.jpg"))
    Image.new("RGB", (3200, 3200)).save(session.images / "dog.2.jpg", "JPEG")  # a JPEG decodes at 1/8 first
    assert session.image(list(session.queue.paths).index("dog.2.jpg"))[:2] == b"\xff\xd8"


def test_images_moved_by_label_are_found_where_they_were_sorted(tmp_path):
    photos, sorted_into = tmp_path / "photos", tmp_path / "sorted"
    write_image(photos / "a.jpg", 0)
    write_image(sorted_into / "uncertain" / "sub" / "b.jpg", 1)  # moved by label --sort-into --mode move
    table = write_table(tmp_path / "labels.csv", [
        {"path": "a.jpg", "p_dog": 0.5, "label": "uncertain"}, {"path": "sub/b.jpg", "p_dog": 0.45, "label": "uncertain"},
    ])  # fmt: skip
    job = {"folder": str(photos), "sort_into": str(sorted_into), "mode": "move"}
    (tmp_path / "labels.csv.job.json").write_text(json.dumps({"folder": str(photos)}))  # predict's
    (tmp_path / "labels.csv.sorted.json").write_text(json.dumps(job))  # label's, once the sorting is done
    session = opened(ReviewOptions(table))
    for row in (0, 1):
        assert session.image(row)[:2] == b"\xff\xd8"


# --- 100,000 rows --------------------------------------------------------------------------


def test_a_table_of_100_000_rows_is_served_a_page_at_a_time(tmp_path):
    n = 100_000
    rng = np.random.default_rng(0)
    p_dog = rng.random(n).round(6)
    frame = pd.DataFrame({
        "path": [f"album-{i // 1000:03d}/IMG_{i:06d}.jpg" for i in range(n)], "id": "", "p_dog": p_dog,
        "label": np.where(p_dog >= 0.5, "dog", "cat"), "confidence": np.maximum(p_dog, 1 - p_dog).round(6),
        "imagenet_dog": "", "imagenet_cat": "", "imagenet_top": "", "width": 640, "height": 480, "status": "ok", "error": "",
    })  # fmt: skip
    frame.to_csv(tmp_path / "big.csv", index=False)
    session = opened(ReviewOptions(tmp_path / "big.csv", images=tmp_path, page_size=24))
    in_band = int(((p_dog >= 0.2) & (p_dog <= 0.8)).sum())
    assert len(session.queue) == in_band > 50_000

    from starlette.testclient import TestClient

    with TestClient(create_app(session, "t"), base_url="http://127.0.0.1") as client:
        client.headers["X-Review-Token"] = "t"
        assert len(client.get("/api/summary").content) < 1000
        last_page = (in_band - 1) // 24
        seen = []
        for page in (0, 1, last_page // 2, last_page):
            response = client.get(f"/api/page?page={page}")
            assert len(response.content) < 8_000  # a page, never the table
            seen += [item["p_dog"] for item in response.json()["items"]]
        assert len(seen) == 3 * 24 + (in_band - last_page * 24)
        assert abs(seen[0] - 0.5) <= abs(seen[30] - 0.5) <= abs(seen[-1] - 0.5) <= 0.3
        assert client.get(f"/api/page?page={last_page + 1}").status_code == 404
        last = client.post("/api/decide", json={"position": in_band - 1, "label": "skip"}, headers={"X-Review-Client": "tab"})
        assert last.json()["reviewed"] == 1


# --- the page, in a real browser -----------------------------------------------------------


def _browser() -> tuple[str, str] | None:
    """Debian's chromium and chromium-driver (or Chrome's), where installed."""
    import shutil

    binary = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    return (binary, driver) if binary and driver else None


needs_browser = pytest.mark.skipif(
    _browser() is None,
    reason="no headless browser for the review page's tests: install chromium and chromium-driver "
    "(Debian: apt-get install chromium chromium-driver; .ci/run does)",
)


def review_photos(folder: Path) -> list[str]:
    """16 generated photos named like Kaggle's train/."""
    from PIL import Image, ImageDraw

    names = [f"{'cat' if n % 2 else 'dog'}.{n}.jpg" for n in range(16)]
    folder.mkdir(parents=True)
    for n, name in enumerate(names):
        image = Image.new("RGB", (160, 160), (70 + 8 * n, 110, 160 - 6 * n))
        ImageDraw.Draw(image).ellipse((30 + n, 40, 130, 140 - n), fill=(230, 200 - 5 * n, 120))
        image.save(folder / name, quality=90)
    return names


class Server:
    """`catsdogs review` run as a user runs it, in its own process: its URL read from what it prints."""

    def __init__(self, table: Path, photos: Path):
        command = [sys.executable, "-m", "catsdogs_batch.cli", "review", str(table), "--images", str(photos)]
        command.append("--no-browser")
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=REPOSITORY)
        self.printed = []
        for line in self.process.stderr:
            self.printed.append(line)
            if "review page: " in line:
                self.url = line.split("review page: ")[1].split()[0]
                return
        raise AssertionError(f"catsdogs review printed no URL: {''.join(self.printed)}")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


@pytest.mark.slow
def test_sigterm_stops_the_server_like_ctrl_c(tmp_path):
    table = write_table(tmp_path / "t.csv", [{"path": "a.jpg", "p_dog": 0.5}])
    server = Server(table, tmp_path)
    assert (tmp_path / "corrections.csv.lock").exists()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=20) == 0  # not -15: it stopped, it was not killed
    assert not (tmp_path / "corrections.csv.lock").exists()


@pytest.fixture
def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = _browser()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=900,600"):
        options.add_argument(argument)
    browser = webdriver.Chrome(options=options, service=Service(driver))
    browser.set_page_load_timeout(30)
    yield browser
    browser.quit()


def wait_for(browser, script: str, *arguments, timeout: float = 20):
    """Wait until `script` (JavaScript returning a value) returns something true; return it."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(lambda b: b.execute_script(script, *arguments))


TILES = "return [...document.querySelectorAll('.tile')]"
PROGRESS = "return document.getElementById('progress').textContent"


@pytest.mark.slow
@needs_browser
def test_the_page_in_a_browser(tmp_path, chromium):
    import urllib.error
    import urllib.request

    from PIL import Image
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    photos = tmp_path / "photos"
    names = review_photos(photos)
    band = [0.5, 0.47, 0.56, 0.41, 0.62, 0.35, 0.68, 0.3, 0.72, 0.25, 0.77, 0.22]  # 12 uncertain, in queue order
    rows = [{"path": name, "p_dog": p, "true_label": name[:3]} for name, p in zip(names, band)]
    rows += [  # a cat the model is sure is a dog, a dog it is sure is a cat, two it gets right
        {"path": "cat.13.jpg", "p_dog": 0.97, "true_label": "cat"}, {"path": "dog.12.jpg", "p_dog": 0.05, "true_label": "dog"},
        {"path": "dog.14.jpg", "p_dog": 0.99, "true_label": "dog"}, {"path": "cat.15.jpg", "p_dog": 0.01, "true_label": "cat"},
    ]  # fmt: skip
    table = write_table(tmp_path / "results.csv", rows, true_label=True)
    queue = [row["path"] for row in rows[:14]]

    server = Server(table, photos)
    try:
        assert server.url.startswith("http://127.0.0.1:")
        base, token = server.url.split("/?token=")
        answers = {base + "/": 403, base + "/image/0?token=wrong": 403, f"{base}/image/16?token={token}": 404}
        for refused, status in answers.items():
            with pytest.raises(urllib.error.HTTPError) as error:
                urllib.request.urlopen(refused)
            assert error.value.code == status, refused

        chromium.get(server.url)
        wait_for(chromium, TILES + ".length === 12")
        wait_for(chromium, "return [...document.querySelectorAll('.tile img')].every(i => i.complete && i.naturalWidth > 0)")
        assert wait_for(chromium, PROGRESS).startswith("Reviewed 0 / 14 · 12 uncertain · 2 disagreements · page 1 of 2")
        first_row = ".filter(t => t.offsetTop === document.querySelector('.tile').offsetTop).length"
        columns = chromium.execute_script(TILES + first_row)

        # A held key (repeats) and a second key while a decision is on its way decide nothing
        chromium.execute_script("""
            for (const repeat of [true, false, false])
                document.dispatchEvent(new KeyboardEvent("keydown", {key: "d", repeat}));""")
        wait_for(chromium, PROGRESS + ".startsWith('Reviewed 1 / 14')")
        ActionChains(chromium).send_keys("u").perform()
        wait_for(chromium, PROGRESS + ".startsWith('Reviewed 0 / 14')")
        ActionChains(chromium).send_keys("u").perform()
        wait_for(chromium, "return document.getElementById('status').textContent === 'nothing to undo'")

        # 0 dog, 1 cat, 2 skip, 3 the model's (cat), undo it, two on and 5 dog, back to 3 and
        # accept, one row down and dog (the cursor moves on by itself), neither, both, the next page's first cat,
        # and back; a decision key is pressed once the one before is saved
        reviewed = 0
        for key in ["d", "c", "x", " ", "u", Keys.ARROW_RIGHT, Keys.ARROW_RIGHT, "d", Keys.ARROW_LEFT,
                    Keys.ARROW_LEFT, Keys.ARROW_LEFT, " ", Keys.ARROW_DOWN, "d", "n", "b",
                    Keys.PAGE_DOWN, "c", Keys.PAGE_UP]:  # fmt: skip
            ActionChains(chromium).send_keys(key).perform()
            if key in "dcxnb u":
                reviewed += -1 if key == "u" else 1
                wait_for(chromium, PROGRESS + f".startsWith('Reviewed {reviewed} / 14')")
        wait_for(chromium, PROGRESS + ".startsWith('Reviewed 9 / 14') && " + PROGRESS[7:] + ".includes('page 1 of 2')")
        expected = {queue[0]: "dog", queue[1]: "cat", queue[2]: "skip", queue[3]: "cat", queue[5]: "dog",
                    queue[4 + columns]: "dog", queue[5 + columns]: "neither", queue[6 + columns]: "both",
                    queue[12]: "cat"}  # fmt: skip
        assert dict(read_corrections(tmp_path / "corrections.csv")[1:]) == expected

        def marks() -> dict[str, str]:
            shown = chromium.execute_script(TILES + ".map(t => [t.querySelector('.name').textContent, t.className])")
            return {name: c.split("decided-")[1].split()[0] for name, c in shown if "decided-" in c}

        chromium.refresh()  # the decisions are the server's, not the page's
        wait_for(chromium, TILES + ".length === 12")
        assert marks() == {k: v for k, v in expected.items() if k in queue[:12]}
        current = chromium.execute_script("return document.querySelector('.tile.current .name').textContent")
        assert current == queue[4]  # the first image not decided yet
        assert wait_for(chromium, PROGRESS).startswith("Reviewed 9 / 14")
        ActionChains(chromium).send_keys(Keys.ARROW_UP).perform()  # to the first row, for the picture
        wait_for(chromium, "return document.querySelector('.tile.current .name').textContent === arguments[0]", queue[0])
        wait_for(chromium, "return [...document.querySelectorAll('.tile img')].every(i => i.complete && i.naturalWidth > 0)")
        chromium.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride", {"width": 900, "height": 600, "deviceScaleFactor": 1, "mobile": False}
        )
        (tmp_path / "review.png").write_bytes(chromium.get_screenshot_as_png())  # as scripts/review_screenshot.py
        with Image.open(tmp_path / "review.png") as picture:  # takes the README's, from real photos
            page = chromium.execute_script("return [window.innerWidth, window.innerHeight]")
            assert (picture.format, picture.size, tuple(page)) == ("PNG", (900, 600), (900, 600))
    finally:
        server.kill()  # kill -9: nothing to flush, every decision is on disk
    assert dict(read_corrections(tmp_path / "corrections.csv")[1:]) == expected

    server = Server(table, photos)  # a new server: a new token and port
    try:
        chromium.get(server.url)
        wait_for(chromium, TILES + ".length === 12")
        assert marks() == {k: v for k, v in expected.items() if k in queue[:12]}
    finally:
        server.kill()
