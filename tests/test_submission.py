"""`catsdogs submission` on a Kaggle-like competition folder the tests write (test/N.jpg of
generated images beside a sample submission), in both competitions' formats; the sample archive's
real test photos and Kaggle's own sample_submission.csv for one test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from catsdogs_batch.cli import main

from conftest import write_image

TEST_IMAGES = 24  # ids 1..24: sorted as text they would go 1, 10, 11, ...


def submission_cli(model, test_dir, out, *extra: str) -> int:
    return main(["submission", "--model", str(model), "--test-dir", str(test_dir), "--out", str(out),
                 "--no-progress", *extra])  # fmt: skip


def competition_folder(root: Path, images: int = TEST_IMAGES, sample_name: str = "sample_submission.csv",
                       label: str = "0.5") -> Path:  # fmt: skip
    """root/test/1.jpg .. N.jpg (cats and dogs in turn) beside root/<sample_name>, a sample
    submission as Kaggle ships one (id,label, the same label for every id); returns the test folder."""
    for n in range(1, images + 1):
        write_image(root / "test" / f"{n}.jpg", n % 2, seed=n)
    lines = ["id,label"] + [f"{n},{label}" for n in range(1, images + 1)]
    (root / sample_name).write_text("\n".join(lines) + "\n")
    return root / "test"


@pytest.fixture
def test_dir(tmp_path: Path) -> Path:
    """The test folder of a small redux competition folder, tmp_path/comp."""
    return competition_folder(tmp_path / "comp")


def test_redux_submission_matches_the_sample_submission(tiny_model, test_dir, tmp_path):
    out = tmp_path / "sub"
    assert submission_cli(tiny_model, test_dir, out) == 0
    text = (out / "submission.csv").read_text().splitlines()
    assert text[0] == "id,label"
    submission = pd.read_csv(out / "submission.csv")
    assert list(submission["id"]) == list(range(1, TEST_IMAGES + 1))  # numeric order, not 1, 10, 11
    assert submission["label"].between(0.001, 0.999).all()
    results = pd.read_csv(out / "results.csv").set_index("id")
    expected = results.loc[submission["id"], "p_dog"].clip(0.001, 0.999).to_numpy()
    assert (abs(submission["label"].to_numpy() - expected) < 1e-6).all()


@pytest.mark.slow
def test_the_sample_archive_makes_a_submission_like_kaggles_sample(tiny_model, sample_dir, tmp_path):
    """Real photos (JPEGs of many sizes) and Kaggle's own sample_submission.csv, not one this
    file writes: the submission has its columns, ids and row count (the archive's only use here)."""
    out = tmp_path / "sub"
    assert submission_cli(tiny_model, sample_dir / "test", out) == 0
    submission = pd.read_csv(out / "submission.csv")
    kaggle = pd.read_csv(sample_dir / "sample_submission.csv")
    assert list(submission.columns) == list(kaggle.columns)
    assert list(submission["id"]) == sorted(kaggle["id"]) and len(submission) == 1000
    assert submission["label"].between(0.001, 0.999).all()


def test_dogs_vs_cats_2013_submission_is_one_for_dog(tiny_model, tmp_path):
    test_dir = competition_folder(tmp_path / "dogs-vs-cats", sample_name="sampleSubmission.csv", label="0")
    out = tmp_path / "sub"
    assert submission_cli(tiny_model, test_dir, out, "--competition", "dogs-vs-cats") == 0
    submission = pd.read_csv(out / "submission.csv")
    results = pd.read_csv(out / "results.csv").set_index("id")
    assert submission["label"].dtype == "int64" and set(submission["label"]) <= {0, 1}
    assert (submission["label"] == (results.loc[submission["id"], "label"] == "dog").astype(int).to_numpy()).all()


def test_a_submission_that_disagrees_with_the_sample_is_not_written(tiny_model, test_dir, tmp_path, capsys):
    (test_dir / "17.jpg").unlink()
    out = tmp_path / "sub"
    assert submission_cli(tiny_model, test_dir, out) == 1
    err = capsys.readouterr().err
    assert f"{TEST_IMAGES - 1} rows but sample_submission.csv has {TEST_IMAGES}" in err and "[17]" in err
    assert not (out / "submission.csv").exists()


def test_unreadable_test_images_are_reported_loudly(tiny_model, test_dir, tmp_path, caplog):
    (test_dir / "5.jpg").write_bytes(b"")
    out = tmp_path / "sub"
    assert submission_cli(tiny_model, test_dir, out) == 0
    assert "1 test images could not be read" in caplog.text and "5.jpg: empty file" in caplog.text
    submission = pd.read_csv(out / "submission.csv").set_index("id")
    assert len(submission) == TEST_IMAGES and submission.loc[5, "label"] == 0.5


def test_a_finished_submission_is_not_overwritten(tiny_model, test_dir, tmp_path, capsys):
    out = tmp_path / "sub"
    assert submission_cli(tiny_model, test_dir, out) == 0
    before = (out / "submission.csv").read_bytes()
    assert submission_cli(tiny_model, test_dir, out) == 1
    assert "already exists" in capsys.readouterr().err
    assert (out / "submission.csv").read_bytes() == before


def test_results_are_reused_only_when_computed_the_same_way(tiny_model, tmp_path, capsys, caplog):
    """A 10-image subset first (refused by the sample check, results.csv kept), then the full
    folder at the same place, then --tta: neither may be answered from the subset's table."""
    full = competition_folder(tmp_path / "comp")
    test_dir = tmp_path / "test"
    test_dir.mkdir()
    for n in range(1, 11):
        shutil.copy(full / f"{n}.jpg", test_dir)
    sample = ["--sample-submission", str(tmp_path / "comp" / "sample_submission.csv")]
    out = tmp_path / "sub"
    assert submission_cli(tiny_model, test_dir, out, *sample) == 1
    assert f"10 rows but sample_submission.csv has {TEST_IMAGES}" in capsys.readouterr().err
    assert (out / "results.csv").exists() and not (out / "submission.csv").exists()

    shutil.copytree(full, test_dir, dirs_exist_ok=True)  # now the whole test set
    assert submission_cli(tiny_model, test_dir, out, *sample) == 1
    assert "computed with another set of test files: pass --overwrite" in capsys.readouterr().err
    assert submission_cli(tiny_model, test_dir, out, *sample, "--overwrite") == 0
    plain = pd.read_csv(out / "submission.csv")
    assert len(plain) == TEST_IMAGES

    (out / "submission.csv").unlink()
    assert submission_cli(tiny_model, test_dir, out, *sample, "--tta") == 1
    assert "computed with another tta" in capsys.readouterr().err
    with caplog.at_level("INFO"):
        assert submission_cli(tiny_model, test_dir, out, *sample) == 0  # the same settings: reused
    assert "reusing" in caplog.text
    pd.testing.assert_frame_equal(pd.read_csv(out / "submission.csv"), plain)


def test_a_photo_replaced_after_an_interrupted_submission_is_predicted_again(tiny_model, tmp_path, monkeypatch, capsys, caplog):
    """Ctrl-C once 1.jpg is predicted, then 1.jpg becomes another photo (a dog where a cat was):
    the rerun submits the dog's answer, so does a later run that reuses results.csv, and a test
    file touched since (same bytes, another time) is not answered from it."""
    import os

    from catsdogs_batch.data.images import load_image
    from catsdogs_batch.inference.predictor import Predictor
    from catsdogs_batch.inference.shards import PartsFolder

    test_dir = tmp_path / "test"
    for n in range(1, 4):
        write_image(test_dir / f"{n}.jpg", 0, seed=n)
    out = tmp_path / "sub"
    finish = PartsFolder.finish

    def finish_then_stop(self, *args):
        finish(self, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(PartsFolder, "finish", finish_then_stop)
    assert submission_cli(tiny_model, test_dir, out, "--shard-size", "1") == 130
    monkeypatch.undo()

    write_image(test_dir / "1.jpg", 1, seed=4)
    p_dog = Predictor(tiny_model).predict(load_image(test_dir / "1.jpg", 32).pixels[None])[0]
    assert p_dog > 0.5  # a dog to the model
    assert submission_cli(tiny_model, test_dir, out, "--shard-size", "1") == 0
    assert pd.read_csv(out / "submission.csv").set_index("id").loc[1, "label"] == pytest.approx(p_dog, abs=1e-6)

    (out / "submission.csv").unlink()
    with caplog.at_level("INFO"):
        assert submission_cli(tiny_model, test_dir, out, "--shard-size", "1") == 0
    assert "reusing" in caplog.text
    assert pd.read_csv(out / "submission.csv").set_index("id").loc[1, "label"] == pytest.approx(p_dog, abs=1e-6)

    (out / "submission.csv").unlink()
    mtime = (test_dir / "2.jpg").stat().st_mtime_ns
    os.utime(test_dir / "2.jpg", ns=(mtime, mtime + 1_000_000_000))
    capsys.readouterr()
    assert submission_cli(tiny_model, test_dir, out, "--shard-size", "1") == 1
    assert "computed with another set of test files" in capsys.readouterr().err


def test_with_checksum_results_are_reused_only_while_the_test_photos_hold_the_same_bytes(tiny_model, tmp_path, capsys, caplog):
    """Issue 31: `submission --checksum` reused a results.csv whose photo had been replaced by
    another of the same size and modification time (`touch -r`): the reuse looked at sizes and
    times only. A results.csv computed without checksums is not reused by a run that asks for them."""
    import os

    test_dir = tmp_path / "test"
    for n in range(1, 4):
        write_image(test_dir / f"{n}.bmp", 0, seed=n)  # a .bmp of the same pixel size is the same byte size
    out = tmp_path / "sub"
    assert submission_cli(tiny_model, test_dir, out) == 0
    (out / "submission.csv").unlink()
    assert submission_cli(tiny_model, test_dir, out, "--checksum") == 1
    assert "computed without --checksum: pass --overwrite" in capsys.readouterr().err
    assert submission_cli(tiny_model, test_dir, out, "--checksum", "--overwrite") == 0
    first = (out / "submission.csv").read_bytes()
    (out / "submission.csv").unlink()
    with caplog.at_level("INFO"):
        assert submission_cli(tiny_model, test_dir, out, "--checksum") == 0  # nothing changed: reused
    assert "reusing" in caplog.text and (out / "submission.csv").read_bytes() == first

    photo = test_dir / "1.bmp"
    before = photo.stat()
    write_image(photo, 1, seed=9)  # a dog where the cat was
    os.utime(photo, ns=(before.st_atime_ns, before.st_mtime_ns))  # touch -r
    assert (photo.stat().st_size, photo.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    (out / "submission.csv").unlink()
    capsys.readouterr()
    assert submission_cli(tiny_model, test_dir, out, "--checksum") == 1
    assert "computed from test photos that held other bytes: pass --overwrite" in capsys.readouterr().err
    assert submission_cli(tiny_model, test_dir, out) == 0  # what the default trusts: names, sizes and times


def test_a_bad_clip_is_refused_before_anything_is_predicted(tiny_model, test_dir, tmp_path, capsys):
    from catsdogs_batch.errors import UserError
    from catsdogs_batch.options import SubmissionOptions
    from catsdogs_batch.inference.submission import make_submission

    out = tmp_path / "sub"
    assert submission_cli(tiny_model, test_dir, out, "--clip", "0.7") == 2
    assert "--clip: 0.7 is out of range" in capsys.readouterr().err
    try:
        make_submission(SubmissionOptions(tiny_model, test_dir, out, clip=0.7))
    except UserError as e:
        assert "--clip must be in [0, 0.5)" in str(e)
    else:
        raise AssertionError("a clip of 0.7 was accepted")
    assert not out.exists()


def test_a_broken_sample_submission_is_refused_before_predicting(tiny_model, test_dir, tmp_path, capsys):
    for content in (b"", b"id,label\n\"1,0.5\n", b"\xff\xfe\x00garbage"):
        (tmp_path / "sample.csv").write_bytes(content)
        out = tmp_path / "sub"
        assert submission_cli(tiny_model, test_dir, out, "--sample-submission", str(tmp_path / "sample.csv")) == 1
        err = capsys.readouterr().err
        assert "sample submission" in err and len(err.strip().splitlines()) == 1
        assert not (out / "results.csv").exists()


def test_a_results_table_replaced_by_hand_is_not_submitted(tiny_model, test_dir, tmp_path, capsys):
    out = tmp_path / "sub"
    assert submission_cli(tiny_model, test_dir, out) == 0
    (out / "submission.csv").unlink()
    results = pd.read_csv(out / "results.csv")
    results["p_dog"] = 0.5  # someone else's predictions in its place
    results.to_csv(out / "results.csv", index=False)
    assert submission_cli(tiny_model, test_dir, out) == 1
    assert "changed since it was computed" in capsys.readouterr().err


def test_a_submission_of_an_ensemble_averages_its_models(tiny_model, second_model, tmp_path, monkeypatch):
    """`--model` repeated: p_dog is the mean of the models' (each run on its own here), the
    job record lists both, and the default folder is named after the first and how many more."""
    from catsdogs_batch.data.images import load_image
    from catsdogs_batch.inference.predictor import Predictor

    test_dir = tmp_path / "test"
    for n in range(1, 5):
        write_image(test_dir / f"{n}.jpg", n % 2, seed=n)
    monkeypatch.chdir(tmp_path)
    assert main(["submission", "--model", str(tiny_model), "--model", str(second_model),
                 "--test-dir", str(test_dir), "--no-progress"]) == 0  # fmt: skip
    out = tmp_path / "submissions" / "model+1more"
    submitted = pd.read_csv(out / "submission.csv").set_index("id")["label"]
    pixels = np.stack([load_image(test_dir / f"{n}.jpg", 32).pixels for n in range(1, 5)])
    expected = (Predictor(tiny_model).predict(pixels) + Predictor(second_model).predict(pixels)) / 2
    assert submitted.loc[[1, 2, 3, 4]].to_numpy() == pytest.approx(np.clip(expected, 0.001, 0.999), abs=2e-6)
    job = json.loads((out / "results.csv.job.json").read_text())
    assert [m["model"] for m in job["models"]] == [str((m / "model.keras").resolve()) for m in (tiny_model, second_model)]


def test_a_refused_submission_leaves_no_folder_it_made(tmp_path, monkeypatch, capsys):
    """A model that is missing, has no run.json or is not a Keras file: refused in one line, and
    the --out folders the run made for its table (nested, or the default submissions/<model>)
    are gone again, while a folder that was there before stays."""
    test_dir = tmp_path / "test"
    for n in range(1, 4):
        write_image(test_dir / f"{n}.jpg", n % 2, seed=n)
    (tmp_path / "no-run-json").mkdir()
    (tmp_path / "no-run-json" / "model.keras").write_bytes(b"not a model")
    (tmp_path / "not-keras").mkdir()
    (tmp_path / "not-keras" / "model.keras").write_bytes(b"not a model")
    (tmp_path / "not-keras" / "run.json").write_text(json.dumps({"kind": "catsdogs-batch model", "image_size": 32}))
    causes = {
        tmp_path / "missing": "no model at",
        tmp_path / "no-run-json": "no run.json beside it",
        tmp_path / "not-keras": "not a Keras model file",
    }
    mine = tmp_path / "mine"
    mine.mkdir()
    for model, message in causes.items():
        for out in (tmp_path / "subs" / "a" / "b", mine):
            assert submission_cli(model, test_dir, out) == 1
            err = capsys.readouterr().err
            assert message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "subs").exists(), model
        assert mine.is_dir() and not any(mine.iterdir())
        monkeypatch.chdir(tmp_path)
        assert main(["submission", "--model", str(model), "--test-dir", str(test_dir), "--no-progress"]) == 1
        assert message in capsys.readouterr().err and not (tmp_path / "submissions").exists()


def test_hidden_test_files_are_counted_when_predicting_and_when_reusing(tiny_model, tmp_path, caplog):
    """A hidden file of the test folder is no test image (Kaggle's have none); each run says how
    many it left out, once, whether it predicts or reuses results.csv."""
    test_dir, out = tmp_path / "test", tmp_path / "sub"
    for n in (1, 2):
        write_image(test_dir / f"{n}.jpg", n - 1)
    write_image(test_dir / ".3.jpg", 0)
    for run in ("predicts", "reuses"):
        caplog.clear()
        with caplog.at_level("INFO"):
            assert submission_cli(tiny_model, test_dir, out) == 0, run
        said = [m for m in caplog.messages if m.startswith("skipped")]
        assert said == [f"skipped 1 hidden file in {test_dir} (names starting with '.')"], run
        assert len(pd.read_csv(out / "submission.csv")) == 2
        (out / "submission.csv").unlink()
