"""FoolsGold: weights by hand, sybils silenced, histories kept per client and through a checkpoint."""

from __future__ import annotations

import math

import pytest
import torch

from fleettune.aggregation.foolsgold import FoolsGold, foolsgold_weights
from fleettune.aggregation.robust import make_aggregator


def rows(*values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_weights_golden_without_pardoning() -> None:
    # cos(h0, h1) = 0.6, h2 orthogonal to both: a = 0.4, 0.4, 1 -> 0.99 after dividing by the largest;
    # logit: ln(0.4 / 0.6) + 0.5 for the first two, ln(99) + 0.5 > 1 clipped to 1 for the third.
    weights = foolsgold_weights(rows([1, 0, 0], [0.6, 0.8, 0], [0, 0, 1]))
    low = math.log(0.4 / 0.6) + 0.5
    assert weights.tolist() == pytest.approx([low, low, 1.0], abs=1e-12)


def test_weights_golden_where_pardoning_decides() -> None:
    # h0 = h1 (v = 1), h2 at cos 0.6 to both and 0.28 to h3, h3 at -0.6 to h0 and h1.
    # Pardoned: h2's similarity to h0, h1 becomes 0.6 x 0.6 / 1 = 0.36, so a2 = 0.64; h3's to h2 becomes
    # 0.28 x 0.28 / 0.6, so a3 = 0.8693. Divided by a3: a2 = 0.7362, logit 1.53 -> 1. Without pardoning
    # a2 / a3 = 0.4 / 0.72 and the weight would be ln(1.25) + 0.5 = 0.72.
    weights = foolsgold_weights(rows([1, 0], [1, 0], [0.6, 0.8], [-0.6, 0.8]))
    assert weights.tolist() == [0.0, 0.0, 1.0, 1.0]


def test_one_client_and_dissimilar_clients_keep_full_weight() -> None:
    assert foolsgold_weights(rows([3, 4])).tolist() == [1.0]
    assert foolsgold_weights(rows([1, 0], [0, 1], [-1, 0])).tolist() == [1.0, 1.0, 1.0]


def test_identical_updates_look_like_sybils_and_move_nothing() -> None:
    # FoolsGold's known price: clients with identical data are indistinguishable from colluders.
    state = {"v": torch.tensor([1.0, 2.0])}
    result = make_aggregator("foolsgold").aggregate([state] * 4, [1.0] * 4)
    assert result.selected == () and result.state["v"].tolist() == [0.0, 0.0]


def test_histories_accumulate_per_client_and_silence_a_persistent_pair() -> None:
    rule = FoolsGold()
    gen = torch.Generator().manual_seed(0)
    backdoor = torch.zeros(8, dtype=torch.float64)
    backdoor[0] = 1.0
    for _ in range(3):
        honest = [torch.randn(8, generator=gen, dtype=torch.float64) for _ in range(3)]
        # The two attackers add the same push to their own noise every round.
        bad = [3 * backdoor + 0.3 * torch.randn(8, generator=gen, dtype=torch.float64) for _ in range(2)]
        updates = [{"v": v} for v in honest + bad]
        result = rule.aggregate(updates, [1.0] * 5, ["h0", "h1", "h2", "m0", "m1"])
    assert set(result.selected) <= {0, 1, 2}
    assert sorted(rule.state()) == ["h0", "h1", "h2", "m0", "m1"]
    restored = FoolsGold()
    restored.restore(rule.state())
    nxt = [{"v": torch.randn(8, generator=gen, dtype=torch.float64)} for _ in range(5)]
    names = ["h0", "h1", "h2", "m0", "m1"]
    a = rule.aggregate(nxt, [1.0] * 5, names)
    b = restored.aggregate(nxt, [1.0] * 5, names)
    assert a.selected == b.selected and torch.equal(a.state["v"], b.state["v"])


def test_the_aggregate_is_the_trust_weighted_mean() -> None:
    updates = [{"v": torch.tensor(r, dtype=torch.float64)} for r in ([1, 0, 0], [0.6, 0.8, 0], [0, 0, 1])]
    result = make_aggregator("foolsgold").aggregate(updates, [5.0, 1.0, 1.0])
    w = math.log(0.4 / 0.6) + 0.5
    expected = [(w * 1 + w * 0.6) / (2 * w + 1), w * 0.8 / (2 * w + 1), 1 / (2 * w + 1)]
    assert result.state["v"].tolist() == pytest.approx(expected, abs=1e-12)
    assert result.selected == (0, 1, 2)


def test_names_must_match_the_updates() -> None:
    with pytest.raises(ValueError, match="one client name per update"):
        FoolsGold().aggregate([{"v": torch.zeros(2)}] * 2, [1.0, 1.0], ["a"])
    with pytest.raises(ValueError, match="keeps no state"):
        make_aggregator("median").restore({"a": torch.zeros(1)})
