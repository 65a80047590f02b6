"""The search report on a hand-made search folder (no Ray): ranking, corrected t-tests,
reference rows on the same folds, the rebuilt Optuna study and the embedded plots."""

import re
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from nli_tune import SAMPLE_DIR, SPACES_DIR
from nli_tune.core.config import TrainConfig
from nli_tune.evaluation.baselines import logit, tfidf_scores
from nli_tune.evaluation.metrics import classification_metrics, corrected_ttest
from nli_tune.model.calibration import fit_calibration
from nli_tune.model.classifier import build_model
from nli_tune.redsm5.folds import make_folds
from nli_tune.redsm5.load import criterion_keys, load_redsm5
from nli_tune.reporting.build import build_report
from nli_tune.reporting.plots import rebuild_study
from nli_tune.reporting.search_files import load_search, reference_rows, verdict
from nli_tune.training.fold_trainer import FoldTrainer
from tests.browser import browser_page, free_port, server, shoot
from tests.helpers import unit_data

# Tune's trial ids are 8 hex digits. Chosen so that pandas, left to guess, would read the
# whole column as numbers ("17063e69" as 1.7e73, "00812345" as 812345), as it does for a
# search whose ids all happen to look like numbers.
BEST, SECOND, T3, T4, T5, T6, FAILED = (
    "17063e69",
    "00812345",
    "20260130",
    "4e000001",
    "31415926",
    "27182818",
    "99999e99",
)
# trial_id, pooling, aggregate, rank, lr, batch_size, fold scores, epochs, status
TRIALS = [
    (BEST, "mean", "max", 8, 1.2e-3, 16, (0.70, 0.72, 0.68), 4, "completed"),
    (SECOND, "cls", "lse", 4, 6.0e-4, 8, (0.69, 0.66, 0.67), 4, "completed"),
    (T3, "max", "topk", 16, 1.9e-3, 16, (0.60, 0.55, 0.58), 2, "stopped early"),
    (T4, "attention", "attention", 8, 9.0e-4, 8, (0.52, 0.50, 0.51), 1, "stopped early"),
    (T5, "mean", "topk", 4, 1.5e-3, 16, (0.71, 0.64, 0.66), 4, "completed"),
    (T6, "cls", "max", 16, 7.0e-4, 8, (0.45, 0.47, 0.50), 1, "stopped early"),
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("search") / "pooling"
    root.mkdir()
    data = load_redsm5(SAMPLE_DIR)
    make_folds(data.pairs(), 3, 0.15, 0).save(root / "folds.json")
    space = yaml.safe_load((SPACES_DIR / "pooling.yaml").read_text())
    space["params"] = {
        "pooling": {"choice": ["mean", "cls", "max", "attention"]},
        "aggregate": {"choice": ["max", "lse", "topk", "attention"]},
        "rank": {"choice": [4, 8, 16]},
        "lr": {"loguniform": [5.0e-4, 2.0e-3]},
        "batch_size": {"choice": [8, 16]},
    }
    space.pop("points_to_evaluate", None)
    space["fixed"].pop("batch_size", None)
    (root / "space.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
    rows, epochs = [], []
    for i, (tid, pool, agg, rank, lr, bs, folds, n_ep, status) in enumerate(TRIALS):
        row = {"trial_id": tid, "pooling": pool, "aggregate": agg, "rank": rank, "lr": lr}
        row |= {"batch_size": bs, **{f"fold{k}_macro_f1": v for k, v in enumerate(folds)}}
        row |= {"cv_macro_f1": np.mean(folds), "cv_macro_f1_std": np.std(folds)}
        row |= {"cv_roc_auc": 0.6 + 0.01 * i, "epochs": n_ep, "status": status}
        row |= {f"cv_f1_{key}": 0.1 * (j % 7) for j, key in enumerate(criterion_keys())}
        rows.append(row)
        for e in range(1, n_ep + 1):  # each trial gains 0.02 per epoch on every fold
            at = [v - 0.02 * (n_ep - e) for v in folds]
            row = {"trial_id": tid, "epoch": e, "cv_macro_f1": np.mean(at)}
            epochs.append(row | {f"fold{k}_macro_f1": v for k, v in enumerate(at)})
    rows.append({"trial_id": FAILED, "pooling": "max", "epochs": 0, "status": "failed"})
    pd.DataFrame(rows).to_csv(root / "cv_results.csv", index=False)
    pd.DataFrame(epochs).to_csv(root / "epochs.csv", index=False)
    meta = {"trial_id": BEST, "cv_macro_f1": float(np.mean(TRIALS[0][6])), "data_fingerprint": "ab"}
    TrainConfig().save(root / "best_config.yaml", metadata={"search": meta})
    build_report(root, log_mlflow=False)
    return root


def _cells(page: str, table_class: str) -> list[list[str]]:
    body = re.search(rf'<table class="{table_class}">.*?<tbody>(.*?)</tbody>', page, re.S).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
    return [
        [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td>(.*?)</td>", r, re.S)] for r in rows
    ]


def test_trials_are_ranked_with_every_fold_and_the_failed_one_last(run_dir):
    page = (run_dir / "report.html").read_text()
    rows = _cells(page, "ranked")
    order = sorted(TRIALS, key=lambda t: -np.mean(t[6]))
    assert [r[1] for r in rows] == [t[0] for t in order] + [FAILED]
    first = rows[0]
    assert "0.700 ± 0.016" in first and "0.700 0.720 0.680" in first and "completed" in first
    assert first[2:7] == ["mean", "max", "8", "0.0012", "16"]  # as sampled, not 8.0
    assert rows[-1][-1] == "failed"


def test_best_against_the_next_four_uses_the_corrected_ttest(run_dir):
    rows = _cells((run_dir / "report.html").read_text(), "ttest")
    order = sorted(TRIALS, key=lambda t: -np.mean(t[6]))
    assert [r[0] for r in rows] == [t[0] for t in order[1:5]]
    best = order[0]
    for row, other in zip(rows, order[1:5], strict=True):
        # Equal fidelity: at the deepest epoch both scored, the best's folds 0.02 lower
        # for each epoch it ran past the other's last.
        epoch = min(best[7], other[7])
        best_then = [v - 0.02 * (best[7] - epoch) for v in best[6]]
        t = corrected_ttest(best_then, other[6], 1 / 2)
        assert row[1] == str(epoch)
        assert row[2] == f"{t['difference']:+.3f}" and row[4] == f"{t['p']:.3f}"
        assert row[5] == verdict(t, 3)
    # best vs second is hand-computed in test_metrics: p = 0.24, not distinguishable on 3 folds
    assert rows[0][5] == "not distinguishable on these 3 folds"


def test_reference_rows_are_computed_on_the_searchs_folds(run_dir):
    """TF-IDF's row is fitted on fold 0's fitting posts and decided at the Platt + macro-F1
    threshold of the calibration posts a trial's trainer holds out of fold 0 (taken here
    from a FoldTrainer, not from the baseline's code)."""
    files = load_search(run_dir)
    data = load_redsm5(SAMPLE_DIR)
    pairs = data.pairs()
    cfg = TrainConfig.from_dict(files.best.to_dict() | {"model": "tiny-random", "num_layers": None})
    model, tok = build_model(cfg)
    units = unit_data(tok, data, cfg)
    train_posts, val_posts = (
        files.folds["folds"][1] + files.folds["folds"][2],
        files.folds["folds"][0],
    )
    trainer = FoldTrainer(cfg, model, units.subset(train_posts), units.subset(val_posts))
    fit, calib = set(trainer.train.posts), set(trainer.calib.posts)
    assert fit and calib and not fit & calib

    def pick(posts):
        return pairs[pairs["post_id"].isin(posts)].reset_index(drop=True)

    calib_pairs, val = pick(calib), pick(set(val_posts))
    raw = tfidf_scores(data.texts(), pick(fit), calib_pairs, 0)
    cal = fit_calibration(logit(raw), calib_pairs["label"].to_numpy())
    probs = cal.prob(logit(tfidf_scores(data.texts(), pick(fit), val, 0)))
    f1 = classification_metrics(val["label"].to_numpy(), probs, None, cal.threshold)["macro_f1"]
    rows = _cells((run_dir / "report.html").read_text(), "refs")
    tfidf = next(r for r in rows if r[0].startswith("TF-IDF"))
    assert tfidf[2].split()[0] == f"{f1:.3f}"
    assert tfidf[6].split()[0] == str(len(calib))  # calibration posts of fold 0
    assert sorted(reference_rows(files)["fold_calib_posts"][1][0]) == sorted(calib)
    assert all(0 <= float(c) <= 1 for c in tfidf[3:6])  # ROC-AUC, within, PR-AUC
    majority = next(r for r in rows if r[0] == "majority class")
    assert float(majority[1].split()[0]) < 0.5
    assert majority[3] == "0.500"  # a constant score ranks nothing


def test_rebuilt_study_matches_the_cv_results(run_dir):
    files = load_search(run_dir)
    study = rebuild_study(files.results, files.space)
    assert len(study.trials) == len(TRIALS)  # the failed trial has no score
    by_id = {t.user_attrs["trial_id"]: t for t in study.trials}
    for tid, pool, agg, rank, lr, bs, folds, *_ in TRIALS:
        t = by_id[tid]
        assert t.value == pytest.approx(np.mean(folds))
        assert t.params == {
            "pooling": pool,
            "aggregate": agg,
            "rank": rank,
            "lr": lr,
            "batch_size": bs,
        }
    assert study.best_trial.user_attrs["trial_id"] == BEST


def test_every_plot_is_embedded_and_written(run_dir):
    page = (run_dir / "report.html").read_text()
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', page)
    assert set(images) == {
        "fold scores per trial",
        "cv macro-F1 per epoch",
        "hyper-parameter importance",
        "hyper-parameter parallel",
        "per-criterion F1 of the best trial and TF-IDF",
    }
    pngs = {p.name for p in (run_dir / "report").iterdir()}
    assert pngs == {
        "folds.png",
        "epochs.png",
        "importance.png",
        "parallel_coordinates.png",
        "criteria.png",
    }
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert (
        "No <code>train</code> output" in page
    )  # no final model yet: the page says how to get one


def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    port = free_port()
    cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    cmd += ["--directory", str(run_dir)]
    with server(cmd, f"http://127.0.0.1:{port}/", tmp_path / "http.log") as url:
        with browser_page() as page:
            page.goto(url + "report.html")
            text = shoot(page, tmp_path / "report.png")
            assert page.locator("table.ranked tbody tr").count() == len(TRIALS) + 1
            assert "not distinguishable on these 3 folds" in text
            assert "TF-IDF + logistic regression" in text
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => e.complete && e.naturalWidth > 0)"
            )
            assert images == [True] * 5  # every plot decoded and drawn


def test_rebuilt_study_covers_points_outside_the_sampled_ranges(run_dir):
    # points_to_evaluate may fix a value the space never samples (tests use lr 1e-12)
    files = load_search(run_dir)
    results = files.results.copy()
    results.loc[results["trial_id"] == T6, "lr"] = 1e-12
    study = rebuild_study(results, files.space)
    lone = next(t for t in study.trials if t.user_attrs["trial_id"] == T6)
    assert lone.params["lr"] == 1e-12 and len(study.trials) == len(TRIALS)


def test_importance_and_rung_table_compare_trials_at_one_epoch(run_dir):
    """Importance is computed over trials at one epoch (the deepest with >= 5 trials: here
    epoch 1, all 6 scored trials), not over final values that mix 1- and 4-epoch trials;
    the rung table says how epoch 1's ranking holds among the trials that ran past it."""
    from nli_tune.reporting.fidelity import importance_epoch, values_at_epoch

    files = load_search(run_dir)
    assert importance_epoch(files.epochs, "cv_macro_f1") == (1, 6)
    study = rebuild_study(
        files.results, files.space, values_at_epoch(files.epochs, 1, "cv_macro_f1")
    )
    by_id = {t.user_attrs["trial_id"]: t.value for t in study.trials}
    for tid, *_, folds, n_ep, _status in TRIALS:
        assert by_id[tid] == pytest.approx(np.mean(folds) - 0.02 * (n_ep - 1))
    page = (run_dir / "report.html").read_text()
    assert "cv_macro_f1 of the 6 trials that scored epoch 1" in page
    rows = _cells(page, "rungs")
    # past epoch 1: BEST, SECOND, T5 (4 epochs) and T3 (2); each gains 0.02 an epoch
    assert ["1", "cv_macro_f1", "+1.00"] == rows[0][:3] and rows[0][4] == "4"


def test_final_section_shows_every_rows_ranking_metrics_and_tfidf_rule():
    from nli_tune.reporting.page import final_html

    def row(f1, auc, within, pr, threshold):
        ci = [f1 - 0.1, f1 + 0.1]
        return {"macro_f1": f1, "macro_f1_ci95": ci, "roc_auc": auc, "roc_auc_within": within} | {
            "pr_auc": pr,
            "threshold": threshold,
            "criterion_macro_f1": f1 / 2,
        }

    tfidf = row(0.61, 0.81, 0.71, 0.41, 0.37) | {"calibration": {"how": "Platt on 26 posts"}}
    final = {
        "path": "/x",
        "test": row(0.7, 0.9, 0.8, 0.5, 0.42),
        "tfidf": tfidf,
        "majority": row(0.45, 0.5, 0.5, 0.1, 0.5),
        "difference": {"macro_f1_difference": 0.09, "ci95": [-0.01, 0.2]},
        "confusion": [[10, 2], [3, 4]],
        "threshold": 0.42,
        "how": "Platt",
        "test_posts": 22,
    }
    page = f'<table class="refs"><tbody></tbody></table>{final_html([("final model", final)])}'
    rows = _cells(page, "final")
    assert rows[0] == [
        "final model",
        "0.700",
        "0.600-0.800",
        "0.900",
        "0.800",
        "0.500",
        "0.420",
        "0.350",
    ]
    assert rows[1] == ["TF-IDF + logistic regression", "0.610", "0.510-0.710"] + [
        "0.810", "0.710", "0.410", "0.370", "0.305",
    ]  # fmt: skip
    assert rows[2][0] == "majority class" and rows[2][3] == "0.500"
    assert "TF-IDF: Platt on 26 posts." in page
