"""The jobs as a notebook calls them (api.py): a DataFrame or a path back, the commands' options as
keyword arguments, the same files written."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import catsdogs_batch as cd
from catsdogs_batch.side_files import job_file

from conftest import write_image


@pytest.fixture
def photos(tmp_path):
    for n in range(4):
        write_image(tmp_path / "photos" / ("a" if n < 2 else "b") / f"{n}.jpg", n % 2, seed=n)
    return tmp_path / "photos"


def test_predict_a_folder_gives_its_table_as_a_dataframe(tiny_model, photos):
    table = cd.predict(tiny_model, photos)
    assert isinstance(table, pd.DataFrame) and sorted(table["path"]) == ["a/0.jpg", "a/1.jpg", "b/2.jpg", "b/3.jpg"]
    assert set(table["status"]) == {"ok"} and table["p_dog"].between(0, 1).all()


def test_predict_a_list_of_files_keeps_their_order_and_writes_out_when_asked(tiny_model, photos, tmp_path):
    files = [photos / "b" / "3.jpg", photos / "a" / "0.jpg"]
    table = cd.predict(tiny_model, [str(f) for f in files], out=tmp_path / "t.csv", tta=True, content_check=False)
    assert list(table["path"]) == ["b/3.jpg", "a/0.jpg"]
    assert pd.read_csv(tmp_path / "t.csv")["path"].tolist() == ["b/3.jpg", "a/0.jpg"]
    job = json.loads(job_file(tmp_path / "t.csv").read_text())
    assert job["tta"] is True and job["content_check"] is None  # the settings reached the engine


def test_label_sorts_a_folder_and_returns_its_table(tiny_model, photos, tmp_path):
    table = cd.label(tiny_model, photos, out=tmp_path / "labels.csv", sort_into=tmp_path / "sorted")
    for row in table.itertuples():
        assert (tmp_path / "sorted" / row.label / row.path).read_bytes() == (photos / row.path).read_bytes()


def test_an_unknown_setting_is_a_type_error(tiny_model, photos):
    with pytest.raises(TypeError, match="unknown setting for PredictOptions: tta_please"):
        cd.predict(tiny_model, photos, tta_please=True)


@pytest.mark.slow
def test_train_then_submission(kaggle_train_folder, tmp_path):
    run = cd.train(kaggle_train_folder, tmp_path / "run", arch="seed", image_size=32, epochs=1, fast_model=False)
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    test = tmp_path / "test"
    for n in range(1, 4):
        write_image(test / f"{n}.jpg", n % 2, seed=50 + n)
    path = cd.submission(run, test_dir=test, out=tmp_path / "submission")
    assert pd.read_csv(path)["id"].tolist() == [1, 2, 3]
