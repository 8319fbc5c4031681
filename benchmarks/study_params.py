"""The GPU study kit's params.yaml, on stdout: a study's params with one profile made active and,
given a number of epochs, that profile's schedule shortened to it, each lr milestone at the same
fraction of training (DRW and DRS start at fractions already), for a recipe whose full schedule
does not fit one call of the device machine.

Usage: python benchmarks/study_params.py PARAMS PROFILE [EPOCHS]   (EPOCHS may be empty)
"""

import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ltcifar.config.catalog import defaults  # noqa: E402


def schedule(params: dict, profile: str) -> tuple[int, list[int]]:
    """The profile's epochs and milestones, layered as runs resolve them: the catalogue, the
    recipe, the profile's recipe, its budget (which no run overrides)."""
    prof = params["profiles"][profile]
    merged = defaults()
    for layer in (params.get("recipe"), prof.get("recipe"), prof.get("budget")):
        merged.update(layer or {})
    return merged["epochs"], merged["milestones"]


def shortened(params: dict, profile: str, epochs: int) -> dict:
    """``params`` with the profile's budget set to ``epochs`` and milestones scaled alike."""
    full, milestones = schedule(params, profile)
    budget = params["profiles"][profile].setdefault("budget", {})
    budget.update(epochs=epochs, milestones=[round(m * epochs / full) for m in milestones])
    return params


def main(argv: list[str]) -> None:
    path, profile, *rest = argv
    params = yaml.safe_load(Path(path).read_text())
    params["profile"] = profile
    if rest and rest[0]:
        params = shortened(params, profile, int(rest[0]))
    yaml.safe_dump(params, sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main(sys.argv[1:])
