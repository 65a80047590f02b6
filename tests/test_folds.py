import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nli_tune.core.errors import UserError
from nli_tune.redsm5.folds import make_folds
from nli_tune.redsm5.load import criterion_keys, load_redsm5


def _pairs(n_posts: int, rate: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    keys = criterion_keys()
    pid = np.repeat([f"p{i}" for i in range(n_posts)], len(keys))
    return pd.DataFrame(
        {
            "post_id": pid,
            "criterion": np.tile(keys, n_posts),
            "label": (rng.random(len(pid)) < rate).astype(int),
        }
    )


@settings(max_examples=25, deadline=None)
@given(
    n_posts=st.integers(30, 200),
    k=st.integers(2, 5),
    seed=st.integers(0, 10_000),
    rate=st.floats(0.05, 0.3),
)
def test_fold_properties(n_posts, k, seed, rate):
    pairs = _pairs(n_posts, rate, seed)
    plan = make_folds(pairs, k, 0.15, seed)
    all_posts = set(pairs["post_id"])
    test = set(plan.test_posts)
    val_sets = [set(f) for f in plan.val_folds]
    assert len(val_sets) == k
    # no post in two validation folds, no test post in any fold
    assert sum(len(v) for v in val_sets) == len(set().union(*val_sets))
    assert not test & set().union(*val_sets)
    # every non-test post in exactly one validation fold
    assert set().union(*val_sets) == all_posts - test
    assert 0.08 <= len(test) / n_posts <= 0.22
    for j in range(k):
        train, val = plan.fold(j)
        assert not set(train) & set(val) and set(train) | set(val) == all_posts - test
    # matched rate per fold close to the overall rate (stratified on pair labels)
    overall = pairs["label"].mean()
    for v in val_sets:
        fold_rate = pairs[pairs["post_id"].isin(v)]["label"].mean()
        assert abs(fold_rate - overall) <= max(0.06, 0.5 * overall)


def test_deterministic_per_seed_and_exportable(tmp_path):
    pairs = _pairs(120, 0.1, 3)
    a, b, c = (
        make_folds(pairs, 3, 0.15, 7),
        make_folds(pairs, 3, 0.15, 7),
        make_folds(pairs, 3, 0.15, 8),
    )
    assert a == b and a != c
    a.save(tmp_path / "folds.json")
    import json

    saved = json.loads((tmp_path / "folds.json").read_text())
    assert saved["test"] == list(a.test_posts) and len(saved["folds"]) == 3


def test_too_many_folds_is_a_user_error(tmp_path):
    """On a small synthetic set (no real sample needed): one fold more than there are
    non-test posts is a one-line user error naming the count; exactly that many works."""
    from nli_tune.redsm5 import synth
    from nli_tune.redsm5.folds import split_test

    synth.write(tmp_path, 20, seed=1, mean_words=20)
    pairs = load_redsm5(tmp_path).pairs()
    trainval, test = split_test(pairs, 0.15, 0)
    assert len(trainval) + len(test) == 20 and test
    n = len(trainval)
    with pytest.raises(UserError, match=f"^folds {n + 1}: more folds than the {n} non-test posts$"):
        make_folds(pairs, n + 1, 0.15, 0)
    with pytest.raises(UserError, match="^folds 1: need at least 2 folds$"):
        make_folds(pairs, 1, 0.15, 0)
    plan = make_folds(pairs, n, 0.15, 0)
    assert sorted(len(f) for f in plan.val_folds) == [1] * n
    assert set(plan.test_posts) == set(test)
