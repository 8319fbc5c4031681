"""Users' own images as a dataset: ``train/<class>/*`` and ``test/<class>/*``, any common format.

``download`` copies them into ``data/raw/<name>/`` with a ``manifest.json`` (image size, each
copy's sha256, one digest of all, which ``download.<name>.sha256`` can pin as an MD5 pins an
archive). DVC tracks the copy, so a changed image reruns what depends on it; ``prepare`` needs no
params: it re-hashes each copy and decodes it into the CIFAR datasets' uint8 arrays. Hidden files
(``.DS_Store``) are skipped; anything else amiss is refused in one line naming the path.
"""

import hashlib
import io
import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ltcifar.errors import PipelineError
from ltcifar.files import atomic_path, write_text_atomic

PARTS = ("train", "test")
SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
MANIFEST = "manifest.json"
FILES_PER_WORKER = 1000  # a decoding process pays for itself past this many images
CHUNK = 1 << 20
# What PIL raises on a truncated, corrupt or unsupported file (SyntaxError: some plugins' parse
# errors; DecompressionBombError: a header claiming over ~179 M pixels).
UNDECODABLE = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def _images(class_dir: Path) -> list[Path]:
    """The image files anywhere under one class folder, hidden ones skipped; refuse others."""
    found = [p for p in sorted(class_dir.rglob("*")) if p.is_file()]
    files = [p for p in found if not any(s.startswith(".") for s in p.relative_to(class_dir).parts)]
    for p in files:
        if p.suffix.lower() not in SUFFIXES:
            raise PipelineError(
                f"{p} is not an image file this pipeline reads ({', '.join(SUFFIXES)}); "
                "move it out of the folder or convert it"
            )
    if not files:
        raise PipelineError(f"{class_dir} holds no images; remove the class folder or add images")
    return files


def _class_images(folder: Path, part: str) -> dict[str, list[str]]:
    """Each class folder of ``folder/part`` with its image paths (relative to ``folder``)."""
    root = folder / part
    if not root.is_dir():
        raise PipelineError(
            f"{folder} has no {part}/ folder; it needs train/<class>/ and test/<class>/"
        )
    classes = {}
    for entry in sorted(p for p in root.iterdir() if not p.name.startswith(".")):
        if not entry.is_dir():
            raise PipelineError(f"{entry}: {part}/ holds only class folders; move it into one")
        classes[entry.name] = [p.relative_to(folder).as_posix() for p in _images(entry)]
    if not classes:
        raise PipelineError(f"{root} holds no class folders")
    return classes


def list_images(folder: Path) -> list[str]:
    """Every image's path under ``folder``, sorted. Both parts need the same classes: a test class
    unseen in training cannot be predicted, one without test images scores 0 in macro averages."""
    parts = {part: _class_images(folder, part) for part in PARTS}
    for part, other, needs in (
        ("test", "train", "every test class needs training images"),
        ("train", "test", "every class needs test images"),
    ):
        alone = sorted(set(parts[part]) - set(parts[other]))
        if alone:
            raise PipelineError(
                f"{folder / part / alone[0]} is a class absent from {folder / other}; {needs}"
            )
    return sorted(rel for classes in parts.values() for rels in classes.values() for rel in rels)


def listing_digest(files: dict[str, str]) -> str:
    """sha256 of ``sha256sum``'s lines, sorted by path: what ``download.<name>.sha256`` pins."""
    lines = "".join(f"{files[rel]}  {rel}\n" for rel in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


def _copy(src: Path, dest: Path) -> str:
    """Copy atomically; return the sha256 of the bytes written: the source may change meanwhile."""
    digest = hashlib.sha256()
    with atomic_path(dest) as tmp, src.open("rb") as f, tmp.open("wb") as out:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def _find_folder(name: str, sources: list[str]) -> Path:
    """The first source that is a folder; ``sources`` are tried in order, like an archive's."""
    tried = []
    for source in sources:
        path = Path(source).expanduser()
        if path.is_dir():
            return path
        tried.append(f"{source} ({'not a folder' if path.exists() else 'no such folder'})")
    raise PipelineError(
        f"no image folder for download.{name}; tried: {'; '.join(tried) or 'nothing'}. "
        f"Set download.{name}.sources to a folder holding train/<class>/ and test/<class>/"
    )


def fetch_folder(name: str, sources: list[str], image_size: int, sha256: str, out: Path) -> dict:
    """Make ``out`` a verified copy of the folder; return its manifest, written last: a copy cut
    short has none and ``prepare`` refuses it. A set ``sha256`` must match or ``out`` is removed."""
    folder = _find_folder(name, sources)
    if out.resolve() in (folder.resolve(), *folder.resolve().parents):
        raise PipelineError(
            f"download.{name}.sources names {folder}, inside the output {out}; "
            "keep your images outside data/raw"
        )
    images = list_images(folder)
    if out.exists():
        shutil.rmtree(out)  # no image of an earlier copy may outlive its removal at the source
    files = {rel: _copy(folder / rel, out / rel) for rel in images}
    digest = listing_digest(files)
    if sha256 and digest != sha256.lower():
        shutil.rmtree(out)
        raise PipelineError(
            f"the images in {folder} have sha256 {digest}, not download.{name}.sha256 = {sha256}; "
            "restore them, or set that digest if the change is intended"
        )
    manifest = {"kind": "image_folder", "image_size": image_size, "sha256": digest, "files": files}
    write_text_atomic(out / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def _read_manifest(raw: Path) -> tuple[dict[str, str], int]:
    """The manifest's files (path: sha256) and image size, once the copy holds exactly those."""
    path = raw / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        size, files = manifest["image_size"], manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PipelineError(
            f"{path} is missing or unreadable ({type(e).__name__}: {e}); run `dvc repro download`"
        ) from e
    if type(size) is not int or size <= 0 or not isinstance(files, dict) or not files:
        raise PipelineError(
            f"{path} lacks a positive image_size or its files; run `dvc repro download`"
        )
    found = (p for part in PARTS for p in (raw / part).rglob("*") if p.is_file())
    on_disk = {p.relative_to(raw).as_posix() for p in found}
    extra, missing = sorted(on_disk - set(files)), sorted(set(files) - on_disk)
    if extra or missing:
        which = f"{raw / extra[0]} is not in" if extra else f"{raw / missing[0]} is missing, but in"
        raise PipelineError(f"{which} {path}; run `dvc repro -f -s download`")
    return files, size


def decode(path: Path, data: bytes, size: int) -> np.ndarray:
    """One image as uint8 size×size×3: EXIF orientation applied, converted to RGB (grey and
    palette images get three equal channels, alpha is dropped), resized with PIL's antialiased
    bilinear filter, aspect ratio not kept. Fails naming ``path``."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            rgb = ImageOps.exif_transpose(im).convert("RGB")
            return np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR), np.uint8)
    except UNDECODABLE as e:
        raise PipelineError(
            f"{path} cannot be decoded as an image ({type(e).__name__}: {e}); replace or remove "
            "it in the source folder, then run `dvc repro -f -s download`"
        ) from e


def _checked_decode(job: tuple[Path, str, str, int]) -> np.ndarray:
    """One copied image, re-hashed against the manifest, then decoded (read once)."""
    raw, rel, digest, size = job
    data = (raw / rel).read_bytes()
    if hashlib.sha256(data).hexdigest() != digest:
        raise PipelineError(
            f"{raw / rel} differs from its hash in {raw / MANIFEST}; run `dvc repro -f -s download`"
        )
    return decode(raw / rel, data, size)


def read(raw: Path) -> dict[str, np.ndarray]:
    """A downloaded folder's arrays for ``datasets.prepare``; classes: train/'s folders, sorted.
    Images decode in a process per core (a folder may hold tens of thousands): the same arrays,
    in the same order, as one process gives."""
    files, size = _read_manifest(raw)
    classes = sorted({rel.split("/")[1] for rel in files if rel.startswith("train/")})
    label = {c: i for i, c in enumerate(classes)}
    unseen = sorted({rel.split("/")[1] for rel in files} - set(label))
    if unseen:
        raise PipelineError(
            f"{raw / MANIFEST} lists test class {unseen[0]!r}, absent from train/; "
            "run `dvc repro -f -s download`"
        )
    arrays = {"classes": np.array(classes)}
    workers = min(len(os.sched_getaffinity(0)), 1 + len(files) // FILES_PER_WORKER)
    with ProcessPoolExecutor(workers) if workers > 1 else nullcontext() as pool:
        run = partial(pool.map, chunksize=256) if pool else map
        for part in PARTS:
            rels = sorted(rel for rel in files if rel.startswith(f"{part}/"))
            decoded = run(_checked_decode, [(raw, rel, files[rel], size) for rel in rels])
            x = np.zeros((len(rels), size, size, 3), np.uint8)
            for i, image in enumerate(decoded):
                x[i] = image
            arrays[f"x_{part}"] = x
            arrays[f"y_{part}"] = np.array([label[rel.split("/")[1]] for rel in rels], np.int64)
    return arrays
