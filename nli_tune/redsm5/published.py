"""The ReDSM5 authors' published macro-F1 figures: theirs, on the real posts, with their
protocol (post-level multi-label over 10 labels, the 9 criteria and "no symptom", on an
80/20 split, in their repository's notebooks). Shown beside `criterion_macro_f1` (the mean
of the 9 criteria's F1, the same kind of number) so that a reader knows the scale; they
are not a comparison on the same posts, and the bundled sample is synthetic."""

from __future__ import annotations

SOURCE = (
    "Bao, Pérez and Parapar, ReDSM5 (2025, arXiv:2508.03399): post-level multi-label "
    "macro-F1 over 10 labels on an 80/20 split of the real posts, from their repository"
)
MACRO_F1 = {"TF-IDF + SVM": 0.28, "BERT-base": 0.36, "Llama-3.2-1B": 0.49}


def sentence() -> str:
    """One line naming their figures and where they come from."""
    figures = ", ".join(f"{name} {value:.2f}" for name, value in MACRO_F1.items())
    return f"The ReDSM5 authors' published figures ({SOURCE}): {figures}."
