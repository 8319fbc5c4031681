"""Which device a stage runs on, how it is named in the metrics, and its autocast policy."""

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from ltcifar.errors import PipelineError


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """The card's or CPU's model name, so every reported number says which machine made it."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    models = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")]
    return f"cpu: {models[0] if models else 'unknown'} ({torch.get_num_threads()} threads)"


def compiled(model: torch.nn.Module, device: torch.device, cfg: dict) -> torch.nn.Module:
    """``compile: auto`` compiles on CUDA, where a small net's step is launch-bound (fusing cuts
    launches), not on the compute-bound CPU (inductor needs a C compiler). Costs tens of seconds."""
    on = cfg["compile"] == "always" or (cfg["compile"] == "auto" and device.type == "cuda")
    return torch.compile(model) if on else model


def autocast_for(device: torch.device, cfg: dict):
    """bf16 autocast on CUDA unless ``precision: fp32``; the CPU always runs fp32."""
    if device.type == "cuda" and cfg["precision"] == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@contextmanager
def out_of_memory_hint(what: str) -> Iterator[None]:
    """Out of device memory as one line naming the setting to lower: ``eval_batch_size`` is not in
    the fingerprint (it changes nothing learnt), so the run resumes; ``batch_size`` is a new run."""
    try:
        yield
    except (torch.OutOfMemoryError, RuntimeError) as e:
        if not isinstance(e, torch.OutOfMemoryError) and "can't allocate memory" not in str(e):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PipelineError(
            f"{what} ran out of memory ({first}); lower eval_batch_size (validation and "
            "testing; the run resumes from its last checkpoint) or batch_size (training; a new "
            "run), e.g. dvc exp run -S +eval_batch_size=256"
        ) from e
