"""Membership inference by loss threshold: training samples tend to have a lower loss than unseen ones."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fleettune.data import Batch
from fleettune.evaluation import LogitsFn


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values` in ascending order, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values), dtype=np.float64)
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + 1 + end) / 2  # the mean of ranks start + 1 .. end
    return ranks


def auc(positives: Iterable[float], negatives: Iterable[float]) -> float:
    """P(a positive scores above a negative), ties counting 1/2: the Mann-Whitney U over the product of sizes.

    Exact: with ranks that are multiples of 1/2 the rank sum has no rounding error for any realistic size."""
    pos = np.asarray(list(positives), dtype=np.float64)
    neg = np.asarray(list(negatives), dtype=np.float64)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"AUC needs scores of both classes, got {len(pos)} and {len(neg)}")
    if not (np.isfinite(pos).all() and np.isfinite(neg).all()):
        raise ValueError("AUC needs finite scores")
    ranks = average_ranks(np.concatenate([pos, neg]))
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def sample_losses(logits_fn: LogitsFn, batches: Iterable[Batch]) -> np.ndarray:
    """Each sample's cross-entropy under the model behind `logits_fn`, in batch order."""
    losses = []
    with torch.no_grad():
        for batch in batches:
            logits = logits_fn(batch.input_ids, batch.attention_mask)
            losses.append(F.cross_entropy(logits.float(), batch.labels, reduction="none").cpu().numpy())
    return np.concatenate(losses) if losses else np.zeros(0)


@dataclass(frozen=True)
class MembershipResult:
    auc: float  # of "lower loss => member": 0.5 is a coin flip, 1.0 separates members perfectly
    members: int
    non_members: int

    def to_dict(self) -> dict[str, object]:
        return {"auc": self.auc, "members": self.members, "non_members": self.non_members}


def loss_attack(member_losses: np.ndarray, non_member_losses: np.ndarray) -> MembershipResult:
    """The attack's AUC: a lower loss is a higher membership score."""
    return MembershipResult(auc(-member_losses, -non_member_losses), len(member_losses), len(non_member_losses))
