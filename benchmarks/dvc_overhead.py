"""DVC's own time per stage: what `dvc repro` adds to each stage's command (checking its deps,
hashing its outputs, rewriting dvc.lock), the quick profile's largest cost after training.

Usage (from the root of a reproduced project, i.e. after `make repro`):
    python benchmarks/dvc_overhead.py [--repeats R]

Forces the four cheap data stages (``configs download prepare lt_index``) through one
``dvc repro -f -s`` and times their commands alone; the difference over four is DVC's share of
a stage. It reruns those stages only, so the project's outputs are rewritten with the same
bytes. Medians of ``--repeats`` runs. Run it with and without a package (e.g. ruamel.yaml.clib,
DVC's YAML parser in C) to price it. The last line is
``RESULT dvc_s_per_stage=.. repro_s=.. commands_s=.. yaml_parser=..``.
"""

import argparse
import statistics
import subprocess
import sys
import time

STAGES = ("configs", "download", "prepare", "lt_index")


def seconds(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def yaml_parser() -> str:
    """The parser DVC's safe loads get: ruamel's C one when ruamel.yaml.clib is installed."""
    from ruamel.yaml import YAML

    return "C" if "clib" in YAML(typ="safe").Parser.__module__ else "pure-python"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    repro = [seconds(["dvc", "repro", "-q", "-f", "-s", *STAGES]) for _ in range(args.repeats)]
    alone = [
        sum(seconds([sys.executable, "-m", f"stages.{s}"]) for s in STAGES)
        for _ in range(args.repeats)
    ]
    r, c = statistics.median(repro), statistics.median(alone)
    print(f"dvc repro -f -s {' '.join(STAGES)}: {r:.2f} s; their commands alone: {c:.2f} s")
    print(
        f"RESULT dvc_s_per_stage={(r - c) / len(STAGES):.2f} repro_s={r:.2f} commands_s={c:.2f} "
        f"yaml_parser={yaml_parser()}"
    )


if __name__ == "__main__":
    main()
