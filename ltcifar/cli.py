"""The ``ltcifar`` command: the pipeline's checks, listings, estimates and reviews, beside
``dvc repro`` and ``dvc exp run`` (which run the stages). Each verb parses its arguments and
calls one library function; a mistake a user can fix is one ``error:`` line and exit status 1.
Heavy modules are imported by the verb that needs them, so ``ltcifar check`` needs no torch.
"""

import argparse
import sys
from collections.abc import Callable

from ltcifar.config import catalog
from ltcifar.errors import PipelineError


def check(args: argparse.Namespace) -> int:
    """The ``configs`` stage's validation of a params file, writing nothing."""
    from ltcifar.config.params import load
    from ltcifar.config.runs import profile_runs, profile_second_stages, run_names

    params = load(args.params)
    runs, seconds = profile_runs(params), profile_second_stages(params)
    print(
        f"{args.params}: OK; profile {params['profile']} trains {len(runs)} of "
        f"{len(run_names(params))} runs and {len(seconds)} of "
        f"{len(params['second_stages'])} second stages"
    )
    return 0


def methods(args: argparse.Namespace) -> int:
    from ltcifar.config.docs import methods_text

    print(methods_text())
    return 0


def exps(args: argparse.Namespace) -> int:
    from ltcifar.reporting.experiments import show_experiments

    return show_experiments(args.dvc_args)


def estimate(args: argparse.Namespace) -> int:
    from ltcifar.training.estimate import ASSUMED_IMG_S
    from ltcifar.training.estimate import estimate as table

    note = "" if args.img_s else " (assumed, not measured: give yours with --img-s)"
    img_s = args.img_s or ASSUMED_IMG_S
    print("\n".join(table(args.params, args.profile, img_s, args.model, note)))
    return 0


def review(args: argparse.Namespace) -> int:
    from ltcifar.reporting.review import review as comment

    sys.stdout.write(comment(args.rev))
    return 0


def docs(args: argparse.Namespace) -> int:
    from ltcifar.config.docs import PARAMS_MD, stale_reference

    stale = stale_reference(PARAMS_MD, write=args.write)
    if stale and not args.write:
        raise PipelineError(f"{PARAMS_MD} differs from the catalogue; run `ltcifar docs --write`")
    print(f"{PARAMS_MD}: {'reference rewritten' if stale else 'reference up to date'}")
    return 0


VERBS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "check": (check, "validate a params file as the configs stage does, writing nothing"),
    "methods": (methods, "every loss, sampler, mixup, model and second stage, what it reads"),
    "exps": (exps, "the experiments as a readable table (the README's `dvc exp show`)"),
    "estimate": (estimate, "minutes to train a profile's runs at a throughput"),
    "review": (review, "a pull request's changes in params, metrics and run configs"),
    "docs": (docs, "check (or --write) docs/params.md's reference against the catalogue"),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ltcifar",
        description="A long-tailed CIFAR study's checks, listings and reviews, run from the "
        "repository root; the stages run with `dvc repro` and `dvc exp run`.",
    )
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    verbs = {
        name: sub.add_parser(name, help=text, description=text) for name, (_, text) in VERBS.items()
    }
    verbs["check"].add_argument("params", nargs="?", default="params.yaml")
    verbs["exps"].epilog = "Any further arguments go to `dvc exp show`, e.g. -A (all commits)."
    est = verbs["estimate"]
    est.add_argument("profile", help="a profile of the params file, e.g. full")
    est.add_argument(
        "--img-s",
        type=float,
        default=0.0,
        help="the engine's img/s of --model (benchmarks/train_speed.py measures it; "
        "default: the GPU rate the full profile was sized to, assumed)",
    )
    est.add_argument(
        "--model",
        choices=sorted(catalog.MODELS),
        default="resnet20",
        help="the model --img-s was measured with (default resnet20)",
    )
    est.add_argument("--params", default="params.yaml")
    verbs["review"].add_argument("rev", nargs="?", default="main", help="the base (default main)")
    verbs["docs"].add_argument("--write", action="store_true", help="rewrite the reference")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args, extra = p.parse_known_args(argv)
    if extra and args.verb != "exps":  # only `exps` passes arguments on (to dvc)
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    args.dvc_args = extra
    try:
        return VERBS[args.verb][0](args)
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
