"""Does the default model learn? The real 270M default (all 18 layers, sentence units)
trained on a fixed part of the bundled sample and scored on the rest, beside TF-IDF +
logistic regression on the same posts, with the learned-fit rule's verdict on the fit.

    python -m nli_tune.bench learning [--seeds 0 1 2 3 4] [--lr LR] [--output F]

The default suite's learning test (tests/test_learning.py) runs one seed of this and
holds it to a floor set from the seeds measured here (benchmarks/learning.json); with
`--lr 0` nothing learns, and the test's floor must then fail (recorded there too).
"""

from __future__ import annotations

import argparse
import json
import time

from sklearn.metrics import roc_auc_score

from nli_tune import SAMPLE_DIR

TRAIN_POSTS = 100  # the first posts of the bundled sample (by id) train; the rest are held out
EPOCHS = 4  # half the default's: about 1.5 min on 2 cores


def learning_run(seed: int, lr: float | None = None) -> dict[str, float]:
    """Train the default on the first TRAIN_POSTS posts of the bundled sample (sorted ids),
    score the others: the model's and TF-IDF's within-criterion ROC-AUC and ROC-AUC."""
    from nli_tune.core.config import TrainConfig
    from nli_tune.evaluation.baselines import tfidf_scores
    from nli_tune.evaluation.metrics import roc_auc_within
    from nli_tune.model.classifier import build_model
    from nli_tune.pairs.encoding import encode_units
    from nli_tune.redsm5.load import load_redsm5
    from nli_tune.training.fold_trainer import FoldTrainer

    started = time.perf_counter()
    cfg = TrainConfig(epochs=EPOCHS, seed=seed)
    data = load_redsm5(SAMPLE_DIR)
    posts = sorted(data.posts["post_id"])
    train_posts, test_posts = posts[:TRAIN_POSTS], posts[TRAIN_POSTS:]
    model, tok = build_model(cfg)
    units = encode_units(tok, data, cfg)
    trainer = FoldTrainer(cfg, model, units.subset(train_posts), None)
    if lr is not None:  # set on the optimizer: the config refuses lr 0, this check's point
        for group in trainer.optimizer.param_groups:
            group["lr"] = group["initial_lr"] = lr
        trainer.scheduler.base_lrs = [lr] * len(trainer.optimizer.param_groups)
    trainer.fit()
    check = trainer.fit_check()  # the learned-fit rule, on the fit's own calibration posts
    held_out = units.subset(test_posts)
    logits = trainer.score_posts(held_out).logits  # [posts, criteria]
    labels = held_out.post_labels
    pairs = data.pairs()
    train = pairs[pairs["post_id"].isin(set(train_posts))].reset_index(drop=True)
    test = held_out.pairs_frame()  # post-major, as `labels`: TF-IDF's scores line up
    tfidf = tfidf_scores(data.texts(), train, test, seed).reshape(labels.shape)
    return {
        "seed": seed,
        "lr": cfg.lr if lr is None else lr,
        "train_posts": len(train_posts),
        "test_posts": len(test_posts),
        "model_roc_auc_within": roc_auc_within(labels, logits),
        "model_roc_auc": float(roc_auc_score(labels.ravel(), logits.ravel())),
        "tfidf_roc_auc_within": roc_auc_within(labels, tfidf),
        "tfidf_roc_auc": float(roc_auc_score(labels.ravel(), tfidf.ravel())),
        "learned": check.learned,
        "loss_ratio": check.loss_ratio,
        "calib_roc_auc_within": check.calib_roc_auc_within,
        "seconds": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m nli_tune.bench learning", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--lr", type=float, help="learning rate (default: the config default)")
    p.add_argument("--output", help="also write the runs to this JSON file")
    args = p.parse_args(argv)
    runs = []
    for seed in args.seeds:
        run = learning_run(seed, args.lr)
        runs.append(run)
        print(
            f"seed {seed}: within-criterion ROC-AUC {run['model_roc_auc_within']:.3f} (TF-IDF "
            f"{run['tfidf_roc_auc_within']:.3f}), ROC-AUC {run['model_roc_auc']:.3f} (TF-IDF "
            f"{run['tfidf_roc_auc']:.3f}); learned-fit rule: "
            f"{'learned' if run['learned'] else 'did not learn'} (loss last/first "
            f"{run['loss_ratio']:.2f}, calibration-post within-AUC "
            f"{run['calib_roc_auc_within']:.3f}); {run['seconds']:.0f}s",
            flush=True,
        )
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"runs": runs}, f, indent=2)
    return 0
