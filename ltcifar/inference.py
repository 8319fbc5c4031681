"""Scoring images with a trained model: what the evaluate stage and validation share.

Kept apart from the training engine so that evaluating imports neither the losses' training
machinery nor the samplers and mixups: an edit to a sampler retrains, but does not re-score,
the runs that do not use it beyond their own retraining.
"""

from pathlib import Path

import torch

from ltcifar.augment import to_input
from ltcifar.device import autocast_for
from ltcifar.errors import PipelineError
from ltcifar.losses import log_prior
from ltcifar.models import build_model, model_options


def predict(
    model: torch.nn.Module,
    x: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    cfg: dict,
    counts: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits (fp32) of uint8 images, in large batches under inference_mode.

    With ``counts`` and ``posthoc_tau > 0``, returns post-hoc logit-adjusted scores
    z - tau log pi (Menon et al. 2021), whose argmax is the balanced-error prediction.
    """
    model.eval()
    bs = cfg["eval_batch_size"]
    with torch.inference_mode(), autocast_for(x.device, cfg):
        logits = torch.cat(
            [
                model(to_input(x[i : i + bs], mean, std, cfg["channels_last"])).float()
                for i in range(0, len(x), bs)
            ]
        )
    if counts is not None and cfg["posthoc_tau"] > 0:
        logits = logits - cfg["posthoc_tau"] * log_prior(counts.to(logits.device))
    return logits


def choose_posthoc_tau(
    logits: torch.Tensor, y: torch.Tensor, counts: torch.Tensor, grid: list[float]
) -> float:
    """The tau of ``grid`` whose adjusted logits z - tau log pi score the best mean per-class
    recall on (balanced) validation images (Menon et al. 2021 tune tau on held-out data); the
    first in grid order on ties, so list the smallest adjustment first."""
    prior = log_prior(counts.to(logits.device))
    return float(max(grid, key=lambda tau: balanced_recall((logits - tau * prior).argmax(1), y)))


def balanced_recall(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Mean per-class recall over the classes present in ``y`` (a class without validation
    images, the head of an exact LT split, is left out rather than scored 0)."""
    return float(torch.stack([(pred[y == c] == c).float().mean() for c in torch.unique(y)]).mean())


def load_trained(path: Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """A model saved by the train stage, rebuilt from the config saved beside its weights.

    Nothing is filled in from today's defaults: a model whose config lacks a setting the
    code now needs was made by older code, and is an error that says to retrain it. The file
    is read with ``weights_only=True`` (it holds plain data and tensors), so it is never code.
    """
    if not path.exists():
        raise PipelineError(f"{path} not found; run `dvc repro` on the train stage of this run")
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # torn, not a model file, or a pickle that would run code
        why = (str(e).splitlines() or [""])[0]
        raise PipelineError(
            f"{path} is not a readable model file ({type(e).__name__}: {why}); rerun its "
            "train stage (`dvc repro --force` on it)"
        ) from e
    cfg = saved["config"]
    try:
        model = build_model(
            cfg["model"], len(saved["classes"]), saved["in_channels"], **model_options(cfg)
        )
        model.load_state_dict(saved["state_dict"])
    except (KeyError, RuntimeError) as e:
        raise PipelineError(
            f"{path} was saved by older code and does not fit today's model ({e}); rerun its "
            "train stage (`dvc repro --force` on it)"
        ) from e
    model = model.to(
        device, memory_format=torch.channels_last if cfg["channels_last"] else torch.preserve_format
    )
    return model, saved
