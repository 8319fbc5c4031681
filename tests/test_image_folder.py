"""Users' own images: a folder of class folders, copied with a manifest of hashes, resized into
the prepared arrays of every other dataset, and run through the pipeline unchanged.

The folders are written here (PNG and JPEG, several sizes and modes), so everything is offline.
"""

import copy
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from ltcifar.config.params import load
from ltcifar.config.runs import stage_configs
from ltcifar.data import image_folder
from ltcifar.data.datasets import load_prepared, prepare
from ltcifar.data.image_folder import MANIFEST, fetch_folder, list_images, listing_digest
from ltcifar.errors import PipelineError
from stages import prepare as prepare_stage
from tests.dvcrepo import ENV, ROOT, copy_project, init_repo, ran, sh

SIZE = 16
# class -> (train images, test images); long-tailed on purpose
COUNTS = {"circle": (10, 3), "square": (6, 3), "stripes": (4, 3)}
COLOURS = {"circle": (220, 40, 40), "square": (40, 200, 60), "stripes": (30, 60, 210)}


def _picture(cls: str, i: int) -> Image.Image:
    """A class-coloured image with a little seeded noise, of a size that varies with ``i``."""
    w, h = 20 + 7 * i, 14 + 5 * (i % 3)
    rng = np.random.default_rng(i)
    pixels = np.clip(
        np.array(COLOURS.get(cls, (128, 128, 128))) + rng.integers(-20, 20, (h, w, 3)), 0, 255
    )
    return Image.fromarray(pixels.astype(np.uint8))


def write_folder(root: Path, counts: dict = COUNTS) -> Path:
    """train/<class>/ and test/<class>/ of PNG and JPEG files (RGB, grey, RGBA) of many sizes."""
    for cls, (n_train, n_test) in counts.items():
        for part, n in (("train", n_train), ("test", n_test)):
            (root / part / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                im = _picture(cls, i)
                if i % 2:
                    im.save(root / part / cls / f"{i}.jpg", quality=90)
                else:
                    im = im.convert("L") if i == 2 else im.convert("RGBA") if i == 4 else im
                    im.save(root / part / cls / f"{i}.png")
    return root


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "images")


def _fetch(folder: Path, raw: Path, sha256: str = "") -> dict:
    return fetch_folder("mine", [str(folder)], SIZE, sha256, raw)


# --- download: the copy and its manifest ---------------------------------------------------


def test_copy_is_byte_identical_and_manifest_lists_each_hash(folder: Path, tmp_path: Path):
    raw = tmp_path / "raw" / "mine"
    manifest = _fetch(folder, raw)
    rels = list_images(folder)
    assert len(rels) == sum(a + b for a, b in COUNTS.values())
    assert sorted(manifest["files"]) == rels
    for rel in rels:
        data = (folder / rel).read_bytes()
        assert (raw / rel).read_bytes() == data
        assert manifest["files"][rel] == hashlib.sha256(data).hexdigest()
    assert json.loads((raw / MANIFEST).read_text()) == manifest
    assert manifest["image_size"] == SIZE
    assert manifest["sha256"] == listing_digest(manifest["files"])


def test_digest_pins_the_images(folder: Path, tmp_path: Path):
    raw = tmp_path / "raw" / "mine"
    pin = _fetch(folder, raw)["sha256"]
    assert _fetch(folder, raw, pin.upper())["sha256"] == pin  # the same images pass
    _picture("square", 99).save(folder / "train/square/1.jpg")
    with pytest.raises(PipelineError) as err:
        _fetch(folder, raw, pin)
    msg = str(err.value)
    assert str(folder) in msg and f"not download.mine.sha256 = {pin}" in msg and "\n" not in msg
    assert not raw.exists()  # no unverified copy is left


def test_rerun_drops_images_removed_at_the_source(folder: Path, tmp_path: Path):
    raw = tmp_path / "raw" / "mine"
    _fetch(folder, raw)
    (folder / "train/circle/3.jpg").unlink()
    assert "train/circle/3.jpg" not in _fetch(folder, raw)["files"]
    assert not (raw / "train/circle/3.jpg").exists()


def test_hidden_files_are_skipped(folder: Path):
    (folder / "train/circle/.DS_Store").write_bytes(b"\0")
    (folder / "test/.thumbs").mkdir()
    assert not any("/." in rel for rel in list_images(folder))


def _rm(path: str):
    return lambda folder: shutil.rmtree(folder / path)


def _write(path: str, data: bytes = b"x"):
    def edit(folder: Path) -> None:
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(data)

    return edit


def _both(*edits):
    def edit(folder: Path) -> None:
        for e in edits:
            e(folder)

    return edit


REFUSED = {
    "no train/": (_rm("train"), "has no train/ folder"),
    "no test/": (_rm("test"), "has no test/ folder"),
    "test class not in train": (_rm("train/stripes"), "test/stripes is a class absent from"),
    "train class not in test": (_rm("test/square"), "train/square is a class absent from"),
    "empty class folder": (_both(_rm("test/circle"), _write("test/circle/.keep")),
                           "holds no images"),
    "file outside a class": (_write("train/notes.png"), "train/ holds only class folders"),
    "unknown file type": (_write("train/circle/labels.csv"), "labels.csv is not an image file"),
    "no class folders": (_both(*(_rm(f"{p}/{c}") for p in ("train", "test") for c in COUNTS)),
                         "holds no class folders"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_folders_name_the_path(folder: Path, tmp_path: Path, case: str):
    edit, expected = REFUSED[case]
    edit(folder)
    with pytest.raises(PipelineError) as err:
        _fetch(folder, tmp_path / "raw" / "mine")
    msg = str(err.value)
    assert expected in msg and str(folder) in msg and "\n" not in msg, msg
    assert not (tmp_path / "raw").exists()  # refused before anything is copied


def test_missing_folder_and_folder_inside_the_output_are_refused(tmp_path: Path):
    with pytest.raises(PipelineError, match=r"tried: .*/nope \(no such folder\)\. Set download"):
        fetch_folder("mine", [str(tmp_path / "nope")], SIZE, "", tmp_path / "raw" / "mine")
    inside = write_folder(tmp_path / "raw" / "mine" / "src", {"a": (1, 1)})
    with pytest.raises(PipelineError, match="inside the output"):
        fetch_folder("mine", [str(inside)], SIZE, "", tmp_path / "raw" / "mine")
    assert (inside / "train/a/0.png").exists()  # the user's images are untouched


# --- prepare: hashes re-checked, images decoded and resized -------------------------------


@pytest.fixture
def raw(folder: Path, tmp_path: Path) -> Path:
    _fetch(folder, tmp_path / "raw" / "mine")
    return tmp_path / "raw" / "mine"


def test_read_gives_sorted_classes_and_sized_rgb_arrays(raw: Path):
    a = image_folder.read(raw)
    assert a["classes"].tolist() == sorted(COUNTS)
    for part, k in (("train", 0), ("test", 1)):
        n = [COUNTS[c][k] for c in sorted(COUNTS)]
        assert a[f"x_{part}"].shape == (sum(n), SIZE, SIZE, 3)
        assert a[f"x_{part}"].dtype == np.uint8 and a[f"y_{part}"].dtype == np.int64
        assert np.bincount(a[f"y_{part}"]).tolist() == n
    # each class's first image (0.png, RGB) keeps its colour; the noise averages out
    for c, cls in enumerate(sorted(COUNTS)):
        first = a["x_train"][np.flatnonzero(a["y_train"] == c)[0]]
        assert np.abs(first.reshape(-1, 3).mean(0) - COLOURS[cls]).max() < 6, cls


def test_decoding_in_several_processes_gives_the_same_arrays(raw: Path, monkeypatch):
    """Past FILES_PER_WORKER images a process per core decodes: same arrays, same order, and a
    copy that no longer matches its hash is still refused naming it."""
    alone = image_folder.read(raw)
    monkeypatch.setattr(image_folder, "FILES_PER_WORKER", 4)
    pooled = image_folder.read(raw)
    assert alone.keys() == pooled.keys()
    assert all(np.array_equal(alone[k], pooled[k]) for k in alone)
    (raw / "test/square/0.png").write_bytes((raw / "test/square/1.jpg").read_bytes())
    with pytest.raises(PipelineError, match=r"test/square/0.png differs from its hash in"):
        image_folder.read(raw)


def test_resize_keeps_layout_and_makes_grey_rgb(tmp_path: Path):
    wide = np.zeros((24, 40, 3), np.uint8)
    wide[:, :20] = (255, 0, 0)
    wide[:, 20:] = (0, 0, 255)
    path = tmp_path / "wide.png"
    Image.fromarray(wide).save(path)
    x = image_folder.decode(path, path.read_bytes(), SIZE)
    assert x.shape == (SIZE, SIZE, 3) and x.dtype == np.uint8
    assert (x[:, 0] == (255, 0, 0)).all() and (x[:, -1] == (0, 0, 255)).all()
    Image.new("L", (7, 33), 77).save(path)
    assert (image_folder.decode(path, path.read_bytes(), 4) == 77).all()
    Image.new("P", (5, 5), 3).save(tmp_path / "p.gif")
    gif = image_folder.decode(tmp_path / "p.gif", (tmp_path / "p.gif").read_bytes(), 2)
    assert gif.shape == (2, 2, 3)


def test_prepared_file_has_the_cifar_layout(raw: Path, tmp_path: Path):
    out = tmp_path / "prepared" / "mine.npz"
    prepare("mine", raw, out, image_folder.read)
    data = load_prepared("mine", out.parent)  # checks keys, dtypes, shapes and label range
    assert data["x_train"].shape[1:] == (SIZE, SIZE, 3)
    assert data["mean"].shape == (3,) and data["std"].shape == (3,)


def _truncated_png(folder: Path, rel: str) -> None:
    data = (folder / rel).read_bytes()
    (folder / rel).write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("rel", "damage"),
    [
        ("train/square/2.png", _truncated_png),
        ("test/circle/1.jpg", lambda f, rel: (f / rel).write_bytes(b"\xff\xd8 not a jpeg")),
        ("train/stripes/0.png", lambda f, rel: (f / rel).write_bytes(b"")),
    ],
)
def test_corrupt_image_is_reported_with_its_path(folder, tmp_path, rel, damage):
    damage(folder, rel)
    raw = tmp_path / "raw" / "mine"
    _fetch(folder, raw)  # the download hashes bytes; only prepare decodes them
    with pytest.raises(PipelineError) as err:
        image_folder.read(raw)
    msg = str(err.value)
    assert msg.startswith(f"{raw / rel} cannot be decoded as an image (") and "\n" not in msg


def test_prepare_rechecks_the_copies_against_the_manifest(raw: Path):
    (raw / "test/square/0.png").write_bytes((raw / "test/square/1.jpg").read_bytes())
    with pytest.raises(PipelineError, match=r"test/square/0.png differs from its hash in"):
        image_folder.read(raw)
    (raw / "train/circle/extra.png").write_bytes(b"")
    with pytest.raises(PipelineError, match=r"train/circle/extra.png is not in .*manifest.json"):
        image_folder.read(raw)
    (raw / "train/circle/extra.png").unlink()
    (raw / "train/circle/0.png").unlink()
    with pytest.raises(PipelineError, match=r"train/circle/0.png is missing, but in"):
        image_folder.read(raw)
    (raw / MANIFEST).unlink()
    with pytest.raises(PipelineError, match=r"manifest.json is missing or unreadable"):
        image_folder.read(raw)


def test_prepare_stage_reads_image_folders_without_params(raw, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    raw.parent.rename(tmp_path / "data" / "raw")
    prepare_stage.main()
    assert f"mine: train (20, {SIZE}, {SIZE}, 3), test (9, {SIZE}, {SIZE}, 3), 3 classes" in (
        capsys.readouterr().out
    )
    (tmp_path / "data/raw/mine" / MANIFEST).unlink()
    with pytest.raises(PipelineError, match=r"data/raw/mine lacks manifest.json; run `dvc repro"):
        prepare_stage.main()


# --- params: declaring an image folder -----------------------------------------------------

BASE = yaml.safe_load((ROOT / "params.yaml").read_text())


def _params(tmp_path: Path, entry: dict | None = None, name: str = "mine", edit=None) -> dict:
    """The committed params.yaml plus a profile ``own`` on the image folder ``name``."""
    params = copy.deepcopy(BASE)
    params["download"][name] = entry or {"kind": "image_folder", "sources": ["/x"], "image_size": 8}
    own = copy.deepcopy(params["profiles"]["quick"])
    own["datasets"] = [name]
    for split in own["splits"].values():
        split["dataset"] = name
    params["profiles"]["own"] = own
    if edit:
        edit(params)
    path = tmp_path / f"params{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return load(path)


def test_image_folder_is_a_dataset_profiles_and_splits_may_name(tmp_path: Path):
    params = _params(tmp_path, edit=lambda p: p.update(profile="own"))
    assert stage_configs(params)["download.json"] == {
        "mine": {"kind": "image_folder", "sources": ["/x"], "image_size": 8, "sha256": ""}
    }
    assert stage_configs(params)["splits.json"]["step"]["dataset"] == "mine"


FOLDER = {"kind": "image_folder", "sources": ["/x"], "image_size": 8}
BAD_ENTRIES = [
    ("mine", {"sources": ["/x"], "md5": {"a": ["b"]}}, "download.mine is not a dataset with known"),
    ("mine", {**FOLDER, "image_size": 0}, "download.mine.image_size = 0 must be > 0"),
    ("mine", {k: v for k, v in FOLDER.items() if k != "image_size"}, "image_size = 0 must be > 0"),
    ("mine", {**FOLDER, "md5": {"a": ["b"]}}, "download.mine.md5: an image folder is pinned by"),
    ("mine", {**FOLDER, "sha256": "abc"}, "download.mine.sha256 = 'abc' must be the 64-digit"),
    ("cifar10", FOLDER, "download.cifar10.kind = 'image_folder' needs a name"),
    ("my/images", FOLDER, "download.my/images.kind = 'image_folder' needs a name"),
    ("mine", {**FOLDER, "kind": "zip"}, "download.mine.kind = 'zip' is not allowed; choose one of"),
]


@pytest.mark.parametrize(("name", "entry", "message"), BAD_ENTRIES)
def test_bad_image_folder_entries_are_refused(tmp_path, name, entry, message):
    with pytest.raises(PipelineError) as err:
        _params(tmp_path, entry, name)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_archive_only_keys_and_undeclared_datasets(tmp_path: Path):
    def sized(p: dict) -> None:
        p["download"]["cifar10"]["image_size"] = 32

    with pytest.raises(PipelineError, match="download.cifar10.image_size applies to kind image"):
        _params(tmp_path, edit=sized)

    def undeclared(p: dict) -> None:
        p["profiles"]["own"]["datasets"] = ["yours"]

    with pytest.raises(PipelineError, match="datasets names 'yours', which download does not"):
        _params(tmp_path, edit=undeclared)


# --- end to end: dvc repro through train and evaluate --------------------------------------


@pytest.mark.slow
def test_dvc_repro_trains_and_evaluates_on_an_image_folder(tmp_path: Path):
    images = write_folder(tmp_path / "images")
    repo = tmp_path / "repo"
    copy_project(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["download"]["shapes"] = {"kind": "image_folder", "sources": [str(images)],
                                    "image_size": SIZE}  # fmt: skip
    own = params["profiles"]["quick"]
    own["datasets"] = ["shapes"]
    # exp: 8, 4, 2 training images + 2 validation per class (the folder has 10, 6, 4)
    own["splits"] = {"lt": {"dataset": "shapes", "shape": "exp", "n_max": 8, "imbalance": 4,
                            "val_per_class": 2, "val_policy": "exact"}}  # fmt: skip
    own["budget"].update(epochs=1, batch_size=8)
    own["backbone"]["split"] = "lt"
    params["profiles"] = {"own": own}
    params.update(profile="own", split="lt", loss="balanced_softmax", mixup="balanced_mixup")
    params["runs"] = {"lt_ce": {"split": "lt"}}
    params["transfer_runs"] = {"lt_linear": {"split": "lt", "finetune": "linear"}}
    params["second_stages"] = {}
    init_repo(repo, params)
    out = sh("dvc", "repro", "evaluate", cwd=repo)
    stages = {"configs", "download", "prepare", "lt_index", "train@candidate", "evaluate@candidate"}
    assert ran(out) == stages, out
    manifest = json.loads((repo / "data/raw/shapes" / MANIFEST).read_text())
    assert sorted(manifest["files"]) == list_images(images)
    with np.load(repo / "data/prepared/shapes.npz") as data:
        assert data["x_train"].shape == (20, SIZE, SIZE, 3)
        assert data["x_test"].shape == (9, SIZE, SIZE, 3)
        assert data["classes"].tolist() == sorted(COUNTS)
    split = json.loads((repo / "data/splits/lt.json").read_text())
    assert split["dataset"] == "shapes" and split["counts"] == [8, 4, 2]
    metrics = json.loads((repo / "metrics/candidate.json").read_text())
    run = json.loads((repo / "metrics/candidate/details.json").read_text())["run"]
    assert run["dataset"] == "shapes" and run["test_images"] == 9 and run["train_images"] == 14
    assert 0 <= metrics["accuracy"] <= 1
    assert ran(sh("dvc", "repro", "evaluate", cwd=repo)) == set()  # the copy is reproducible

    # DVC does not watch the folder: a changed image is copied by a forced download, and a
    # corrupt one stops prepare with one line naming it.
    (images / "test/square/1.jpg").write_bytes(b"\xff\xd8 torn")
    assert ran(sh("dvc", "repro", "-f", "-s", "download", cwd=repo)) == {"download"}
    proc = subprocess.run(
        ["dvc", "repro", "prepare"], cwd=repo, env=ENV, capture_output=True, text=True
    )
    assert proc.returncode != 0
    errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("error: ")]
    assert errors == [errors[0]] and errors[0].startswith(
        "error: data/raw/shapes/test/square/1.jpg cannot be decoded as an image"
    ), proc.stderr
