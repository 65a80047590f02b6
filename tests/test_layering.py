import subprocess
import sys


def test_components_import_no_ray():
    code = (
        "import sys; import nli_tune.data, nli_tune.redsm5.folds, nli_tune.model.classifier, "
        "nli_tune.training.fold_trainer, nli_tune.pairs.encoding, nli_tune.study.space, "
        "nli_tune.train, nli_tune.evaluation.scoring, "
        "nli_tune.predict, nli_tune.report; "
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"


def test_train_and_predict_check_their_input_before_torch_loads():
    """The commands import torch, transformers and peft (seconds) only after the config,
    data and model folder are checked, so bad input is answered at once."""
    code = (
        "import sys; import nli_tune.train, nli_tune.predict; "
        "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"
