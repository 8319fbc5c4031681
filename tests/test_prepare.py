"""prepare() and the prepare stage on tiny format-exact archives: shapes, dtypes, exact pixels."""

import gzip
import pickle
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from ltcifar.data.datasets import load_prepared, prepare
from ltcifar.errors import PipelineError
from stages import prepare as prepare_stage
from tests.archives import (
    RunsCode,
    _write_tar_gz,
    cifar_arrays,
    fashion_arrays,
    idx_bytes,
    write_cifar10,
    write_cifar100,
    write_fashion_idx,
)

REPO = Path(__file__).resolve().parents[1]
CASES = {
    "cifar10": (lambda d: write_cifar10(d, 3, 2), lambda: cifar_arrays(10, 3, 2), (32, 32, 3)),
    "cifar100": (lambda d: write_cifar100(d, 1, 1), lambda: cifar_arrays(100, 1, 1), (32, 32, 3)),
    "fashion_mnist": (
        lambda d: write_fashion_idx(d, 12, 5),
        lambda: fashion_arrays(12, 5),
        (28, 28, 1),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_prepare_round_trips_exactly(tmp_path: Path, name: str) -> None:
    write, expected, shape = CASES[name]
    write(tmp_path / "raw")
    want = expected()
    got = prepare(name, tmp_path / "raw", tmp_path / "out" / f"{name}.npz")
    for split in ("train", "test"):
        x, y = got[f"x_{split}"], got[f"y_{split}"]
        assert x.shape == (len(want[f"y_{split}"]), *shape) and x.dtype == np.uint8
        assert y.dtype == np.int64
        np.testing.assert_array_equal(x, want[f"x_{split}"])
        np.testing.assert_array_equal(y, want[f"y_{split}"])
    assert got["classes"].tolist() == want["classes"].tolist()
    assert len(got["classes"]) == (100 if name == "cifar100" else 10)
    pixels = want["x_train"].reshape(-1, shape[-1]) / 255.0
    np.testing.assert_allclose(got["mean"], pixels.mean(0), rtol=1e-6)
    np.testing.assert_allclose(got["std"], pixels.std(0), rtol=1e-6)
    with np.load(tmp_path / "out" / f"{name}.npz") as saved:  # no pickles inside
        assert sorted(saved.files) == sorted(got)
        np.testing.assert_array_equal(saved["x_test"], got["x_test"])
    assert [p.name for p in (tmp_path / "out").iterdir()] == [f"{name}.npz"]


def test_cifar_rows_are_planar_rgb(tmp_path: Path) -> None:
    """A CIFAR row is 1024 red, 1024 green, 1024 blue bytes, each plane row-major."""
    archive = write_cifar10(tmp_path, 1, 1)
    with tarfile.open(archive) as tar:
        row = pickle.load(tar.extractfile("cifar-10-batches-py/data_batch_1"))["data"][0]
    x = prepare("cifar10", tmp_path, tmp_path / "c.npz")["x_train"][0]
    assert (x[0, 0, 0], x[0, 1, 0], x[1, 0, 0]) == (row[0], row[1], row[32])
    assert (x[0, 0, 1], x[0, 0, 2], x[31, 31, 2]) == (row[1024], row[2048], row[3071])


def test_fashion_images_are_row_major(tmp_path: Path) -> None:
    (images, *_) = write_fashion_idx(tmp_path, 3, 2)
    raw = gzip.decompress(images.read_bytes())
    assert raw[:16] == b"\x00\x00\x08\x03" + np.array([3, 28, 28], ">u4").tobytes()
    x = prepare("fashion_mnist", tmp_path, tmp_path / "f.npz")["x_train"]
    assert (x[0, 0, 1, 0], x[0, 1, 0, 0], x[1, 0, 0, 0]) == (raw[17], raw[16 + 28], raw[16 + 784])


def _corrupt_member(raw: Path) -> str:
    archive = write_cifar100(raw)
    archive.rename(raw / "cifar-10-python.tar.gz")  # a CIFAR-100 archive where CIFAR-10 belongs
    return "cifar10"


def _bad_magic(raw: Path) -> str:
    images = write_fashion_idx(raw)[0]
    images.write_bytes(gzip.compress(b"\x00\x00\x0d\x03" + bytes(12)))  # float32 IDX
    return "fashion_mnist"


def _short_body(raw: Path) -> str:
    images = write_fashion_idx(raw)[0]
    images.write_bytes(gzip.compress(idx_bytes(np.zeros((4, 28, 28), np.uint8))[:-1]))
    return "fashion_mnist"


@pytest.mark.parametrize("corrupt", [_corrupt_member, _bad_magic, _short_body])
def test_wrong_archive_is_a_pipeline_error(tmp_path: Path, corrupt) -> None:
    name = corrupt(tmp_path)
    with pytest.raises(PipelineError, match=str(tmp_path)):
        prepare(name, tmp_path, tmp_path / "x.npz")
    assert not (tmp_path / "x.npz").exists()


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-4])  # only the gzip trailer's length field is lost


FILES = {
    "cifar10": lambda d: write_cifar10(d, 3, 2),
    "cifar100": write_cifar100,
    "fashion_mnist": lambda d: write_fashion_idx(d, 12, 5)[0],
}


@pytest.mark.parametrize("damage", [_flip_byte, _truncate])
@pytest.mark.parametrize("name", sorted(FILES))
def test_damaged_archive_names_the_file(tmp_path: Path, name: str, damage) -> None:
    """A flipped byte or a cut end fails gzip's CRC or length check, even where the damage
    falls inside pixel data that would otherwise decode into different images."""
    path = FILES[name](tmp_path)
    damage(path)
    with pytest.raises(PipelineError, match=f"^{re.escape(str(path))} cannot be read as {name}"):
        prepare(name, tmp_path, tmp_path / "x.npz")
    assert not (tmp_path / "x.npz").exists()


def test_cifar_archive_without_a_batch_names_file_and_member(tmp_path: Path) -> None:
    archive = write_cifar10(tmp_path, omit=("data_batch_1",))
    with pytest.raises(PipelineError, match=f"{re.escape(str(archive))} has no member 'data_b"):
        prepare("cifar10", tmp_path, tmp_path / "x.npz")


def _edit(key: str, fn):
    def edit(a: dict) -> None:
        a[key] = fn(a[key])

    return edit


BAD_PREPARED = {
    "x float": (_edit("x_train", lambda x: x.astype(np.float32)), "x_train is float32"),
    "x no channel axis": (
        _edit("x_train", lambda x: x[..., 0]),
        r"x_train is uint8 \(12, 28, 28\)",
    ),
    "x_test other size": (_edit("x_test", lambda x: x[:, :27]), "x_test is uint8 .*N×28×28×1"),
    "y int32": (_edit("y_train", lambda y: y.astype(np.int32)), "y_train is int32"),
    "y short": (
        _edit("y_test", lambda y: y[:-1]),
        r"y_test is int64 \(4,\), expected int64 \(5,\)",
    ),
    "mean per pixel": (_edit("mean", lambda m: np.zeros(3, np.float32)), r"mean is float32 \(3,\)"),
    "no std": (lambda a: a.pop("std"), "lacks std"),
    "label past classes": (
        _edit("y_train", lambda y: np.r_[y[:-1], 10]),
        "y_train holds label 10, but there are 10 class names",
    ),
    "negative label": (_edit("y_test", lambda y: np.r_[-1, y[1:]]), "y_test holds label -1"),
}


@pytest.mark.parametrize("case", sorted(BAD_PREPARED))
def test_load_prepared_checks_arrays(tmp_path: Path, case: str) -> None:
    write_fashion_idx(tmp_path / "raw", 12, 5)
    arrays = prepare("fashion_mnist", tmp_path / "raw", tmp_path / "fashion_mnist.npz")
    assert sorted(load_prepared("fashion_mnist", tmp_path).files) == sorted(arrays)
    edit, problem = BAD_PREPARED[case]
    edit(arrays)
    np.savez(tmp_path / "fashion_mnist.npz", **arrays)
    path = re.escape(str(tmp_path / "fashion_mnist.npz"))
    with pytest.raises(PipelineError, match=f"^{path}: {problem}"):
        load_prepared("fashion_mnist", tmp_path)


@pytest.mark.parametrize(
    "write", [lambda p: p.write_bytes(b"junk"), lambda p: p.write_bytes(p.read_bytes()[:300])]
)
def test_load_prepared_names_unreadable_file(tmp_path: Path, write) -> None:
    write_fashion_idx(tmp_path / "raw", 12, 5)
    path = tmp_path / "fashion_mnist.npz"
    prepare("fashion_mnist", tmp_path / "raw", path)
    write(path)
    with pytest.raises(PipelineError, match=f"^{re.escape(str(path))}: not a readable .npz"):
        load_prepared("fashion_mnist", tmp_path)


@pytest.fixture
def quick_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with params.yaml on the quick profile (fashion_mnist only)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "quick"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_stage_prepares_profile_and_drops_stale(quick_repo: Path, capsys) -> None:
    write_fashion_idx(quick_repo / "data/raw/fashion_mnist", 12, 5)
    stale = quick_repo / "data/prepared/cifar10.npz"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    prepare_stage.main()
    assert sorted(p.name for p in stale.parent.iterdir()) == ["fashion_mnist.npz"]
    out = capsys.readouterr().out
    assert "fashion_mnist: train (12, 28, 28, 1), test (5, 28, 28, 1), 10 classes" in out


def test_stage_names_missing_raw_folder(quick_repo: Path) -> None:
    with pytest.raises(PipelineError, match="data/raw holds no dataset; run `dvc repro download"):
        prepare_stage.main()
    write_fashion_idx(quick_repo / "data/raw/fashion_mnist")[1].unlink()
    with pytest.raises(PipelineError, match="lacks train-labels-idx1-ubyte.gz"):
        prepare_stage.main()


def test_stage_turns_unreadable_archive_into_one_line(quick_repo: Path) -> None:
    write_fashion_idx(quick_repo / "data/raw/fashion_mnist")[0].write_bytes(b"not gzip")
    with pytest.raises(PipelineError, match=r"cannot be read as fashion_mnist \(BadGzipFile"):
        prepare_stage.main()


def _rewrite_members(archive: Path, edit) -> None:
    """Rewrite every pickled member of a CIFAR archive through ``edit(name, bytes)``."""
    with tarfile.open(archive) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    top = next(iter(members)).split("/")[0]
    _write_tar_gz(archive, top, {n.split("/", 1)[1]: edit(n, b) for n, b in members.items()})


def test_cifar_batch_that_would_run_code_is_refused_unrun(tmp_path: Path) -> None:
    archive, marker = write_cifar10(tmp_path), tmp_path / "ran"
    hostile = pickle.dumps({"data": RunsCode(marker), "labels": []}, protocol=2)
    _rewrite_members(archive, lambda n, b: hostile if n.endswith("data_batch_1") else b)
    pattern = f"^{re.escape(str(archive))} member 'data_batch_1' holds a pickle that names "
    with pytest.raises(PipelineError, match=pattern + r"(tests\.)?archives\.leave_marker"):
        prepare("cifar10", tmp_path, tmp_path / "x.npz")
    assert not marker.exists()
    assert not (tmp_path / "x.npz").exists()


def test_cifar_batch_pickled_by_python2_numpy_is_read(tmp_path: Path) -> None:
    """The official files name numpy.core.multiarray (as numpy 1 wrote them); numpy 2 writes
    numpy._core.multiarray, so the tiny archives are rewritten to the official spelling."""
    archive = write_cifar10(tmp_path, 3, 2)
    new, old = b"cnumpy._core.multiarray\n_reconstruct\n", b"cnumpy.core.multiarray\n_reconstruct\n"
    _rewrite_members(archive, lambda n, b: b.replace(new, old))
    with tarfile.open(archive) as tar:
        assert old in tar.extractfile("cifar-10-batches-py/test_batch").read()
    got = prepare("cifar10", tmp_path, tmp_path / "x.npz")
    np.testing.assert_array_equal(got["x_train"], cifar_arrays(10, 3, 2)["x_train"])
