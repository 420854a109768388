"""What is in a photo besides cat or dog: `neither` (no cat or dog in it) and `both` (a cat and a
dog), told by the ImageNet classifier whose weights the package installs (EfficientNet-Lite2's
`_fc`, 1,000 classes: 151-268 are dog breeds, 281-285 domestic cats). A binary model has no answer
for a photo of the moon (it said `dog`, p_dog 0.99). Per image (docs/benchmarks.md has the figures
and the rules tried and dropped):
- `neither`: no cell of the backbone's feature map (a class activation map, 9 x 9 cells at 260 px)
  has `neither_below` of its probability on the cat and dog classes. The whole-image share alone
  misjudges small, re-encoded Kaggle photos (as low as 0.06).
- `both`: the left and right halves of the photo (each reaching an eighth into the other) are a
  cat and a dog, by the model's own p_dog of each half (`both_above`), and each holds a cat or a
  dog by the ImageNet classifier (`PRESENT`). Only the photos the model is unsure of (p_dog
  within (1 - BOTH_CANDIDATES, BOTH_CANDIDATES)) are cut into halves, and of a default run only
  those whose sides its head reads apart (SIDES_APART), so a folder of ordinary pets costs little.

The classifier runs on the model's own backbone when that is EfficientNet-Lite2 with its
ImageNet weights untouched (the default run: the features are computed once), else beside the
model on the same decoded pixels."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np

DOG_CLASSES = np.arange(151, 269)  # ImageNet's dog breeds
CAT_CLASSES = np.arange(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
GATE_BACKBONE = "efficientnet-lite2"
GATE_IMAGE_SIZE = 260  # pixels: Lite2's native size, where the thresholds were measured
OVERLAP = 8  # a half reaches 1/OVERLAP of the image into the other half
PRESENT = 0.1  # a half holds a cat or a dog: at least this share of its probability on them
BOTH_CANDIDATES = 0.999  # only photos with p_dog within (1 - this, this) are cut into halves
# ... and, where the model's head sees the feature map (a default run), whose two sides' logits
# (the head on the pooled left and right columns) lie at least this far apart
SIDES_APART = 3.0


def class_names() -> list[str]:
    """ImageNet's 1,000 class names, in the classifier's order."""
    return resources.files(__package__).joinpath("imagenet_classes.txt").read_text(encoding="utf-8").splitlines()


@dataclass(frozen=True)
class Evidence:
    """What the ImageNet classifier says of a batch: each image's share of probability on the
    dog breeds and on the cats (whole image), its most likely class, and the largest share of
    a cell of the feature map on the cats and dogs together."""

    dog: np.ndarray  # (n,) float
    cat: np.ndarray  # (n,)
    top: np.ndarray  # (n,) int: the class index
    region: np.ndarray  # (n,) float
    sides: np.ndarray | None = None  # (n, 2): the model's logit of dog on the left and right side, where known

    @staticmethod
    def from_outputs(outputs: np.ndarray) -> Evidence:
        """From the gate model's output: (n, 1001) = the whole image's 1,000 probabilities, then
        the largest cell share, and with a head two more: its sides' logits (see `gate_outputs`)."""
        outputs = np.asarray(outputs, dtype=np.float64)
        probabilities = outputs[:, :1000]
        return Evidence(
            probabilities[:, DOG_CLASSES].sum(1), probabilities[:, CAT_CLASSES].sum(1),
            probabilities.argmax(1), outputs[:, 1000], outputs[:, 1001:1003] if outputs.shape[1] > 1001 else None,
        )  # fmt: skip


def gate_outputs(feature_map, state: dict[str, np.ndarray], head: list[np.ndarray] | None = None):
    """Keras layers on a Lite backbone's feature map (n, h, w, 1280): the ImageNet classifier
    (`_fc` of `state`) on the pooled features, softmaxed (1,000), and on each cell, whose share
    on the cat and dog classes is maxed over the cells (1); concatenated to (n, 1001). With the
    model's `head` (its p_dog layer's kernel and bias), also that head's logit on the pooled left
    and right columns (the middle one in both): (n, 1003)."""
    import keras
    from keras import layers

    weights, bias = state["_fc.weight"], state["_fc.bias"]
    classifier = layers.Dense(1000, name="imagenet_classifier", trainable=False)
    pooled = layers.GlobalAveragePooling2D(name="imagenet_pool")(feature_map)
    whole = layers.Softmax(name="imagenet_probabilities")(classifier(pooled))
    cells = layers.Softmax(name="imagenet_cell_probabilities")(classifier(feature_map))
    animal = np.zeros((1000, 1), np.float32)
    animal[np.r_[DOG_CLASSES, CAT_CLASSES]] = 1
    share = layers.Dense(1, use_bias=False, name="imagenet_cat_or_dog", trainable=False)
    region = layers.GlobalMaxPooling2D(name="imagenet_region")(share(cells))
    classifier.set_weights([weights.T.astype(np.float32), bias.astype(np.float32)])
    share.set_weights([animal])
    outputs = [whole, region]
    if head is not None:
        width = feature_map.shape[2]
        side = layers.Dense(1, name="imagenet_side_logit", trainable=False)
        for name, cropping in (("left", (0, width // 2)), ("right", (width // 2, 0))):
            columns = layers.Cropping2D(((0, 0), cropping), name=f"imagenet_{name}_columns")(feature_map)
            outputs.append(side(layers.GlobalAveragePooling2D(name=f"imagenet_{name}_pool")(columns)))
        side.set_weights(head)
    return keras.layers.Concatenate(name="imagenet")(outputs)


def gate_model():
    """The packaged EfficientNet-Lite2 and its ImageNet classifier: uint8-range pixels in, the
    (n, 1001) outputs of `gate_outputs` out. For models that do not share its backbone."""
    import keras

    from .efficientnet_lite import efficientnet_lite, lite_state_dict

    state = lite_state_dict(GATE_BACKBONE, "imagenet")
    backbone = efficientnet_lite(GATE_BACKBONE, GATE_IMAGE_SIZE, "imagenet")
    return keras.Model(backbone.input, gate_outputs(backbone.output, state), name="imagenet_gate")


def halves(pixels: np.ndarray) -> np.ndarray:
    """The two overlapping halves of each image (left, right), each resized back to the image's
    size: (n, 2, size, size, 3)."""
    import cv2

    size = pixels.shape[1]
    middle, reach = size // 2, size // OVERLAP
    out = np.empty((len(pixels), 2, *pixels.shape[1:]), dtype=pixels.dtype)
    for i, image in enumerate(pixels):
        for j, part in enumerate((image[:, : middle + reach], image[:, middle - reach :])):
            out[i, j] = cv2.resize(part, (size, size), interpolation=cv2.INTER_LINEAR)
    return out


def both_in_halves(p_dog: np.ndarray, animal: np.ndarray, sure: float, present: float) -> np.ndarray:
    """Whether the halves of each image (p_dog and whole-half cat-or-dog share, (n, 2) each:
    left, right) hold a cat on one side and a dog on the other: both halves with an animal
    (share >= `present`), one sure of dog (p_dog >= `sure`), the other of cat (p_dog <= 1 - `sure`)."""
    seen = animal >= present
    dog, cat = seen & (p_dog >= sure), seen & (p_dog <= 1 - sure)
    return (dog[:, 0] & cat[:, 1]) | (cat[:, 0] & dog[:, 1])
