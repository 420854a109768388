"""The content check (content.py): neither and both, on hand-made images whose answer is known
and on the packaged ImageNet classifier."""

from __future__ import annotations

import numpy as np
import pytest

from catsdogs_batch.models.content import (
    CAT_CLASSES,
    DOG_CLASSES,
    Evidence,
    both_in_halves,
    class_names,
    halves,
)
from catsdogs_batch.options import Labelling
from catsdogs_batch.inference.tables import confidences, label_for, ok_row


def test_the_class_names_are_imagenets_with_the_cats_and_dogs_where_the_classifier_has_them():
    names = class_names()
    assert len(names) == 1000
    assert names[DOG_CLASSES[0]] == "Chihuahua" and names[DOG_CLASSES[-1]] == "Mexican hairless"
    assert [names[c] for c in CAT_CLASSES] == ["tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"]


def test_evidence_sums_the_dog_breeds_and_the_cats_and_names_the_top_class():
    outputs = np.zeros((2, 1001))
    outputs[0, 151], outputs[0, 200], outputs[0, 281], outputs[0, 504] = 0.2, 0.1, 0.3, 0.4  # 504: coffee mug
    outputs[1, 285] = 1.0
    outputs[:, 1000] = [0.7, 0.9]
    evidence = Evidence.from_outputs(outputs)
    assert evidence.dog == pytest.approx([0.3, 0.0])
    assert evidence.cat == pytest.approx([0.3, 1.0])
    assert list(evidence.top) == [504, 285]
    assert evidence.region == pytest.approx([0.7, 0.9])


def test_the_halves_of_an_image_are_its_left_and_right():
    # left half red, right half blue (a 16 px image; halves reach 2 px into the other side)
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    image[:, :8, 0] = 255
    image[:, 8:, 2] = 255
    parts = halves(image[None])
    assert parts.shape == (1, 2, 16, 16, 3)
    left, right = parts[0]
    assert left[:, :10, 0].min() == 255 and left[:, :10, 2].max() == 0  # mostly red, blue only at its edge
    assert right[:, 6:, 2].min() == 255 and right[:, 6:, 0].max() == 0


def test_both_needs_a_cat_on_one_side_and_a_dog_on_the_other():
    p = np.array([
        [0.99, 0.01],  # left dog, right cat: both
        [0.01, 0.95],  # left cat, right dog: both
        [0.99, 0.98],  # dogs on both sides
        [0.99, 0.5],  # a dog, the other side unsure
        [0.99, 0.01],  # a cat-like half with no animal in it (below): not both
    ])  # fmt: skip
    animal = np.full_like(p, 0.5)
    animal[4, 1] = 0.05
    assert list(both_in_halves(p, animal, sure=0.88, present=0.1)) == [True, True, False, False, False]


def test_the_content_checks_word_comes_before_the_threshold_and_the_band():
    band = Labelling(uncertain=(0.3, 0.7))
    assert label_for(0.99, band) == "dog" and label_for(0.5, band) == "uncertain"
    assert label_for(0.99, band, "neither") == "neither" and label_for(0.5, band, "both") == "both"


def test_neither_and_both_have_no_confidence_of_cat_or_dog():
    assert ok_row("moon.jpg", 0.99, 10, 10, "neither").confidence is None
    assert ok_row("pair.jpg", 0.4, 10, 10, "both").confidence is None
    assert ok_row("dog.jpg", 0.9, 10, 10, "dog").confidence == pytest.approx(0.9)
    got = confidences(np.array(["dog", "cat", "neither", "both", "uncertain"]), np.array([0.9, 0.2, 0.9, 0.9, 0.6]))
    assert got[:2] == pytest.approx([0.9, 0.8]) and np.isnan(got[2:4]).all() and got[4] == pytest.approx(0.6)


@pytest.fixture(scope="module")
def gate():
    from catsdogs_batch.inference.runtimes import GateRuntime

    return GateRuntime()


def photo(path, size: int = 260) -> np.ndarray:
    from catsdogs_batch.data.images import load_image

    return load_image(path, size).pixels


@pytest.mark.slow
def test_the_imagenet_classifier_finds_no_animal_in_plain_pictures_and_one_in_the_samples_photos(gate, sample_dir):
    """A grey card, a colour gradient and a checkerboard have no cell that is a cat or a dog;
    the sample's photos of cats and dogs have. (Which of the two, the whole image's shares do
    not tell reliably on these small photos: the model's p_dog does.)"""
    from catsdogs_batch.options import NEITHER_BELOW

    y, x = np.mgrid[0:260, 0:260]
    pictures = np.stack([
        np.full((260, 260, 3), 128, np.uint8),
        np.stack([x, y, 255 - x], -1).astype(np.uint8),
        (((x // 26 + y // 26) % 2) * 255)[..., None].repeat(3, -1).astype(np.uint8),
    ])  # fmt: skip
    none = Evidence.from_outputs(gate(pictures))
    assert (none.region < NEITHER_BELOW).all(), none.region
    animals = np.stack([photo(sample_dir / "train" / f"{kind}.{n}.jpg") for kind in ("cat", "dog") for n in range(4)])
    seen = Evidence.from_outputs(gate(animals))
    assert (seen.region >= NEITHER_BELOW).all(), seen.region


EXPECTED = {
    "cat.2000.jpg": "cat", "cat.2001.jpg": "cat", "dog.2000.jpg": "dog", "dog.2001.jpg": "dog",
    "gradient.png": "neither", "checkers.png": "neither", "pair.jpg": "both",
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.content_check
def test_label_sorts_cats_dogs_neither_and_both_into_their_folders_with_nothing_lost(lite2_run, mixed_folder, tmp_path):
    from catsdogs_batch.labelling.label import label_folder
    from catsdogs_batch.options import LabelOptions
    from catsdogs_batch.inference.tables import read_table

    before = {p.name: p.read_bytes() for p in mixed_folder.iterdir()}
    options = LabelOptions(lite2_run, mixed_folder, tmp_path / "labels.csv", sort_into=tmp_path / "sorted", mode="move")
    summary = label_folder(options)
    table = read_table(tmp_path / "labels.csv")
    assert dict(zip(table["path"], table["label"])) == EXPECTED
    assert summary.labels == {"cat": 2, "dog": 2, "neither": 2, "both": 1}
    placed = {p.relative_to(tmp_path / "sorted").as_posix(): p.read_bytes() for p in (tmp_path / "sorted").rglob("*") if p.is_file()}
    assert placed == {f"{label}/{name}": before[name] for name, label in EXPECTED.items()}
    assert not any(mixed_folder.iterdir())  # moved: each photo exactly once, byte for byte
    why = table.set_index("path")
    assert why.loc["gradient.png", "imagenet_dog"] + why.loc["gradient.png", "imagenet_cat"] < 0.2
    assert why.loc["cat.2000.jpg", "imagenet_top"] != "" and np.isnan(why.loc["pair.jpg", "confidence"])


@pytest.mark.slow
@pytest.mark.content_check
def test_the_content_check_can_be_turned_off_or_moved(lite2_run, mixed_folder, tmp_path):
    from catsdogs_batch.inference.engine import predict_folder
    from catsdogs_batch.options import Labelling, PredictOptions
    from catsdogs_batch.inference.tables import read_table

    def labels(labelling: Labelling, name: str) -> dict[str, str]:
        predict_folder(PredictOptions(lite2_run, mixed_folder, tmp_path / name, labelling=labelling))
        table = read_table(tmp_path / name)
        return dict(zip(table["path"], table["label"])), table

    off, table = labels(Labelling(content_check=False), "off.csv")
    assert set(off.values()) <= {"cat", "dog"} and (table["imagenet_top"] == "").all() and table["imagenet_dog"].isna().all()
    never, _ = labels(Labelling(neither_below=0, both_above=1), "never.csv")
    assert set(never.values()) <= {"cat", "dog"}
    assert {k: v for k, v in never.items() if EXPECTED[k] in ("cat", "dog")} == {k: v for k, v in EXPECTED.items() if v in ("cat", "dog")}


@pytest.mark.slow
def test_the_default_runs_own_features_give_the_packaged_classifiers_answers(lite2_run, mixed_folder, gate):
    """The shared pass (the run's backbone with the classifier on top) and the packaged Lite2 on
    its own see the same features: the same evidence on the same pixels."""
    from catsdogs_batch.models.checkpoint import find_checkpoint
    from catsdogs_batch.inference.predictor import Predictor
    from catsdogs_batch.inference.runtimes import shares_gate_backbone

    assert shares_gate_backbone(find_checkpoint(lite2_run, "keras"))
    default = Predictor(lite2_run, content_check=True)  # its int8 export carries the classifier too
    assert default.runtimes[0].name == "openvino int8" and default.runtimes[0].gated and default.gate is None
    predictor = Predictor(lite2_run, runtime="keras", content_check=True)
    assert predictor.runtimes[0].gated and predictor.gate is None
    pixels = np.stack([photo(path) for path in sorted(mixed_folder.iterdir())])
    p_dog, shared = predictor.runtimes[0].with_imagenet(pixels)
    alone = Evidence.from_outputs(gate(pixels))
    for name in ("dog", "cat", "region"):
        assert getattr(Evidence.from_outputs(shared), name) == pytest.approx(getattr(alone, name), abs=1e-4)
    assert p_dog == pytest.approx(predictor.runtimes[0](pixels), abs=1e-6)  # the plain pass: the same p_dog
    # the head's logits on each side: the pair (a cat left of a dog) is a cat on its left and a dog
    # on its right, the cats are cats on both sides, the dogs dogs
    sides = dict(zip(sorted(p.name for p in mixed_folder.iterdir()), Evidence.from_outputs(shared).sides))
    assert sides["pair.jpg"][0] < 0 < sides["pair.jpg"][1]
    assert all((sides[name] < 0).all() for name in ("cat.2000.jpg", "cat.2001.jpg"))
    assert all((sides[name] > 0).all() for name in ("dog.2000.jpg", "dog.2001.jpg"))
    assert alone.sides is None  # the packaged classifier alone has no cat-or-dog head


@pytest.mark.slow
@pytest.mark.content_check
def test_an_export_and_an_ensemble_get_the_same_answers_from_the_classifier_beside_them(lite2_run, mixed_folder, tmp_path):
    """An ONNX export cannot share the Keras backbone: the packaged Lite2 runs beside it and
    labels the photos as the run itself does; so does an ensemble whose first member is not a
    default run."""
    from catsdogs_batch.inference.engine import predict_folder
    from catsdogs_batch.inference.export import export_model
    from catsdogs_batch.options import EngineOptions, ExportOptions, PredictOptions
    from catsdogs_batch.inference.predictor import Predictor
    from catsdogs_batch.inference.tables import read_table

    export, _ = export_model(ExportOptions(lite2_run, "onnx", out=tmp_path / "onnx"))
    assert Predictor(export, content_check=True).gate is not None
    tables = {}
    for name, model, runtime in (("run", lite2_run, "keras"), ("export", export, "auto"), ("default", lite2_run, "auto")):
        predict_folder(PredictOptions(model, mixed_folder, tmp_path / f"{name}.csv", engine=EngineOptions(runtime=runtime)))
        tables[name] = read_table(tmp_path / f"{name}.csv")
    assert dict(zip(tables["export"]["path"], tables["export"]["label"])) == EXPECTED
    assert tables["export"]["imagenet_top"].tolist() == tables["run"]["imagenet_top"].tolist()
    # the run's own int8 export (the classifier inside it) labels them alike
    assert dict(zip(tables["default"]["path"], tables["default"]["label"])) == EXPECTED


@pytest.mark.slow
@pytest.mark.content_check
def test_evaluate_counts_neither_and_both_among_the_labelled_photos(lite2_run, mixed_folder, tmp_path):
    from catsdogs_batch.labelling.evaluate import evaluate_folder
    from catsdogs_batch.options import EvaluateOptions

    labelled = tmp_path / "labelled"
    labelled.mkdir()
    for name in ("cat.2000.jpg", "dog.2000.jpg"):
        (labelled / name).write_bytes((mixed_folder / name).read_bytes())
    (labelled / "cat.gradient.png").write_bytes((mixed_folder / "gradient.png").read_bytes())  # labelled cat, holds none
    (labelled / "dog.pair.jpg").write_bytes((mixed_folder / "pair.jpg").read_bytes())
    evaluation = evaluate_folder(EvaluateOptions(lite2_run, labelled, tmp_path / "eval"))
    assert (evaluation.metrics["neither"], evaluation.metrics["both"], evaluation.metrics["images"]) == (1, 1, 4)
    assert "1 neither, 1 both" in evaluation.describe()
    assert "1 called neither and 1 both" in (tmp_path / "eval" / "report.html").read_text()
