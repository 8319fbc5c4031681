"""DVC stage ``configs``: validate params.yaml and write what every later stage reads.

The first stage of the graph, and the only one that reads params.yaml. A bad value fails here,
in one line naming the key, the value and the choices, before DVC removes any other stage's
outputs. Each file under ``configs/`` holds exactly what one stage (or one run) reads, so a
change to params.yaml reruns the stages whose file changed and no others, and ``git diff
configs/`` shows a reviewer which runs changed and how. Files are rewritten only when their
content changes; files of runs that no longer exist are removed. The runs and second stages
outside the active profile get a ``skipped`` config: their stages write placeholders only.
"""

from ltcifar.config.params import load
from ltcifar.config.runconfig import CONFIGS, dumps
from ltcifar.config.runs import profile_runs, profile_second_stages, run_names, stage_configs
from ltcifar.errors import run_stage, stage_parser
from ltcifar.files import write_text_atomic


def main() -> None:
    params = load()
    files = {CONFIGS / rel: dumps(content) for rel, content in stage_configs(params).items()}
    for old in sorted(p for p in CONFIGS.rglob("*") if p.is_file() and p not in files):
        old.unlink()
        print(f"removed {old}: not a config of the active profile")
    changed = [p for p, text in files.items() if not p.is_file() or p.read_text() != text]
    for path in changed:
        write_text_atomic(path, files[path])
    print(
        f"{len(files)} config(s) in {CONFIGS}/, {len(changed)} changed: "
        + (", ".join(str(p.relative_to(CONFIGS)) for p in changed) or "none")
    )
    inside = {*profile_runs(params), *profile_second_stages(params)}
    if outside := [n for n in (*run_names(params), *params["second_stages"]) if n not in inside]:
        print(f"outside profile {params['profile']} (placeholders only): {', '.join(outside)}")


if __name__ == "__main__":
    run_stage(main, stage_parser("stages.configs", __doc__))
