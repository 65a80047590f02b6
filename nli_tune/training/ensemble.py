"""The search's fold models as one model: the exported trial's K final fold checkpoints,
written as a model folder that `predict` loads like any other (model/ensemble.py), with
its model card, and scored once on the search's held-out test posts beside TF-IDF and
the majority class. Nothing is chosen on those posts: the config was exported before.

Prefer it to a refit (`train`) when the search's folds learned and there is no time for
another training: it is K models already trained and checked (each fold's fit passed the
learned-fit rule), at K times the scoring cost of one. A refit trains on every non-test
post (K/(K-1) times a fold's data) and is one model to score.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from nli_tune.core.config import TrainConfig
from nli_tune.core.outputs import atomic_dir
from nli_tune.evaluation.comparison import test_comparison
from nli_tune.evaluation.scoring import evidence_table, score_ensemble
from nli_tune.model.card import write_cards
from nli_tune.model.classifier import build_model, parameter_counts
from nli_tune.model.ensemble import ensemble_calibration, save_ensemble
from nli_tune.model.precision import autocast_dtype
from nli_tune.model.prefix import cache_prefix
from nli_tune.pairs.encoding import encode
from nli_tune.redsm5.load import ReDSM5
from nli_tune.training.checkpoints import read_fit

METRICS_FILE = "metrics.json"  # in the ensemble folder: its test scores beside the baselines


def write_fold_ensemble(
    cfg: TrainConfig, fold_dirs: list[Path], data: ReDSM5, test_posts, out_dir, about: dict
) -> dict:
    """Write `out_dir`/ (model/, metrics.json, predictions.csv); returns the metrics."""
    import torch

    started = time.perf_counter()
    members = [read_fit(d) for d in fold_dirs]
    model, tokenizer = build_model(cfg)
    cpu = torch.device("cpu")
    amp = autocast_dtype(cfg.precision, cpu)
    pairs = data.pairs()
    encoded = encode(tokenizer, data, cfg)
    units = cache_prefix(model, encoded.assemble(cfg, pairs), cfg.eval_batch_size, cpu, amp)
    test = set(map(str, test_posts))
    train_posts = [p for p in dict.fromkeys(pairs["post_id"]) if str(p) not in test]
    test_data, train_data = units.subset(test_posts), units.subset(train_posts)
    scored = score_ensemble(
        model, members, test_data, cfg.aggregate, cfg.topk, cfg.eval_batch_size, cpu, amp
    )
    calibration = ensemble_calibration(members)
    compared = test_comparison(
        cfg, test_data, scored, calibration, data.texts(), train_data.pairs_frame()
    )
    compared.pop("tfidf_posts")
    report = encoded.report
    how = (
        f"the mean of {len(members)} fold models' calibrated probabilities, decided at "
        f"their mean threshold {calibration.threshold:.3f}"
    )
    metrics = compared | {
        "calibration": calibration.to_dict() | {"how": how},
        "ensemble": about | {"members": len(members)},
        "evidence_location": asdict(report) | {"located": report.located},
        "data": {
            "source": str(data.source),
            "fingerprint": data.fingerprint,
            "train_posts": len(train_posts),
            "train_pairs": int(train_data.post_labels.size),
            "test_posts": len(test_data.posts),
            "test_pairs": int(test_data.post_labels.size),
            "test_matched": int(test_data.post_labels.sum()),
        },
        "model": parameter_counts(model) | {"precision": "bf16" if amp else "fp32"},
        "config": cfg.to_dict(),
        "search": about,
        "seconds": round(time.perf_counter() - started, 1),
    }
    probs = calibration.prob(scored.logits).ravel()
    with atomic_dir(out_dir) as out:
        save_ensemble(model, cfg, out / "model", members, about)
        (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
        table = evidence_table(test_data, scored, probs, calibration.decide(scored.logits).ravel())
        table.to_csv(out / "predictions.csv", index=False)
        write_cards(out / "model", metrics)
    return metrics
