"""Reference scores on the same split: what the encoder must beat to be worth it."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from nli_tune.metrics import classification_metrics


def majority_baseline(train: pd.DataFrame, test: pd.DataFrame) -> dict[str, float]:
    """Predict the training split's majority class for every test pair."""
    majority = int(train["label"].mean() >= 0.5)
    scores = np.full(len(test), float(majority))
    return classification_metrics(test["label"].to_numpy(), scores)


def tfidf_scores(
    texts: dict[str, str], train: pd.DataFrame, test: pd.DataFrame, seed: int = 0
) -> np.ndarray:
    """P(matched) per test pair, in test's row order: TF-IDF (word 1-2 grams) of the post
    and one balanced logistic regression per criterion."""
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    train_posts = list(dict.fromkeys(train["post_id"]))
    vec.fit([texts[p] for p in train_posts])
    scores = np.zeros(len(test))
    for crit, test_part in test.groupby("criterion", sort=False):
        tr = train[train["criterion"] == crit]
        y = tr["label"].to_numpy()
        x_test = vec.transform([texts[p] for p in test_part["post_id"]])
        if len(np.unique(y)) < 2:
            scores[test.index.get_indexer(test_part.index)] = float(y[0]) if len(y) else 0.0
            continue
        clf = LogisticRegression(class_weight="balanced", max_iter=2000, random_state=seed)
        clf.fit(vec.transform([texts[p] for p in tr["post_id"]]), y)
        scores[test.index.get_indexer(test_part.index)] = clf.predict_proba(x_test)[:, 1]
    return scores
