"""Scores a model on the test split and on every client's local test share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fleettune.data import Batcher
from fleettune.evaluation import ClientScores, LogitsFn, Scores, per_client_accuracy, predict, score


@dataclass(frozen=True)
class EvalResult:
    scores: Scores
    clients: ClientScores


class Evaluator:
    """Predicts the test split once per call; client shares are index sets into it."""

    def __init__(self, test: Batcher, shares: Mapping[str, np.ndarray], num_labels: int, batch_size: int) -> None:
        self.test = test
        self.shares = dict(shares)
        self.num_labels = num_labels
        self.batch_size = batch_size

    def __call__(self, logits_fn: LogitsFn) -> EvalResult:
        # Batches of similar lengths waste little on padding; results go back to the split's row order.
        order = self.test.by_length()
        batches = self.test.batches(self.batch_size, shuffle=False, rng=None, order=order)
        sorted_predictions, sorted_labels = predict(logits_fn, batches)
        predictions = np.empty_like(sorted_predictions)
        labels = np.empty_like(sorted_labels)
        predictions[order], labels[order] = sorted_predictions, sorted_labels
        return EvalResult(
            score(predictions, labels, self.num_labels), per_client_accuracy(predictions, labels, self.shares)
        )
