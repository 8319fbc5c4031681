"""Scoring images with a trained model: what the evaluate stage and validation share.

Kept apart from the training engine so that evaluating imports neither samplers nor mixups (nor
the losses' training machinery): an edit to a sampler retrains every run, but re-scores only the
runs whose model it changed.
"""

from pathlib import Path

import torch

from ltcifar.data.augment import to_input
from ltcifar.device import autocast_for
from ltcifar.errors import PipelineError
from ltcifar.methods.losses import log_prior
from ltcifar.methods.models import build_model, model_options


def predict(
    model: torch.nn.Module,
    x: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    cfg: dict,
    counts: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits (fp32) of uint8 images, in large batches under inference_mode. With ``counts`` and
    ``posthoc_tau > 0``, post-hoc logit-adjusted scores z - tau log pi (Menon et al. 2021), whose
    argmax is the balanced-error prediction."""
    model.eval()
    bs = cfg["eval_batch_size"]
    with torch.inference_mode(), autocast_for(x.device, cfg["precision"]):
        parts = [x[i : i + bs] for i in range(0, len(x), bs)]
        logits = torch.cat(
            [model(to_input(p, mean, std, cfg["channels_last"])).float() for p in parts]
        )
    if counts is not None and cfg["posthoc_tau"] > 0:
        logits = logits - cfg["posthoc_tau"] * log_prior(counts.to(logits.device))
    return logits


def choose_posthoc_tau(
    logits: torch.Tensor, y: torch.Tensor, counts: torch.Tensor, grid: list[float]
) -> float:
    """The ``grid`` tau whose z - tau log pi scores the best balanced recall on validation images
    (Menon et al. 2021 tune tau on held-out data); ties go to the first: list the smallest first."""
    prior = log_prior(counts.to(logits.device))
    return float(max(grid, key=lambda tau: balanced_recall((logits - tau * prior).argmax(1), y)))


def balanced_recall(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Mean per-class recall over the classes present in ``y`` (a class without validation
    images, the head of an exact LT split, is left out rather than scored 0)."""
    return float(torch.stack([(pred[y == c] == c).float().mean() for c in torch.unique(y)]).mean())


def load_trained(path: Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """A model saved by the train stage, rebuilt from the config saved beside its weights.

    Nothing is filled in from today's defaults: a config lacking a setting today's code needs is
    older code's, and an error says to retrain. ``weights_only=True``: the file is never code."""
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
    try:
        cfg, classes, channels = saved["config"], saved["classes"], saved["in_channels"]
        model = trained_model(cfg, classes, channels, saved["state_dict"], device)
    except (KeyError, RuntimeError) as e:
        raise PipelineError(
            f"{path} was saved by older code and does not fit today's model ({e}); rerun its "
            "train stage (`dvc repro --force` on it)"
        ) from e
    return model, saved


def trained_model(
    cfg: dict, classes: list[str], in_channels: int, state_dict: dict, device: torch.device
) -> torch.nn.Module:
    """The network a run's config builds, with trained weights (a model file's or a
    ``TrainResult``'s), on ``device`` in the memory layout the run trained in."""
    model = build_model(cfg["model"], len(classes), in_channels, **model_options(cfg))
    model.load_state_dict(state_dict)
    layout = torch.channels_last if cfg["channels_last"] else torch.preserve_format
    return model.to(device, memory_format=layout)
