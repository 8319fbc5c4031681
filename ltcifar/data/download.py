"""Fetch a dataset's raw files (or pretrained weights) from the first source with a verified copy.

Each file is streamed to a hidden temporary, hashed on the way and renamed into place only if
params.yaml accepts its hash: ``out_dir`` never holds a partial or unverified download. Sources
are tried in order, so a mirror or local copy stands in when the server is down or unreachable.
"""

import hashlib
import sys
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from tqdm import tqdm

from ltcifar.data.datasets import DATASETS
from ltcifar.errors import PipelineError
from ltcifar.files import atomic_path

URL_SCHEMES = ("http", "https", "ftp", "file")
TIMEOUT_S = 30
CHUNK = 1 << 20
PROGRESS = dict(unit="B", unit_scale=True, unit_divisor=1024, mininterval=0.5)  # a tqdm byte bar


class _SourceFailed(Exception):
    """One source could not deliver a verified file; the message says why, for the final error."""


def accepted_hash(digest: str, accepted: list[str]) -> bool:
    """A full hex digest, or a prefix of one as in torchvision's weight file names (8+ digits)."""
    return any(len(h) >= 8 and digest.startswith(h) for h in accepted)


def _is_url(source: str) -> bool:
    return urlsplit(source).scheme.lower() in URL_SCHEMES


def locate(source: str, name: str) -> str:
    """The file itself if the source's last path component is ``name``, else ``source/name``."""
    last = urlsplit(source).path if _is_url(source) else source
    if last.rstrip("/").rsplit("/", 1)[-1] == name:
        return source
    return source.rstrip("/") + "/" + name


def _open(location: str) -> tuple[BinaryIO, int | None]:
    """Open a URL or a local file for streaming; return it with its announced size."""
    if _is_url(location):
        try:
            response = urllib.request.urlopen(location, timeout=TIMEOUT_S)
        except urllib.error.HTTPError as e:
            raise _SourceFailed(f"HTTP Error {e.code} {e.reason}") from e
        except urllib.error.URLError as e:
            reason = getattr(e.reason, "strerror", None) or e.reason
            raise _SourceFailed(str(reason).lower()) from e
        except (OSError, HTTPException, ValueError) as e:  # timeouts, resets, malformed URLs
            raise _SourceFailed(str(e) or type(e).__name__) from e
        length = response.headers.get("Content-Length")
        return response, int(length) if length and length.isdigit() else None
    path = Path(location).expanduser()
    if not path.is_file():
        raise _SourceFailed("not a file" if path.exists() else "no such file")
    return path.open("rb"), path.stat().st_size


def _transfer(location: str, name: str, accepted: list[str], part: Path, algo: str) -> None:
    """Stream ``location`` into ``part`` and check size and hash; raise _SourceFailed if not."""
    stream, total = _open(location)
    digest, received = hashlib.new(algo), 0
    try:
        bar = tqdm(total=total, desc=name, file=sys.stderr, **PROGRESS)
        with stream, bar, part.open("wb") as out:
            for chunk in iter(lambda: stream.read(CHUNK), b""):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    except (OSError, HTTPException, ValueError) as e:  # timeouts, resets, incomplete chunks
        raise _SourceFailed(f"transfer failed after {received} bytes: {e!r}") from e
    if total is not None and received != total:
        raise _SourceFailed(f"truncated: got {received} of {total} bytes")
    if not accepted_hash(digest.hexdigest(), accepted):
        raise _SourceFailed(f"{algo} {digest.hexdigest()} not in accepted [{', '.join(accepted)}]")


def fetch_file(
    name: str, sources: list[str], accepted: list[str], out_dir: Path, param: str, algo: str = "md5"
) -> Path:
    """Make ``out_dir/name`` a verified copy; ``param``: the params.yaml block the error names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target, tried = out_dir / name, []
    if target.is_file():
        with target.open("rb") as f:
            have = hashlib.file_digest(f, algo).hexdigest()
        if accepted_hash(have, accepted):
            return target
        tried.append(f"{target} (present, {algo} {have} not in accepted [{', '.join(accepted)}])")
    for source in sources:
        location = locate(source, name)
        try:
            with atomic_path(target) as part:
                _transfer(location, name, accepted, part, algo)
            return target
        except _SourceFailed as e:
            tried.append(f"{location} ({e})")
    raise PipelineError(
        f"could not get a verified {name} ({param}); tried: "
        f"{'; '.join(tried) or 'nothing, ' + param + '.sources is empty'}. "
        f"Set {param}.sources to a mirror URL or a local copy (file or folder), "
        f"or add your file's {algo.upper()} to {param}.{algo} if it has the same format"
    )


def fetch(dataset: str, sources: list[str], md5: dict[str, list[str]], out_dir: Path) -> list[Path]:
    """Make ``out_dir`` hold every file ``dataset`` needs with an accepted MD5; accepted files
    already there are kept, so a rerun costs one hash each. Fails in one line naming every
    source tried and why it failed."""
    files = DATASETS[dataset].files
    md5 = {name: [h.lower() for h in hashes] for name, hashes in md5.items()}
    missing = [f for f in files if f not in md5]
    extra = sorted(set(md5) - set(files))
    empty = [f for f in files if f in md5 and not md5[f]]
    problems = [f"has no entry for {', '.join(missing)}"] if missing else []
    problems += [f"names {', '.join(extra)}, which {dataset} does not use"] if extra else []
    problems += [f"accepts no MD5 for {', '.join(empty)}"] if empty else []
    if problems:
        raise PipelineError(
            f"download.{dataset}.md5 {' and '.join(problems)}; "
            f"{dataset} needs exactly these files: {', '.join(files)}"
        )
    param = f"download.{dataset}"
    return [fetch_file(name, sources, md5[name], out_dir, param) for name in files]
