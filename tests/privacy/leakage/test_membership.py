"""The Mann-Whitney AUC is exact (ties count 1/2), and a run reports the loss-threshold attack on its final model."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fleettune.config import build_config
from fleettune.data import Batch
from fleettune.privacy.leakage.membership import auc, average_ranks, loss_attack, sample_losses
from fleettune.report import build_report
from fleettune.runner import execute, prepare
from tests.schemes.conftest import tiny_flags


def test_average_ranks_share_the_mean_rank_of_a_tie() -> None:
    assert average_ranks(np.array([3.0, 1.0, 3.0, 2.0, 3.0])).tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]
    assert average_ranks(np.array([0.5])).tolist() == [1.0]


@pytest.mark.parametrize(
    ("positives", "negatives", "expected"),
    [
        ([3.0, 4.0, 5.0], [0.0, 1.0], 1.0),  # perfectly separated
        ([0.0, 1.0], [3.0, 4.0, 5.0], 0.0),  # separated the wrong way round
        ([2.0, 2.0], [2.0, 2.0, 2.0], 0.5),  # all tied
        # pairs: 0.9 beats both (2); each 0.4 ties 0.4 (1/2) and beats 0.1 (1): 2 + 1.5 + 1.5 = 5 of 6
        ([0.9, 0.4, 0.4], [0.4, 0.1], 5 / 6),
        ([1.0, 3.0], [2.0, 2.0], 0.5),  # one pair each way per negative
    ],
)
def test_auc_golden(positives: list[float], negatives: list[float], expected: float) -> None:
    assert auc(positives, negatives) == expected


def test_auc_equals_counting_every_pair() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        pos, neg = rng.integers(0, 5, size=rng.integers(1, 9)), rng.integers(0, 5, size=rng.integers(1, 9))
        pairs = [1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)]
        assert auc(pos, neg) == pytest.approx(sum(pairs) / len(pairs), abs=1e-15)


def test_auc_rejects_an_empty_class_and_non_finite_scores() -> None:
    with pytest.raises(ValueError, match="both classes"):
        auc([], [1.0])
    with pytest.raises(ValueError, match="finite"):
        auc([math.nan], [1.0])


def test_lower_loss_means_member() -> None:
    result = loss_attack(np.array([0.1, 0.2, 0.3]), np.array([0.3, 0.9]))
    assert (result.auc, result.members, result.non_members) == (1 - 0.5 / 6, 3, 2)
    assert result.to_dict() == {"auc": 1 - 0.5 / 6, "members": 3, "non_members": 2}


def test_sample_losses_are_per_sample_cross_entropies() -> None:
    ids = torch.zeros(3, 2, dtype=torch.long)
    batches = [
        Batch(ids[:2], torch.ones_like(ids[:2]), torch.tensor([0, 1])),
        Batch(ids[2:], ids[2:], torch.tensor([1])),
    ]
    # Logits (0, ln 3) give class probabilities 1/4 and 3/4.
    losses = sample_losses(lambda i, m: torch.tensor([[0.0, math.log(3.0)]]).expand(len(i), 2), batches)
    assert losses == pytest.approx([math.log(4.0), math.log(4 / 3), math.log(4 / 3)])


def test_a_run_reports_membership_inference(tiny_model_dir: Path, tiny_data_dir: Path) -> None:
    flags = tiny_flags(tiny_model_dir, tiny_data_dir, "splitfed", rounds=2, clients=3)
    flags["privacy.membership_samples"] = 50  # more than the 30 test texts: both sides get 30
    prepared = prepare(build_config(flags=flags))
    report = build_report(prepared, execute(prepared), 0.0)
    membership = report["privacy"]["membership"]
    assert membership["members"] == membership["non_members"] == 30 and 0.0 <= membership["auc"] <= 1.0
    assert report["privacy"]["inversion"] is None and report["security"]["backdoor"] is None
