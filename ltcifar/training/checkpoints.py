"""Resumable checkpoints: everything an exact resume needs, and only of this very run.

A checkpoint holds model, optimiser, schedule, RNG streams and history as plain data and tensors,
read with ``weights_only=True`` (never code). Its config fingerprint keeps a run from resuming
another's; on the CPU a resumed run is bit-exact, on CUDA only with ``deterministic: true``.
"""

import hashlib
import json
from pathlib import Path

import torch

from ltcifar.config.records import RunConfig, as_dict
from ltcifar.errors import PipelineError
from ltcifar.files import atomic_path


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _shaping(cfg: dict) -> dict:
    """The keys that shape the result: not the name, group, checkpoint interval or evaluation
    batch size (which changes no prediction: lowering it after running out of memory resumes)."""
    unshaping = ("checkpoint_every", "name", "group", "eval_batch_size")
    return {k: v for k, v in cfg.items() if k not in unshaping}


def seed_config(cfg: RunConfig, seed: int) -> dict:
    """What a checkpoint records of its run, and its fingerprint hashes: the config as its file
    and the off values give it (``records.as_dict``), and the seed."""
    return {**as_dict(cfg), "seed": seed}


def fingerprint(cfg: dict) -> str:
    """Hash of everything that shapes the result, so a checkpoint never resumes a different run."""
    return hashlib.sha256(_canonical(_shaping(cfg)).encode()).hexdigest()[:16]


def _config_diff(old: dict, new: dict) -> list[str]:
    """The result-shaping keys whose values differ between two configs (or exist in one only)."""
    a, b = _shaping(old), _shaping(new)
    return sorted(
        k
        for k in a.keys() | b.keys()
        if k not in a or k not in b or _canonical(a[k]) != _canonical(b[k])
    )


def load_checkpoint(
    path: Path, device: torch.device, fp: str, run_cfg: dict, who: str
) -> dict | None:
    """The checkpoint at ``path`` if it holds this very run (``run_cfg``, a ``seed_config``;
    ``who``, its run and seed) on this kind of device (a CUDA generator's state does not fit a
    CPU one); else None, after saying why in one line."""
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # torn by a disk fault, or not a checkpoint at all
        why = (str(e).splitlines() or [""])[0]
        raise PipelineError(
            f"{path} is not a readable checkpoint ({type(e).__name__}: {why}); "
            "delete it to start this run afresh"
        ) from e
    head = f"not resuming {who} from {path}"
    if ck["fingerprint"] != fp:
        saved = ck.get("config")  # absent in checkpoints written before configs were stored
        changed = ", ".join(_config_diff(saved, run_cfg)) if saved is not None else "unknown"
        print(
            f"{head}: its config fingerprint {ck['fingerprint']} differs from this run's {fp} "
            f"(changed: {changed}); starting from epoch 0"
        )
        return None
    written_on = ck.get("device", "an unrecorded device")  # absent in older checkpoints
    if written_on != device.type:
        print(
            f"{head}: it was written on {written_on} and this run is on {device.type}, whose "
            "random-number streams differ; starting from epoch 0"
        )
        return None
    return ck


def save_atomic(obj: object, path: Path) -> None:
    """torch.save through ``atomic_path``: a kill never leaves a torn checkpoint or model."""
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        torch.save(obj, f)  # a file object: torch.save names the zip's records after a path
