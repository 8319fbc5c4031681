"""fetch() and the download stage, offline: a local HTTP server plays the dataset mirrors."""

import http.server
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ltcifar.data.datasets import DATASETS
from ltcifar.data.download import fetch, locate
from ltcifar.errors import PipelineError
from tests.archives import (
    md5_of,
    serve,
    serve_dir,
    write_cifar10,
    write_cifar100,
    write_fashion_idx,
)
from tests.conftest import dead_pid

REPO = Path(__file__).resolve().parents[1]
WRITERS = {"cifar10": write_cifar10, "cifar100": write_cifar100, "fashion_mnist": write_fashion_idx}


def _mirror(tmp_path: Path, dataset: str) -> tuple[Path, dict[str, list[str]]]:
    """A folder holding the dataset's files, and the md5 mapping that accepts them."""
    src = tmp_path / "mirror"
    WRITERS[dataset](src)
    return src, {name: [md5_of(src / name)] for name in DATASETS[dataset].files}


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("dataset", sorted(WRITERS))
def test_fetch_downloads_and_verifies(tmp_path: Path, dataset: str) -> None:
    src, md5 = _mirror(tmp_path, dataset)
    out = tmp_path / "out"
    with serve_dir(src) as url:
        paths = fetch(dataset, [url], md5, out)
    assert [p.name for p in paths] == list(DATASETS[dataset].files)
    assert sorted(os.listdir(out)) == sorted(DATASETS[dataset].files)
    for p in paths:
        assert p.read_bytes() == (src / p.name).read_bytes()


def test_md5_mismatch_leaves_nothing(tmp_path: Path) -> None:
    src, _ = _mirror(tmp_path, "cifar10")
    out = tmp_path / "out"
    with serve_dir(src) as url, pytest.raises(PipelineError) as err:
        fetch("cifar10", [url], {"cifar-10-python.tar.gz": ["0" * 32]}, out)
    msg = str(err.value)
    assert "download.cifar10.md5" in msg and "download.cifar10.sources" in msg
    assert f"md5 {md5_of(src / 'cifar-10-python.tar.gz')} not in accepted [{'0' * 32}]" in msg
    assert "\n" not in msg
    assert os.listdir(out) == []


class _LyingHandler(http.server.BaseHTTPRequestHandler):
    """Announces more bytes than it sends, then closes: a transfer cut short."""

    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body) + 1000))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_short_transfer_leaves_nothing(tmp_path: Path) -> None:
    src, md5 = _mirror(tmp_path, "cifar10")
    _LyingHandler.body = (src / "cifar-10-python.tar.gz").read_bytes()
    out = tmp_path / "out"
    with serve(_LyingHandler) as url, pytest.raises(PipelineError, match="truncated: got"):
        fetch("cifar10", [url], md5, out)
    assert os.listdir(out) == []


def test_truncated_copy_fails_md5(tmp_path: Path) -> None:
    src, md5 = _mirror(tmp_path, "cifar100")
    archive = src / "cifar-100-python.tar.gz"
    archive.write_bytes(archive.read_bytes()[:-100])
    out = tmp_path / "out"
    with serve_dir(src) as url, pytest.raises(PipelineError, match="not in accepted"):
        fetch("cifar100", [url], md5, out)
    assert os.listdir(out) == []


def test_flipped_byte_fails_md5_naming_the_file(tmp_path: Path) -> None:
    src, md5 = _mirror(tmp_path, "cifar10")
    archive = src / "cifar-10-python.tar.gz"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    archive.write_bytes(bytes(data))
    out = tmp_path / "out"
    with pytest.raises(PipelineError) as err:
        fetch("cifar10", [str(src)], md5, out)
    assert f"could not get a verified {archive.name}" in str(err.value)
    assert f"{archive} (md5 {md5_of(archive)} not in accepted" in str(err.value)
    assert os.listdir(out) == []


def test_unreachable_and_missing_sources_are_named(tmp_path: Path) -> None:
    _, md5 = _mirror(tmp_path, "cifar10")
    dead = _closed_port_url()
    (tmp_path / "empty").mkdir()
    with serve_dir(tmp_path / "empty") as url, pytest.raises(PipelineError) as err:
        fetch("cifar10", [dead, url + "/", str(tmp_path / "nowhere")], md5, tmp_path / "out")
    msg = str(err.value)
    assert f"{dead}/cifar-10-python.tar.gz (connection refused)" in msg
    assert f"{url}/cifar-10-python.tar.gz (HTTP Error 404" in msg
    assert f"{tmp_path / 'nowhere' / 'cifar-10-python.tar.gz'} (no such file)" in msg
    assert "download.cifar10.sources" in msg and "\n" not in msg
    assert os.listdir(tmp_path / "out") == []


def test_falls_back_to_local_folder_then_file(tmp_path: Path) -> None:
    src, md5 = _mirror(tmp_path, "fashion_mnist")
    paths = fetch("fashion_mnist", [_closed_port_url(), str(src)], md5, tmp_path / "a")
    assert [md5_of(p) for p in paths] == [md5[p.name][0] for p in paths]
    single = src / "cifar-10-python.tar.gz"
    write_cifar10(src)
    md5 = {single.name: [md5_of(single).upper()]}  # MD5s compare case-insensitively
    (path,) = fetch("cifar10", [str(single)], md5, tmp_path / "b")
    assert path.read_bytes() == single.read_bytes()


def test_verified_file_is_kept_and_stale_ones_replaced(tmp_path: Path) -> None:
    src, md5 = _mirror(tmp_path, "cifar10")
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(src / "cifar-10-python.tar.gz", out)
    os.utime(out / "cifar-10-python.tar.gz", (0, 0))
    (path,) = fetch("cifar10", [_closed_port_url()], md5, out)  # no source works: not fetched
    assert path.stat().st_mtime == 0 and os.listdir(out) == [path.name]
    path.write_bytes(b"an older, unaccepted copy")
    (out / f".{path.name}.{dead_pid()}.tmp").write_bytes(b"left by a killed run")
    fetch("cifar10", [str(src)], md5, out)
    assert md5_of(path) == md5[path.name][0] and os.listdir(out) == [path.name]


@pytest.mark.parametrize("md5", [{}, {"cifar-10-python.tar.gz": ["0" * 32], "extra": ["1" * 32]}])
def test_md5_must_name_exactly_the_needed_files(tmp_path: Path, md5: dict) -> None:
    with pytest.raises(PipelineError, match=r"download\.cifar10\.md5 .*cifar-10-python\.tar\.gz"):
        fetch("cifar10", [str(tmp_path)], md5, tmp_path / "out")


def test_locate() -> None:
    name = "cifar-10-python.tar.gz"
    assert locate(f"https://x.org/~k/{name}", name) == f"https://x.org/~k/{name}"
    assert locate("https://x.org/~k/", name) == f"https://x.org/~k/{name}"
    assert locate("/data/mirror", name) == f"/data/mirror/{name}"
    assert locate(f"/data/{name}", name) == f"/data/{name}"


def _run_stage(
    tmp_path: Path, profile: str, sources: dict[str, list[str]], md5: dict | None = None
) -> subprocess.CompletedProcess:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = profile
    for ds, srcs in sources.items():
        params["download"][ds]["sources"] = srcs
        if md5:
            params["download"][ds]["md5"] = md5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def stage(name: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", f"stages.{name}"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert stage("configs").returncode == 0  # writes configs/download.json
    return stage("download")


def test_stage_fails_with_one_line(tmp_path: Path) -> None:
    dead = _closed_port_url()
    result = _run_stage(tmp_path, "quick", {"fashion_mnist": [dead]})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert dead in lines[0] and "download.fashion_mnist.sources" in lines[0]


def test_stage_fetches_profile_and_drops_stale(tmp_path: Path) -> None:
    src, md5 = _mirror(tmp_path, "fashion_mnist")
    stale = tmp_path / "data" / "raw" / "cifar10"
    stale.mkdir(parents=True)
    with serve_dir(src) as url:
        result = _run_stage(tmp_path, "quick", {"fashion_mnist": [url]}, md5)
    assert result.returncode == 0, result.stderr
    assert os.listdir(tmp_path / "data" / "raw") == ["fashion_mnist"]
    assert sorted(os.listdir(tmp_path / "data" / "raw" / "fashion_mnist")) == sorted(md5)
