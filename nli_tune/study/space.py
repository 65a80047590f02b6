"""Search-space files: YAML validated completely before Ray starts.

    name: pooling          # experiment name (MLflow experiment, output folder)
    num_samples: 8         # trials
    folds: 3               # CV folds = Ray Train workers per trial
    scheduler: asha        # asha | none
    metric: cv_roc_auc_within   # or {scheduler: ..., searcher: ...}; see METRICS
    startup_trials: 4      # Optuna TPE samples at random for this many trials first
    confirm: {top: 3, seeds: 2}  # rerun the top completed configs with new seeds (or none)
    params:                # sampled by Optuna; any training-config key
      pooling: {choice: [mean, cls, max, attention]}
      lr: {loguniform: [1.0e-4, 3.0e-3]}
    fixed:                 # the same for every trial; any training-config key
      model: gemma-3-270m

No Ray import here: the entry point turns a validated space into Tune distributions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nli_tune import SPACES_DIR
from nli_tune.core.config import TrainConfig, read_mapping
from nli_tune.core.errors import UserError

DISTRIBUTIONS = {  # name -> number of arguments
    "choice": None,
    "uniform": 2,
    "loguniform": 2,
    "randint": 2,  # integers low .. high - 1 (Tune's exclusive upper bound)
    "quniform": 3,  # floats low, low + q, ... up to high
    "qrandint": 3,  # integers low, low + q, ... up to high (inclusive)
}
TOP_KEYS = (
    "name",
    "num_samples",
    "folds",
    "scheduler",
    "params",
    "fixed",
    "resources",
    "asha",
    "seed",
    "points_to_evaluate",
    "metric",
    "startup_trials",
    "confirm",
)
# Cross-fold means a trial reports at each scored epoch; ASHA and Optuna may each rank on
# any of them (all higher-is-better). Which ranks trials earliest and most stably is
# measured by `bench --asha-off` (rung_rank_correlation), not chosen by taste.
METRICS = {
    "cv_macro_f1": "macro-F1 at the threshold fitted on each fold's calibration posts",
    "cv_criterion_macro_f1": "the mean of the 9 criteria's F1 (the ReDSM5 authors' macro-F1)",
    "cv_pr_auc": "average precision of the matched class (PR-AUC)",
    "cv_roc_auc": "ROC-AUC over all (post, criterion) pairs",
    "cv_roc_auc_within": "ROC-AUC within each criterion, averaged over criteria",
}
DEFAULT_METRIC = "cv_roc_auc_within"


def fold_column(metric: str, k: int | str) -> str:
    """The per-fold column of a cross-fold metric: ("cv_roc_auc", 0) -> "fold0_roc_auc";
    k="" names the list of every fold's value (best_config.yaml's "fold_roc_auc")."""
    return f"fold{k}_{metric.removeprefix('cv_')}"


# A trial config's key that is no training key: which confirmation rerun of a config it is
# (0: the search's own trial), so that its folds draw new seeds.
REPEAT_KEY = "confirm_repeat"
CONFIRMS_KEY = "confirms"  # ... and the search trial whose config it reruns
RESOURCE_KEYS = ("cpus_per_worker", "gpus_per_worker", "driver_cpus")
ASHA_KEYS = ("grace_period", "reduction_factor")
# Keys the search itself owns: sampling them would break the CV protocol.
# window_sentences / window_stride: the driver segments every post once per search.
NOT_SEARCHABLE = (
    "folds",
    "test_fraction",
    "data_dir",
    "seed",
    "split_seed",
    "extra",
    "window_sentences",
    "window_stride",
)


@dataclass
class SearchSpace:
    name: str  # experiment name: MLflow experiment and output folder
    num_samples: int  # number of trials
    folds: int  # CV folds = Ray Train workers per trial
    scheduler: str  # asha | none
    params: dict[str, dict[str, Any]]  # key -> {distribution: args}
    fixed: dict[str, Any]  # training-config keys shared by every trial
    cpus_per_worker: float = 1.0  # CPU share of one fold worker
    gpus_per_worker: float = 0.0  # GPU share of one fold worker (fractional: folds share a GPU)
    driver_cpus: float = 0.2  # CPU share of each trial's driver (it only waits on workers)
    grace_period: int = 1  # ASHA: epochs every trial runs before it can be stopped
    reduction_factor: float = 2.0  # ASHA: keep the top 1/reduction_factor at each rung
    seed: int = 0  # Optuna TPE seed
    points_to_evaluate: list[dict[str, Any]] = field(default_factory=list)  # first trials, fixed
    scheduler_metric: str = DEFAULT_METRIC  # ASHA stops trials on it at its rungs
    searcher_metric: str = DEFAULT_METRIC  # Optuna optimises it; the exported best is chosen by it
    startup_trials: int | None = None  # random trials before TPE models (None: num_samples // 3)
    confirm_top: int = 3  # confirmation: the top completed configs rerun with new seeds (0: none)
    confirm_seeds: int = 2  # confirmation: reruns of each, every fold with a new seed
    source: Path = field(default=Path("."), repr=False)
    effective: dict[str, Any] = field(default_factory=dict, repr=False)  # the file + overrides

    @property
    def n_startup_trials(self) -> int:
        """Trials Optuna's TPE samples at random before it models the results (its own
        default, 10, would leave a short search random throughout)."""
        if self.startup_trials is not None:
            return self.startup_trials
        return max(1, self.num_samples // 3)

    def rungs(self) -> list[int]:
        """The epochs at which ASHA judges trials: Ray's milestones grace * rf**k below
        max_t (the most epochs any trial runs), rounded up, since ASHA judges the first
        report at or past a milestone. Empty without a scheduler."""
        if self.scheduler != "asha":
            return []
        max_t, rf = self.value_range("epochs")[1], self.reduction_factor
        n = int(math.log(max_t / self.grace_period) / math.log(rf) + 1)  # as Ray counts them
        return sorted({math.ceil(self.grace_period * rf**k - 1e-9) for k in range(n)})

    def judged_rungs(self) -> list[int] | None:
        """The rungs the fold workers score at, or None: without a scheduler every epoch is
        scored (what the trials get, through `scored_epochs`)."""
        return self.rungs() if self.scheduler == "asha" else None

    def scored_epochs(self, epochs: int) -> list[int] | None:
        """Epochs at which a trial of `epochs` epochs scores its validation folds: the rungs
        it reaches and its last. None (every epoch) without a scheduler."""
        return scored_epochs(self.judged_rungs(), epochs)

    @property
    def worker_threads(self) -> int:
        """torch threads of one fold worker: its CPU share, rounded, at least one."""
        return max(1, round(self.cpus_per_worker))

    def base_config(self) -> dict[str, Any]:
        return dict(self.fixed) | {"folds": self.folds}

    def trial_config(self, sampled: dict[str, Any]) -> TrainConfig:
        return TrainConfig.from_dict(self.base_config() | sampled, source=str(self.source))

    def value_range(self, key: str) -> tuple[Any, Any]:
        """Smallest and largest value any trial can get for `key` (fixed or sampled)."""
        if key in self.params:
            return value_range(self.params[key])
        value = getattr(self.trial_config({}), key)
        return value, value


def scored_epochs(rungs: list[int] | None, epochs: int) -> list[int] | None:
    """The rungs below `epochs` and `epochs` itself; None (every epoch) for no rungs."""
    if rungs is None:
        return None
    return sorted({r for r in rungs if r < epochs} | {epochs})


def value_range(dist: dict[str, Any]) -> tuple[Any, Any]:
    """(lowest, highest) value of a numeric `{kind: args}` entry, as Optuna samples it.

    randint excludes its upper bound; the quantized kinds sample low + k * q, so their top
    is the last step that does not pass `high` (Optuna rounds the range down the same way).
    """
    kind, args = next(iter(dist.items()))
    if kind == "choice":
        return min(args), max(args)
    low, high = args[0], args[1]
    if kind == "randint":
        return low, high - 1
    if kind in ("quniform", "qrandint"):
        q = args[2]
        top = low + math.floor((high - low) / q + 1e-9) * q
        return (float(low), float(top)) if kind == "quniform" else (low, top)
    return float(low), float(high)


def resolve_space_path(space: str) -> Path:
    """A path, or a bundled name such as `pooling`; a wrong folder gets a pointed hint."""
    p = Path(space)
    if p.is_file():
        return p
    bundled = SPACES_DIR / (p.name if p.suffix in (".yaml", ".yml") else f"{p.name}.yaml")
    if p.suffix == "" and bundled.is_file():
        return bundled
    if bundled.is_file():
        raise UserError(f"{space}: file not found; a bundled space of that name is at {bundled}")
    names = ", ".join(sorted(x.stem for x in SPACES_DIR.glob("*.yaml")))
    raise UserError(f"{space}: search space not found (bundled spaces: {names})")


def load_space(space: str, overrides: dict[str, Any] | None = None) -> SearchSpace:
    """A validated space file, with `key=value` command-line overrides applied first
    (core/overrides.py: top-level settings, `section.key`, or training keys into fixed)."""
    path = resolve_space_path(space)
    raw = apply_overrides(read_mapping(path), overrides or {}, str(path))
    src = str(path) + (" + command line" if overrides else "")

    def fail(msg: str) -> None:
        raise UserError(f"{src}: {msg}")

    unknown = [k for k in raw if k not in TOP_KEYS]
    if unknown:
        fail(f"unknown key '{unknown[0]}' (known keys: {', '.join(TOP_KEYS)})")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        fail(f"name {name!r}: use letters, digits, '-' and '_' only")
    num_samples, folds = raw.get("num_samples", 8), raw.get("folds", 3)
    for key, value, low in (("num_samples", num_samples, 1), ("folds", folds, 2)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            fail(f"{key} {value!r}: must be an integer >= {low}")
    scheduler = raw.get("scheduler", "asha")
    if scheduler not in ("asha", "none"):
        fail(f"scheduler {scheduler!r}: must be asha or none")
    params, fixed = raw.get("params") or {}, raw.get("fixed") or {}
    for key, value in (("params", params), ("fixed", fixed)):
        if not isinstance(value, dict):
            fail(f"{key} must be a mapping")
    if not params:
        fail("params is empty: nothing to search")

    known = TrainConfig.keys()
    for where, mapping in (("params", params), ("fixed", fixed)):
        for key in mapping:
            if key not in known:
                fail(f"{where}.{key}: unknown training-config key (known: {', '.join(known)})")
            if key in NOT_SEARCHABLE and (where == "params" or key == "folds"):
                fail(
                    f"{where}.{key}: set by the search itself; use the top-level key or a CLI flag"
                )
    both = set(params) & set(fixed)
    if both:
        fail(f"params.{sorted(both)[0]}: also in fixed; keep it in one place")

    space = SearchSpace(
        effective=raw,
        name=name,
        num_samples=num_samples,
        folds=folds,
        scheduler=scheduler,
        params=params,
        fixed=fixed,
        source=path,
        seed=_number(raw.get("seed", 0), "seed", src, integer=True),
    )
    space.trial_config({})  # fixed keys alone must form a valid config
    for key in list(params):
        params[key], values = _check_distribution(key, params[key], src)
        for value in values:
            try:
                space.trial_config({key: value})
            except UserError as err:
                why = str(err).split(": ", 1)[-1]
                if "uniform" in next(iter(params[key])) and "integer" in why:
                    why += "; uniform kinds sample floats, use randint or qrandint"
                fail(f"params.{key}: value {value!r} is invalid ({why})")
    points = raw.get("points_to_evaluate") or []
    if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
        fail("points_to_evaluate must be a list of {param: value} mappings")
    for point in points:
        extra = sorted(set(point) - set(params))
        if extra:
            fail(f"points_to_evaluate: '{extra[0]}' is not a key of params")
        space.trial_config(point)
    space.points_to_evaluate = points
    space.scheduler_metric, space.searcher_metric = _metrics(raw.get("metric"), src)
    startup = raw.get("startup_trials")
    if startup is not None:
        space.startup_trials = _number(startup, "startup_trials", src, integer=True)
        if space.startup_trials < 1:
            fail(f"startup_trials {startup!r}: must be an integer >= 1")
    space.confirm_top, space.confirm_seeds = _confirm(raw.get("confirm", {}), src)
    _apply_section(space, raw.get("resources"), RESOURCE_KEYS, "resources", src)
    _apply_section(space, raw.get("asha"), ASHA_KEYS, "asha", src)
    if space.cpus_per_worker <= 0 or space.driver_cpus <= 0 or space.gpus_per_worker < 0:
        fail("resources: cpus_per_worker and driver_cpus must be > 0, gpus_per_worker >= 0")
    if space.gpus_per_worker > 1 and space.gpus_per_worker != int(space.gpus_per_worker):
        fail(f"resources.gpus_per_worker {space.gpus_per_worker}: above 1 it must be whole (Ray)")
    if space.grace_period < 1 or space.reduction_factor <= 1:
        fail("asha: grace_period must be >= 1 and reduction_factor > 1")
    most_epochs = space.value_range("epochs")[1]
    if space.scheduler == "asha" and space.grace_period > most_epochs:
        fail(
            f"asha.grace_period {space.grace_period}: more than the most epochs a trial runs "
            f"({most_epochs}); lower it or raise epochs"
        )
    return space


def _metrics(value: Any, src: str) -> tuple[str, str]:
    """(scheduler metric, searcher metric) from `metric: NAME` or `metric: {scheduler:
    NAME, searcher: NAME}`; each defaults to DEFAULT_METRIC."""
    if value is None:
        value = {}
    if isinstance(value, str):
        if value not in METRICS:
            raise UserError(f"{src}: metric {value!r}: unknown (known: {', '.join(METRICS)})")
        return value, value
    if not isinstance(value, dict):
        raise UserError(f"{src}: metric must be a name or a mapping {{scheduler:, searcher:}}")
    for key, name in value.items():
        if key not in ("scheduler", "searcher"):
            raise UserError(f"{src}: unknown key metric.{key} (known: scheduler, searcher)")
        if name not in METRICS:
            raise UserError(
                f"{src}: metric.{key} {name!r}: unknown metric (known: {', '.join(METRICS)})"
            )
    return value.get("scheduler", DEFAULT_METRIC), value.get("searcher", DEFAULT_METRIC)


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any], src: str) -> dict[str, Any]:
    """The space mapping with command-line overrides: a top-level key (num_samples=4), a
    key of a section (asha.grace_period=2) or a training key, which goes into `fixed` (a
    searched one is refused: the space's params say it is searched)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for key, value in overrides.items():
        section, _, sub = key.partition(".")
        if sub and section in ("asha", "resources", "confirm", "metric"):
            current = out.get(section)
            out[section] = (dict(current) if isinstance(current, dict) else {}) | {sub: value}
        elif key in TOP_KEYS and key not in ("params", "fixed", "points_to_evaluate"):
            out[key] = value
        elif key in TrainConfig.keys():
            if key in (out.get("params") or {}):
                raise UserError(
                    f"{src}: override {key}: params.{key} is searched; change its "
                    f"distribution in the space file, or search without it"
                )
            out["fixed"] = dict(out.get("fixed") or {}) | {key: value}
        else:
            settings = [k for k in TOP_KEYS if k not in ("params", "fixed", "points_to_evaluate")]
            raise UserError(
                f"{src}: override {key!r}: neither a space setting ({', '.join(settings)}, "
                f"asha.*, resources.*, confirm.*, metric.*) nor a training-config key"
            )
    return out


def _confirm(value: Any, src: str) -> tuple[int, int]:
    """(top, seeds) from `confirm: {top: N, seeds: S}`, or (0, 0) from `confirm: none`;
    an absent key keeps the defaults (3, 2)."""
    if value in ("none", None):
        return 0, 0
    if not isinstance(value, dict):
        raise UserError(f"{src}: confirm must be none or a mapping {{top: N, seeds: S}}")
    unknown = sorted(set(value) - {"top", "seeds"})
    if unknown:
        raise UserError(f"{src}: unknown key confirm.{unknown[0]} (known: top, seeds)")
    out = []
    for key, default in (("top", 3), ("seeds", 2)):
        n = _number(value.get(key, default), f"confirm.{key}", src, integer=True)
        if n < 1:
            raise UserError(f"{src}: confirm.{key} {n}: must be >= 1 (or confirm: none)")
        out.append(n)
    return out[0], out[1]


def _check_distribution(key: str, dist: Any, src: str) -> tuple[dict, list[Any]]:
    """Validate one `{kind: args}` entry; return it with numbers parsed, and the values to
    try against the training config."""
    where = f"{src}: params.{key}"
    if not isinstance(dist, dict) or len(dist) != 1:
        raise UserError(
            f"{where}: must be one distribution such as {{choice: [...]}} "
            f"(kinds: {', '.join(DISTRIBUTIONS)})"
        )
    kind, args = next(iter(dist.items()))
    if kind not in DISTRIBUTIONS:
        raise UserError(
            f"{where}: unknown distribution '{kind}' (kinds: {', '.join(DISTRIBUTIONS)})"
        )
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise UserError(f"{where}: choice needs a non-empty list")
        return dist, list(args)
    n = DISTRIBUTIONS[kind]
    if not isinstance(args, list) or len(args) != n:
        raise UserError(f"{where}: {kind} needs [{', '.join(['low', 'high', 'q'][:n])}]")
    integer = kind in ("randint", "qrandint")
    nums = [_number(a, f"params.{key}", src, integer=integer) for a in args]
    low, high = nums[0], nums[1]
    if low >= high:
        raise UserError(f"{where}: {kind} low {low} must be below high {high}")
    if kind == "loguniform" and low <= 0:
        raise UserError(f"{where}: loguniform bounds must be positive, got {low}")
    if n == 3 and nums[2] <= 0:
        raise UserError(f"{where}: {kind} step q must be positive, got {nums[2]}")
    if kind == "quniform" and not all(
        math.isclose(b / nums[2], round(b / nums[2])) for b in nums[:2]
    ):
        raise UserError(
            f"{where}: quniform bounds {low} and {high} must be multiples of q {nums[2]}"
        )
    # The values trials will really get (floats for uniform kinds, so an integer key such as
    # epochs fails here, with the hint below, rather than inside every trial).
    return {kind: nums}, list(value_range({kind: nums}))


def _number(value: Any, key: str, src: str, integer: bool = False) -> float | int:
    if isinstance(value, str):
        try:
            value = float(value)  # YAML reads 1e-3 (no dot) as a string
        except ValueError:
            pass
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if not ok or isinstance(value, bool):
        raise UserError(
            f"{src}: {key} value {value!r} must be {'an integer' if integer else 'a number'}"
        )
    return value


def _apply_section(
    space: SearchSpace, section: Any, keys: tuple[str, ...], name: str, src: str
) -> None:
    if section is None:
        return
    if not isinstance(section, dict):
        raise UserError(f"{src}: {name} must be a mapping")
    for key, value in section.items():
        if key not in keys:
            raise UserError(f"{src}: unknown key {name}.{key} (known: {', '.join(keys)})")
        integer = key == "grace_period"
        setattr(space, key, _number(value, f"{name}.{key}", src, integer=integer))
