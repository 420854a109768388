"""The Ray Data engine against the local one, on a local Ray with 2 CPUs: the same table for the
sample's test images and bad files, after a local run was interrupted, and after a worker died;
the options on every predicting command, and the message when Ray is not installed."""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from catsdogs_batch.inference import ray_engine
from catsdogs_batch.cli import build_parser, main
from catsdogs_batch.inference.engine import predict_folder
from catsdogs_batch.options import Labelling, EngineOptions, PredictOptions
from catsdogs_batch.inference.ray_engine import PredictorActor
from catsdogs_batch.inference.shards import Summary
from catsdogs_batch.inference.tables import COLUMNS, read_table

pytestmark = pytest.mark.slow  # a Ray and its actors start in every test

BAD_FILES = {"bad/zero.jpg": "empty file", "bad/notes.png": "not an image file", "truncated.jpg": "unreadable image"}


@pytest.fixture(scope="module")
def local_ray():
    """One Ray on this machine with 2 CPUs for the module; the engine uses it as it is."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False,
             logging_level="ERROR", log_to_driver=False)  # fmt: skip
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def test_images_and_bad_files(sample_dir, tmp_path_factory) -> Path:
    """The sample's 1,000 test images plus an empty file, a text file, a truncated JPEG and two
    copies named by bytes that are not UTF-8 and by the escape that spells them."""
    folder = tmp_path_factory.mktemp("mixed") / "test"
    shutil.copytree(sample_dir / "test", folder)
    (folder / "bad").mkdir()
    (folder / "bad/zero.jpg").write_bytes(b"")
    (folder / "bad/notes.png").write_text("not an image at all")
    buffer = io.BytesIO()
    Image.new("RGB", (300, 300), (1, 2, 3)).save(buffer, "JPEG")
    (folder / "truncated.jpg").write_bytes(buffer.getvalue()[:400])
    # names that travel to the actors and back: bytes that are not UTF-8, and what their escape spells
    shutil.copyfile(folder / "1.jpg", folder / os.fsdecode(b"caf\xe9.jpg"))
    shutil.copyfile(folder / "2.jpg", folder / "caf\\xe9.jpg")
    return folder


@pytest.fixture(scope="module")
def local_table(tiny_model, test_images_and_bad_files, tmp_path_factory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("local") / "results.csv"
    engine = EngineOptions(shard_size=300, progress=False)
    predict_folder(PredictOptions(tiny_model, test_images_and_bad_files, out, engine=engine, labelling=Labelling(content_check=False)))
    return read_table(out)


def predict_on_ray(model: Path, folder: Path, out: Path) -> Summary:
    engine = EngineOptions(engine="ray", shard_size=300, batch_size=64, progress=False)
    return predict_folder(PredictOptions(model, folder, out, engine=engine))


def assert_same_rows(ray_table: pd.DataFrame, local_table: pd.DataFrame) -> None:
    exact = ["path", "id", "label", "width", "height", "status", "error"]
    pd.testing.assert_frame_equal(ray_table[exact], local_table[exact])
    probabilities = ["p_dog", "confidence"]
    pd.testing.assert_frame_equal(ray_table[probabilities], local_table[probabilities], atol=1e-5, rtol=0)


def test_the_ray_engine_writes_the_local_engines_table(
    local_ray, tiny_model, test_images_and_bad_files, local_table, tmp_path
):
    summary = predict_on_ray(tiny_model, test_images_and_bad_files, tmp_path / "results.csv")

    table = read_table(tmp_path / "results.csv")
    assert list(table.columns) == COLUMNS
    assert_same_rows(table, local_table)
    assert (summary.rows, summary.errors, summary.processed) == (1005, 3, 1005)
    errors = local_table[local_table["status"] == "error"].set_index("path")["error"]
    assert {path: message[: len(BAD_FILES[path])] for path, message in errors.items()} == BAD_FILES
    assert 0 < summary.startup_seconds < summary.seconds
    assert not (tmp_path / "results.csv.parts").exists()
    assert local_ray.is_initialized()  # a Ray the engine did not start is left running


def test_a_run_interrupted_on_the_local_engine_is_finished_by_ray(
    local_ray, tiny_model, test_images_and_bad_files, local_table, tmp_path
):
    from catsdogs_batch.inference.shards import PartsFolder

    real_finish = PartsFolder.finish

    def finish_then_stop(self, shard, rows, seconds):  # Ctrl-C once the first shard is written
        real_finish(self, shard, rows, seconds)
        raise KeyboardInterrupt

    out = tmp_path / "results.csv"
    engine = EngineOptions(shard_size=300, progress=False)
    local = PredictOptions(tiny_model, test_images_and_bad_files, out, engine=engine)
    with pytest.MonkeyPatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(PartsFolder, "finish", finish_then_stop)
        predict_folder(local)
    (marker,) = (tmp_path / "results.csv.parts").glob("shard-*.json")
    done = json.loads(marker.read_text())["rows"]

    summary = predict_on_ray(tiny_model, test_images_and_bad_files, out)
    assert (summary.rows, summary.processed) == (1005, 1005 - done)
    assert_same_rows(read_table(out), local_table)


class DiesOnItsFirstBatch(PredictorActor):
    """The first batch of the run kills its actor's process; the marker file makes it happen once."""

    marker = ""

    def __call__(self, batch):
        if not os.path.exists(self.marker):
            Path(self.marker).touch()
            os._exit(1)
        return super().__call__(batch)


def test_a_worker_that_dies_is_retried_without_losing_or_doubling_rows(
    local_ray, tiny_model, test_images_and_bad_files, local_table, tmp_path, monkeypatch
):
    from ray import cloudpickle

    monkeypatch.setattr(DiesOnItsFirstBatch, "marker", str(tmp_path / "died"))
    monkeypatch.setattr(ray_engine, "PredictorActor", DiesOnItsFirstBatch)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    try:
        predict_on_ray(tiny_model, test_images_and_bad_files, tmp_path / "results.csv")
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])

    assert (tmp_path / "died").exists()
    assert_same_rows(read_table(tmp_path / "results.csv"), local_table)


def test_without_ray_the_command_says_how_to_install_it(tiny_model, kaggle_train_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` does when it is not installed
    args = ["predict", str(tiny_model), str(kaggle_train_folder), "--out", str(tmp_path / "r.csv"), "--engine", "ray"]
    assert main(args) == 1
    assert capsys.readouterr().err == (
        "catsdogs predict: error: --engine ray needs Ray: pip install '.[ray]' (or pip install 'ray[data]')\n"
    )
    assert not (tmp_path / "r.csv").exists()


@pytest.mark.parametrize("command, options", [
    (["predict", "models/run", "photos", "--out", "r.csv"], "PredictOptions"),
    (["submission"], "SubmissionOptions"),
    (["label", "models/run", "photos"], "LabelOptions"),
])  # fmt: skip
def test_every_predicting_command_takes_the_engine_options(command, options):
    import catsdogs_batch.options
    from catsdogs_batch.cli import options_from

    kind = getattr(catsdogs_batch.options, options)
    args = build_parser().parse_args(command + ["--engine", "ray", "--ray-address", "ray://head:10001"])
    engine = options_from(kind, args, model=None).engine
    assert (engine.engine, engine.ray.address) == ("ray", "ray://head:10001")
    engine = options_from(kind, build_parser().parse_args(command), model=None).engine
    assert (engine.engine, engine.ray.address) == ("local", None)


def test_a_ray_address_without_the_ray_engine_is_refused(tiny_model, kaggle_train_folder, tmp_path, capsys):
    args = ["predict", str(tiny_model), str(kaggle_train_folder), "--out", str(tmp_path / "r.csv")]
    assert main(args + ["--ray-address", "auto"]) == 1
    assert "--ray-address needs --engine ray" in capsys.readouterr().err


class RefusesTensorFlow(PredictorActor):
    """An actor that fails its batch if TensorFlow or Keras was imported in its process."""

    def __call__(self, batch):
        heavy = {m.split(".")[0] for m in sys.modules} & {"tensorflow", "keras"}
        if heavy:
            raise AssertionError(f"the actor imported {sorted(heavy)}")
        return super().__call__(batch)


def test_actors_run_an_export_without_tensorflow_a_window_at_a_time(
    local_ray, tiny_model, kaggle_train_folder, tmp_path, monkeypatch
):
    """Windows of at least 8 files (whole shards of about 4) for 24 files: the folder streams
    through Ray, and the table is the local engine's."""
    from ray import cloudpickle

    from catsdogs_batch.inference.export import export_model
    from catsdogs_batch.options import ExportOptions

    export, _ = export_model(ExportOptions(tiny_model, "onnx", out=tmp_path / "onnx"))
    monkeypatch.setattr(ray_engine, "PredictorActor", RefusesTensorFlow)
    monkeypatch.setattr(ray_engine, "WINDOW_FILES", 8)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    try:
        engine = EngineOptions(engine="ray", shard_size=4, batch_size=4, progress=False)
        summary = predict_folder(PredictOptions(export, kaggle_train_folder, tmp_path / "ray.csv", engine=engine))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert summary.rows == 24 and summary.errors == 0
    local = EngineOptions(shard_size=4, progress=False)
    predict_folder(PredictOptions(export, kaggle_train_folder, tmp_path / "local.csv", engine=local))
    assert_same_rows(read_table(tmp_path / "ray.csv"), read_table(tmp_path / "local.csv"))


def test_a_model_the_actors_could_not_load_is_one_line_before_ray_starts(tiny_model, kaggle_train_folder, tmp_path, capsys):
    """Checked in the driver without loading TensorFlow: a corrupt export, and a checkpoint whose
    run.json names another image size than the model takes."""
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "model.onnx").write_text("garbage")
    (corrupt / "run.json").write_text((tiny_model / "run.json").read_text())
    resized = tmp_path / "resized"
    shutil.copytree(tiny_model, resized, ignore=shutil.ignore_patterns("export"))
    run = json.loads((resized / "run.json").read_text())
    (resized / "run.json").write_text(json.dumps(run | {"image_size": 40}))
    for model, message in [(corrupt, "cannot load"), (resized, "not (40, 40, 3) images")]:
        out = tmp_path / f"{model.name}.csv"
        assert main(["predict", str(model), str(kaggle_train_folder), "--out", str(out), "--engine", "ray"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]
        assert not out.with_name(out.name + ".parts").exists()


@pytest.mark.content_check
def test_the_ray_engine_gives_the_content_checks_answers_of_the_local_one(local_ray, lite2_run, mixed_folder, tmp_path):
    """neither and both, and the ImageNet columns, from Ray's actors as from this process."""
    local, ray = tmp_path / "local.csv", tmp_path / "ray.csv"
    predict_folder(PredictOptions(lite2_run, mixed_folder, local, engine=EngineOptions(progress=False)))
    predict_on_ray(lite2_run, mixed_folder, ray)
    local_table, ray_table = read_table(local), read_table(ray)
    assert set(local_table["label"]) == {"cat", "dog", "neither", "both"}
    assert_same_rows(ray_table, local_table)
    assert (ray_table["imagenet_top"] == local_table["imagenet_top"]).all()
    pd.testing.assert_frame_equal(
        ray_table[["imagenet_dog", "imagenet_cat"]], local_table[["imagenet_dog", "imagenet_cat"]], atol=1e-5, rtol=0
    )


def test_a_cluster_is_sent_the_whole_package():
    """Joining a cluster (--ray-address) ships the code its workers import: since the package has
    rooms, `inference/` alone was sent, a module named `inference`, and the workers could not import
    catsdogs_batch. What goes is the package itself, with every room."""
    import catsdogs_batch
    from catsdogs_batch.inference.ray_engine import PACKAGE

    assert PACKAGE == Path(catsdogs_batch.__file__).resolve().parent
    assert {"inference", "data", "models", "labelling"} <= {p.name for p in PACKAGE.iterdir() if p.is_dir()}
