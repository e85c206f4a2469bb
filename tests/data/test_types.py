"""Split and TextDataset: the invariants every loader's output satisfies."""

from __future__ import annotations

import pytest

from fleettune.data.types import Split, TextDataset, subset
from fleettune.errors import DataError


def test_split_rejects_texts_and_labels_of_different_lengths() -> None:
    with pytest.raises(DataError, match="2 texts but 1 labels"):
        Split(["a", "b"], [0])


def test_split_rejects_groups_of_a_different_length() -> None:
    with pytest.raises(DataError, match="2 texts but 3 groups"):
        Split(["a", "b"], [0, 1], ["g", "g", "h"])


def test_subset_takes_rows_in_the_given_order_with_their_groups() -> None:
    split = Split(["a", "b", "c"], [0, 1, 2], ["x", "y", "z"])
    assert subset(split, [2, 0]) == Split(["c", "a"], [2, 0], ["z", "x"])


def test_dataset_rejects_an_empty_split_naming_it() -> None:
    with pytest.raises(DataError, match="split 'test' is empty"):
        TextDataset("toy", ["a"], Split(["x"], [0]), Split([], []))


def test_dataset_rejects_a_label_id_without_a_name() -> None:
    with pytest.raises(DataError, match=r"label id 3 outside 0\.\.1"):
        TextDataset("toy", ["a", "b"], Split(["x"], [3]), Split(["y"], [0]))


def test_splits_lists_val_only_when_present() -> None:
    train, test = Split(["x"], [0]), Split(["y"], [0])
    assert list(TextDataset("toy", ["a"], train, test).splits()) == ["train", "test"]
    assert list(TextDataset("toy", ["a"], train, test, train).splits()) == ["train", "test", "val"]
