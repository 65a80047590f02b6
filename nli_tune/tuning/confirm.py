"""The confirmation stage: after the search, its top completed configs run again, each
`confirm_seeds` times with new seeds on the same folds, at full epochs, as Tune trials of
their own (tracked in MLflow like the others, tagged `stage: confirmation`).

A search trial's K folds draw one trial's luck; a setup that learns for one seed and not
the next would win on it. The exported config is then chosen on the mean over seeds x
folds, among configs whose fits all learned (study/selection.py). Tune's own
BasicVariantGenerator runs the given points; no scheduler cuts them, no Optuna learns
from them (they are not samples of the search space).
"""

from __future__ import annotations

from typing import Any

from nli_tune.study.space import CONFIRMS_KEY, REPEAT_KEY, SearchSpace


def confirmation_points(
    space: SearchSpace, rows: list[dict[str, Any]], trial_ids: list[str]
) -> list[dict[str, Any]]:
    """The trials to run: each chosen search trial's params, once per new seed."""
    by_id = {row["trial_id"]: row for row in rows}
    return [
        {**{k: by_id[tid][k] for k in space.params}, REPEAT_KEY: r, CONFIRMS_KEY: tid}
        for tid in trial_ids
        for r in range(1, space.confirm_seeds + 1)
    ]


def confirmation_tuner(
    tune, space: SearchSpace, param_space: dict, trainable, points, storage: str, at_once, cbs
):
    """A Tuner that runs exactly `points`, in order, under `{storage}/{name}_confirm`
    (`param_space`: the search's Tune distributions)."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    param_space = dict(param_space)
    # Every point sets these two; the distributions only tell Tune they exist.
    param_space[REPEAT_KEY] = tune.choice(sorted({p[REPEAT_KEY] for p in points}))
    param_space[CONFIRMS_KEY] = tune.choice(sorted({p[CONFIRMS_KEY] for p in points}))
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=BasicVariantGenerator(points_to_evaluate=points, max_concurrent=at_once),
            num_samples=len(points),  # each point replaces one sample: exactly these
        ),
        run_config=tune.RunConfig(
            storage_path=storage,
            name=confirmation_name(space),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=2),
            callbacks=cbs,
        ),
    )


def confirmation_name(space: SearchSpace) -> str:
    return f"{space.name}_confirm"
