"""FedAvg: sample-count weights and the weighted average, pinned to hand-computed numbers."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fleettune.aggregation import fedavg, sample_weights


def test_sample_weights_are_counts_over_their_sum() -> None:
    assert sample_weights([100, 300, 600]) == [0.1, 0.3, 0.6]
    assert sample_weights([1, 0, 1]) == [0.5, 0.0, 0.5]


def test_sample_weights_reject_an_empty_or_zero_fleet() -> None:
    for bad in ([], [0, 0], [3, -1]):
        with pytest.raises(ValueError):
            sample_weights(bad)


def test_fedavg_matches_golden_numbers_and_leaves_inputs_untouched() -> None:
    a = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([[0.0]])}
    b = {"w": torch.tensor([3.0, 6.0]), "b": torch.tensor([[4.0]])}
    out = fedavg([a, b], sample_weights([1, 3]))
    assert torch.equal(out["w"], torch.tensor([2.5, 5.0]))
    assert torch.equal(out["b"], torch.tensor([[3.0]]))
    assert torch.equal(a["w"], torch.tensor([1.0, 2.0]))  # no in-place averaging into a client


def test_fedavg_rejects_mismatched_keys() -> None:
    with pytest.raises(ValueError, match="different keys"):
        fedavg([{"x": torch.zeros(1)}, {"y": torch.zeros(1)}], [0.5, 0.5])


@given(st.lists(st.floats(-100, 100), min_size=1, max_size=6), st.integers(1, 50))
def test_fedavg_of_identical_states_is_that_state(values: list[float], copies: int) -> None:
    state = {"v": torch.tensor(values, dtype=torch.float32)}
    out = fedavg([state] * copies, sample_weights([1] * copies))
    torch.testing.assert_close(out["v"], state["v"])
