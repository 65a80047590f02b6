"""The report's figures (matplotlib, Agg backend: PNG files, no screen, no JavaScript).

The hyper-parameter importance and parallel-coordinates views are Optuna's own, drawn from
an Optuna study rebuilt from cv_results.csv with the search space's distributions.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: the report must render on a box without a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from nli_tune.study.run_files import STOPPED  # noqa: E402
from nli_tune.study.space import SearchSpace  # noqa: E402


def distributions(space: SearchSpace) -> dict[str, optuna.distributions.BaseDistribution]:
    """Optuna distributions of the space's sampled keys, as OptunaSearch samples them."""
    d = optuna.distributions
    out = {}
    for key, spec in space.params.items():
        kind, args = next(iter(spec.items()))
        if kind == "choice":
            out[key] = d.CategoricalDistribution(list(args))
        elif kind == "uniform":
            out[key] = d.FloatDistribution(args[0], args[1])
        elif kind == "loguniform":
            out[key] = d.FloatDistribution(args[0], args[1], log=True)
        elif kind == "randint":
            out[key] = d.IntDistribution(args[0], args[1] - 1)
        elif kind == "quniform":
            out[key] = d.FloatDistribution(args[0], args[1], step=args[2])
        elif kind == "qrandint":
            out[key] = d.IntDistribution(args[0], args[1], step=args[2])
    return out


def rebuild_study(
    results: pd.DataFrame, space: SearchSpace, values: pd.Series | None = None
) -> optuna.Study:
    """An in-memory Optuna study with one finished trial per trial in `values` (trial_id ->
    value; the report passes every trial's value at one epoch, so that importance compares
    like with like), by default cv_results' macro-F1. `points_to_evaluate` may lie outside
    the sampled ranges: the ranges are widened to cover every value a trial actually had."""
    if values is None:
        values = results.set_index("trial_id")["cv_macro_f1"]
    values = values.dropna()
    scored = results[results["trial_id"].isin(values.index)]
    dists = {k: _covering(d, scored[k]) for k, d in distributions(space).items()}
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" chatter
    study = optuna.create_study(direction="maximize")
    for _, row in scored.iterrows():
        params = {k: _cast(row[k], dists[k]) for k in dists}
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions=dists,
                value=float(values[row["trial_id"]]),
                user_attrs={"trial_id": str(row["trial_id"])},
            )
        )
    return study


def _covering(dist, values: pd.Series):
    d = optuna.distributions
    if isinstance(dist, d.CategoricalDistribution):
        known = {str(c) for c in dist.choices}
        extra = [v for v in dict.fromkeys(values) if str(v) not in known]
        return d.CategoricalDistribution([*dist.choices, *extra]) if extra else dist
    low, high = min(dist.low, values.min()), max(dist.high, values.max())
    if (low, high) == (dist.low, dist.high):
        return dist
    if isinstance(dist, d.IntDistribution):
        return d.IntDistribution(int(low), int(high), log=dist.log)  # step 1: any int fits
    return d.FloatDistribution(float(low), float(high), log=dist.log)


def _cast(value, dist):
    """cv_results.csv reads choices back as numpy / pandas values: match the choice."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        for choice in dist.choices:
            if str(choice) == str(value) or (
                isinstance(choice, int | float)
                and not isinstance(choice, bool)
                and _num(value) == choice
            ):
                return choice
        raise ValueError(f"{value!r} is not one of {dist.choices}")
    if isinstance(dist, optuna.distributions.IntDistribution):
        return int(value)
    return float(value)


def _num(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def fold_spread_plot(table: pd.DataFrame, k: int, path: Path) -> Path:
    """Every fold's macro-F1 per trial (dots) and their mean (bar), best first."""
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(table) + 2), 3.6))
    x = np.arange(len(table))
    ax.bar(x, table["cv_macro_f1"], color="#c6dbef", label="mean over folds")
    for i in range(k):
        ax.scatter(
            x,
            table[f"fold{i}_macro_f1"],
            s=18,
            color="#08519c",
            zorder=3,
            label="one fold" if i == 0 else None,
        )
    ax.set_xticks(x, [str(t)[-8:] for t in table["trial_id"]], rotation=45, ha="right")
    ax.set_ylabel("macro-F1")
    ax.set_title("Fold scores per trial (best first)")
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def epoch_curves_plot(epochs: pd.DataFrame, results: pd.DataFrame, path: Path) -> Path:
    """cv_macro_f1 per epoch for every trial; an x marks where ASHA (or early stopping)
    ended a trial before its last epoch."""
    fig, ax = plt.subplots(figsize=(8, 4))
    status = dict(zip(results["trial_id"], results["status"], strict=True))
    for tid, part in epochs.groupby("trial_id", sort=False):
        part = part.sort_values("epoch")
        (line,) = ax.plot(
            part["epoch"], part["cv_macro_f1"], marker="o", ms=3, lw=1, label=str(tid)[-8:]
        )
        if status.get(tid) == STOPPED:
            ax.plot(
                part["epoch"].iloc[-1],
                part["cv_macro_f1"].iloc[-1],
                "x",
                ms=9,
                color=line.get_color(),
            )
    ax.plot([], [], "x", color="grey", label=f"{STOPPED} (ASHA)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("cv macro-F1 (mean over folds)")
    ax.set_title("Every trial's cross-fold macro-F1 per epoch")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def criterion_f1_plot(
    per_criterion: dict[str, float], title: str, path: Path, beside: dict | None = None
) -> Path:
    """Each criterion's F1 as a bar; with `beside` ({label: {criterion: F1}}), a bar of each
    scorer per criterion, side by side (the first label is `per_criterion`'s)."""
    series = {"model": per_criterion} if beside is None else beside
    fig, ax = plt.subplots(figsize=(7, 3.6 if beside is None else 4.6))
    keys = list(per_criterion)[::-1]
    height = 0.8 / len(series)
    colors = ("#6baed6", "#fd8d3c", "#74c476")
    for i, (label, values) in enumerate(series.items()):
        at = np.arange(len(keys)) + (i - (len(series) - 1) / 2) * height
        ax.barh(at, [values.get(k, np.nan) for k in keys], height, label=label, color=colors[i])
    ax.set_yticks(np.arange(len(keys)), keys)
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1 (matched)")
    ax.set_title(title)
    if beside is not None:
        ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def optuna_plots(study: optuna.Study, out_dir: Path) -> dict[str, Path]:
    """Optuna's importance and parallel-coordinates figures (where they can be computed:
    importance needs >= 2 trials that differ in score)."""
    from optuna.visualization import matplotlib as ovm

    out: dict[str, Path] = {}
    values = [t.value for t in study.trials]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
        if len(values) >= 2 and len(set(values)) > 1 and study.trials[0].params:
            ax = ovm.plot_param_importances(study)
            out["importance"] = _save(ax.figure, out_dir / "importance.png")
        if len(values) >= 2 and study.trials[0].params:
            ax = ovm.plot_parallel_coordinate(study)
            ax.figure.set_size_inches(8, 4)
            out["parallel"] = _save(ax.figure, out_dir / "parallel_coordinates.png")
    return out
