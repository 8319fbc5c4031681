"""Scoring images with a trained model: what the evaluate stage and validation share.

Kept apart from the training engine so that evaluating imports neither samplers nor mixups (nor
the losses' training machinery): an edit to a sampler retrains every run, but re-scores only the
runs whose model it changed.
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from ltcifar.config.records import RunConfig, TrainedConfig, parse
from ltcifar.data.augment import to_input
from ltcifar.device import autocast_for
from ltcifar.errors import PipelineError
from ltcifar.methods.losses import log_prior
from ltcifar.methods.models import build_model, model_options


@dataclass(frozen=True)
class Scoring:
    """How ``predict`` runs a model: images per batch, memory layout, autocast precision, and
    the post-hoc tau of the adjusted scores (0: none)."""

    batch_size: int
    channels_last: bool
    precision: str
    posthoc_tau: float = 0.0

    @classmethod
    def of(cls, cfg: RunConfig) -> "Scoring":
        """A run's: its evaluation batch size, layout, precision and post-hoc tau."""
        return cls(cfg.eval_batch_size, cfg.channels_last, cfg.precision, cfg.posthoc_tau)


def predict(
    model: torch.nn.Module,
    x: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    how: Scoring,
    counts: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits (fp32) of uint8 images, in large batches under inference_mode. With ``counts`` and
    ``posthoc_tau > 0``, post-hoc logit-adjusted scores z - tau log pi (Menon et al. 2021), whose
    argmax is the balanced-error prediction."""
    model.eval()
    bs = how.batch_size
    with torch.inference_mode(), autocast_for(x.device, how.precision):
        parts = [x[i : i + bs] for i in range(0, len(x), bs)]
        logits = torch.cat(
            [model(to_input(p, mean, std, how.channels_last)).float() for p in parts]
        )
    if counts is not None and how.posthoc_tau > 0:
        logits = logits - how.posthoc_tau * log_prior(counts.to(logits.device))
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


@dataclass
class Trained:
    """A model file, loaded: the rebuilt model on its device, its config, the file's entries."""

    model: torch.nn.Module
    config: TrainedConfig
    saved: dict


def load_trained(path: Path, device: torch.device) -> Trained:
    """A model saved by the train stage, rebuilt from the config saved beside its weights.

    Nothing is filled in from today's defaults but the off values of optional features: a
    config lacking a setting today's code needs is older code's, and an error says to retrain.
    ``weights_only=True``: the file is never code."""
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
    retrain = "rerun its train stage (`dvc repro --force` on it)"
    older = f"it was saved by older code: {retrain}"
    cfg = parse(TrainedConfig, saved.get("config"), f"the config in {path}", older)
    try:
        classes, channels = saved["classes"], saved["in_channels"]
        model = trained_model(cfg, classes, channels, saved["state_dict"], device)
    except (KeyError, RuntimeError, PipelineError) as e:
        raise PipelineError(
            f"{path} was saved by older code and does not fit today's model ({e}); {retrain}"
        ) from e
    return Trained(model, cfg, saved)


def trained_model(
    cfg: RunConfig, classes: list[str], in_channels: int, state_dict: dict, device: torch.device
) -> torch.nn.Module:
    """The network a run's config builds, with trained weights (a model file's or a
    ``TrainResult``'s), on ``device`` in the memory layout the run trained in."""
    model = build_model(cfg.model, len(classes), in_channels, **model_options(cfg))
    model.load_state_dict(state_dict)
    layout = torch.channels_last if cfg.channels_last else torch.preserve_format
    # torch's stubs lack the (device, memory_format) overload that Module.to accepts
    return model.to(device, memory_format=layout)  # type: ignore[call-overload]
