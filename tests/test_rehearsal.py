"""A rehearsal of `make full` and of the GPU study kit's profile on the CPU, before a GPU runs
them: every stage of each profile's graph, run as `dvc exp run` runs it, in a temporary clone of
the project's sources (its DVC setup and Makefile included), offline and tiny.

- `full` (params.yaml): `make full`'s own command, with the -S overrides a user would add: the
  CIFAR-10 and CIFAR-100 archives (tiny, in the official formats) from a 127.0.0.1 mirror, their
  MD5s, torchvision-format ResNet-18 weights from the same mirror with their sha256 prefix.
- `gpu` (studies/cifar10_lt.params.yaml copied over params.yaml, as its header says): the
  profile `benchmarks/gpu_study.sh` trains, on a tiny JPEG folder pinned by its sha256.

Both shrink their splits to a few images per class and their budget to one epoch and one seed,
and run in bf16 autocast (what a GPU runs). The two run at once: each stage is one thread, so
the two chains use both cores. What the rehearsal costs is per-stage start-up (DVC reading and
rewriting dvc.lock, a Python process importing torch), not training. These tests assert that
every stage ran and left real outputs, never how well one epoch learns.
"""

import hashlib
import json
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import yaml
from PIL import Image

from ltcifar.config import catalog
from ltcifar.config.params import load
from ltcifar.config.runconfig import NOTE, SKIPPED
from ltcifar.config.runs import CANDIDATE, profile_runs, profile_second_stages
from ltcifar.data.image_folder import list_images, listing_digest
from tests.archives import md5_of, serve_dir, write_cifar10, write_cifar100
from tests.dvcrepo import ENV, ROOT, ran, sh

pytestmark = pytest.mark.slow

# stage templates of dvc.yaml: (train, evaluate) of each group of runs
GROUPS = {
    "candidate": ("train", "evaluate"),
    "runs": ("train_runs", "evaluate_runs"),
    "transfer_runs": ("train_transfer", "evaluate_transfer"),
    "second_stages": ("second_stage", "evaluate_second"),
}
DATA_STAGES = ["configs", "download", "prepare", "lt_index", "backbone"]
# tiny splits: the archives hold 12 training images a class of CIFAR-10 (and the JPEG folder),
# 3 of CIFAR-100
SIZES = {
    10: {"n_max": 8, "n_min": 2, "imbalance": 4, "val_per_class": 2},
    100: {"n_max": 2, "n_min": 1, "imbalance": 2, "val_per_class": 1},
}
SHAPE_KEYS = {"exp": ("imbalance",), "step": ("n_min",), "none": ()}
BUDGET = {"epochs": 1, "seeds": [0], "warmup_epochs": 0, "milestones": [1, 1], "batch_size": 32,
          "eval_batch_size": 64}  # fmt: skip
GENERATED = {"dvc.lock", "configs", "data", "logs", "metrics", "models", "reports"}
ENV_1T = {**ENV, "OMP_NUM_THREADS": "1"}  # two chains on two cores: no oversubscription


def clone(dest: Path, params: Path | None = None) -> Path:
    """The project's tracked (and untracked, not ignored) files, committed in a new repo, less
    what the pipeline generates: its outputs and dvc.lock, which DVC would parse and rewrite
    whole after every stage (twice the cost of a lock growing from empty; every stage reruns
    either way). ``params`` replaces params.yaml, as a study's header says to."""
    listed = sh("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT)
    for rel in filter(None, set(listed.split("\0"))):
        if rel.split("/")[0] not in GENERATED and (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    if params is not None:
        shutil.copy(params, dest / "params.yaml")
    sh("git", "init", "-q", cwd=dest)
    sh("git", "add", "-A", cwd=dest)
    sh("git", "commit", "-qm", "clone", cwd=dest)
    return dest


def make_full() -> list[str]:
    """The Makefile's `full` recipe, its dvc the one on the tests' PATH."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    cmd = shlex.split(lines[lines.index(next(ln for ln in lines if ln.startswith("full:"))) + 1])
    cmd[0] = Path(cmd[0]).name
    assert cmd[:3] == ["dvc", "exp", "run"], cmd
    return cmd


def hydra(value: object) -> str:
    """A value in the override syntax of `dvc exp run -S`."""
    if isinstance(value, list):
        return "[" + ",".join(map(hydra, value)) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra(v)}" for k, v in value.items()) + "}"
    return str(value)


def setting(raw: dict, key: str, value: object) -> list[str]:
    """`-S key=value`, with DVC's `+` where params.yaml lacks the key."""
    node = raw
    for part in key.split(".")[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    known = isinstance(node, dict) and key.rsplit(".", 1)[-1] in node
    return ["-S", f"{'' if known else '+'}{key}={hydra(value)}"]


def tiny(raw: dict, profile: str, classes: dict[str, int]) -> list[str]:
    """Overrides that shrink a profile: each split to a few images per class (by the number of
    classes of its dataset), its budget to one epoch of one seed, every run to bf16, every
    second stage that trains to one epoch."""
    out = setting(raw, "recipe.precision", "bf16")
    for name, split in raw["profiles"][profile]["splits"].items():
        size = SIZES[classes[split["dataset"]]]
        for key in ("n_max", "val_per_class", *SHAPE_KEYS[split["shape"]]):
            out += setting(raw, f"profiles.{profile}.splits.{name}.{key}", size[key])
    for key, value in BUDGET.items():
        out += setting(raw, f"profiles.{profile}.budget.{key}", value)
    for name, entry in raw["second_stages"].items():
        if "epochs" in catalog.SECOND_STAGES[entry["method"]].reads:
            out += setting(raw, f"second_stages.{name}.epochs", 1)
    return out


def stages(params: dict, names: list[str] | None = None) -> list[str]:
    """The dvc.yaml stages of these runs and second stages (default: all), in graph order."""
    groups = {"candidate": [CANDIDATE], **{g: list(params[g]) for g in list(GROUPS)[1:]}}
    return [
        f"{template}@{name}"
        for group, names_in in groups.items()
        for name in names_in
        if names is None or name in names
        for template in GROUPS[group]
    ]


def trained(params: dict) -> list[str]:
    """The runs and second stages the active profile trains."""
    return [*profile_runs(params), *profile_second_stages(params)]


def start(repo: Path, command: list[str]) -> subprocess.Popen:
    """The command in the background, its output in <repo>.log (a pipe left unread would stall
    it while the other runs)."""
    with open(repo.with_suffix(".log"), "w") as log:
        return subprocess.Popen(command, cwd=repo, env=ENV_1T, stdout=log, stderr=subprocess.STDOUT)


def cifar_mirror(dir: Path) -> dict[str, str]:
    """CIFAR-10 (12 training images a class), CIFAR-100 (3) and torchvision-format ResNet-18
    weights named as torchvision names its file; what `-S` needs to know of them."""
    c10, c100 = write_cifar10(dir, 12, 2), write_cifar100(dir, 3, 1)
    weights = dir / "weights.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    prefix = hashlib.sha256(weights.read_bytes()).hexdigest()[:8]
    weights = weights.rename(dir / f"resnet18-{prefix}.pth")
    return {
        "cifar10": md5_of(c10),
        "cifar100": md5_of(c100),
        "weights": weights.name,
        "sha256": prefix,
    }


def jpeg_folder(root: Path) -> str:
    """train/<class>/ (12 a class) and test/<class>/ (2) of 32x32 JPEGs; its pinning sha256."""
    rng = np.random.default_rng(0)
    for part, n in (("train", 12), ("test", 2)):
        for c in range(10):
            (root / part / f"c{c}").mkdir(parents=True)
            for i in range(n):
                pixels = (rng.integers(0, 40, (32, 32, 3)) + 20 * c).astype(np.uint8)
                Image.fromarray(pixels).save(root / part / f"c{c}" / f"{i:04d}.jpg")
    images = list_images(root)
    return listing_digest(
        {rel: hashlib.sha256((root / rel).read_bytes()).hexdigest() for rel in images}
    )


def full_command(raw: dict, url: str, mirror: dict[str, str]) -> list[str]:
    """`make full` with the tiny profile and the local mirror's sources and hashes."""
    cmd = [*make_full(), *tiny(raw, "full", {"cifar10": 10, "cifar100": 100})]
    for ds, archive in (("cifar10", "cifar-10"), ("cifar100", "cifar-100")):
        cmd += setting(raw, f"download.{ds}.sources", [url])
        cmd += setting(raw, f"download.{ds}.md5", {f"{archive}-python.tar.gz": [mirror[ds]]})
    cmd += setting(raw, "profiles.full.backbone.sources", [f"{url}/{mirror['weights']}"])
    return cmd + setting(raw, "profiles.full.backbone.sha256", [mirror["sha256"]])


def gpu_command(raw: dict, folder: Path, sha256: str) -> list[str]:
    """The study's gpu profile, tiny, on the JPEG folder."""
    cmd = ["dvc", "exp", "run", "-S", "profile=gpu", *tiny(raw, "gpu", {"cifar10_jpeg": 10})]
    cmd += setting(raw, "download.cifar10_jpeg.sources", [str(folder)])
    return cmd + setting(raw, "download.cifar10_jpeg.sha256", sha256)


@pytest.fixture(scope="module")
def rehearsals(tmp_path_factory) -> dict[str, dict]:
    """Both rehearsals, run at once: {profile: {repo, out, rc, seconds}}."""
    base = tmp_path_factory.mktemp("rehearsal")
    study = ROOT / "studies" / "cifar10_lt.params.yaml"
    repos = {"full": clone(base / "full"), "gpu": clone(base / "gpu", study)}
    raw = {p: yaml.safe_load((repo / "params.yaml").read_text()) for p, repo in repos.items()}
    folder = base / "cifar10-jpeg"
    sha256 = jpeg_folder(folder)
    mirror = cifar_mirror(base / "mirror")
    with serve_dir(base / "mirror") as url:
        commands = {
            "full": full_command(raw["full"], url, mirror),
            "gpu": gpu_command(raw["gpu"], folder, sha256),
        }
        t0 = time.monotonic()
        procs = {p: start(repos[p], cmd) for p, cmd in commands.items()}
        seconds = {}
        while len(seconds) < len(procs) and time.monotonic() - t0 < 1800:
            time.sleep(1)
            ended = [p for p, proc in procs.items() if p not in seconds and proc.poll() is not None]
            seconds.update({p: time.monotonic() - t0 for p in ended})
    for proc in procs.values():
        if proc.poll() is None:  # past the time limit: its check fails with its output
            proc.kill()
            proc.wait()
    return {
        p: {"repo": repo, "out": repo.with_suffix(".log").read_text(), "rc": procs[p].returncode,
            "seconds": seconds.get(p, float("inf"))}
        for p, repo in repos.items()
    }  # fmt: skip


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def assert_real(repo: Path, name: str, report: str) -> None:
    """A run or second stage trained, scored in bf16 and reported: no placeholder."""
    assert (repo / "models" / name / "seed0.pt").is_file(), name
    assert not (repo / "models" / name / NOTE).exists(), name
    details = read_json(repo / "metrics" / name / "details.json")
    assert SKIPPED not in details and details["run"]["seeds"] == 1, name
    assert 0 <= read_json(repo / "metrics" / f"{name}.json")["macro_f1"] <= 1, name
    assert read_json(repo / "configs" / "runs" / f"{name}.json")["precision"] == "bf16", name
    assert f"| `{name}` |" in report, name


def assert_placeholder(repo: Path, name: str, report: str) -> None:
    """A run or second stage outside the profile: its stages left placeholders alone."""
    assert (repo / "models" / name / NOTE).is_file(), name
    assert SKIPPED in read_json(repo / "metrics" / name / "details.json"), name
    assert f"| `{name}` |" not in report, name


def check(result: dict, profile: str) -> list[str]:
    """Assert that the rehearsal of ``profile`` ran every stage of its graph, each run and second
    stage of the profile for real, and the report lists them; the stages that did work."""
    repo, out = result["repo"], result["out"]
    assert result["rc"] == 0, out[-6000:]
    params = load(repo / "params.yaml")
    assert params["profile"] == profile
    names = trained(params)
    transfer = any(name in params["transfer_runs"] for name in names)
    data = DATA_STAGES if transfer else DATA_STAGES[:-1]  # else backbone leaves a placeholder
    worked = [*data, *stages(params, names), "report"]
    print(f"{profile}: {len(worked)} stages ran for real in {result['seconds']:.0f} s:")
    print("\n".join(worked))
    assert ran(out) == {*DATA_STAGES, *stages(params), "report"}, out[-6000:]
    assert "up to date" in sh("dvc", "status", cwd=repo)
    report = (repo / "reports" / "REPORT.md").read_text()
    everything = [CANDIDATE, *params["runs"], *params["transfer_runs"], *params["second_stages"]]
    for name in everything:
        (assert_real if name in names else assert_placeholder)(repo, name, report)
    listed = set(re.findall(r"^\| `([^`]+)` \|", report, re.M))
    assert listed == set(names), listed ^ set(names)  # and no other run's scores
    return worked


def test_make_full_runs_every_stage_of_the_full_profile(rehearsals):
    worked = check(rehearsals["full"], "full")
    repo = rehearsals["full"]["repo"]
    params = load(repo / "params.yaml")
    assert trained(params) == [CANDIDATE, *params["runs"], *params["transfer_runs"],
                               *params["second_stages"]]  # fmt: skip
    assert len(worked) == len([*DATA_STAGES, *stages(params), "report"])
    assert (repo / "models" / "backbone" / "backbone.pt").is_file()
    for ds in ("cifar10", "cifar100"):
        assert (repo / "data" / "prepared" / f"{ds}.npz").is_file(), ds


def test_the_gpu_study_profile_runs_every_stage(rehearsals):
    worked = check(rehearsals["gpu"], "gpu")
    params = load(rehearsals["gpu"]["repo"] / "params.yaml")
    assert set(trained(params)) >= {"exp_ce", "exp_balpoe", "exp_ce_posthoc_la"}
    assert "second_stage@exp_ce_posthoc_la" in worked
