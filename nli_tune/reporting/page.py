"""The report page: one self-contained HTML file (plots embedded as base64 PNG, inline
CSS, no JavaScript, no network). Numbers and ids only: never post text."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
import pandas as pd

from nli_tune.evaluation.metrics import corrected_ttest
from nli_tune.redsm5 import published
from nli_tune.reporting.fidelity import rung_rank_correlation
from nli_tune.reporting.search_files import (
    SearchFiles,
    ablations,
    comparisons,
    confirmed,
    ranked,
    search_trials,
    verdict,
)


def _img(path: Path, alt: str, caption: str = "") -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return (
        f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">{cap}</figure>'
    )


def rung_html(files: SearchFiles) -> str:
    """How far each scored epoch's ranking holds to the end, where epochs.csv allows it
    (at least 3 trials scored an epoch and ran past it)."""
    if files.epochs.empty:
        return ""
    epochs = sorted(int(e) for e in files.epochs["epoch"].unique())[:-1]
    table = rung_rank_correlation(files.epochs, epochs)
    rows = [
        [str(e), html.escape(m), f"{v['spearman']:+.2f}", _num(v["fold_std"]), str(v["trials"])]
        for e, per in table.items()
        for m, v in per.items()
        if v["trials"] >= 3
    ]
    if not rows:
        return ""
    survivors = "" if files.space.scheduler == "none" else (
        " Under ASHA only the trials it let run past an epoch count there: the survivors, "
        "so this understates how well an epoch ranks all trials; `python -m nli_tune.bench "
        "--asha-off` measures it on a search that runs every trial to the end."
    )  # fmt: skip
    return (
        "<h2>Can the early epochs be trusted?</h2><p>Spearman's rank correlation between "
        "the trials' value at an epoch and at their last epoch, and the mean fold std at "
        f"that epoch.{survivors}</p>"
        + _table(["epoch", "metric", "Spearman rho", "fold std", "trials"], rows, "rungs")
    )


def _num(value, digits: int = 3) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return html.escape(str(value))
    return "—" if np.isnan(v) else f"{v:.{digits}f}"


def _param(value) -> str:
    """A searched value as the space wrote it: 8, not 8.0 (a failed row's NaN makes pandas
    read the column as floats); 0.00121 for a float."""
    if isinstance(value, float | np.floating):
        if np.isnan(value):
            return ""
        return str(int(value)) if float(value).is_integer() else f"{value:.3g}"
    return html.escape(str(value))


def _table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def render(
    files: SearchFiles,
    refs: pd.DataFrame,
    finals: list[tuple[str, dict]],
    images: dict,
    captions: dict | None = None,
) -> str:
    """The report page: the ranked trials, the tests of the best against the next ones, the
    reference rows, the searched switches, rung fidelity, plots and the final model."""
    table = ranked(files)
    k, metric = files.k, files.metric
    ranked_html = _ranked_table(files, table)
    mixed = table["epochs"].nunique() > 1
    test_rows = _test_rows(files)
    best = table.iloc[0] if len(table) else None
    ref_rows = _reference_rows(files, refs, best)
    parts = [
        f"<h1>Search report: {html.escape(files.space.name)}</h1>",
        f"<p>{len(search_trials(files))} trials, {k} post-grouped CV folds, "
        f"{len(files.folds.get('test', []))} test posts held out from the search; data "
        f"fingerprint {html.escape(str(files.search.get('data_fingerprint', '?')))}. Best "
        f"trial: <b>{html.escape(str(files.search.get('trial_id', '?')))}</b> "
        f"({metric} {_num(files.search.get(metric))} over its "
        f"{files.search.get('fits', k)} fits, {files.search.get('fits_failed', 0)} of which "
        f"did not learn; its trial's cv macro-F1 {_num(files.search.get('cv_macro_f1'))}).</p>",
        f"<h2>Trials, ranked by {html.escape(metric)}</h2>",
        ranked_html,
        "<p>Each trial at its last scored epoch"
        + (
            ": this table mixes epochs (ASHA stopped some trials early), so it ranks "
            "setups and how long they ran together. The tests below compare at equal epochs."
            if mixed
            else "; every trial ran the same number of epochs."
        )
        + " Criterion macro-F1 is the mean of the 9 criteria's F1, the kind of macro-F1 the "
        "ReDSM5 authors report. " + html.escape(published.sentence()) + "</p>",
        "<h2>Is the best trial really better?</h2>",
        f"<p>Corrected resampled t-test (Nadeau and Bengio) on the paired fold values of "
        f"{html.escape(metric)}, at the deepest epoch both trials scored (a trial ASHA "
        f"stopped at epoch 1 is compared with the best's epoch 1); with {k} folds the "
        f"test/train ratio is 1/{k - 1}. Difference = best − other.</p>",
        _table(
            ["other trial", "at epoch", "difference", "95% interval", "p", "reading"],
            test_rows,
            "ttest",
        )
        if test_rows
        else "<p>Only one scored trial: nothing to compare.</p>",
        "<h2>Reference rows on the same folds</h2>",
        f"<p>TF-IDF is decided by the trials' rule: fitted on each fold's fitting posts, then "
        f"Platt scaling and the macro-F1 threshold on the same held-out calibration posts a "
        f"trial's trainer uses (calibration {html.escape(files.best.calibration)}, fraction "
        f"{files.best.calibration_fraction}, seed {files.best.seed}). The majority class "
        f"needs no threshold.</p>",
        _table(
            [
                "setup",
                "macro-F1 (mean ± std)",
                f"{k} folds",
                "cv ROC-AUC",
                "cv within-criterion ROC-AUC",
                "cv PR-AUC",
                "calibration posts per fold",
                "best trial minus this",
            ],
            ref_rows,
            "refs",
        ),
    ]
    parts.append(confirmation_html(files))
    for key, frame in ablations(files):
        parts.append(f"<h3>Searched switch: {html.escape(key)} (best trial per value)</h3>")
        parts.append(_table(list(frame.columns), [[_num(v) for v in r] for r in frame.values]))
    parts.append(rung_html(files))
    parts.append("<h2>Plots</h2>")
    parts += [_img(p, alt, (captions or {}).get(alt, "")) for alt, p in images.items()]
    if finals:
        parts.append(final_html(finals))
    if not any(name == REFIT for name, _ in finals):
        parts.append(
            "<p>No <code>train</code> output (refit) for this search's best config found "
            "(run <code>python -m nli_tune.train --config "
            f"{html.escape(str(files.run_dir / 'best_config.yaml'))}</code>, or "
            "pass <code>--final DIR</code>).</p>"
        )
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 7px;text-align:left}"
        "th{background:#f0f0f0}figure{margin:1em 0}img{max-width:100%}"
    )
    body = "\n".join(parts)
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>nli_tune '
        f"report: {html.escape(files.space.name)}</title><style>{style}</style></head>"
        f"<body>{body}</body></html>"
    )


def _ranked_table(files: SearchFiles, table: pd.DataFrame) -> str:
    """Every scored trial by rank with its fold scores; failed trials last."""
    params, k, metric = list(files.space.params), files.k, files.metric
    std = table.apply(lambda r: float(np.std(files.fold_scores(r))), axis=1)
    rows = []
    for i, (_, r) in enumerate(table.iterrows(), 1):
        folds = " ".join(_num(v) for v in files.fold_scores(r))
        rows.append(
            [str(i), html.escape(str(r["trial_id"]))]
            + [_param(r[p]) for p in params]
            + [
                f"{_num(r[metric])} ± {_num(std[r.name])}",
                folds,
                _num(r["cv_macro_f1"]),
                _num(r.get("cv_criterion_macro_f1")),
                _num(r["cv_roc_auc"]),
                str(int(r["epochs"])),
                html.escape(str(r["status"])),
            ]
        )
    failed = search_trials(files)
    failed = failed[failed[metric].isna()]
    for _, r in failed.iterrows():
        rows.append(
            ["—", html.escape(str(r["trial_id"]))]
            + ["" for _ in params]
            + ["—", "", "", "", "", str(int(r["epochs"])), html.escape(str(r["status"]))]
        )
    ranked_html = _table(
        [
            "rank",
            "trial",
            *params,
            f"{metric} (mean ± std)",
            f"{k} folds",
            "cv macro-F1",
            "cv criterion macro-F1",
            "cv ROC-AUC",
            "epochs",
            "status",
        ],
        rows,
        "ranked",
    )
    return ranked_html


def confirmation_html(files: SearchFiles) -> str:
    """The exported config's choice: every completed config's mean over its seeds x folds,
    and the fits of the top ones, fold by fold, with the learned-fit rule's verdict."""
    configs, fits = confirmed(files)
    if configs.empty:
        return ""
    metric, params = files.metric, list(files.space.params)
    by_id = files.results.set_index("trial_id")
    rows = []
    for _, c in configs.iterrows():
        row = by_id.loc[c["config"]]
        rows.append(
            [html.escape(str(c["config"]))]
            + [_param(row[p]) for p in params]
            + [f"{_num(c['mean'])} ± {_num(c['std'])}", str(int(c["runs"])), str(int(c["fits"]))]
            + [
                str(int(c["fits_failed"])),
                "yes" if c["config"] == files.search.get("trial_id") else "",
            ]
        )
    fit_rows = [
        [html.escape(str(f["config"])), html.escape(str(f["trial_id"])), html.escape(f["stage"]),
         str(int(f["fold"])), _param(f["seed"]), _num(f["value"]), "yes" if f["learned"] else "NO"]
        for _, f in fits.iterrows()
    ]  # fmt: skip
    failed = int(configs["fits_failed"].sum())
    return (
        "<h2>Which config is exported: every fit, at equal epochs</h2>"
        f"<p>Only configs whose search trial ran all its epochs compete (an ASHA-stopped "
        f"trial was scored earlier). Each is judged on {html.escape(metric)} averaged over "
        f"all its fits: its trial's {files.k} folds and, for the top "
        f"{files.space.confirm_top} (confirm), {files.space.confirm_seeds} reruns with new "
        f"seeds on the same folds. A config with a fit that did not learn (train loss "
        f"stalled, or its calibration posts ranked near chance) ranks below every config "
        f"whose fits all learned. {failed} fit(s) of these configs did not learn.</p>"
        + _table(
            [
                "config (search trial)",
                *params,
                f"{metric} over fits",
                "runs",
                "fits",
                "fits that did not learn",
                "exported",
            ],
            rows,
            "configs",
        )  # fmt: skip
        + "<p>The fits of the top configs, one row per fold fit:</p>"
        + _table(["config", "run", "stage", "fold", "seed", metric, "learned"], fit_rows, "fits")
    )


def _test_rows(files: SearchFiles) -> list[list[str]]:
    """The corrected t-tests of the best trial against the next ones, at equal epochs."""
    tests = comparisons(files)
    return [
        [
            html.escape(str(t["trial_id"])),
            "each trial's last (mixed)" if t["mixed"] else str(t["epoch"] or "last"),
            f"{t['difference']:+.3f}",
            f"{t['ci_low']:+.3f} to {t['ci_high']:+.3f}",
            _num(t["p"]),
            f'<span class="verdict">{html.escape(t["sentence"])}</span>',
        ]
        for t in tests
    ]


def _reference_rows(files: SearchFiles, refs: pd.DataFrame, best) -> list[list[str]]:
    """The majority class and TF-IDF on the same folds, against the best trial's folds."""
    k = files.k
    # The baselines have macro-F1 per fold: the best trial's, at its last epoch, faces them.
    best_scores = files.fold_scores(best, "cv_macro_f1") if best is not None else None
    ref_rows = []
    for _, r in refs.iterrows():
        scores = np.asarray(r["fold_macro_f1"], dtype=float)
        row = [
            html.escape(r["setup"]),
            f"{scores.mean():.3f} ± {scores.std():.3f}",
            " ".join(_num(v) for v in scores),
            _num(r["cv_roc_auc"]),
            _num(r["cv_roc_auc_within"]),
            _num(r["cv_pr_auc"]),
            " ".join(str(len(c)) for c in r["fold_calib_posts"]),
        ]
        if best_scores is not None:
            t = corrected_ttest(best_scores, scores, 1 / (k - 1))
            row.append(
                f"{t['difference']:+.3f} ({t['ci_low']:+.3f} to {t['ci_high']:+.3f}), "
                f"p {_num(t['p'])}: {html.escape(verdict(t, k))}"
            )
        ref_rows.append(row)
    return ref_rows


ENSEMBLE, REFIT = "fold ensemble (search)", "refit (train)"  # the final models' row names
FINAL_HEADER = [
    "",
    "test macro-F1",
    "95% interval",
    "ROC-AUC",
    "within-criterion ROC-AUC",
    "PR-AUC",
    "threshold",
    "criterion macro-F1",
]


def final_html(models: list[tuple[str, dict]]) -> str:
    """The trained models on the held-out test posts (the fold ensemble, the refit, as
    they exist: `final_section` of each), then TF-IDF and the majority class on the same
    posts under the same rule."""
    first = models[0][1]
    tf = first["tfidf"]
    rows = [_final_row(name, m["test"]) for name, m in models]
    rows += [_final_row("TF-IDF + logistic regression", tf)]
    rows += [_final_row("majority class", first["majority"])]
    parts = [
        f"<h2>Final models on the {first['test_posts']} held-out test posts</h2>",
        "<p>"
        + "; ".join(f"{html.escape(name)}: {html.escape(m['path'])}" for name, m in models)
        + ". Intervals: 95% bootstrap over posts. Nothing was chosen on these posts. "
        "docs/training.md says when to prefer the fold ensemble or a refit.</p>",
        _table(FINAL_HEADER, rows, "final"),
    ]
    for name, m in models:
        diff, (tn, fp), (fn, tp) = m["difference"], *m["confusion"]
        parts += [
            f"<p>{html.escape(name)} minus TF-IDF: {diff['macro_f1_difference']:+.3f} "
            f"macro-F1 (95% interval {diff['ci95'][0]:+.3f} to {diff['ci95'][1]:+.3f}). "
            f"Decision threshold {m['threshold']:.3f}: {html.escape(m['how'])}.</p>",
            _table(
                [html.escape(name), "decided unmatched", "decided matched"],
                [["unmatched", str(tn), str(fp)], ["matched", str(fn), str(tp)]],
                "confusion",
            ),
        ]
    parts.append(f"<p>TF-IDF: {html.escape(tf.get('calibration', {}).get('how', '0.5'))}.</p>")
    return "\n".join(parts)


def _final_row(name: str, m: dict) -> list[str]:
    """One scorer's test numbers; a metrics.json from before every row had them shows —."""
    ci = m.get("macro_f1_ci95")
    cells = [name, _num(m["macro_f1"]), "{:.3f}-{:.3f}".format(*ci) if ci else ""]
    keys = ("roc_auc", "roc_auc_within", "pr_auc", "threshold", "criterion_macro_f1")
    return cells + [_num(m[key]) if key in m else "—" for key in keys]
