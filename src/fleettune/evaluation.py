"""Evaluation: accuracy and macro-F1 on the test split, and per-client accuracy on local shares."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from fleettune.data import Batch

LogitsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Scores:
    accuracy: float
    macro_f1: float
    count: int


def predict(logits_fn: LogitsFn, batches: Iterable[Batch]) -> tuple[np.ndarray, np.ndarray]:
    predictions: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    with torch.no_grad():
        for batch in batches:
            logits = logits_fn(batch.input_ids, batch.attention_mask)
            predictions.append(logits.argmax(dim=-1).cpu().numpy())
            labels.append(batch.labels.cpu().numpy())
    if not predictions:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(predictions), np.concatenate(labels)


def score(predictions: np.ndarray, labels: np.ndarray, num_labels: int) -> Scores:
    if len(labels) == 0:
        raise ValueError("cannot score an empty evaluation set")
    accuracy = float((predictions == labels).mean())
    return Scores(accuracy, macro_f1(predictions, labels, num_labels), len(labels))


def macro_f1(predictions: np.ndarray, labels: np.ndarray, num_labels: int) -> float:
    """Unweighted mean of per-class F1 over every class; a class never predicted nor present scores 0."""
    f1s = []
    for c in range(num_labels):
        tp = float(np.sum((predictions == c) & (labels == c)))
        fp = float(np.sum((predictions == c) & (labels != c)))
        fn = float(np.sum((predictions != c) & (labels == c)))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s))


@dataclass(frozen=True)
class ClientScores:
    per_client: dict[str, float]

    @property
    def worst(self) -> float:
        return min(self.per_client.values())

    @property
    def std(self) -> float:
        return float(np.std(list(self.per_client.values())))


def per_client_accuracy(predictions: np.ndarray, labels: np.ndarray, shares: Mapping[str, np.ndarray]) -> ClientScores:
    """Accuracy of each client on its local test share (indices into the scored test split)."""
    out = {}
    for client, indices in shares.items():
        if len(indices) == 0:
            continue
        out[client] = float((predictions[indices] == labels[indices]).mean())
    return ClientScores(out)
