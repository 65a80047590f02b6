"""Search-space validation happens before Ray: bad files exit 2 naming the key/value."""

import re
import subprocess
import sys

import numpy as np
import pytest

from nli_tune import SPACES_DIR
from nli_tune.core.errors import UserError
from nli_tune.study.space import load_space

BUNDLED = ("pooling", "smoke", "full", "gpu")


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_spaces_are_valid(name):
    space = load_space(str(SPACES_DIR / f"{name}.yaml"))
    assert space.name == name and space.num_samples >= 2 and space.folds >= 2
    header = [ln for ln in (SPACES_DIR / f"{name}.yaml").read_text().splitlines() if ln[:1] == "#"]
    assert any(ln.startswith("# Launch:  python -m nli_tune.search --space") for ln in header)


def test_pooling_space_searches_the_required_params():
    space = load_space("pooling")  # a bundled name works like a path
    assert {"pooling", "aggregate", "rank", "lr"} <= set(space.params)
    assert space.num_samples >= 12 and space.folds >= 3 and space.scheduler == "asha"
    assert space.fixed["model"] == "gemma-3-270m"
    # issue 19's sizing: TPE past its random phase for at least a third of the trials, the
    # cheap pairing, and ASHA on the metric that ranked this demo's trials at epoch 1
    assert space.n_startup_trials <= space.num_samples * 2 // 3
    assert space.fixed["pairing"] == "multilabel"
    assert space.scheduler_metric == "cv_roc_auc" and space.rungs() == [1, 3]


def test_full_space_covers_the_wide_search():
    space = load_space("full")
    assert {
        "rank",
        "alpha",
        "lr",
        "batch_size",
        "weight_decay",
        "warmup_ratio",
        "head_dropout",
        "max_length",
        "attention",
        "hypothesis",
        "pairing",
    } <= set(space.params)
    # the cheaper units are searched side by side with the defaults
    assert space.params["pairing"]["choice"] == ["nli", "multilabel"]
    assert space.params["hypothesis"]["choice"] == ["description", "name"]
    for pairing in ("nli", "multilabel"):
        assert space.trial_config({"pairing": pairing, "hypothesis": "name"}).pairing == pairing


BASE = "name: t\nnum_samples: 2\nfolds: 2\nparams:\n  lr: {loguniform: [1.0e-4, 1.0e-3]}\n"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (BASE + "sampler: tpe\n", "unknown key 'sampler'"),
        (BASE.replace("lr:", "learning_rate:"), "params.learning_rate: unknown training-config"),
        (BASE.replace("loguniform", "lognormal"), "unknown distribution 'lognormal'"),
        (BASE.replace("1.0e-4", "0.0"), "loguniform bounds must be positive, got 0.0"),
        (BASE.replace("1.0e-4", "-1.0"), "loguniform bounds must be positive"),
        (BASE + "  pooling: {choice: []}\n", "choice needs a non-empty list"),
        (BASE + "  pooling: {choice: [mean, gem]}\n", "params.pooling: value 'gem' is invalid"),
        (BASE.replace("folds: 2", "folds: 1"), "folds 1: must be an integer >= 2"),
        (BASE.replace("[1.0e-4, 1.0e-3]", "[1.0e-3, 1.0e-4]"), "low 0.001 must be below high"),
        (BASE + "fixed:\n  pooling: gem\n", "config key 'pooling' = 'gem'"),
        (BASE + "fixed:\n  lr: 0.1\n", "params.lr: also in fixed"),
        (BASE.replace("scheduler", "x") + "scheduler: hyperband\n", "scheduler 'hyperband'"),
        (
            BASE + "  epochs: {quniform: [2, 6, 1]}\n",
            "integer; uniform kinds sample floats, use randint or qrandint)",
        ),
        (BASE + "  head_dropout: {quniform: [0.05, 0.3, 0.1]}\n", "bounds 0.05 and 0.3 must be"),
        (BASE + "  rank: {choice: [4.0, 8]}\n", "positive integer)"),  # no uniform hint
        (BASE + "  rank: {qrandint: [4, 16, 0]}\n", "qrandint step q must be positive, got 0"),
        (BASE + "  rank: {randint: [4, 8.5]}\n", "params.rank value 8.5 must be an integer"),
        (
            BASE + "  epochs: {choice: [1, 2]}\nasha:\n  grace_period: 3\n",
            "asha.grace_period 3: more than the most epochs a trial runs (2)",
        ),
        (BASE + "resources:\n  gpus_per_worker: 1.5\n", "gpus_per_worker 1.5: above 1 it"),
    ],
)
def test_bad_space_is_a_user_error(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=re.escape(fragment)):
        load_space(str(path))


def test_misplaced_bundled_name_points_to_the_bundled_file(tmp_path):
    with pytest.raises(UserError, match="a bundled space of that name is at .*pooling.yaml"):
        load_space("configs/pooling.yaml")
    with pytest.raises(UserError, match="search space not found"):
        load_space("nonsense")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (BASE.replace("loguniform", "gaussian"), "unknown distribution 'gaussian'"),
        # Trials share the driver's tokenization, so models must share a tokenizer.
        (
            BASE + "  model: {choice: [tiny-random, gemma-3-270m]}\n",
            "params.model: gemma-3-270m tokenizes differently from tiny-random",
        ),
    ],
)
def test_search_cli_rejects_bad_space_with_exit_2_and_writes_nothing(tmp_path, text, fragment):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    out = tmp_path / "outputs"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "nli_tune.search",
            "--space",
            str(bad),
            "--output",
            str(out),
            "--mlflow-uri",
            f"sqlite:///{tmp_path}/m.db",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    # The last line: a first use of gemma-3-270m also says it converts the weights.
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and fragment in last
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


RANGES = BASE + (
    "  epochs: {randint: [2, 5]}\n"
    "  head_dropout: {quniform: [0.1, 0.3, 0.1]}\n"
    "  max_length: {qrandint: [64, 200, 32]}\n"
    "  rank: {choice: [16, 4, 8]}\n"
)


@pytest.mark.filterwarnings("ignore:The distribution is specified by")  # [64, 200] step 32
def test_value_range_is_what_optuna_really_samples(tmp_path):
    """The search sizes ASHA's max_t by the top epochs and checks the shortest max_length
    before Ray starts, so the range must match Tune + Optuna's own sampling: randint
    excludes its upper bound, and quantized kinds stop at the last step below `high`."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from nli_tune.tuning.tuner import tune_distributions

    path = tmp_path / "ranges.yaml"
    path.write_text(RANGES)
    space = load_space(str(path))
    searcher = OptunaSearch(sampler=optuna.samplers.RandomSampler(seed=0))
    searcher.set_search_properties("m", "max", tune_distributions(space))  # as Tuner does
    seen = {key: set() for key in space.params}
    for i in range(200):
        for key, value in searcher.suggest(f"t{i}").items():
            seen[key].add(round(value, 6) if isinstance(value, float) else value)
    assert seen["epochs"] == {2, 3, 4}
    assert seen["head_dropout"] == {0.1, 0.2, 0.3}
    assert seen["max_length"] == {64, 96, 128, 160, 192}
    assert seen["rank"] == {4, 8, 16}
    for key in ("epochs", "head_dropout", "max_length", "rank"):
        assert space.value_range(key) == pytest.approx((min(seen[key]), max(seen[key]))), key
    assert 1e-4 <= min(seen["lr"]) < max(seen["lr"]) <= 1e-3
    assert space.value_range("lr") == (1e-4, 1e-3)
    assert space.value_range("batch_size") == (16, 16)  # not searched: the default


def test_seed_flag_seeds_the_splits_even_over_a_fixed_seed(tmp_path):
    from nli_tune.search import parse_args, prepare

    path = tmp_path / "s.yaml"
    path.write_text(BASE + "fixed:\n  seed: 13\n")
    args = parse_args(["--space", str(path), "--seed", "5", "--output", str(tmp_path / "out")])
    space, _ = prepare(args)
    assert space.seed == 5 and space.trial_config({}).seed == 5


@pytest.mark.parametrize("cpus, threads", [(0.25, 1), (0.5, 1), (1.0, 1), (2.4, 2), (3.6, 4)])
def test_a_fold_worker_gets_its_cpu_share_in_torch_threads(tmp_path, cpus, threads):
    """The search gives each fold worker this many torch threads, and the bench times a
    fold alone on as many: both read it here."""
    path = tmp_path / "threads.yaml"
    text = (SPACES_DIR / "pooling.yaml").read_text()
    path.write_text(text.replace("cpus_per_worker: 0.5", f"cpus_per_worker: {cpus}"))
    space = load_space(str(path))
    assert space.cpus_per_worker == cpus and space.worker_threads == threads


@pytest.mark.parametrize(
    ("metric", "fragment"),
    [
        ("cv_accuracy", "metric 'cv_accuracy': unknown (known: cv_macro_f1, cv_criterion_macro_f1"),
        ("{scheduler: cv_f1}", "metric.scheduler 'cv_f1': unknown metric"),
        ("{judge: cv_pr_auc}", "unknown key metric.judge (known: scheduler, searcher)"),
        ("[cv_pr_auc]", "metric must be a name or a mapping"),
    ],
)
def test_unknown_metric_exits_2_with_one_line(tmp_path, metric, fragment):
    path = tmp_path / "space.yaml"
    path.write_text(BASE + f"metric: {metric}\n")
    r = subprocess.run(
        [sys.executable, "-m", "nli_tune.search", "--space", str(path), "--output", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: ") and fragment in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]


def test_scheduler_and_searcher_metrics_are_set_apart_or_together(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(BASE + "metric: {scheduler: cv_pr_auc, searcher: cv_macro_f1}\n")
    space = load_space(str(path))
    assert (space.scheduler_metric, space.searcher_metric) == ("cv_pr_auc", "cv_macro_f1")
    path.write_text(BASE + "metric: cv_roc_auc\n")
    space = load_space(str(path))
    assert (space.scheduler_metric, space.searcher_metric) == ("cv_roc_auc", "cv_roc_auc")


@pytest.mark.parametrize(
    ("epochs", "grace", "rf"), [(10, 1, 3), (4, 1, 3), (5, 1, 2), (12, 2, 2), (9, 1, 2.5)]
)
def test_scored_epochs_are_the_rungs_ray_asha_judges_and_the_last(tmp_path, epochs, grace, rf):
    """The workers score at space.rungs(): they must be the epochs at which Ray's own ASHA
    judges a trial (its milestones, judged at the first report at or past each)."""
    from ray.tune.schedulers import ASHAScheduler

    path = tmp_path / "space.yaml"
    path.write_text(
        BASE + f"fixed: {{epochs: {epochs}}}\nasha: {{grace_period: {grace}, "
        f"reduction_factor: {rf}}}\n"
    )
    space = load_space(str(path))
    asha = ASHAScheduler(
        time_attr="epoch", metric="m", mode="max", max_t=epochs, grace_period=grace,
        reduction_factor=rf,
    )  # fmt: skip
    milestones = [m for m, _ in asha._brackets[0]._rungs]
    assert space.rungs() == sorted({int(np.ceil(m - 1e-9)) for m in milestones})
    assert space.scored_epochs(epochs) == sorted(set(space.rungs()) | {epochs})
    assert space.scored_epochs(2) == sorted({r for r in space.rungs() if r < 2} | {2})
    space.scheduler = "none"
    assert space.rungs() == [] and space.scored_epochs(epochs) is None


def test_startup_trials_default_to_a_third_and_the_pooling_space_shows_its_own(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(BASE.replace("num_samples: 2", "num_samples: 12"))
    assert load_space(str(path)).n_startup_trials == 4
    path.write_text(BASE + "startup_trials: 3\n")
    assert load_space(str(path)).n_startup_trials == 3
    path.write_text(BASE + "startup_trials: 0\n")
    with pytest.raises(UserError, match="startup_trials 0: must be an integer >= 1"):
        load_space(str(path))
    pooling = load_space("pooling")
    # TPE models the results for at least a third of the main job's trials.
    assert "startup_trials" in (SPACES_DIR / "pooling.yaml").read_text()
    assert pooling.n_startup_trials <= pooling.num_samples * 2 // 3


def test_fold_column_names_match_what_workers_report():
    from nli_tune.study.space import METRICS, fold_column

    # tuning.trial reports fold{k}_<name> for each val_<name>; the cross-fold mean is cv_<name>.
    assert fold_column("cv_roc_auc_within", 2) == "fold2_roc_auc_within"
    assert fold_column("cv_pr_auc", "") == "fold_pr_auc"
    assert len({fold_column(m, 0) for m in METRICS}) == len(METRICS)


def test_key_value_overrides_go_where_they_belong_and_bad_ones_exit_2(tmp_path):
    """`search --space S key=value`: a setting, a section's key, or a training key into
    fixed; the space as it will run is what the run folder keeps. A searched key, an
    unknown name or a bad value is refused before Ray starts, and nothing is written."""
    from nli_tune.core.overrides import parse_overrides

    over = parse_overrides(["num_samples=3", "asha.grace_period=2", "epochs=5",
                            "training.batch_size=8", "confirm=none"])  # fmt: skip
    space = load_space("pooling", over)
    assert space.num_samples == 3 and space.grace_period == 2 and space.confirm_top == 0
    cfg = space.trial_config({})
    assert (cfg.epochs, cfg.batch_size) == (5, 8)
    assert space.effective["fixed"]["epochs"] == 5 and space.effective["num_samples"] == 3
    assert load_space("pooling").num_samples == 12  # the file itself is unchanged
    for words, message in (
        (["lr=1e-3"], "override lr: params.lr is searched"),
        (["bogus=1"], "override 'bogus': neither a space setting"),
        (["epochs=many"], "config key 'epochs' = 'many': must be a positive integer"),
    ):
        r = subprocess.run(
            [sys.executable, "-m", "nli_tune.search", "--space", "pooling", *words,
             "--output", str(tmp_path / "outputs")],
            capture_output=True, text=True, cwd=tmp_path, timeout=120,
        )  # fmt: skip
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert message in r.stderr.strip().splitlines()[-1], (words, r.stderr)
        assert not (tmp_path / "outputs").exists()
