"""params.yaml validation: the repo's file loads, and each mistake fails with a helpful message."""

import pytest

from ltcifar.config.params import load
from ltcifar.config.runs import CANDIDATE, resolve_run, run_config, run_names
from ltcifar.config.schema import ParamsError
from tests.params_edit import PARAMS, error_of, load_modified, repo_params


@pytest.fixture(scope="module")
def raw() -> dict:
    return repo_params()


def test_repo_params_load():
    params = load(PARAMS)
    assert params["profile"] in params["profiles"]
    assert CANDIDATE in run_names(params)
    for name in run_names(params):
        cfg = resolve_run(params, name)
        assert cfg["name"] == name
        assert cfg["split"] in params["profiles"][params["profile"]]["splits"]


def test_unmodified_copy_loads(tmp_path, raw):
    assert load_modified(tmp_path, raw, lambda d: None) == load(PARAMS)


def test_missing_file(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load(tmp_path / "nope.yaml")


def test_unknown_top_level_key(tmp_path, raw):
    msg = error_of(tmp_path, raw, lambda d: d.update(lossy="x"))
    assert "unknown key lossy" in msg
    for allowed in ("loss", "recipe", "profiles", "runs", "split", "sampler", "epochs"):
        assert allowed in msg.split("top-level keys are")[1]


def test_unknown_loss(tmp_path, raw):
    msg = error_of(tmp_path, raw, lambda d: d.update(loss="focal_typo"))
    assert msg.startswith("loss = 'focal_typo'")
    assert "balanced_softmax" in msg and "cross_entropy" in msg


def test_wrong_type(tmp_path, raw):
    msg = error_of(tmp_path, raw, lambda d: d["recipe"].update(epochs="ten"))
    assert "recipe.epochs" in msg and "'ten'" in msg and "int" in msg


def test_bool_is_not_int(tmp_path, raw):
    msg = error_of(tmp_path, raw, lambda d: d["recipe"].update(batch_size=True))
    assert "recipe.batch_size" in msg and "int" in msg


def test_int_accepted_for_float(tmp_path, raw):
    params = load_modified(tmp_path, raw, lambda d: d["recipe"].update(lr=1))
    assert params["recipe"]["lr"] == 1.0 and isinstance(params["recipe"]["lr"], float)


def test_unknown_model(tmp_path, raw):
    msg = error_of(tmp_path, raw, lambda d: d.update(model="resnet18"))
    assert "model = 'resnet18'" in msg
    assert "resnet20" in msg and "plainnet20" in msg and "tv_resnet18" in msg
    msg = error_of(tmp_path, raw, lambda d: d["recipe"].update(model="resnet18"))
    assert "recipe.model = 'resnet18'" in msg and "resnet32" in msg


def test_out_of_range_values(tmp_path, raw):
    assert "epochs = 0 must be > 0" in error_of(tmp_path, raw, lambda d: d.update(epochs=0))
    msg = error_of(tmp_path, raw, lambda d: d["recipe"].update(balanced_mixup_alpha=0.0))
    assert msg.startswith("recipe.balanced_mixup_alpha = 0.0 must be > 0")
    msg = error_of(tmp_path, raw, lambda d: d["runs"]["step_ce"].update(drw_from=1.5))
    assert msg.startswith("runs.step_ce.drw_from = 1.5 must be within [0, 1]")
    msg = error_of(tmp_path, raw, lambda d: d["profiles"]["quick"]["budget"].update(seeds=[]))
    assert msg.startswith("profiles.quick.budget.seeds is empty")


def test_reserved_run_names(tmp_path, raw):
    msg = error_of(tmp_path, raw, lambda d: d["runs"].update(backbone={"split": "step"}))
    assert "run name 'backbone' is used twice or reserved" in msg


def test_unknown_model_in_profile_recipe(tmp_path, raw):
    msg = error_of(tmp_path, raw, lambda d: d["profiles"]["quick"]["recipe"].update(model="vgg"))
    assert "profiles.quick.recipe.model = 'vgg'" in msg


def test_run_split_not_in_profile(tmp_path, raw):
    msg = error_of(tmp_path, raw, lambda d: d["runs"].update(odd={"split": "nosuch"}))
    assert "runs.odd.split = 'nosuch'" in msg
    assert "is not defined in profiles." in msg
    assert "step" in msg.split("choose one of:")[1]


def test_candidate_split_not_in_profile(tmp_path, raw):
    msg = error_of(tmp_path, raw, lambda d: d.update(split="nosuch"))
    assert "split = 'nosuch'" in msg and "profiles." in msg


def test_unknown_key_in_run(tmp_path, raw):
    def edit(d):
        d["runs"] = {"ce": {"split": "step", "losss": "cross_entropy"}}

    msg = error_of(tmp_path, raw, edit)
    assert "unknown key runs.ce.losss" in msg
    assert "loss" in msg.split("allowed keys here:")[1]


SUGGESTED = [
    (lambda d: d["recipe"].update(epocs=3), "unknown key recipe.epocs; allowed keys", "epochs"),
    (lambda d: d.update(smapler="sqrt"), "unknown key smapler; top-level keys are", "sampler"),
    (lambda d: d.update(mixup="cutmx"), "mixup = 'cutmx' is not allowed; choose", "cutmix"),
    (lambda d: d["profiles"]["quick"].update(runs=["step_cee"]), "profiles.quick.runs", "step_ce"),
    (lambda d: d["runs"]["step_ce"].update(split="stpe"), "runs.step_ce.split = 'stpe'", "step"),
]


@pytest.mark.parametrize(("edit", "start", "close"), SUGGESTED)
def test_a_near_miss_gets_the_closest_name(tmp_path, raw, edit, start, close):
    """Still one line, the choices listed, the closest one named last."""
    msg = error_of(tmp_path, raw, edit)
    assert msg.startswith(start) and msg.endswith(f"; did you mean {close!r}?")
    assert "\n" not in msg


def test_no_suggestion_for_a_far_miss(tmp_path, raw):
    msg = error_of(tmp_path, raw, lambda d: d["recipe"].update({"zzzz": 1}))
    assert "did you mean" not in msg and msg.startswith("unknown key recipe.zzzz;")
    msg = error_of(tmp_path, raw, lambda d: d["recipe"].update({7: 1}))  # not a string
    assert "did you mean" not in msg


def test_bad_value_in_run(tmp_path, raw):
    def edit(d):
        d["runs"] = {"ce": {"split": "step", "sampler": "nope"}}

    msg = error_of(tmp_path, raw, edit)
    assert "runs.ce.sampler = 'nope'" in msg and "instance" in msg


def test_run_without_split(tmp_path, raw):
    msg = error_of(
        tmp_path, raw, lambda d: d.update(runs={"ce": {"loss": "cross_entropy"}}, transfer_runs={})
    )
    assert "runs.ce.split" in msg


def test_profile_not_in_profiles(tmp_path, raw):
    msg = error_of(tmp_path, raw, lambda d: d.update(profile="huge"))
    assert msg.startswith("profile = 'huge' has no block under profiles; choose one of: ")
    assert "full" in msg and "quick" in msg


def test_split_dataset_not_in_profile_datasets(tmp_path, raw):
    def edit(d):
        d["profiles"]["quick"]["splits"]["step"]["dataset"] = "cifar10"

    msg = error_of(tmp_path, raw, edit)
    assert "profiles.quick.splits.step.dataset" in msg and "cifar10" in msg


def test_resolve_run_precedence(tmp_path, raw):
    def edit(d):
        d["profile"] = "quick"
        d["runs"] = {
            "ce": {"split": "step", "loss": "cross_entropy"},
            "own": {"split": "exp100", "model": "plainnet20", "epochs": 3, "momentum": 0.5},
        }
        d["transfer_runs"] = {"tl": {"split": "balanced", "finetune": "linear", "epochs": 9}}
        d["second_stages"] = {}
        d["profiles"]["full"]["backbone"]["recipe"]["lr"] = 0.03

    params = load_modified(tmp_path, raw, edit)
    recipe, quick = raw["recipe"], raw["profiles"]["quick"]["recipe"]
    budget = raw["profiles"]["quick"]["budget"]
    assert quick["model"] != recipe["model"]

    ce = resolve_run(params, "ce")
    assert ce["model"] == quick["model"] == "resnet20"  # profile recipe beats recipe
    assert ce["epochs"] == budget["epochs"]
    assert ce["momentum"] == recipe["momentum"]  # recipe where the profile is silent
    assert ce["loss"] == "cross_entropy" and ce["head"] == "linear"  # head: auto
    assert ce["seeds"] == budget["seeds"]

    own = resolve_run(params, "own")
    assert own["model"] == "plainnet20"  # the run's own keys beat the profile recipe
    assert own["epochs"] == budget["epochs"]  # and the profile's budget beats the run
    assert own["momentum"] == 0.5

    full_tl = resolve_run(params, "tl", "full")  # recipe <- backbone recipe <- run
    assert full_tl["lr"] == 0.03 and full_tl["epochs"] == 9 and full_tl["input_size"] == 112
    assert full_tl["model"] == "tv_resnet18" and full_tl["transfer"]

    cand = resolve_run(params, CANDIDATE)
    assert cand["model"] == "resnet20" and cand["name"] == CANDIDATE

    with pytest.raises(ParamsError, match="unknown run 'nope'"):
        resolve_run(params, "nope")


def test_candidate_takes_any_recipe_key(tmp_path, raw):
    def edit(d):
        d.update(model="plainnet20", loss="ldam", ldam_scale=16.0, profile="full")

    params = load_modified(tmp_path, raw, edit)
    cand = resolve_run(params, CANDIDATE)
    assert cand["model"] == "plainnet20" and cand["head"] == "cosine"
    assert cand["ldam_scale"] == 16.0
    assert resolve_run(params, "step_ldam_drw")["ldam_scale"] == raw["recipe"]["ldam_scale"]


def test_shipped_study_params_are_valid():
    """studies/*.params.yaml replace params.yaml for a study; they must track the schema."""
    studies = sorted((PARAMS.parent / "studies").glob("*.params.yaml"))
    assert studies
    for path in studies:
        assert load(path)["runs"], path


def test_grad_clip_is_in_a_run_config_only_when_on(tmp_path, raw):
    params = load_modified(tmp_path, raw, lambda d: d["runs"]["step_ce"].update(grad_clip=1.0))
    assert run_config(params, "step_ce")["grad_clip"] == 1.0
    assert all("grad_clip" not in run_config(load(PARAMS), n) for n in run_names(load(PARAMS)))
    msg = error_of(tmp_path, raw, lambda d: d["runs"]["step_ce"].update(grad_clip=-1.0))
    assert msg.startswith("runs.step_ce.grad_clip = -1.0 must be >= 0")


def test_sampler_mixup_is_expanded_into_its_sampler_and_mixup(tmp_path, raw):
    """The seed's "Balanced Mixup" resolves to class-balanced batches + ordinary mixup, so no
    later code sees the alias; with a sampler of its own it would re-sample twice."""
    cfg = resolve_run(load(PARAMS), "step_sampler_mixup")
    assert (cfg["sampler"], cfg["mixup"]) == ("class_balanced", "mixup")
    assert run_config(load(PARAMS), "step_sampler_mixup")["mixup_alpha"] == 1.0
    edit = lambda d: d["runs"]["step_sampler_mixup"].update(sampler="progressive")  # noqa: E731
    msg = error_of(tmp_path, raw, edit)
    assert "sets the sampler itself, so sampler progressive is refused" in msg


def test_every_run_config_names_its_report_group():
    params = load(PARAMS)
    groups = {n: run_config(params, n)["group"] for n in run_names(params)}
    assert groups["step_ce"] == groups["exp_ce"] == groups[CANDIDATE] == "imbalance"
    assert groups["resnet20"] == "balanced" and groups["transfer_scratch"] == "transfer"


def _recipe(**over):
    return lambda d: d["recipe"].update(over)


def _split(key: str, **over):
    return lambda d: d["profiles"]["quick"]["splits"][key].update(over)


def _run(**over):
    return lambda d: d["runs"]["step_ce"].update(over)


def _both(*edits):
    return lambda d: [edit(d) for edit in edits]


STEP_CE = "runs.step_ce (profile quick): "
SECOND = {"run": "exp_ce", "split": "exp100", "method": "crt"}
REFUSED = [
    (_recipe(milestones=[160, -1]), "recipe.milestones = [160, -1] must all be >= 0"),
    (_recipe(gamma=-0.1), "recipe.gamma = -0.1 must be > 0"),
    (_recipe(seeds=[0, 1, 0]), "recipe.seeds = [0, 1, 0] lists a value twice"),
    (_recipe(posthoc_tau=-1), "recipe.posthoc_tau = -1.0 must be >= 0"),
    (_recipe(la_tau=-0.5), "recipe.la_tau = -0.5 must be >= 0"),
    (_split("step", n_min=2000), "profiles.quick.splits.step.n_min = 2000 must not exceed n_max"),
    (lambda d: d["runs"].update({7: {"split": "step"}}), "runs: the name 7 must be a string"),
    (lambda d: d["second_stages"].update({1.5: SECOND}), "second_stages: the name 1.5 must be"),
    (
        lambda d: d.update(warmup_epochs=5),
        "the candidate (profile quick): warmup_epochs = 5 is longer than the run (epochs = 4)",
    ),
    (
        _both(_run(checkpoint="best_val", split="exp100"), _split("exp100", val_per_class=0)),
        STEP_CE + "checkpoint: best_val selects on validation images, but "
        "profiles.quick.splits.exp100.val_per_class is 0",
    ),
    (
        _run(stack_seeds=True, seeds=[0, 1], grad_clip=1.0),  # quick trains one seed: full refuses
        "runs.step_ce (profile full): stack_seeds cannot be used: grad_clip clips one norm",
    ),
    (
        _run(processes=3),
        STEP_CE + "batch_size = 64 (the global batch) must be a multiple of processes = 3",
    ),
    (
        _run(patience=5),
        STEP_CE + "cross_entropy + instance sampler + none is refused: patience: 5 stops when",
    ),
    (
        _run(patience=5, checkpoint="best_val_loss", processes=2),
        STEP_CE + "cross_entropy + instance sampler + none is refused: early stopping",
    ),
    (
        _both(_run(checkpoint="best_val_loss", split="exp100"), _split("exp100", val_per_class=0)),
        STEP_CE + "checkpoint: best_val_loss selects on validation images, but ",
    ),
    (
        _run(stack_seeds=True, seeds=[0, 1], patience=3, checkpoint="best_val"),
        "runs.step_ce (profile full): stack_seeds cannot be used: early stopping stops each seed",
    ),
]


@pytest.mark.parametrize(("edit", "message"), REFUSED)
def test_what_was_accepted_before_any_work_is_refused(tmp_path, raw, edit, message):
    """Each refused in one line by the configs stage: none waits for training to start."""
    assert error_of(tmp_path, raw, edit).startswith(message)
