"""What a training run is made of (training/recipe.py): the options `train` and `audit` resolve
(each architecture's defaults, the refusals before any work) and the tf.data pipelines."""

from __future__ import annotations

import numpy as np
import pytest

from catsdogs_batch.errors import UserError
from catsdogs_batch.options import TrainOptions

# Each architecture's defaults, as docs/train.md and `catsdogs train --help` give them:
# (image size, learning rate, epochs); a fitted head's epochs are fine-tuning epochs after it.
DEFAULTS = {
    "efficientnet-lite0": (224, 1e-3, 0),
    "efficientnet-lite1": (240, 1e-3, 0),
    "efficientnet-lite2": (260, 1e-3, 0),
    "residual": (128, 1e-3, 50),
    "seed": (128, 3e-4, 50),
    "efficientnetv2-b0": (224, 1e-3, 50),
    "mobilenetv3-small": (224, 1e-3, 50),
    "mobilenetv3-large": (224, 1e-3, 50),
    "resnet50v2": (224, 1e-3, 50),
}


@pytest.fixture(scope="module")
def recipe(keras_imported):
    """The module (it imports TensorFlow: the fixture keras_imported pays for that)."""
    from catsdogs_batch.training import recipe

    return recipe


@pytest.mark.parametrize("arch", DEFAULTS)
def test_each_architecture_fills_in_its_own_size_rate_and_epochs(recipe, arch):
    resolved = recipe.resolve_options(TrainOptions(arch=arch))
    assert (resolved.image_size, resolved.learning_rate, resolved.epochs) == DEFAULTS[arch]
    given = recipe.resolve_options(TrainOptions(arch=arch, image_size=64, learning_rate=0.01, epochs=3))
    assert (given.image_size, given.learning_rate, given.epochs) == (64, 0.01, 3)  # what is given stays


def test_every_architecture_has_its_defaults_here():
    from catsdogs_batch.options import ARCHITECTURES

    assert set(ARCHITECTURES) == set(DEFAULTS)  # a new --arch gets a row in DEFAULTS


@pytest.mark.parametrize(
    "options, message",
    [
        (TrainOptions(arch="seed", epochs=0), "seed needs --epochs of at least 1, not 0"),
        (TrainOptions(arch="residual", epochs=0), "residual needs --epochs of at least 1, not 0"),
        # a fitted head's default is no fine-tuning epoch: random weights would leave nothing to learn
        (TrainOptions(arch="efficientnet-lite0", weights="none"),
         "--weights none with --epochs 0: efficientnet-lite0 would learn nothing; give --epochs"),
        (TrainOptions(arch="residual", weights="none"), "--weights is for pretrained backbones; residual is trained from scratch"),
        (TrainOptions(arch="seed", weights="/tmp/w.h5"), "--weights is for pretrained backbones; seed is trained from scratch"),
        (TrainOptions(batch_size=0), "--batch-size must be at least 1, not 0"),
        (TrainOptions(arch="vgg16"), "unknown --arch 'vgg16': choose one of efficientnet-lite0, "),
        (TrainOptions(image_size=16), "--image-size must be at least 32, not 16"),
    ],
)  # fmt: skip
def test_options_that_cannot_train_are_one_line(recipe, options, message):
    with pytest.raises(UserError) as refused:
        recipe.resolve_options(options)
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)


def test_a_fitted_head_with_random_weights_trains_when_given_epochs(recipe):
    resolved = recipe.resolve_options(TrainOptions(arch="efficientnet-lite0", weights="none", epochs=2))
    assert (resolved.weights, resolved.epochs) == ("none", 2)


def test_a_weights_file_is_kept_by_its_absolute_path_and_a_missing_one_refused(recipe, tmp_path, monkeypatch):
    """The run records the file's absolute path, so that --resume from another folder finds it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.weights.h5").write_bytes(b"weights")
    resolved = recipe.resolve_options(TrainOptions(arch="mobilenetv3-small", weights="mine.weights.h5"))
    assert resolved.weights == f"{tmp_path}/mine.weights.h5"

    with pytest.raises(UserError, match=r"^--weights gone\.h5: no such file \(or say imagenet or none\)$"):
        recipe.resolve_options(TrainOptions(arch="mobilenetv3-small", weights="gone.h5"))
    (tmp_path / "folder.h5").mkdir()
    with pytest.raises(UserError, match=r"^--weights folder\.h5: is not a regular file \(or say imagenet or none\)$"):
        recipe.resolve_options(TrainOptions(arch="mobilenetv3-small", weights="folder.h5"))


def numbered_images(n: int) -> tuple[np.ndarray, np.ndarray]:
    """n 8-pixel images, image k all of value 20 * k, labelled k % 2: an image's value tells
    which it is after any shift, rotation or flip (reflected at the edges)."""
    images = np.repeat(np.arange(n, dtype=np.uint8)[:, None, None, None] * 20, 8 * 8 * 3).reshape(n, 8, 8, 3)
    return images, np.arange(n) % 2


def batches(dataset) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.asarray(images), np.asarray(labels)) for images, labels in dataset]


def test_validation_batches_are_the_images_in_order_as_floats(recipe):
    train_data, val_data = numbered_images(10), numbered_images(6)
    _, val = recipe.make_datasets(TrainOptions(batch_size=4), train_data, val_data)
    got = batches(val)
    assert [len(labels) for _, labels in got] == [4, 2]
    assert all(images.dtype == np.float32 for images, _ in got)
    assert np.array_equal(np.concatenate([images for images, _ in got]), val_data[0].astype(np.float32))
    assert np.concatenate([labels for _, labels in got]).tolist() == [0, 1, 0, 1, 0, 1]


def test_training_batches_are_shuffled_each_epoch_and_keep_each_image_with_its_label(recipe):
    options = TrainOptions(batch_size=4, seed=3)
    train, _ = recipe.make_datasets(options, numbered_images(10), numbered_images(2))
    epochs = []
    for _ in range(2):
        got = batches(train)
        assert [len(labels) for _, labels in got] == [4, 4, 2]
        images = np.concatenate([images for images, _ in got])
        labels = np.concatenate([labels for _, labels in got])
        assert images.dtype == np.float32
        which = np.round(np.median(images.reshape(10, -1), axis=1) / 20).astype(int)  # each image's number
        assert sorted(which.tolist()) == list(range(10))  # every image once an epoch
        assert (labels == which % 2).all()  # with its own label
        epochs.append(which.tolist())
    assert epochs[0] != epochs[1] and epochs[0] != list(range(10))  # shuffled, and again the next epoch

    again, _ = recipe.make_datasets(options, numbered_images(10), numbered_images(2))
    first = np.concatenate([images for images, _ in batches(again)])
    assert np.round(np.median(first.reshape(10, -1), axis=1) / 20).astype(int).tolist() == epochs[0]  # the seed's order
