"""Two clones of one tiny project, one shared DVC cache, two `dvc repro` at the same time.

The project is the real pipeline shrunk (tiny Fashion-MNIST IDX files from ``tests/archives.py``,
no report runs, 2 epochs), cloned twice; both clones point ``cache.dir`` at one folder with
``cache.shared group``, and ``dvc repro evaluate`` (configs, download, prepare, lt_index, train,
evaluate) starts in both at once. What this proves: both finish; ``dvc status evaluate`` is
clean in both; both hold the same results (raw files, prepared arrays and splits by hash, models by
tensors, metrics by value); and the cache is sound: every object re-hashes to its own name and
every output either clone's ``dvc.lock`` names is in it.
"""

import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from tests.archives import md5_of, write_fashion_idx
from tests.dvcrepo import ENV as DVC_ENV
from tests.dvcrepo import ROOT, copy_project
from tests.dvcrepo import sh as dvc_sh

pytestmark = pytest.mark.slow  # every test here runs stages in subprocesses

ENV = {**DVC_ENV, "OMP_NUM_THREADS": "1"}  # two clones at once on the cores: no oversubscription


def sh(*cmd: str, cwd: Path) -> str:
    return dvc_sh(*cmd, cwd=cwd, env=ENV)


def _project(root: Path, raw: Path) -> None:
    copy_project(root, ("dvc.yaml", ".gitignore"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    quick = params["profiles"]["quick"]
    quick["splits"] = {
        "step": {"dataset": "fashion_mnist", "shape": "step", "n_max": 20, "n_min": 4, "k": 1}
    }
    quick["budget"].update(epochs=2, batch_size=16, seeds=[0])
    params["profiles"]["full"]["splits"] = {"step": params["profiles"]["full"]["splits"]["step"]}
    params.update(split="step", runs={}, transfer_runs={}, second_stages={})
    params["download"]["fashion_mnist"] = {
        "sources": [str(raw)],
        "md5": {f.name: [md5_of(f)] for f in sorted(raw.iterdir())},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", cwd=root)
    sh("dvc", "init", "-q", cwd=root)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", "tiny project", cwd=root)


CACHED = ("data/raw", "data/prepared", "models/candidate")  # the outputs dvc.yaml caches


def _lock_outs(clone: Path) -> dict[str, str]:
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for s in lock["stages"].values() for o in s.get("outs", [])}


def _object(cache: Path, md5: str) -> Path:
    return cache / "files" / "md5" / md5[:2] / md5[2:]


@pytest.fixture(scope="module")
def clones(tmp_path_factory) -> tuple[Path, Path, Path]:
    base = tmp_path_factory.mktemp("shared")
    raw, cache = base / "archives", base / "cache"
    write_fashion_idx(raw, n_train=300, n_test=40)
    a, b = base / "a", base / "b"
    a.mkdir()
    _project(a, raw)
    sh("git", "clone", "-q", str(a), str(b), cwd=base)
    for clone in (a, b):
        sh("dvc", "cache", "dir", "--local", str(cache), cwd=clone)
        sh("dvc", "config", "--local", "cache.shared", "group", cwd=clone)
    procs = [
        subprocess.Popen(
            ["dvc", "repro", "evaluate"], cwd=c, env=ENV, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )
        for c in (a, b)
    ]  # fmt: skip
    outs = [p.communicate()[0] for p in procs]
    for clone, p, out in zip((a, b), procs, outs, strict=True):
        assert p.returncode == 0, out
        ran = re.findall(r"Running stage '([^']+)'", out)
        restored = re.findall(r"[Rr]estored stage '([^']+)'", out)
        print(
            f"\nshared cache, clone {clone.name}: ran {ran}, restored from the run cache {restored}"
        )
    return a, b, cache


def test_both_finish_clean(clones):
    a, b, _ = clones
    for clone in (a, b):
        assert "up to date" in sh("dvc", "status", "evaluate", cwd=clone)


def test_both_hold_the_same_results(clones):
    a, b, _ = clones
    outs_a, outs_b = _lock_outs(a), _lock_outs(b)
    assert sorted(outs_a) == sorted(outs_b)
    for path in ("data/raw", "data/prepared", "data/splits"):
        assert outs_a[path] == outs_b[path], path
    for clone in (a, b):  # the models compared by value (see test_kill: bytes carry a temp name)
        assert (clone / "models/candidate/seed0.pt").is_file()
    ma, mb = (torch.load(c / "models/candidate/seed0.pt", weights_only=False) for c in (a, b))
    assert all(torch.equal(ma["state_dict"][k], mb["state_dict"][k]) for k in ma["state_dict"])
    metrics = [json.loads((c / "metrics/candidate.json").read_text()) for c in (a, b)]
    assert metrics[0] == metrics[1]


def test_cache_objects_rehash_to_their_names(clones):
    a, b, cache = clones
    objects = [p for p in (cache / "files" / "md5").rglob("*") if p.is_file()]
    assert objects
    for obj in objects:
        name = obj.parent.name + obj.name.removesuffix(".dir")
        assert hashlib.md5(obj.read_bytes()).hexdigest() == name, obj
    for clone in (a, b):
        for path, md5 in _lock_outs(clone).items():
            if path not in CACHED:
                continue
            assert _object(cache, md5).is_file(), (clone.name, path)
            if md5.endswith(".dir"):
                for entry in json.loads(_object(cache, md5).read_text()):
                    assert _object(cache, entry["md5"]).is_file(), (clone.name, entry)
