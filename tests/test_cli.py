"""The ``ltcifar`` command, verb by verb, and the stages' command lines: help that lists what
they take, one-line errors, exit statuses, and nothing written where nothing should be."""

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ltcifar import cli
from ltcifar.config import catalog
from ltcifar.config.docs import BEGIN, END, METHOD_KINDS
from ltcifar.config.params import load
from ltcifar.config.runs import profile_runs
from ltcifar.reporting import experiments, review
from ltcifar.reporting.experiments import EXP_SHOW
from tests.params_edit import PARAMS, repo_params, write

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_every_verb(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for verb in ("check", "methods", "exps", "estimate", "review", "docs"):
        assert f"    {verb} " in out, verb


def test_check_accepts_the_repository_params(capsys):
    code, out, err = run(capsys, "check", str(PARAMS))
    params = load(PARAMS)
    assert code == 0 and err == ""
    assert out.splitlines() == [
        f"{PARAMS}: OK; profile {params['profile']} trains {len(profile_runs(params))} of "
        f"{len(params['runs']) + len(params['transfer_runs']) + 1} runs and "
        f"{len(params['second_stages'])} of {len(params['second_stages'])} second stages"
    ]


MISTAKES = [
    (lambda d: d["recipe"].update(epocs=3), "unknown key recipe.epocs;", "'epochs'"),
    (lambda d: d.update(epocs=3), "unknown key epocs;", "'epochs'"),
    (lambda d: d.update(loss="focall"), "loss = 'focall' is not allowed;", "'focal'"),
    (lambda d: d.update(profile="quik"), "profile = 'quik' has no block", "'quick'"),
    (lambda d: d["runs"]["step_ce"].update(mixup="mixpu"), "runs.step_ce.mixup", "'mixup'"),
]


@pytest.mark.parametrize(("edit", "start", "suggestion"), MISTAKES)
def test_check_refuses_in_one_line_with_a_suggestion(tmp_path, capsys, edit, start, suggestion):
    raw = repo_params()
    edit(raw)
    path = write(tmp_path, raw)
    code, out, err = run(capsys, "check", str(path))
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {start}") and err.rstrip().endswith(
        f"; did you mean {suggestion}?"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written


def test_check_defaults_to_params_yaml_here(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "check")
    assert code == 1 and err == "error: params.yaml not found; run from the repository root\n"
    shutil.copy(PARAMS, tmp_path / "params.yaml")
    code, out, _ = run(capsys, "check")
    assert code == 0 and out.startswith("params.yaml: OK;")


def test_methods_lists_every_catalogued_method(capsys):
    code, out, _ = run(capsys, "methods")
    assert code == 0
    lines = out.splitlines()
    for heading, key, table in METHOD_KINDS:
        start = lines.index(f"{heading} ({key}):")
        rows = {ln.split()[0]: ln for ln in lines[start + 1 : start + 1 + len(table)]}
        assert list(rows) == list(table), heading
        for name, method in table.items():
            assert method.doc in rows[name]
            assert f"reads: {', '.join(method.reads) or '-'};" in rows[name]
            assert rows[name].endswith(f"corrects the prior: {method.corrects_prior or 'no'}")
    assert lines[-1] == "Aliases (mixup): sampler_mixup = sampler: class_balanced + mixup: mixup"
    assert set(catalog.MIXUP_ALIASES) == {"sampler_mixup"}


def test_exps_runs_the_readmes_table(capsys, monkeypatch):
    calls = []

    def fake_run(argv, check):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 3)

    monkeypatch.setattr(experiments.subprocess, "run", fake_run)
    assert run(capsys, "exps")[0] == 3  # dvc's status is the command's
    assert run(capsys, "exps", "-A", "--json")[0] == 3
    assert calls == [list(EXP_SHOW), [*EXP_SHOW, "-A", "--json"]]
    readme = (ROOT / "README.md").read_text().splitlines()
    assert shlex.join(EXP_SHOW) in readme  # the line the README tells users to run


def test_exps_without_dvc_is_one_line(capsys, monkeypatch):
    monkeypatch.setenv("PATH", "")
    code, _, err = run(capsys, "exps")
    assert (
        code == 1 and err == "error: dvc is not on PATH: activate the venv (. .venv/bin/activate)\n"
    )


@pytest.mark.slow  # a real `dvc exp show` in a temporary git + DVC repository
def test_exps_in_a_dvc_repository(tmp_path):
    """The report's headline, changed in the workspace for two runs of three: the candidate's
    macro-F1 and the other changed run's show, the unchanged run's does not."""
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "DVC_NO_ANALYTICS": "1"}
    env |= {"HOME": str(tmp_path), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}

    def scores(candidate: float, ce: float) -> None:
        runs = {"candidate": candidate, "ce": ce, "focal": 0.41}
        headline = {run: {"macro_f1": f1} for run, f1 in runs.items()}
        (tmp_path / "reports/headline.json").write_text(json.dumps(headline))

    for cmd in ("git init -q", "dvc init -q"):
        subprocess.run(cmd.split(), cwd=tmp_path, env=env, check=True)
    (tmp_path / "reports").mkdir()
    scores(0.5, 0.6)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"metrics": ["reports/headline.json"]}))
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, env=env, check=True)
    subprocess.run(["git", "commit", "-qm", "x"], cwd=tmp_path, env=env, check=True)
    scores(0.7, 0.65)
    code = "import sys; from ltcifar.cli import main; sys.exit(main(['exps', '--no-pager']))"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout
    assert "candidate.macro_f1" in table and "0.7" in table and "0.5" in table, table
    assert "ce.macro_f1" in table and "0.65" in table, table
    assert "focal" not in table and "0.41" not in table, table


def estimate_lines(capsys, *args: str) -> list[str]:
    code, out, err = run(capsys, "estimate", *args)
    assert code == 0, err
    return out.splitlines()


def test_estimate_prices_every_run_of_the_profile(capsys):
    params = load(PARAMS)
    at_1000 = estimate_lines(capsys, "quick", "--img-s", "1000", "--params", str(PARAMS))
    at_2000 = estimate_lines(capsys, "quick", "--img-s", "2000", "--params", str(PARAMS))
    head = next(i for i, ln in enumerate(at_1000) if ln.startswith("run "))
    rows = [ln.split() for ln in at_1000[head + 1 : -2]]
    # the quick profile pretrains its backbone: a row of its own, then every run it trains
    assert [r[0] for r in rows] == ["backbone", *profile_runs(params, "quick")]
    images = sum(int(r[3]) * int(r[4]) * int(r[5]) for r in rows)  # epochs x nets x img/ep
    assert at_1000[-1].startswith(f"ESTIMATE total_images={images} ")
    minutes = [float(ln.split("total_minutes=")[1]) for ln in (at_1000[-1], at_2000[-1])]
    assert minutes[0] == pytest.approx(2 * minutes[1], rel=1e-3)
    assert "at 1000 img/s of resnet20" in at_1000[0] and "assumed" not in at_1000[0]


def test_estimate_without_a_rate_says_it_is_assumed(capsys):
    lines = estimate_lines(capsys, "quick", "--params", str(PARAMS))
    assert "at 25000 img/s of resnet20 on 32x32x3 (assumed, not measured" in lines[0]


def test_estimate_of_an_unknown_profile_is_one_line(capsys):
    code, _, err = run(capsys, "estimate", "ful", "--params", str(PARAMS))
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(f"error: profile 'ful' is not in {PARAMS}; choose one of: ")
    assert err.endswith("did you mean 'full'?\n")


def test_review_prints_the_comment_against_a_base(capsys, monkeypatch):
    monkeypatch.setattr(review, "review", lambda rev: f"## Changes against `{rev}`\n")
    assert run(capsys, "review") == (0, "## Changes against `main`\n", "")
    assert run(capsys, "review", "origin/dev")[1] == "## Changes against `origin/dev`\n"


def test_docs_checks_and_writes_the_reference(tmp_path, capsys, monkeypatch):
    assert run(capsys, "docs")[:2] == (0, "docs/params.md: reference up to date\n")  # repo root
    page = (ROOT / "docs" / "params.md").read_text()
    stale = page.replace("| `epochs` | int | `200` |", "| `epochs` | int | `100` |")
    assert stale != page
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "params.md").write_text(stale)
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "docs")
    assert code == 1 and err == (
        "error: docs/params.md differs from the catalogue; run `ltcifar docs --write`\n"
    )
    assert run(capsys, "docs", "--write")[:2] == (0, "docs/params.md: reference rewritten\n")
    assert (tmp_path / "docs" / "params.md").read_text() == page
    (tmp_path / "docs" / "params.md").write_text(page.replace(END, ""))
    code, _, err = run(capsys, "docs")
    assert code == 1 and err.startswith(
        f"error: docs/params.md needs one pair of marker lines: {BEGIN}"
    )


def stage(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"stages.{module}", *args],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize(
    ("module", "usage"),
    [
        ("train", "usage: python -m stages.train [-h] [run]"),
        ("evaluate", "usage: python -m stages.evaluate [-h] [run]"),
        ("second_stage", "usage: python -m stages.second_stage [-h] name"),
        ("configs", "usage: python -m stages.configs [-h]"),
        ("report", "usage: python -m stages.report [-h]"),
    ],
)
def test_stage_help_prints_its_usage_and_docstring(module, usage):
    proc = stage(module, "--help")
    assert proc.returncode == 0 and proc.stdout.startswith(usage + "\n")
    doc = __import__(f"stages.{module}", fromlist=["__doc__"]).__doc__
    assert doc.splitlines()[0] in proc.stdout


def test_stage_argument_mistakes_are_usage_errors():
    proc = stage("second_stage")  # once an IndexError
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        "python -m stages.second_stage: error: the following arguments are required: name"
    )
    proc = stage("configs", "extra")
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1].endswith("error: unrecognized arguments: extra")


def test_stage_defaults_are_kept(tmp_path):
    """train and evaluate default to the candidate: its config is the one they look for."""
    for module in ("train", "evaluate"):
        proc = subprocess.run(
            [sys.executable, "-m", f"stages.{module}"],
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 2
        assert proc.stderr == (
            "error: configs/runs/candidate.json not found; run `dvc repro configs` first\n"
        )
