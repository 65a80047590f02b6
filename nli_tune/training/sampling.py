"""What a fold trains on each epoch: (unit, criterion) evidence examples and, for the
post-level loss, (post, criterion) bags, drawn afresh every epoch from the fold's rng."""

from __future__ import annotations

import math

import numpy as np

from nli_tune.core.config import TrainConfig
from nli_tune.pairs.encoding import UnitData

MIL_UNITS = 4  # units per bag re-run with gradient for the post-level loss


class Sampler:
    def __init__(self, cfg: TrainConfig, train: UnitData):
        self.cfg, self.train = cfg, train
        self.positives = np.argwhere(train.evidence == 1)  # [(unit, criterion)]
        # Negatives in three tiers: annotated absences ("I sleep fine these days"), units
        # that are evidence for *another* criterion (they teach which criterion a sentence
        # shows), then everything else (mostly sentences that show none).
        neg = np.argwhere(train.evidence == 0)
        hard = train.hard[neg[:, 0], neg[:, 1]]
        cross = ~hard & (train.evidence[neg[:, 0]] == 1).any(axis=1)
        self.negatives = np.concatenate([neg[hard], neg[cross], neg[~hard & ~cross]])
        self.n_hard, self.n_cross = int(hard.sum()), int(cross.sum())

    def budget(self, n_pos: int, n_neg: int) -> int:
        """Negatives drawn per epoch against n_pos positives: neg_ratio each, or all."""
        if self.cfg.neg_ratio is None:
            return n_neg
        return min(n_neg, math.ceil(self.cfg.neg_ratio * max(n_pos, 1)))

    def n_negatives(self) -> int:
        return self.budget(len(self.positives), len(self.negatives))

    def evidence_examples(self, rng: np.random.Generator) -> np.ndarray:
        """This epoch's (unit, criterion) examples: every positive, the annotated absences,
        then a fresh random draw that fills the negative budget half from other criteria's
        evidence units and half from the rest."""
        if self.cfg.evidence_weight == 0:
            return np.zeros((0, 2), np.int64)
        n = self.n_negatives()
        h, c = self.n_hard, self.n_hard + self.n_cross
        hard, cross, easy = self.negatives[:h], self.negatives[h:c], self.negatives[c:]
        if n <= len(hard):
            return np.concatenate([self.positives, hard[_draw(rng, len(hard), n)]])
        n_cross = min(len(cross), (n - len(hard) + 1) // 2)
        n_cross = max(n_cross, n - len(hard) - len(easy))  # too few easy ones: more cross
        picked = [hard, cross[_draw(rng, len(cross), n_cross)]]
        picked.append(easy[_draw(rng, len(easy), n - len(hard) - n_cross)])
        return np.concatenate([self.positives, *picked]).astype(np.int64)

    def mil_bags(self, rng: np.random.Generator) -> np.ndarray:
        """This epoch's (post, criterion) bags for the MIL loss: every matched one plus a
        fresh draw of neg_ratio unmatched ones per matched."""
        if self.cfg.evidence_weight == 1:
            return np.zeros((0, 2), np.int64)
        labels = self.train.post_labels
        pos, neg = np.argwhere(labels == 1), np.argwhere(labels == 0)
        n = self.budget(len(pos), len(neg))
        return np.concatenate([pos, neg[rng.choice(len(neg), n, replace=False)]])

    def mil_bag_batch(self) -> int:
        return max(1, self.cfg.batch_size // MIL_UNITS)

    def batches_per_epoch(self) -> int:
        n_ev = 0 if self.cfg.evidence_weight == 0 else len(self.positives) + self.n_negatives()
        if n_ev and self.cfg.pairing == "multilabel":  # a step per batch of distinct units
            draw = self.evidence_examples(np.random.default_rng(self.cfg.seed))
            n_ev = len(np.unique(draw[:, 0]))  # about every epoch's (the draws differ little)
        n_bags = 0
        if self.cfg.evidence_weight < 1:
            labels = self.train.post_labels
            n_pos = int(labels.sum())
            n_bags = n_pos + self.budget(n_pos, labels.size - n_pos)
        return math.ceil(n_ev / self.cfg.batch_size) + math.ceil(n_bags / self.mil_bag_batch())


def _draw(rng: np.random.Generator, population: int, n: int) -> np.ndarray:
    return rng.choice(population, n, replace=False)
