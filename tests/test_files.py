"""atomic_path and its writers: a writer that fails leaves the old file, or nothing, behind."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from ltcifar.data.datasets import prepare
from ltcifar.files import atomic_path, write_text_atomic
from ltcifar.training.checkpoints import save_atomic
from tests.archives import write_fashion_idx
from tests.conftest import dead_pid


class Boom(Exception):
    pass


def test_replaces_only_when_the_block_finishes(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".")
        tmp.write_text("new")
        assert not target.exists()
    assert target.read_text() == "new"
    assert os.listdir(target.parent) == ["out.txt"]


@pytest.mark.parametrize("old", [None, "old"])
def test_failed_writer_leaves_old_target_and_no_temporary(tmp_path: Path, old: str | None) -> None:
    target = tmp_path / "out.txt"
    if old is not None:
        target.write_text(old)
    with pytest.raises(Boom), atomic_path(target) as tmp:
        tmp.write_text("half a fi")
        raise Boom
    assert os.listdir(tmp_path) == ([] if old is None else ["out.txt"])
    if old is not None:
        assert target.read_text() == old


def test_keeps_permissions_of_the_replaced_file(tmp_path: Path) -> None:
    target = tmp_path / "run.sh"
    target.write_text("old")
    target.chmod(0o751)
    write_text_atomic(target, "new")
    assert target.read_text() == "new" and target.stat().st_mode & 0o777 == 0o751


def test_removes_orphans_of_dead_processes_only(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    orphan = tmp_path / f".out.txt.{dead_pid()}.tmp"
    live = tmp_path / f".out.txt.{os.getppid()}.tmp"  # a writer that is still running
    other = tmp_path / ".other.txt.1.tmp"
    for p in (orphan, live, other):
        p.write_text("partial")
    write_text_atomic(target, "new")
    assert sorted(os.listdir(tmp_path)) == sorted([target.name, live.name, other.name])


def test_save_atomic_failing_mid_write_keeps_old_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    save_atomic({"epoch": 1}, path)
    with pytest.raises(Exception, match="lambda"):
        save_atomic({"epoch": 2, "fn": lambda: 0}, path)  # pickling fails part-way
    assert torch.load(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["ckpt.pt"]


def test_prepare_failing_mid_write_keeps_old_npz(tmp_path: Path, monkeypatch) -> None:
    write_fashion_idx(tmp_path / "raw", 4, 2)
    out = tmp_path / "out" / "f.npz"
    prepare("fashion_mnist", tmp_path / "raw", out)
    before = out.read_bytes()

    def torn_savez(file, **arrays) -> None:
        file.write(b"PK\x03\x04 half an archive")
        raise Boom

    monkeypatch.setattr(np, "savez", torn_savez)
    with pytest.raises(Boom):
        prepare("fashion_mnist", tmp_path / "raw", out)
    assert out.read_bytes() == before and os.listdir(out.parent) == ["f.npz"]
