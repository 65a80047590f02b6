"""How MLflow's UI shows a search: the experiment's kind, and its runs table's columns as
a shared view that the URL names (see ui.py for why MLflow 3.17 needs both)."""

from __future__ import annotations

import json

# MLflow 3.17's value for fine-tuning experiments (its UI counts it as model training).
EXPERIMENT_KIND = "finetuning"
KIND_TAG = "mlflow.experimentKind"
VIEW_KEY = "nli_tune"  # the shared view's name: tag mlflow.sharedViewState.<key>, URL key
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"


def experiment_tags(searcher_metric: str, scheduler_metric: str, params: list[str]) -> dict:
    """The experiment's tags: its kind, and the runs table's columns as a shared view:
    the parent's headline numbers, each trial's cross-fold scores, status and params."""
    metrics = [searcher_metric, scheduler_metric, "cv_macro_f1", f"best_{searcher_metric}"]
    metrics += ["trials", "trials_stopped", "trials_failed"]
    columns = [f"metrics.`{m}`" for m in dict.fromkeys(metrics)]
    columns += ["tags.`status`", "tags.`epochs_run`", *(f"params.`{p}`" for p in params)]
    return {KIND_TAG: EXPERIMENT_KIND, VIEW_TAG: json.dumps({"selectedColumns": columns})}


def experiment_url(base: str, experiment_id: str) -> str:
    """The experiment's runs table in the model-training view, with the search's columns."""
    query = f"workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"
