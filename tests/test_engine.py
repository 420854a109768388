"""The batch inference engine on real folders: the sample's test images, every kind of bad
file, both table formats, interrupted runs, and agreement with the training pipeline."""

from __future__ import annotations

import io
import json
import re
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from catsdogs_batch.cli import main
from catsdogs_batch.inference.engine import predict_folder
from catsdogs_batch.inference.predictor import Predictor
from catsdogs_batch.errors import UserError
from catsdogs_batch.options import EngineOptions, Labelling, PredictOptions
from catsdogs_batch.inference.tables import COLUMNS, read_table

from conftest import write_image

QUIET = EngineOptions(progress=False)


def predict(model: Path, folder: Path, out: Path, **engine) -> pd.DataFrame:
    predict_folder(PredictOptions(model, folder, out, engine=EngineOptions(progress=False, **engine)))
    return read_table(out)


@pytest.mark.slow
def test_results_for_the_sample_test_images(tiny_model, sample_dir, tmp_path):
    table = predict(tiny_model, sample_dir / "test", tmp_path / "results.csv", shard_size=300)
    assert list(table.columns) == COLUMNS
    assert len(table) == 1000 and table["path"].is_unique
    assert sorted(table["id"]) == list(range(1, 1001))
    assert (table["status"] == "ok").all() and (table["error"] == "").all()
    assert table["p_dog"].between(0, 1).all()
    assert (table["label"] == np.where(table["p_dog"] >= 0.5, "dog", "cat")).all()
    assert np.allclose(table["confidence"], np.maximum(table["p_dog"], 1 - table["p_dog"]))
    assert (table["width"] == 200).all() and (table["height"] == 200).all()
    assert not (tmp_path / "results.csv.parts").exists()


def test_every_kind_of_real_folder_content(tiny_model, tmp_path):
    folder = tmp_path / "photos"
    good = {
        "a.jpg": {}, "b.png": {}, "c.bmp": {}, "d.gif": {}, "e.webp": {}, "f.tiff": {},
    }  # fmt: skip
    for name, save in good.items():
        write_image(folder / name, 1, **save)
    Image.new("L", (30, 30), 128).save(folder / "gray.png")
    Image.new("CMYK", (30, 30), (0, 50, 50, 0)).save(folder / "cmyk.jpg")
    Image.new("RGBA", (30, 30), (10, 20, 30, 0)).save(folder / "alpha.png")
    Image.fromarray(np.full((30, 30), 40000, dtype=np.uint16)).save(folder / "deep16.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 20), (200, 10, 10)).save(folder / "rotated.jpg", exif=exif)
    Image.new("RGB", (5000, 3000), (10, 10, 200)).save(folder / "huge.jpg", quality=70)
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "notes.png").write_text("not an image at all")
    buffer = io.BytesIO()
    Image.new("RGB", (300, 300), (1, 2, 3)).save(buffer, "JPEG")
    (folder / "truncated.jpg").write_bytes(buffer.getvalue()[:400])
    (folder / "README.txt").write_text("ignored: not an image extension")

    table = predict(tiny_model, folder, tmp_path / "results.csv").set_index("path")
    assert len(table) == 15  # every image-named file has a row, README.txt none
    errors = table[table["status"] == "error"]
    assert dict(errors["error"]) == {
        "zero.jpg": "empty file",
        "notes.png": "not an image file",
        "truncated.jpg": errors.loc["truncated.jpg", "error"],
    }
    assert errors.loc["truncated.jpg", "error"].startswith("unreadable image")
    assert errors["p_dog"].isna().all() and (errors["label"] == "").all()
    ok = table[table["status"] == "ok"]
    assert ok["p_dog"].between(0, 1).all()
    assert (ok.loc["rotated.jpg", "width"], ok.loc["rotated.jpg", "height"]) == (20, 40)
    assert (ok.loc["huge.jpg", "width"], ok.loc["huge.jpg", "height"]) == (5000, 3000)


def test_parquet_table_has_the_same_rows_as_csv(tiny_model, kaggle_train_folder, tmp_path):
    csv_table = predict(tiny_model, kaggle_train_folder, tmp_path / "r.csv", shard_size=5)
    parquet_table = predict(tiny_model, kaggle_train_folder, tmp_path / "r.parquet", shard_size=5)
    pd.testing.assert_frame_equal(csv_table, parquet_table)


def test_existing_output_is_not_overwritten_unless_asked(tiny_model, kaggle_train_folder, tmp_path, capsys):
    out = tmp_path / "r.csv"
    out.write_text("precious")
    args = ["predict", str(tiny_model), str(kaggle_train_folder), "--out", str(out), "--no-progress"]
    assert main(args) == 1
    assert "already exists" in capsys.readouterr().err and out.read_text() == "precious"
    assert main(args + ["--overwrite"]) == 0
    assert len(read_table(out)) == 24


def test_bad_inputs_are_clear_errors(tiny_model, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    run = ["predict", str(tiny_model)]
    assert main(run + [str(tmp_path / "empty"), "--out", str(tmp_path / "r.csv")]) == 1
    assert "no image files" in capsys.readouterr().err
    assert main(run + [str(tmp_path / "missing"), "--out", str(tmp_path / "r.csv")]) == 1
    assert "not a folder" in capsys.readouterr().err
    assert main(run + [str(tmp_path), "--out", str(tmp_path / "r.txt")]) == 1
    assert ".csv or .parquet" in capsys.readouterr().err

    not_ours = tmp_path / "other_model"
    not_ours.mkdir()
    (not_ours / "model.keras").write_bytes(b"PK\x03\x04 not really a keras file")
    write_image(tmp_path / "imgs" / "a.jpg", 0)
    assert main(["predict", str(not_ours), str(tmp_path / "imgs"), "--out", str(tmp_path / "r.csv")]) == 1
    assert "not a catsdogs-batch model" in capsys.readouterr().err
    (not_ours / "run.json").write_text((tiny_model / "run.json").read_text())
    assert main(["predict", str(not_ours), str(tmp_path / "imgs"), "--out", str(tmp_path / "r.csv")]) == 1
    err = capsys.readouterr().err
    assert "cannot load" in err and "Traceback" not in err


@pytest.mark.slow
def test_a_killed_run_resumes_to_exactly_the_rows_of_an_uninterrupted_run(tiny_model, sample_dir, tmp_path):
    reference = predict(tiny_model, sample_dir / "test", tmp_path / "reference.csv", shard_size=10)

    out = tmp_path / "results.csv"
    command = [sys.executable, "-m", "catsdogs_batch.cli", "predict", str(tiny_model), str(sample_dir / "test"),
               "--out", str(out), "--shard-size", "10", "--batch-size", "8", "--no-progress", "--no-content-check"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = tmp_path / "results.csv.parts"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("shard-*.json"))) < 2:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(list(parts.glob("shard-*.json")))
    assert not out.exists() and 2 <= done < 100, "the run was not killed part-way"

    assert main(command[3:]) == 0  # the same command again
    resumed = read_table(out)
    pd.testing.assert_frame_equal(resumed, reference)
    assert not parts.exists()


def test_a_resume_with_other_settings_is_refused(tiny_model, kaggle_train_folder, tmp_path, capsys):
    out = tmp_path / "r.csv"
    parts = tmp_path / "r.csv.parts"
    parts.mkdir()
    (parts / "job.json").write_text(json.dumps({"folder": "elsewhere"}))
    (parts / "shard-000000.json").write_text("{}")  # work done: not thrown away unasked
    args = ["predict", str(tiny_model), str(kaggle_train_folder), "--out", str(out), "--no-progress"]
    assert main(args) == 1
    assert "other settings" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0 and len(read_table(out)) == 24


def test_a_run_that_failed_before_its_first_shard_does_not_block_the_next(tiny_model, kaggle_train_folder, tmp_path):
    out = tmp_path / "r.csv"
    parts = tmp_path / "r.csv.parts"
    parts.mkdir()
    (parts / "job.json").write_text(json.dumps({"model": "a model that could not be loaded"}))
    predict(tiny_model, kaggle_train_folder, out)
    assert len(read_table(out)) == 24 and not parts.exists()


def test_training_and_prediction_decode_the_same_way(tiny_model, tmp_path):
    """The validation pipeline of training and the engine give the same probabilities."""
    import keras

    from catsdogs_batch.options import TrainOptions
    from catsdogs_batch.data.dataset import decode_images, read_split
    from catsdogs_batch.training.recipe import make_datasets

    run = json.loads((tiny_model / "run.json").read_text())
    data = Path(run["config"]["data"])
    _, val = read_split(tiny_model / "split.csv")
    images, labels, _ = decode_images(data, val, 32, 2, "validation")
    _, val_ds = make_datasets(TrainOptions(batch_size=4), (images, labels), (images, labels))
    model = keras.saving.load_model(tiny_model / "model.keras")
    training_side = model.predict(val_ds, verbose=0).reshape(-1)

    folder = tmp_path / "val"
    for item in val:
        (folder / item.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(data / item.path, folder / item.path)
    table = predict(tiny_model, folder, tmp_path / "r.csv").set_index("path")
    prediction_side = table.loc[[i.path for i in val], "p_dog"].to_numpy()
    assert np.allclose(training_side, prediction_side, atol=1e-5)


def test_the_newest_finished_run_is_the_default_model(tiny_model, tmp_path, monkeypatch):
    from catsdogs_batch.models.checkpoint import latest_checkpoint

    models = tmp_path / "models"
    shutil.copytree(tiny_model, models / "old")
    shutil.copytree(tiny_model, models / "new")
    unfinished = json.loads((tiny_model / "run.json").read_text()) | {"status": "interrupted"}
    (models / "newest-but-interrupted").mkdir()
    (models / "newest-but-interrupted" / "run.json").write_text(json.dumps(unfinished))
    os.utime(models / "old" / "run.json", (1, 1))
    for damaged in ("[]", "null", '"a run"'):  # not a run's record: passed over, like invalid JSON
        (models / "newest-but-damaged").mkdir(exist_ok=True)
        (models / "newest-but-damaged" / "run.json").write_text(damaged)
        assert latest_checkpoint(models) == models / "new"
    with pytest.raises(UserError, match="no finished training run"):
        latest_checkpoint(tmp_path / "nothing")


# --- trust: stale answers, odd real-world names, two runs at once --------------------------


def interrupt_after_first_shard(monkeypatch) -> None:
    """Ctrl-C once the first shard is written, as a user would."""
    from catsdogs_batch.inference.shards import PartsFolder

    real_finish = PartsFolder.finish

    def finish_then_stop(self, shard, rows, seconds):
        real_finish(self, shard, rows, seconds)
        raise KeyboardInterrupt

    monkeypatch.setattr(PartsFolder, "finish", finish_then_stop)


def test_overwrite_after_an_interrupted_run_starts_over(tiny_model, tmp_path, monkeypatch):
    folder = tmp_path / "photos"
    write_image(folder / "a.png", 0, seed=1)
    write_image(folder / "b.png", 1, seed=2)
    out = tmp_path / "r.csv"
    args = ["predict", str(tiny_model), str(folder), "--out", str(out), "--shard-size", "1", "--no-progress"]
    interrupt_after_first_shard(monkeypatch)
    assert main(args) == 130
    monkeypatch.undo()
    (first,) = out.with_name("r.csv.parts").glob("shard-*.csv")
    old = read_table(first)["p_dog"][0]

    Image.new("RGB", (48, 48), (255, 255, 255)).save(folder / "a.png")  # a.png is another photo now
    assert main(args + ["--overwrite"]) == 0
    fresh = predict(tiny_model, folder, tmp_path / "fresh.csv")
    table = read_table(out)
    assert table["p_dog"].tolist() == fresh["p_dog"].tolist() and table["p_dog"][0] != old


@pytest.mark.parametrize("suffix", [".png", ".bmp"])  # a .bmp of the same pixel size is the same byte size
def test_a_photo_replaced_after_an_interrupted_run_is_predicted_again(tiny_model, tmp_path, monkeypatch, suffix):
    """Ctrl-C once a.* is predicted, then a.* becomes another photo (a dog where a cat was): the
    rerun predicts it again instead of keeping the cat's row, even when only the time tells."""
    from catsdogs_batch.data.images import load_image

    folder = tmp_path / "photos"
    photo = write_image(folder / f"a{suffix}", 0, seed=1)
    write_image(folder / f"b{suffix}", 0, seed=2)
    out = tmp_path / "r.csv"
    args = ["predict", str(tiny_model), str(folder), "--out", str(out), "--shard-size", "1", "--no-progress"]
    interrupt_after_first_shard(monkeypatch)
    assert main(args) == 130
    monkeypatch.undo()
    size = photo.stat().st_size

    write_image(photo, 1, seed=3)
    assert suffix != ".bmp" or photo.stat().st_size == size
    expected = Predictor(tiny_model).predict(load_image(photo, 32).pixels[None])[0]
    assert expected > 0.5  # a dog to the model
    assert main(args) == 0
    row = read_table(out).set_index("path").loc[photo.name]
    assert row["label"] == "dog" and row["p_dog"] == pytest.approx(expected, abs=1e-6)


def interrupted_after_one_of_two_photos(tiny_model, tmp_path) -> tuple[Path, PredictOptions]:
    """A folder of two photos, one per shard, whose predict run stopped after the first shard."""
    folder = tmp_path / "photos"
    write_image(folder / "a.png", 0, seed=1)
    write_image(folder / "b.png", 1, seed=2)
    options = PredictOptions(tiny_model, folder, tmp_path / "r.csv", engine=EngineOptions(progress=False, shard_size=1))
    with pytest.MonkeyPatch.context() as patch:
        interrupt_after_first_shard(patch)
        with pytest.raises(KeyboardInterrupt):
            predict_folder(options)
    return folder, options


@pytest.mark.parametrize("damaged", ["[]", '{"rows": 1}', "{", ""])  # the second: no files recorded
def test_a_shard_with_a_damaged_done_marker_is_predicted_again(tiny_model, tmp_path, caplog, damaged):
    folder, options = interrupted_after_one_of_two_photos(tiny_model, tmp_path)
    (marker,) = (tmp_path / "r.csv.parts").glob("shard-*.json")
    marker.write_text(damaged)

    with caplog.at_level("INFO"):
        assert predict_folder(options).processed == 2
    assert f"predicting {marker.stem} again: its done marker is damaged" in caplog.text
    pd.testing.assert_frame_equal(read_table(options.out), predict(tiny_model, folder, tmp_path / "fresh.csv"))


class RecordingPredictor(Predictor):
    """A Predictor that records the paths it is asked to predict."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.predicted: list[str] = []

    def rows(self, relative_paths, decoded, labelling=None):
        self.predicted += relative_paths
        return super().rows(relative_paths, decoded, labelling or Labelling())


def interrupted_before_the_merge(options: PredictOptions, predictor: Predictor) -> None:
    """A run stopped once every shard is done, as they were about to be merged into the table."""
    import catsdogs_batch.inference.engine as engine

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "merge_table", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            predict_folder(options, predictor)


def test_photos_added_and_removed_after_an_interrupted_run_redo_only_their_shards(tiny_model, tmp_path):
    """Issue 31, item 8: one photo added to or removed from a finished shard threw every finished
    shard away ("the folder changed"). Now the shards they fall in are predicted again, the others
    are kept, and the table is the one a run on the folder as it is now writes."""
    folder = tmp_path / "photos"
    for n in range(60):
        write_image(folder / f"{n:02d}.png", n % 2, size=32, seed=n)
    predictor = RecordingPredictor(tiny_model)
    engine = EngineOptions(progress=False, shard_size=4, batch_size=8)
    options = PredictOptions(tiny_model, folder, tmp_path / "r.csv", engine=engine)
    interrupted_before_the_merge(options, predictor)

    write_image(folder / "20a.png", 1, size=32, seed=99)  # sorts among the finished shards
    (folder / "40.png").unlink()
    predictor.predicted.clear()
    summary = predict_folder(options, predictor)
    predict_folder(PredictOptions(tiny_model, folder, tmp_path / "fresh.csv", engine=engine), predictor)
    pd.testing.assert_frame_equal(read_table(options.out), read_table(tmp_path / "fresh.csv"))
    assert summary.rows == 60 and "40.png" not in read_table(options.out)["path"].tolist()
    redone = predictor.predicted[: summary.processed]
    assert "20a.png" in redone and "40.png" not in redone
    assert len(redone) <= 20 and not {"00.png", "59.png"} & set(redone)  # the rest was kept


@pytest.mark.parametrize("checksum", [False, True])
def test_a_photo_replaced_with_the_same_size_and_time_is_caught_by_checksums(tiny_model, tmp_path, checksum):
    """Issue 31, section 1: a photo replaced by another of the same size and modification time
    (`touch -r`) is trusted on resume by default (its size and time are all it looks at), and
    predicted again with `checksum` (the photos' SHA-256, read as the folder is walked)."""
    from catsdogs_batch.data.images import load_image

    folder = tmp_path / "photos"
    photo = write_image(folder / "a.bmp", 0, seed=1)  # a .bmp of the same pixel size is the same byte size
    write_image(folder / "b.bmp", 0, seed=2)
    predictor = RecordingPredictor(tiny_model)
    engine = EngineOptions(progress=False, shard_size=1, checksum=checksum)
    options = PredictOptions(tiny_model, folder, tmp_path / "r.csv", engine=engine)
    with pytest.MonkeyPatch.context() as patch:
        interrupt_after_first_shard(patch)
        with pytest.raises(KeyboardInterrupt):
            predict_folder(options, predictor)
    assert predictor.predicted[0] == "a.bmp"
    before = photo.stat()

    write_image(photo, 1, seed=3)  # a dog where the cat was
    os.utime(photo, ns=(before.st_atime_ns, before.st_mtime_ns))  # touch -r
    assert (photo.stat().st_size, photo.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    dog = Predictor(tiny_model).predict(load_image(photo, 32).pixels[None])[0]
    assert dog > 0.5
    summary = predict_folder(options, predictor)
    row = read_table(options.out).set_index("path").loc["a.bmp"]
    if checksum:
        assert summary.processed == 2 and row["p_dog"] == pytest.approx(dog, abs=1e-6)
    else:  # what the default trusts: the cat's row is kept
        assert summary.processed == 1 and row["p_dog"] < 0.5


@pytest.mark.slow
def test_names_real_folders_hold_become_rows(tiny_model, tmp_path, capsys):
    """A name that is not UTF-8, digits other than 0-9, a number too long for 64 bits, and a
    FIFO named like a photo: every one a row, the run finishes, the table leads back to the file."""
    folder = tmp_path / "odd"
    folder.mkdir()
    raw = os.fsencode(folder) + b"/caf\xe9-latin1.jpg"  # a name from an old Windows share
    write_image(Path(os.fsdecode(raw)), 0)
    write_image(folder / "²³.jpg", 1)
    write_image(folder / ("9" * 30 + ".jpg"), 1)
    write_image(folder / "12.jpg", 0)
    os.mkfifo(folder / "pipe.jpg")
    for out in (tmp_path / "odd.csv", tmp_path / "odd.parquet"):
        command = [sys.executable, "-m", "catsdogs_batch.cli", "predict", str(tiny_model), str(folder),
                   "--out", str(out), "--no-progress", "--no-content-check"]  # fmt: skip
        finished = subprocess.run(command, capture_output=True, timeout=120)  # a FIFO must not hang it
        assert finished.returncode == 0, finished.stderr.decode(errors="replace")
        table = read_table(out).set_index("path")
        assert len(table) == 5
        assert table.loc["pipe.jpg", "status"] == "error" and "FIFO" in table.loc["pipe.jpg", "error"]
        assert table.loc["12.jpg", "id"] == 12
        assert pd.isna(table.loc["²³.jpg", "id"]) and pd.isna(table.loc["9" * 30 + ".jpg", "id"])
        latin1 = [p for p in table.index if p.startswith("caf")][0]
        assert table.loc[latin1, "status"] == "ok"
        assert os.path.exists(folder / latin1)  # byte for byte, in either format: the row leads back to the file


def test_a_link_loop_visits_each_folder_once(tiny_model, tmp_path):
    folder = tmp_path / "photos"
    write_image(folder / "album" / "cat.1.jpg", 0)
    os.symlink("..", folder / "album" / "up")  # album/up/album/up/... forever
    os.symlink(folder / "album", folder / "same-album")
    table = predict(tiny_model, folder, tmp_path / "r.csv")
    assert table["path"].tolist() == ["album/cat.1.jpg"]


@pytest.mark.slow
def test_a_second_run_on_the_same_table_is_refused_and_the_first_finishes(tiny_model, sample_dir, tmp_path, capsys):
    out = tmp_path / "results.csv"
    command = [sys.executable, "-m", "catsdogs_batch.cli", "predict", str(tiny_model), str(sample_dir / "test"),
               "--out", str(out), "--shard-size", "50", "--batch-size", "8", "--no-progress", "--no-content-check"]  # fmt: skip
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.with_name("results.csv.parts").glob("shard-*.json")):
        time.sleep(0.01)
    assert main(command[3:]) == 1
    err = capsys.readouterr().err
    assert "another catsdogs run is writing" in err and len(err.strip().splitlines()) == 1
    assert first.wait(timeout=300) == 0, first.stderr.read().decode()
    assert len(read_table(out)) == 1000 and not out.with_name("results.csv.parts").exists()
    assert not out.with_name("results.csv.lock").exists()


def test_carriage_returns_and_huge_numbers_in_names_keep_their_rows(tiny_model, tmp_path):
    folder = tmp_path / "odd"
    write_image(folder / "a\rcat.jpg", 0)
    write_image(folder / "9223372036854775807.jpg", 1)  # 2**63 - 1
    write_image(folder / "12345678901234567.jpg", 1)  # above 2**53: a float would round it
    write_image(folder / "x.jpg", 0)
    for out in (tmp_path / "t.csv", tmp_path / "t.parquet"):
        table = predict(tiny_model, folder, out)
        assert sorted(table["path"]) == sorted(["a\rcat.jpg", "9223372036854775807.jpg", "12345678901234567.jpg", "x.jpg"])
        assert (table["status"] == "ok").all() and table["id"].isna().all()


def test_a_table_that_is_not_ours_is_one_line(tiny_model, kaggle_train_folder, tmp_path, capsys):
    from catsdogs_batch.inference.tables import read_table as read

    for name, content in [("empty.csv", b""), ("columns.csv", b"a,b\n1,2\n"), ("ids.csv", b"path,id,p_dog,label,confidence,"
                          b"width,height,status,error\nx.jpg,abc,0.5,dog,0.5,1,1,ok,\n"), ("junk.parquet", b"PAR1 junk")]:  # fmt: skip
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UserError, match="is not a results table of catsdogs"):
            read(tmp_path / name)


# --- a light core: an export runs without TensorFlow -----------------------------------------

HEAVY = ("tensorflow", "keras")
CHECK_IMPORTS = (
    "import sys\n"
    "from catsdogs_batch.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "print('imported:', sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras'}))\n"
    "sys.exit(rc)\n"
)


@pytest.fixture(scope="module")
def onnx_export(tiny_model, tmp_path_factory) -> Path:
    from catsdogs_batch.inference.export import export_model
    from catsdogs_batch.options import ExportOptions

    out, _ = export_model(ExportOptions(tiny_model, "onnx", out=tmp_path_factory.mktemp("exports") / "onnx"))
    return out


@pytest.mark.slow
def test_an_export_predicts_labels_evaluates_and_submits_without_tensorflow(onnx_export, kaggle_train_folder, tmp_path):
    numbered = tmp_path / "test"
    for n in range(1, 4):
        write_image(numbered / f"{n}.jpg", n % 2, seed=n)
    commands = [
        # the content check's ImageNet classifier runs in Keras: these ask only cat or dog
        ["predict", str(onnx_export), str(kaggle_train_folder), "--out", str(tmp_path / "p.csv"), "--no-content-check"],
        ["label", str(onnx_export), str(kaggle_train_folder), "--out", str(tmp_path / "l.csv"),
         "--sort-into", str(tmp_path / "sorted"), "--no-content-check"],
        ["evaluate", str(onnx_export), str(kaggle_train_folder), "--out", str(tmp_path / "e"), "--no-content-check"],
        ["submission", "--model", str(onnx_export), "--test-dir", str(numbered), "--out", str(tmp_path / "s")],
    ]  # fmt: skip
    for command in commands:
        done = subprocess.run([sys.executable, "-c", CHECK_IMPORTS, *command, "--no-progress"],
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "imported: []" in done.stdout, f"{command[0]} imported {done.stdout.splitlines()[-1]}"
    assert len(read_table(tmp_path / "p.csv")) == 24


@pytest.mark.slow
def test_an_ensemble_averages_the_probabilities_of_its_models(tiny_model, second_model, kaggle_train_folder, tmp_path):
    tables = {}
    for name, models in (("a", [tiny_model]), ("b", [second_model]), ("ab", [tiny_model, second_model])):
        out = tmp_path / f"{name}.csv"
        assert main(["predict", *map(str, models), str(kaggle_train_folder), "--out", str(out), "--no-progress"]) == 0
        tables[name] = read_table(out).set_index("path")
    a, b, ab = tables["a"]["p_dog"], tables["b"]["p_dog"], tables["ab"]["p_dog"]
    assert (a - b).abs().max() > 0.01  # the two models disagree
    assert ab.to_numpy() == pytest.approx(((a + b) / 2).to_numpy(), abs=2e-6)  # tables keep 6 decimals
    job = json.loads((tmp_path / "ab.csv.job.json").read_text())  # the table records which models made it
    assert [m["model"] for m in job["models"]] == [
        str((tiny_model / "model.keras").resolve()), str((second_model / "model.keras").resolve())
    ]


@pytest.mark.slow
def test_an_ensemble_of_models_of_other_sizes_gives_each_its_own_size(tiny_model, second_model, kaggle_train_folder, tmp_path):
    """A 40 px model (the second model behind a resize to 32 px) beside the 32 px tiny model: each
    member's share is what it predicts alone, from images decoded at its own size, within what
    resizing from the 40 px decode moves (these images are noise, which resampling moves most)."""
    import keras

    bigger = tmp_path / "bigger"
    shutil.copytree(second_model, bigger)
    inner = keras.saving.load_model(second_model / "model.keras", compile=False)
    outer = keras.Sequential([keras.Input((40, 40, 3)), keras.layers.Resizing(32, 32), inner])
    outer.save(bigger / "model.keras")
    run = json.loads((bigger / "run.json").read_text())
    (bigger / "run.json").write_text(json.dumps(run | {"image_size": 40}))
    tables = {}
    for name, models in (("a", [tiny_model]), ("b", [bigger]), ("ab", [tiny_model, bigger])):
        out = tmp_path / f"{name}.csv"
        assert main(["predict", *map(str, models), str(kaggle_train_folder), "--out", str(out), "--no-progress"]) == 0
        tables[name] = read_table(out).set_index("path")["p_dog"]
    a, b, ab = tables["a"], tables["b"], tables["ab"]
    assert (a - b).abs().max() > 0.01  # the two models disagree
    assert ab.to_numpy() == pytest.approx(((a + b) / 2).to_numpy(), abs=0.03)


def test_ensembles_are_checked_and_named_briefly(tiny_model, kaggle_train_folder, tmp_path, capsys):
    from catsdogs_batch.models.checkpoint import ensemble_name

    out = tmp_path / "t.csv"
    assert main(["predict", str(tiny_model), str(tiny_model / "model.keras"), str(kaggle_train_folder), "--out", str(out)]) == 1
    assert "is given twice" in capsys.readouterr().err and not out.exists()
    runs = [tmp_path / f"a-very-long-run-name-{n:02d}-residual-128px-seed{n}" for n in range(12)]
    for run in runs:
        run.mkdir()
    assert ensemble_name(runs) == "a-very-long-run-name-00-residual-128px-seed0+11more"
    assert ensemble_name(runs[0]) == runs[0].name


def test_the_engine_predicts_the_files_it_is_given_in_their_order(tiny_model, tmp_path, capsys):
    """A list of files (a split's images) goes through the same driver as a folder: only those
    rows, in the list's order, and a path that leaves the folder is refused before any work."""
    folder = tmp_path / "photos"
    for name, label in {"a/cat.1.jpg": 0, "b/dog.2.jpg": 1, "c.jpg": 0}.items():
        write_image(folder / name, label, seed=len(name))
    chosen = ("b/dog.2.jpg", "a/cat.1.jpg")
    out = tmp_path / "chosen.csv"
    predict_folder(PredictOptions(tiny_model, folder, out, engine=QUIET, files=chosen))
    table = read_table(out)
    assert tuple(table["path"]) == chosen
    whole = predict(tiny_model, folder, tmp_path / "whole.csv").set_index("path")
    assert table["p_dog"].tolist() == whole.loc[list(chosen), "p_dog"].tolist()

    for bad in ("../photos/c.jpg", "/etc/passwd", "a//cat.1.jpg", "", ".", "a/.."):
        with pytest.raises(UserError, match="is not a plain path inside"):
            predict_folder(PredictOptions(tiny_model, folder, tmp_path / "bad.csv", engine=QUIET, files=(bad,)))
    assert not (tmp_path / "bad.csv").exists() and not (tmp_path / "bad.csv.parts").exists()


def test_an_out_under_a_link_to_nothing_names_that_link(tmp_path):
    """A link that leads nowhere where a folder must be is named as the link it is, not as a
    file, nor as a folder below it that does not exist."""
    from catsdogs_batch.inference.engine import table_lock

    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    table = tmp_path / "gone" / "sub" / "r.csv"
    with pytest.raises(UserError) as refused, table_lock(table):
        pass
    assert str(refused.value) == f"cannot write {table}: {tmp_path / 'gone'} is a link that leads to no folder"
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=f"{tmp_path / 'notes.txt'} is a file, not a folder$"):
        with table_lock(tmp_path / "notes.txt" / "sub" / "r.csv"):
            pass


def test_the_summary_of_a_folder_with_nothing_readable_reads_right(tiny_model, tmp_path):
    """Issue 31, item 12: it said "4 images (; 4 errors)"."""
    folder = tmp_path / "broken"
    folder.mkdir()
    for n in range(4):
        (folder / f"{n}.jpg").write_text("not a photo")
    summary = predict_folder(PredictOptions(tiny_model, folder, tmp_path / "t.csv"))
    assert summary.describe().startswith("4 images (4 errors) -> ")
    (folder / "ok.jpg").unlink(missing_ok=True)
    write_image(folder / "ok.jpg", 1)
    one = predict_folder(PredictOptions(tiny_model, folder, tmp_path / "u.csv"))
    assert re.match(r"5 images \(1 (cat|dog); 4 errors\) -> ", one.describe())
