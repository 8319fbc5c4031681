"""Every method name params.yaml may use, with the recipe settings each one reads.

Torch-free (the ``configs`` stage needs no torch). A run's config holds exactly what its methods
read, so changing ``la_tau`` retrains only the runs that use it. The ``Registry`` of each kind of
method (in ``losses``, ``samplers``, ``mixup``, ``models``, ``datasets``, ``second_stage``) accepts
only these names, so the catalogue params.yaml is validated against never drifts from the code.
"""

from collections.abc import Callable, Iterable
from typing import Any

LOSSES: dict[str, tuple[str, ...]] = {
    "cross_entropy": ("label_smoothing",),
    "weighted_ce": ("weighting", "beta"),
    "focal": ("focal_gamma",),
    "balanced_softmax": (),
    "logit_adjusted": ("la_tau",),
    "ldam": ("ldam_max_margin", "ldam_scale"),
}

SAMPLERS: dict[str, tuple[str, ...]] = dict.fromkeys(
    ("instance", "class_balanced", "sqrt", "progressive"), ()
)

MIXUPS: dict[str, tuple[str, ...]] = {
    "none": (),
    "mixup": ("mixup_alpha",),
    "balanced_mixup": ("balanced_mixup_alpha",),
    "cutmix": ("cutmix_alpha",),
}

_CIFAR_NET = ("shortcut", "head")
_TORCHVISION = ("input_size", "stem", "head")
MODELS: dict[str, tuple[str, ...]] = {
    **{f"resnet{d}": _CIFAR_NET for d in (20, 32, 44, 56)},
    **{f"plainnet{d}": _CIFAR_NET for d in (20, 56)},
    "tv_resnet18": _TORCHVISION,
    "tv_resnet50": _TORCHVISION,
}

DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "fashion_mnist")

_HEAD_SGD = ("epochs", "batch_size", "lr", "momentum", "weight_decay")
SECOND_STAGES: dict[str, tuple[str, ...]] = {
    "crt": _HEAD_SGD,
    "lws": _HEAD_SGD,
    "tau_norm": ("tau_grid",),
    "maxnorm": (*_HEAD_SGD, "max_norm", "beta"),
}

# Settings of features a run may leave off; a resolved config omits them when off, and
# ``ltcifar.runconfig.read_run_config`` puts these values back so the engine needs no special case.
OFF: dict[str, object] = {
    "drw_from": 1.0,
    "drs_from": 1.0,
    "posthoc_tau": 0.0,
    "posthoc_tau_grid": [],
    "grad_clip": 0.0,
    "stack_seeds": False,
    "finetune": "scratch",
    "processes": 1,
    "lr_scaling": "none",
}


class Registry(dict):
    """Named builders of one kind, filled by ``@REGISTRY.register("name")`` on import; a lookup
    error lists the valid names. A name must be catalogued above, with the settings it reads."""

    def __init__(self, kind: str, catalog: Iterable[str]) -> None:
        super().__init__()
        self.kind, self.catalog = kind, frozenset(catalog)

    def register(self, name: str) -> Callable[[Any], Any]:
        if name not in self.catalog:
            raise KeyError(f"{self.kind} {name!r} is not in ltcifar/catalog.py; add it there")

        def deco(obj: Any) -> Any:
            if name in self:
                raise KeyError(f"{self.kind} {name!r} registered twice")
            self[name] = obj
            return obj

        return deco

    def __missing__(self, name: str) -> Any:
        raise KeyError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(sorted(self))}")
