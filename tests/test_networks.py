"""models/networks.py: the layers and shapes of each --arch, and fetching a backbone's ImageNet weights."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from catsdogs_batch.models.networks import residual_cnn, seed_cnn
from catsdogs_batch.options import ARCHITECTURES


def test_the_seed_model_keeps_the_seeds_recipe():
    """What docs/commands.md promises of `--arch seed` (Conv2D 32/64/128, each with
    BatchNormalization and MaxPooling2D, Flatten, Dense 128, Dropout 0.5: 4.3M parameters at
    128 px) and of --l2 and --dropout, seen from outside: RGB pixels in, one probability each out,
    L2 in the loss in proportion to its weight, dropout changing answers in training only."""
    model = seed_cnn()  # its defaults: 128 px, Dense 128, Dropout 0.5
    assert round(model.count_params() / 1e6, 1) == 4.3
    assert [layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D)] == [32, 64, 128]
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) == 3
    pixels = np.random.default_rng(0).integers(0, 256, (8, 128, 128, 3)).astype("float32")
    p = model(pixels, training=False).numpy()
    assert p.shape == (8, 1) and ((0 < p) & (p < 1)).all()
    assert np.array_equal(model(pixels, training=False).numpy(), p)
    assert not np.allclose(model(pixels, training=True), model(pixels, training=True))  # units dropped at random
    no_dropout = seed_cnn(dropout=0.0)
    no_dropout.set_weights(model.get_weights())
    assert np.allclose(no_dropout(pixels, training=True), no_dropout(pixels, training=True))

    weights = seed_cnn(image_size=32, dense_units=8).get_weights()

    def weight_penalty(l2: float) -> float:
        """The loss the model adds for its weights, for the same weights at this --l2."""
        small = seed_cnn(image_size=32, dense_units=8, l2=l2)
        small.set_weights(weights)
        return float(sum(small.losses))

    assert weight_penalty(0.0) == 0 and weight_penalty(1e-4) > 0
    assert weight_penalty(2e-4) == pytest.approx(2 * weight_penalty(1e-4), rel=1e-5)


def test_the_residual_model_sees_the_whole_image_with_few_parameters():
    model = residual_cnn(image_size=128)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"SeparableConv2D", "Add", "GlobalAveragePooling2D", "Dropout"} <= kinds and "Flatten" not in kinds
    assert model.count_params() < seed_cnn(image_size=128).count_params() / 2
    assert model.layers[-1].name == "p_dog" and model.layers[-1].activation.__name__ == "sigmoid"
    # Global average pooling: any input size works, and the output is one probability.
    assert model.input_shape == (None, 128, 128, 3) and model.output_shape == (None, 1)
    assert residual_cnn(image_size=32).output_shape == (None, 1)


@pytest.mark.slow
def test_a_weights_download_that_hangs_gives_up_in_one_line(tmp_path, monkeypatch):
    """A network that accepts and never answers (here a proxy that listens and stays silent)
    must not hang the command: the download gives up after DOWNLOAD_TIMEOUT seconds."""
    import socket
    import time

    from catsdogs_batch.models import networks as model_module
    from catsdogs_batch.errors import UserError

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{silent.getsockname()[1]}")
    for name in ("HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(model_module, "DOWNLOAD_TIMEOUT", 1)
    started = time.monotonic()
    try:
        with pytest.raises(UserError, match="cannot get the ImageNet weights of mobilenetv3-small"):
            model_module.pretrained_features("mobilenetv3-small", 32, "imagenet")
    finally:
        silent.close()
    assert time.monotonic() - started < 30
    assert socket.getdefaulttimeout() is None  # the process's own setting is given back


@pytest.mark.slow
@pytest.mark.parametrize("arch", [a for a, spec in ARCHITECTURES.items() if spec.backbone])
def test_every_pretrained_backbone_builds_saves_and_loads(arch, tmp_path):
    """Random weights (no download here): the model takes uint8-range pixels at any size the
    backbone allows, its preprocessing inside, and round-trips through a .keras file."""
    import numpy as np

    from catsdogs_batch.models.networks import pretrained_model

    model = pretrained_model(arch, 32, "none")
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 1)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    assert loaded.predict(pixels, verbose=0) == pytest.approx(model.predict(pixels, verbose=0), abs=1e-5)
