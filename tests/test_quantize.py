"""Keras models as OpenVINO int8 models (inference/quantize.py), on the tiny model of
conftest.py: which layers each plan keeps in fp32, the int8 file beside its float model, the
embedding `train` and `audit` run, and what is refused when NNCF or OpenVINO is missing."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from catsdogs_batch.errors import UserError

from conftest import pixels, write_image, write_photos

# The tiny model's layers that hold weights (the seed's CNN at 32 px, 16 dense units), in order:
# three convolutions, the hidden dense layer, then p_dog (one unit).
LAYERS = ["conv2d", "conv2d_1", "conv2d_2", "dense", "p_dog"]
# Its weights and biases: 3*3*3*32 + 32, 3*3*32*64 + 64, 3*3*64*128 + 128, (4*4*128)*16 + 16, 16 + 1
PARAMETERS = 896 + 18_496 + 73_856 + 32_784 + 17


@pytest.fixture(scope="module")
def keras_model(tiny_model, keras_imported):
    return keras_imported.saving.load_model(tiny_model / "model.keras", compile=False)


@pytest.fixture(scope="module")
def float_model(keras_model, nncf_imported):
    """The tiny model converted to OpenVINO (fp32), as export and train convert it; once for the
    module, since quantizing leaves the model it is given as it was (checked below)."""
    import openvino as ov

    from catsdogs_batch.inference.quantize import uint8_function

    return ov.convert_model(uint8_function(keras_model, 32))


@pytest.fixture(scope="module")
def nncf_imported():
    """NNCF imported once, a second of CPU time: a fixture's, not the first test's."""
    import nncf

    return nncf


def calibration(n: int = 16) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def weight_types(ov_model) -> list[str]:
    """The element type each Convolution and MatMul reads its weights in, in order: f32 where
    the layer stayed in fp32, i8 where NNCF quantized it (int8 constants, converted and scaled)."""
    types = []
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() in ("Convolution", "MatMul"):
            node = op.input_value(1).get_node()
            while node.get_type_name() != "Constant":  # through the decompression: Multiply, Subtract, Convert
                node = node.input_value(0).get_node()
            types.append(node.get_element_type().get_type_name())
    return types


def test_the_fast_plan_quantizes_every_layer_but_p_dog(float_model, nncf_imported):
    from catsdogs_batch.cpu import has_vnni
    from catsdogs_batch.inference.quantize import quantize_openvino

    quantized, quantizer, needs_vnni = quantize_openvino(float_model, calibration(), plan=0)
    assert weight_types(float_model) == ["f32"] * len(LAYERS)  # the float model is left as it was
    assert weight_types(quantized) == ["i8", "i8", "i8", "i8", "f32"]  # p_dog's one unit stays fp32
    assert quantizer == (
        f"nncf {nncf_imported.__version__} (post-training, fast bias correction; the one-unit layers (fast bias correction) fp32)"
    )
    assert needs_vnni is has_vnni()  # without the overflow fix only where this CPU has VNNI


def test_the_last_plan_keeps_the_first_convolution_in_fp32_and_needs_no_vnni(float_model):
    from catsdogs_batch.inference.quantize import quantize_openvino

    quantized, quantizer, needs_vnni = quantize_openvino(float_model, calibration(), plan=2)
    assert weight_types(quantized) == ["f32", "i8", "i8", "i8", "f32"]
    assert quantizer.endswith("(post-training, full bias correction; the first convolution and the one-unit layers fp32)")
    assert needs_vnni is False  # the same int8 on every CPU


def test_the_int8_file_beside_its_float_model_is_a_quarter_of_its_size_and_gives_its_answers(float_model, tmp_path):
    import openvino as ov

    from catsdogs_batch.inference.quantize import quantize_openvino
    from catsdogs_batch.inference.runtimes import openvino_config

    quantized, _, _ = quantize_openvino(float_model, calibration(), plan=0)
    ov.save_model(float_model, tmp_path / "model.xml", compress_to_fp16=False)
    ov.save_model(quantized, tmp_path / "model-int8.xml")
    fp32_bytes, int8_bytes = ((tmp_path / name).stat().st_size for name in ("model.bin", "model-int8.bin"))
    assert 4 * PARAMETERS <= fp32_bytes < 4 * PARAMETERS + 1024  # four bytes a parameter
    assert int8_bytes < 0.3 * fp32_bytes  # one byte a weight, and their scales

    photos = pixels(write_photos(tmp_path / "photos"))
    core = ov.Core()
    p_fp32, p_int8 = (
        np.asarray(core.compile_model(tmp_path / name, "CPU", openvino_config(1))(photos)[0]).reshape(-1)
        for name in ("model.xml", "model-int8.xml")
    )
    assert np.abs(p_int8 - p_fp32).max() < 0.05
    assert ((p_int8 >= 0.5) == (p_fp32 >= 0.5)).all()


@pytest.fixture
def features(keras_model, keras_imported):
    """The tiny model without its head: 16 features an image."""
    return keras_imported.Model(keras_model.input, keras_model.get_layer("dense").output)


@pytest.fixture
def photo_folder(tmp_path) -> tuple[Path, list[str]]:
    folder = tmp_path / "train"
    for n in range(12):
        write_image(folder / f"cat.{n}.jpg", 0, seed=n)
        write_image(folder / f"dog.{n}.jpg", 1, seed=100 + n)
    return folder, sorted(p.name for p in folder.iterdir())


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([x @ y / (np.linalg.norm(x) * np.linalg.norm(y)) for x, y in zip(a, b)])


@pytest.mark.slow
def test_the_embedding_is_int8_on_a_cpu_and_points_where_kerass_features_do(features, photo_folder):
    import tensorflow as tf

    from catsdogs_batch.inference.quantize import embedder

    embed, name = embedder(features, 32, *photo_folder, workers=1)
    assert name == ("keras" if tf.config.list_physical_devices("GPU") else "openvino int8")
    images = pixels(photo_folder[0])
    got, keras_features = embed(images), np.asarray(features(images.astype(np.float32), training=False))
    assert got.shape == (24, 16) and got.dtype == np.float32
    assert np.median(cosines(got, keras_features)) >= 0.98


@pytest.mark.slow
def test_a_backbone_whose_int8_features_depart_from_kerass_is_embedded_by_keras(features, photo_folder, monkeypatch, caplog):
    import catsdogs_batch.inference.quantize as quantize

    monkeypatch.setattr(quantize, "EMBEDDING_AGREEMENT", 1.01)  # no int8 model agrees that well
    with caplog.at_level(logging.WARNING, logger="catsdogs_batch"):
        embed, name = quantize.embedder(features, 32, *photo_folder, workers=1)
    assert name == "keras"
    images = pixels(photo_folder[0])
    assert np.allclose(embed(images), features(images.astype(np.float32), training=False), atol=1e-5)
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):  # with a GPU Keras embeds without trying int8
        assert "the int8 backbone's features depart from Keras's (median cosine " in caplog.text


def test_int8_without_nncf_is_one_line_naming_the_install(monkeypatch):
    from catsdogs_batch.inference.quantize import quantize_openvino

    monkeypatch.setitem(sys.modules, "nncf", None)  # as if not installed
    with pytest.raises(UserError) as refused:
        quantize_openvino(None, calibration())
    assert str(refused.value) == "an int8 openvino model needs nncf, which is not installed (a requirement of catsdogs-batch: pip install -e .)"


def test_cosines_of_rows_with_zero_for_an_empty_row():
    from catsdogs_batch.inference.quantize import _cosines

    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [3.0, 4.0]])
    b = np.array([[0.0, 2.0], [2.0, 2.0], [1.0, 0.0], [-3.0, -4.0]])
    assert _cosines(a, b) == pytest.approx([0.0, 1.0, 0.0, -1.0])  # at right angles, alike, no direction, opposite
    images = np.ones((2, 4, 4, 3))  # any shape: rows are flattened
    assert _cosines(images, 2 * images) == pytest.approx([1.0, 1.0])
