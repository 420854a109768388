"""`catsdogs audit` on generated labelled folders with deliberately flipped names (by embeddings
of a backbone whose weights file the tests save themselves, and by k-fold training from scratch),
the table it writes as review reads it, and the corrections file that label and train read."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from catsdogs_batch.labelling.audit import audit, classify_out_of_fold
from catsdogs_batch.data.dataset import EMBED_BATCH, embed_images
from catsdogs_batch.cli import main
from catsdogs_batch.errors import UserError
from catsdogs_batch.options import AuditOptions, ReviewOptions, Labelling
from catsdogs_batch.data.corrections import read_corrections
from catsdogs_batch.labelling.review import open_session
from catsdogs_batch.labelling.review_queue import recorded_job
from catsdogs_batch.inference.tables import AUDIT_COLUMNS, SOURCE_COLUMNS, read_table, write_table

from catsdogs_batch.data.images import load_image
from catsdogs_batch.data.dataset import find_labelled_images

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


# generated noise holds no cat or dog: these audits ask only about cat-or-dog labels (see conftest)
FAST = AuditOptions(
    Path(), folds=3, epochs=6, image_size=32, arch="seed", batch_size=16, learning_rate=3e-3,
    labelling=Labelling(content_check=False),
)  # fmt: skip


@pytest.fixture
def backbone_weights(tmp_path: Path) -> Path:
    """A Keras weights file of MobileNetV3-Small at 32 px, random but seeded (no ImageNet here):
    its pooled features still tell the generated reddish cats from the bluish dogs."""
    import keras

    keras.utils.set_random_seed(0)
    backbone = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "mobilenet.weights.h5"
    backbone.save_weights(path)
    return path


def no_whole_folder_decoding(monkeypatch) -> None:
    """The embeddings' path decodes a batch at a time: decoding the folder at once fails the test."""
    import catsdogs_batch.data.dataset as dataset_module
    import catsdogs_batch.training.train  # noqa: F401  (imported now, it binds the real functions, not the stand-ins)

    def decode_images(*args):
        raise AssertionError("the whole folder was decoded into memory")

    monkeypatch.setattr(dataset_module, "decode_images", decode_images)


@pytest.mark.slow
def test_embeddings_of_a_backbone_put_the_flipped_labels_first(mislabelled, backbone_weights, tmp_path, monkeypatch):
    """The default method with a weights file: one embedding per image, a logistic regression per
    fold. A classifier that saw the held-out fold would not flag all three (checked by hand)."""
    no_whole_folder_decoding(monkeypatch)
    out = tmp_path / "audit.csv"
    run = ["audit", str(mislabelled), "--out", str(out), "--arch", "mobilenetv3-small", "--weights",
           str(backbone_weights), "--image-size", "32", "--folds", "3"]  # fmt: skip
    assert main(run) == 0

    table = read_table(out, true_label=True)
    assert list(table.columns) == AUDIT_COLUMNS and len(table) == 81
    assert set(table["path"][:3]) == set(FLIPPED), table.head(6)
    assert table["label_issue"][:3].all() and not table["label_issue"][3:].any()
    flipped = table.set_index("path").loc[FLIPPED]
    assert (flipped["label"] != flipped["true_label"]).all()  # the classifier saw through the names
    last = table.iloc[-1]
    assert (last["path"], last["status"], last["error"]) == ("cat.broken.jpg", "error", "not an image file")

    job = json.loads((tmp_path / "audit.csv.job.json").read_text())
    assert job["method"] == "embeddings + logistic regression" and job["out_of_fold_accuracy"] > 0.9
    assert (job["arch"], job["weights"], job["image_size"], job["tta"]) == (
        "mobilenetv3-small", str(backbone_weights.resolve()), 32, True
    )
    assert job["features"] == 576 and len(job["classifier"]["C"]) == 3  # MobileNetV3-Small's; one C per fold
    assert not {"epochs", "batch_size", "learning_rate"} & set(job)
    assert recorded_job(out)["folder"] == str(mislabelled.resolve())


@pytest.mark.slow
def test_imagenet_weights_that_cannot_be_downloaded_stop_the_audit_in_one_line(mislabelled, tmp_path, monkeypatch, capsys):
    """No cached weights and no way to the weights server (a proxy that refuses, so this holds
    on a machine with internet too): one line naming the URL and both ways out, before decoding."""
    import catsdogs_batch.data.dataset as dataset_module
    import catsdogs_batch.training.train  # noqa: F401  (imported now, it binds the real functions, not the stand-ins)

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # the discard port: nothing listens
    for name in ("HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)

    def decode_labelled(*args):
        raise AssertionError("decoding started before the weights were there")

    monkeypatch.setattr(dataset_module, "decode_labelled", decode_labelled)
    assert main(["audit", str(mislabelled), "--arch", "efficientnetv2-b0", "--out", str(tmp_path / "a.csv")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "cannot get the ImageNet weights of efficientnetv2-b0" in err and "https://storage.googleapis.com/" in err
    assert "--weights FILE" in err and "--arch residual" in err
    assert not (tmp_path / "a.csv").exists()


def test_images_are_decoded_and_embedded_a_batch_at_a_time(keras_imported, tmp_path, monkeypatch):
    """embed_images with a stand-in embedding (the mean colour of an image's left half): batches
    of EMBED_BATCH images (with their mirrors), rows in order, the unreadable file skipped.
    (no_whole_folder_decoding imports train.py, so Keras: that import is keras_imported's cost.)"""
    no_whole_folder_decoding(monkeypatch)
    folder = tmp_path / "labelled"
    for n in range(EMBED_BATCH + 5):
        write_image(folder / f"cat.{n}.png", 0, size=32, seed=n)
        write_image(folder / f"dog.{n}.png", 1, size=32, seed=100 + n)
    (folder / "dog.broken.jpg").write_bytes(b"")
    items = find_labelled_images(folder)
    readable = [item for item in items if item.path != "dog.broken.jpg"]
    pixels = np.stack([load_image(folder / item.path, 32).pixels for item in readable]).astype(np.float32)

    batches = []

    def left_half_colour(batch: np.ndarray) -> np.ndarray:
        batches.append(len(batch))
        return batch[:, :, :16].mean(axis=(1, 2))

    left, right = pixels[:, :, :16].mean(axis=(1, 2)), pixels[:, :, 16:].mean(axis=(1, 2))
    for mirrored in (True, False):
        batches.clear()
        features, mirror, skipped = embed_images(folder, items, left_half_colour, 32, 2, "audit", mirrored)
        assert skipped == [{"path": "dog.broken.jpg", "error": "empty file"}]
        assert features.dtype == np.float32 and features == pytest.approx(left, abs=1e-3)
        if mirrored:  # the mirror's left half is the image's right half
            assert mirror.dtype == np.float32 and mirror == pytest.approx(right, abs=1e-3)
        else:
            assert mirror is None
        whole = [EMBED_BATCH] * (len(readable) // EMBED_BATCH)
        assert batches == [n * (2 if mirrored else 1) for n in whole + [len(readable) % EMBED_BATCH]]


@pytest.mark.slow
def test_the_audit_table_gives_each_image_its_size(mislabelled, tmp_path, monkeypatch):
    """Like predict's and evaluate's tables, the audit's gives the width and height of each
    readable image (of the upright original, not the decoded size); unreadable rows have none.
    A backbone of one layer (the mean colour) keeps this fast: the sizes come from the decoding."""
    import keras

    import catsdogs_batch.models.networks as model_module

    def mean_colour(*args):
        inputs = keras.Input((32, 32, 3))
        return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))

    monkeypatch.setattr(model_module, "pretrained_features", mean_colour)
    from PIL import Image

    (mislabelled / "wide").mkdir()
    Image.new("RGB", (60, 40), (200, 30, 30)).save(mislabelled / "wide" / "cat.wide.png")
    out = tmp_path / "audit.csv"
    audit(AuditOptions(mislabelled, out=out, folds=3, image_size=32))
    table = read_table(out, true_label=True).set_index("path")
    ok = table[table["status"] == "ok"]
    assert ok.loc["wide/cat.wide.png", ["width", "height"]].fillna(0).tolist() == [60, 40]
    assert (ok.drop("wide/cat.wide.png")[["width", "height"]].fillna(0) == 32).all().all()
    assert table.loc["cat.broken.jpg", ["width", "height"]].isna().all()


def test_the_labelled_images_reader_says_how_many_hidden_names_it_left_out(mislabelled, caplog):
    """audit's and train's reader of a labelled folder: hidden files are no images of it, counted."""
    write_image(mislabelled / ".cat.100.png", 0)
    with caplog.at_level("INFO"):
        items = find_labelled_images(mislabelled)
    assert len(items) == 81 and ".cat.100.png" not in {item.path for item in items}
    assert f"skipped 1 hidden file in {mislabelled} (names starting with '.')" in caplog.messages


@pytest.mark.slow
def test_the_out_of_fold_classifier_never_sees_the_held_out_fold(monkeypatch):
    """Features of pure noise, more of them than images: a classifier that had seen an image
    could rank it by its label (AUC near 1, as the leaking folds below show); out of fold it can
    only guess (AUC near 0.5). Features that do hold the label are read well."""
    import catsdogs_batch.labelling.audit as audit_module
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 120)
    noise = rng.normal(size=(120, 400)).astype(np.float32)
    p_dog, method = classify_out_of_fold(noise, labels, 4, seed=0)
    assert abs(roc_auc_score(labels, p_dog) - 0.5) < 0.2

    informative = noise + 1.5 * labels[:, None] * (np.arange(400) < 20)
    p_dog, method = classify_out_of_fold(informative, labels, 4, seed=0)
    assert np.mean((p_dog >= 0.5) == labels) > 0.9
    assert method["method"] == "embeddings + logistic regression" and method["features"] == 400
    assert len(method["classifier"]["C"]) == 4 and set(method["classifier"]["C"]) <= set(method["classifier"]["C_grid"])

    folds = audit_module._folds  # the check above can fail: with the held-out fold in training, it does
    monkeypatch.setattr(audit_module, "_folds", lambda *a: ((np.arange(120), held) for _, held in folds(*a)))
    assert roc_auc_score(labels, classify_out_of_fold(noise, labels, 4, seed=0)[0]) > 0.9


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
    assert (job["method"], job["arch"], job["epochs"], job["batch_size"], job["image_size"]) == (
        "k-fold training", "seed", 6, 16, 32
    )
    assert "weights" not in job and "classifier" not in job
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
        (["--arch", "residual", "--weights", str(tmp_path / "none.h5")], "--weights is for pretrained backbones"),
        (["--weights", str(tmp_path / "none.h5")], "none.h5: no such file"),
        (["--weights", "none"], "--weights none: a backbone with random weights tells nothing"),
        (["--epochs", "3"], "--epochs: --arch efficientnet-lite0 trains no network"),
        (["--batch-size", "8", "--learning-rate", "0.1"], "--batch-size, --learning-rate: --arch efficientnet-lite0"),
    ]:
        assert main(run + extra) in (1, 2)
        assert message in capsys.readouterr().err
    assert main(run + ["--folds", "1"]) == 2 and "out of range" in capsys.readouterr().err
    few = tmp_path / "few"  # each fold's classifier chooses its C in a 3-fold of its training folds
    for n in range(5):
        write_image(few / f"cat.{n}.png", 0, size=32, seed=n)
        write_image(few / f"dog.{n + 1}.png", 1, size=32, seed=n)
    write_image(few / "dog.0.png", 1, size=32)
    assert main(["audit", str(few), "--out", str(tmp_path / "a.csv"), "--folds", "2"]) == 1
    assert "only 5 cat images: --folds 2 needs at least 6 of each" in capsys.readouterr().err
    with pytest.raises(UserError, match="--image-size must be at least 32, not 16"):  # from Python
        audit(AuditOptions(mislabelled, out=tmp_path / "a.csv", image_size=16))
    assert main(["audit", str(tmp_path / "missing")]) == 1 and "is not a folder" in capsys.readouterr().err
    (tmp_path / "c.csv").write_text("path,label\ncat.1.png,maybe\n")
    assert main(run + ["--corrections", str(tmp_path / "c.csv")]) == 1
    assert "is not path,cat|dog|neither|both|skip" in capsys.readouterr().err
    assert not (tmp_path / "a.csv").exists()


def test_audit_and_corrected_tables_keep_names_byte_for_byte(tmp_path):
    name = b"caf\xe9/\x1b[31m.jpg".decode("utf-8", "surrogateescape")  # not UTF-8, and an escape
    frame = read_table(_audit_csv(tmp_path / "in.csv", name), true_label=True)
    for out in (tmp_path / "out.csv", tmp_path / "out.parquet"):
        write_table(out, [frame])
        again = read_table(out, true_label=True)
        assert list(again.columns) == AUDIT_COLUMNS and again["label_issue"].tolist() == [True, False]
        assert again["path"][0] == name
    assert (tmp_path / "out.csv").read_bytes() == (tmp_path / "in.csv").read_bytes()
    source = tmp_path / "label.csv"
    source.write_text(",".join(SOURCE_COLUMNS) + "\na.jpg,,0.9,cat,human,0.1,,,,48,48,ok,\n")
    assert read_table(source)["source"].tolist() == ["human"]


def _audit_csv(path: Path, name: str) -> Path:
    with open(path, "w", encoding="utf-8", errors="surrogateescape", newline="") as f:
        f.write(",".join(AUDIT_COLUMNS) + "\n")
        f.write(f"{name},,0.9,dog,cat,0.9,,,,,,ok,,0.1,True\n")
        f.write("dog.1.jpg,,,,dog,,,,,,,error,empty file,,False\n")
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
    from catsdogs_batch.labelling.audit import audit_table
    from catsdogs_batch.data.dataset import LabelledImage

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
    code = f"from catsdogs_batch.data.corrections import read_corrections; from pathlib import Path; read_corrections(Path({str(fifo)!r}), Path('.'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "is not a regular file" in done.stderr


@pytest.mark.slow
def test_a_flagged_photo_with_no_cat_or_dog_is_labelled_neither_not_a_label_issue(sample_dir, tmp_path):
    """cleanlab flags what its classifier contradicts; of those, the content check sets apart the
    photos that hold no animal (a colour gradient named cat.N): no cat-for-dog error to fix."""
    from PIL import Image

    from catsdogs_batch.labelling.audit import audit_table, check_flagged
    from catsdogs_batch.data.dataset import LabelledImage

    folder = tmp_path / "labelled"
    folder.mkdir()
    y, x = np.mgrid[0:200, 0:200]
    Image.fromarray(np.stack([x, y, 255 - x], -1).astype(np.uint8)).save(folder / "cat.gradient.png")
    (folder / "cat.1.jpg").write_bytes((sample_dir / "train" / "dog.1.jpg").read_bytes())  # a dog named cat
    (folder / "dog.2.jpg").write_bytes((sample_dir / "train" / "dog.2.jpg").read_bytes())
    kept = [LabelledImage("cat.gradient.png", 0), LabelledImage("cat.1.jpg", 0), LabelledImage("dog.2.jpg", 1)]
    issues = np.array([True, True, False])
    flagged = check_flagged(AuditOptions(folder), kept, issues)
    assert flagged.neither.tolist() == [True, False, False]
    assert flagged.top[2] == "" and np.isnan(flagged.dog[2])  # not flagged: not looked at
    table = audit_table(kept, np.array([0.9, 0.95, 0.9]), np.array([0.1, 0.05, 0.9]), issues & ~flagged.neither,
                        [], kept, None, flagged).set_index("path")  # fmt: skip
    assert table.loc["cat.gradient.png", ["label", "label_issue"]].tolist() == ["neither", False]
    assert table.loc["cat.1.jpg", ["label", "label_issue"]].tolist() == ["dog", True]
    assert np.isnan(table.loc["cat.gradient.png", "confidence"]) and table.loc["cat.1.jpg", "imagenet_top"] != ""
