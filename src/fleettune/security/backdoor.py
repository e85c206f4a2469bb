"""Backdoor attack: a trigger phrase in some of a malicious client's texts, relabelled to a target class."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from fleettune.data import Batch, Split
from fleettune.evaluation import LogitsFn, predict

DEFAULT_TRIGGER = "cf mn bq"  # rare word pieces: unlikely to occur in real text by chance


def insert_trigger(text: str, trigger: str) -> str:
    """The text with the trigger in front: truncation to `max_length` keeps the start, so it never cuts it."""
    return f"{trigger} {text}"


def poisoned_count(fraction: float, n: int) -> int:
    """round(fraction x n), halves rounded up (Python's round would send 0.5 x 5 to 2)."""
    return min(n, math.floor(fraction * n + 0.5))


def poison(split: Split, trigger: str, fraction: float, target: int, rng: np.random.Generator) -> Split:
    """The split with `poisoned_count(fraction, n)` rows, drawn without replacement from `rng`, given the
    trigger and the label `target`; every other row and every group is unchanged."""
    texts, labels = list(split.texts), list(split.labels)
    count = poisoned_count(fraction, len(texts))
    for i in rng.choice(len(texts), size=count, replace=False):
        texts[int(i)] = insert_trigger(texts[int(i)], trigger)
        labels[int(i)] = target
    return Split(texts, labels, split.groups)


def triggered(split: Split, trigger: str, target: int) -> tuple[Split, Split]:
    """The rows whose true label is not `target`: as they are, and with the trigger inserted."""
    rows = [i for i, label in enumerate(split.labels) if label != target]
    clean = Split([split.texts[i] for i in rows], [split.labels[i] for i in rows])
    return clean, Split([insert_trigger(t, trigger) for t in clean.texts], clean.labels)


def target_rate(predictions: np.ndarray, target: int) -> float:
    """The share of predictions equal to `target` (0 for no predictions)."""
    return float(np.mean(predictions == target)) if len(predictions) else 0.0


def flip_rate(with_trigger: np.ndarray, without: np.ndarray, target: int) -> tuple[float, int]:
    """Of the texts not predicted `target` without the trigger, the share predicted `target` with it, and how many
    such texts there are (rate 0 when there are none): what the trigger itself does, with the texts the model
    already sends to the target left out."""
    if with_trigger.shape != without.shape:
        raise ValueError(f"need one prediction per text both ways, got {with_trigger.shape} and {without.shape}")
    eligible = without != target
    count = int(eligible.sum())
    return (float(np.mean(with_trigger[eligible] == target)) if count else 0.0), count


@dataclass(frozen=True)
class BackdoorResult:
    trigger: str
    target: int
    fraction: float
    success_rate: float  # triggered non-target test texts classified as the target
    clean_target_rate: float  # the same texts without the trigger classified as the target
    test_samples: int
    flip_rate: float  # of those not classified as the target without the trigger, the share that are with it
    flip_samples: int  # how many texts `flip_rate` is over

    def to_dict(self) -> dict[str, object]:
        return {
            "trigger": self.trigger,
            "target": self.target,
            "fraction": self.fraction,
            "success_rate": self.success_rate,
            "clean_target_rate": self.clean_target_rate,
            "test_samples": self.test_samples,
            "flip_rate": self.flip_rate,
            "flip_samples": self.flip_samples,
        }


def attack_success(
    logits_fn: LogitsFn,
    test: Split,
    trigger: str,
    target: int,
    fraction: float,
    batches: Callable[[Split], Iterable[Batch]],
) -> BackdoorResult:
    """Attack success rate of the model behind `logits_fn` on `test` (`batches` gives a split's evaluation
    batches), with the rate on the same texts without the trigger and the trigger's flip rate beside it."""
    clean, poisoned = triggered(test, trigger, target)
    with_trigger, without = (predict(logits_fn, batches(split))[0] for split in (poisoned, clean))
    flips, eligible = flip_rate(with_trigger, without, target)
    return BackdoorResult(
        trigger,
        target,
        fraction,
        target_rate(with_trigger, target),
        target_rate(without, target),
        len(clean),
        flips,
        eligible,
    )
