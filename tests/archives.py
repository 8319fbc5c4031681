"""Tiny, format-exact stand-ins for the real dataset files, and a local HTTP server to serve them.

The archives have the real layout (member names, pickle keys, IDX headers) with a few seeded
random images, so download and prepare are tested offline in milliseconds, and each ``*_arrays``
function returns exactly what ``prepare`` should read back from the matching ``write_*`` file.
"""

import gzip
import hashlib
import http.server
import io
import pickle
import tarfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = "airplane automobile bird cat deer dog frog horse ship truck".split()
CIFAR100_CLASSES = """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy
    bridge bus butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach
    couch crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house
    kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain
    mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate
    poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper
    snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television
    tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split()
CIFAR100_COARSE = [f"superclass_{i}" for i in range(20)]
FASHION_CLASSES = (
    "T-shirt/top|Trouser|Pullover|Dress|Coat|Sandal|Shirt|Sneaker|Bag|Ankle boot".split("|")
)
FASHION_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}


def _labels(rng: np.random.Generator, n_classes: int, per_class: int) -> np.ndarray:
    return rng.permutation(np.repeat(np.arange(n_classes, dtype=np.int64), per_class))


def _images(rng: np.random.Generator, n: int, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8)


def cifar_arrays(
    n_classes: int, n_train_per_class: int, n_test_per_class: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """The HWC images and labels a tiny CIFAR archive holds (what ``prepare`` must return)."""
    rng = np.random.default_rng(seed)
    y_train = _labels(rng, n_classes, n_train_per_class)
    y_test = _labels(rng, n_classes, n_test_per_class)
    x_train = _images(rng, len(y_train), (32, 32, 3))
    x_test = _images(rng, len(y_test), (32, 32, 3))
    classes = CIFAR10_CLASSES if n_classes == 10 else CIFAR100_CLASSES
    return dict(
        x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, classes=np.array(classes)
    )


def fashion_arrays(n_train: int, n_test: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The N×28×28×1 images and labels of the tiny Fashion-MNIST IDX files."""
    rng = np.random.default_rng(seed)
    y_train, y_test = rng.integers(0, 10, n_train), rng.integers(0, 10, n_test)
    return dict(
        x_train=_images(rng, n_train, (28, 28, 1)),
        y_train=y_train.astype(np.int64),
        x_test=_images(rng, n_test, (28, 28, 1)),
        y_test=y_test.astype(np.int64),
        classes=np.array(FASHION_CLASSES),
    )


def _rows(x: np.ndarray) -> np.ndarray:
    """HWC images -> CIFAR's rows: 1024 red, then 1024 green, then 1024 blue bytes each."""
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2).reshape(len(x), 3072))


def _gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)  # fixed header: the same content gives the same MD5


def _write_tar_gz(path: Path, top: str, members: dict[str, bytes]) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        folder = tarfile.TarInfo(top)
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(folder)
        for name, data in members.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_gzip_bytes(buf.getvalue()))
    return path


def _pickle(obj: dict) -> bytes:
    return pickle.dumps(obj, protocol=2)


def write_cifar10(
    dir: Path,
    n_train_per_class: int = 2,
    n_test_per_class: int = 1,
    seed: int = 0,
    omit: tuple[str, ...] = (),
) -> Path:
    """Write ``dir/cifar-10-python.tar.gz``: five data batches, a test batch and batches.meta,
    less the members named in ``omit`` (a broken layout)."""
    a = cifar_arrays(10, n_train_per_class, n_test_per_class, seed)
    members = {}
    for i, idx in enumerate(np.array_split(np.arange(len(a["y_train"])), 5), start=1):
        members[f"data_batch_{i}"] = _pickle(
            {
                "batch_label": f"training batch {i} of 5",
                "labels": a["y_train"][idx].tolist(),
                "data": _rows(a["x_train"][idx]),
                "filenames": [f"img_{j}.png" for j in idx],
            }
        )
    members["test_batch"] = _pickle(
        {
            "batch_label": "testing batch 1 of 1",
            "labels": a["y_test"].tolist(),
            "data": _rows(a["x_test"]),
            "filenames": [f"test_{j}.png" for j in range(len(a["y_test"]))],
        }
    )
    members["batches.meta"] = _pickle(
        {
            "num_cases_per_batch": len(a["y_train"]) // 5,
            "label_names": CIFAR10_CLASSES,
            "num_vis": 3072,
        }
    )
    members["readme.html"] = b"<html></html>"
    members = {k: v for k, v in members.items() if k not in omit}
    return _write_tar_gz(Path(dir) / "cifar-10-python.tar.gz", "cifar-10-batches-py", members)


def write_cifar100(
    dir: Path, n_train_per_class: int = 1, n_test_per_class: int = 1, seed: int = 0
) -> Path:
    """Write ``dir/cifar-100-python.tar.gz``: train, test and meta pickles over 100 classes."""
    a = cifar_arrays(100, n_train_per_class, n_test_per_class, seed)

    def part(x: np.ndarray, y: np.ndarray, label: str) -> bytes:
        return _pickle(
            {
                "filenames": [f"{label}_{j}.png" for j in range(len(y))],
                "batch_label": label,
                "fine_labels": y.tolist(),
                "coarse_labels": (y % 20).tolist(),
                "data": _rows(x),
            }
        )

    members = {
        "train": part(a["x_train"], a["y_train"], "training batch 1 of 1"),
        "test": part(a["x_test"], a["y_test"], "testing batch 1 of 1"),
        "meta": _pickle(
            {"fine_label_names": CIFAR100_CLASSES, "coarse_label_names": CIFAR100_COARSE}
        ),
    }
    return _write_tar_gz(Path(dir) / "cifar-100-python.tar.gz", "cifar-100-python", members)


def idx_bytes(array: np.ndarray) -> bytes:
    """An uncompressed uint8 IDX file: magic 0x0000 08 <ndim>, big-endian dims, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + np.ascontiguousarray(array, np.uint8).tobytes()


def write_fashion_idx(dir: Path, n_train: int = 20, n_test: int = 10, seed: int = 0) -> list[Path]:
    """Write the four gzipped IDX files of Fashion-MNIST (images N×28×28, labels N) into ``dir``."""
    a = fashion_arrays(n_train, n_test, seed)
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, name in FASHION_FILES.items():
        array = a[key][..., 0] if key.startswith("x") else a[key]
        (dir / name).write_bytes(_gzip_bytes(idx_bytes(array)))
        paths.append(dir / name)
    return paths


def md5_of(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder without logging each request to stderr."""

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve(handler: Callable[..., http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """Run ``handler`` on 127.0.0.1 (a free port) in a thread; yield the base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextmanager
def serve_dir(dir: Path) -> Iterator[str]:
    """Serve the files of ``dir`` over HTTP on 127.0.0.1; yield the base URL."""
    with serve(partial(QuietHandler, directory=str(dir))) as url:
        yield url


def leave_marker(path: str) -> None:
    """What a hostile pickle would run instead of a shell command: it leaves a file."""
    Path(path).write_text("code ran")


class RunsCode:
    """Unpickles by calling ``leave_marker``: a stand-in for a file that runs code when read."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return leave_marker, (str(self.path),)
