"""Which runs may train their seeds stacked into one model (``recipe.stack_seeds``).

Its own small module: the ``configs`` stage refuses such a run before any work, and the engine
checks again for callers that bypass it, without depending on the rest of the config layer.
"""

from ltcifar.config import catalog
from ltcifar.config.records import RunConfig


def stacking_refusal(cfg: RunConfig) -> str | None:
    """Why the seeds of this run cannot train stacked into one model (``methods.stacked``)."""
    if cfg.model not in catalog.CIFAR_NETS:
        return f"model {cfg.model!r} is not a CIFAR net; only those are stacked"
    if cfg.experts > 1:
        return "a net of experts is not stacked"
    if cfg.finetune != "scratch":
        return f"finetune {cfg.finetune!r} starts from a backbone; stacking trains from scratch"
    if cfg.grad_clip > 0:
        return "grad_clip clips one norm over all parameters; stacked, the seeds would share it"
    if cfg.patience > 0:
        return "early stopping stops each seed at its own epoch; stacked, they train together"
    if cfg.processes > 1:
        return f"processes: {cfg.processes} trains over ranks; stacking trains in one process"
    return None
