"""The datasets the pipeline knows: the files each one needs and how to read them into arrays.

``prepare`` turns them into one ``.npz`` per dataset (uint8 N×H×W×C images, int64 labels, class
names, train-set channel statistics), so no later stage ever opens a tarball, a gzip or PIL.
"""

import codecs
import gzip
import io
import pickle
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import numpy as np
import numpy.lib.format as npy

from ltcifar.config import catalog
from ltcifar.errors import PipelineError
from ltcifar.files import atomic_path

Arrays = dict[str, np.ndarray]
Reader = Callable[[Path], Arrays]


@dataclass(frozen=True)
class DatasetSpec:
    files: tuple[str, ...]
    read: Reader


def reads(*files: str) -> Callable[[Reader], DatasetSpec]:
    """Decorator: a reader becomes the spec of the files it reads (what download verifies)."""
    return lambda read: DatasetSpec(files, read)


DATASETS = catalog.Registry("dataset", catalog.DATASETS)

UNREADABLE = (
    tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error, pickle.UnpicklingError,
    KeyError,  # a pickle without the expected keys
    ValueError,  # pixels that do not reshape, text that does not decode
)  # fmt: skip

_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's array unpickling helper

# The only globals a CIFAR python batch names: its pixel array (written by Python 2 numpy as
# numpy.core, by numpy 2 as numpy._core) and, in a Python 3 protocol-2 pickle, its bytes.
CIFAR_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class CifarUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches only: a pickle may name any callable, so others are refused unrun."""

    def __init__(self, file: IO[bytes], where: str) -> None:
        super().__init__(file, encoding="latin1")
        self.where = where

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in CIFAR_GLOBALS:
            raise PipelineError(
                f"{self.where} holds a pickle that names {module}.{name}, which a CIFAR batch "
                "never does; refused unread (it could run code)"
            )
        return CIFAR_GLOBALS[module, name]


@contextmanager
def _reading(path: Path, dataset: str) -> Iterator[None]:
    """Any decoding failure as one line naming ``path``: an off-format file a user's MD5 accepts,
    or one that rotted on disk since."""
    try:
        yield
    except UNREADABLE as e:
        raise PipelineError(
            f"{path} cannot be read as {dataset} ({type(e).__name__}: {e}); "
            f"download.{dataset}.md5 should list only archives in the official format"
        ) from e


def _read_cifar(
    raw: Path, dataset: str, train: list[str], test: str, meta: str, labels: str, names: str
) -> Arrays:
    """A dataset's one CIFAR python archive; ``labels`` and ``names`` are its pickles' keys."""
    path = raw / DATASETS[dataset].files[0]
    # Decompressed whole, not seeked through: tarfile stops at the end-of-archive marker
    # and never reaches gzip's CRC, so a flipped byte would pass as changed pixels.
    with _reading(path, dataset), gzip.open(path) as gz:
        tar_bytes = gz.read()
    with _reading(path, dataset), tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}

        def load(name: str) -> dict:
            if name not in members:
                raise PipelineError(f"{path} has no member {name!r}; is it a CIFAR python archive?")
            file = cast(IO[bytes], tar.extractfile(members[name]))  # a file: ``members`` are
            return CifarUnpickler(file, f"{path} member {name!r}").load()

        arrays = {}
        for part, batch_names in (("train", train), ("test", [test])):
            batches = [load(n) for n in batch_names]
            x = np.concatenate([np.asarray(b["data"], np.uint8) for b in batches])
            y = np.concatenate([np.asarray(b[labels], np.int64) for b in batches])
            arrays[f"x_{part}"] = x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            arrays[f"y_{part}"] = y
        arrays["classes"] = np.array(load(meta)[names])
    return arrays


def _read_idx(path: Path) -> np.ndarray:
    """Read one gzipped IDX file (the MNIST format): magic, dims, then raw uint8 data."""
    with _reading(path, "fashion_mnist"), gzip.open(path, "rb") as f:
        data = f.read()
        if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
            raise PipelineError(f"{path} is not a uint8 IDX file")
        ndim = data[3]
        if len(data) < 4 + 4 * ndim:
            raise PipelineError(f"{path} ends inside its IDX header")
        dims = np.frombuffer(data, ">u4", ndim, offset=4).astype(int)
        body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
        promised = int(np.prod(dims))
        if body.size != promised:
            raise PipelineError(f"{path} holds {body.size} bytes, its header promises {promised}")
        return body.reshape(dims)


FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
    "Ankle boot",
]  # fmt: skip


@DATASETS.register("fashion_mnist")
@reads(*(f"{p}-{k}-ubyte.gz" for p in ("train", "t10k") for k in ("images-idx3", "labels-idx1")))
def fashion_mnist(raw: Path) -> Arrays:
    arrays = {}
    for part, prefix in (("train", "train"), ("test", "t10k")):
        arrays[f"x_{part}"] = _read_idx(raw / f"{prefix}-images-idx3-ubyte.gz")[..., None]
        arrays[f"y_{part}"] = _read_idx(raw / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    arrays["classes"] = np.array(FASHION_CLASSES)
    return arrays


@DATASETS.register("cifar10")
@reads("cifar-10-python.tar.gz")
def cifar10(raw: Path) -> Arrays:
    train = [f"data_batch_{i}" for i in range(1, 6)]
    return _read_cifar(raw, "cifar10", train, "test_batch", "batches.meta", "labels", "label_names")


@DATASETS.register("cifar100")
@reads("cifar-100-python.tar.gz")
def cifar100(raw: Path) -> Arrays:
    return _read_cifar(
        raw, "cifar100", ["train"], "test", "meta", "fine_labels", "fine_label_names"
    )


def prepare(name: str, raw: Path, out: Path, read: Reader | None = None) -> Arrays:
    """Read a dataset's verified files, write ``out`` (.npz) atomically and return the arrays.
    ``read`` replaces ``name``'s registered reader: an image folder's name is the user's own."""
    arrays = (read or DATASETS[name].read)(raw)
    for part in ("train", "test"):
        n_x, n_y = len(arrays[f"x_{part}"]), len(arrays[f"y_{part}"])
        if n_x != n_y:
            raise PipelineError(f"{raw}: {n_x} {part} images but {n_y} labels")
    x = arrays["x_train"]
    channels = [x[..., c].astype(np.float64) / 255.0 for c in range(x.shape[-1])]
    arrays["mean"] = np.array([c.mean() for c in channels], np.float32)
    arrays["std"] = np.array([c.std() for c in channels], np.float32)
    with atomic_path(out) as tmp, tmp.open("wb") as f:  # a file object: savez adds no suffix
        np.savez(f, **arrays)
    return arrays


PREPARED_KEYS = ("x_train", "y_train", "x_test", "y_test", "classes", "mean", "std")


def _layout(npz: np.lib.npyio.NpzFile, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """An array's shape and dtype, read from its .npy header: no image is loaded."""
    with cast(zipfile.ZipFile, npz.zip).open(f"{key}.npy") as f:  # None once closed
        version = npy.read_magic(f)
        header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, _, dtype = header(f)
    return shape, dtype


def _prepared_problem(npz: np.lib.npyio.NpzFile) -> str | None:
    """What is wrong with a prepared file's arrays, or None: keys, shapes, dtypes, label range."""
    missing = [k for k in PREPARED_KEYS if k not in npz.files]
    if missing:
        return f"lacks {', '.join(missing)}"
    layout = {key: _layout(npz, key) for key in npz.files}
    shape, dtype = layout["x_train"]
    if dtype != np.uint8 or len(shape) != 4:
        return f"x_train is {dtype} {shape}, expected uint8 N×H×W×C"
    hwc = shape[1:]
    for part in ("train", "test"):
        (x_shape, x_dtype), (y_shape, y_dtype) = layout[f"x_{part}"], layout[f"y_{part}"]
        if x_dtype != np.uint8 or x_shape[1:] != hwc:
            return f"x_{part} is {x_dtype} {x_shape}, expected uint8 N×{'×'.join(map(str, hwc))}"
        if y_dtype != np.int64 or y_shape != x_shape[:1]:
            return f"y_{part} is {y_dtype} {y_shape}, expected int64 ({x_shape[0]},)"
    for key in ("mean", "std"):
        shape, dtype = layout[key]
        if dtype.kind != "f" or shape != hwc[-1:]:
            return f"{key} is {dtype} {shape}, expected float ({hwc[-1]},), one per channel"
    shape, dtype = layout["classes"]
    if dtype.kind != "U" or len(shape) != 1 or shape[0] == 0:
        return f"classes is {dtype} {shape}, expected a non-empty list of names"
    for part in ("train", "test"):
        y = npz[f"y_{part}"]
        bad = y[(y < 0) | (y >= shape[0])]
        if bad.size:
            return f"y_{part} holds label {bad[0]}, but there are {shape[0]} class names"
    return None


def load_prepared(name: str, root: Path = Path("data/prepared")) -> np.lib.npyio.NpzFile:
    """Open a prepared dataset lazily (an array is read when indexed), once checked: a stale or
    hand-made file fails here, naming itself, not as an index error deep inside training."""
    path = root / f"{name}.npz"
    if not path.exists():
        raise PipelineError(f"{path} not found; run `dvc repro prepare` first")
    try:
        npz = np.load(path)
        is_npz = isinstance(npz, np.lib.npyio.NpzFile)
        problem = _prepared_problem(npz) if is_npz else "one .npy array, not an .npz archive"
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        problem = f"not a readable .npz ({type(e).__name__}: {e})"
    if problem is not None:
        raise PipelineError(f"{path}: {problem}; rerun `dvc repro prepare`")
    return npz
