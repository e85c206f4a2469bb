"""Label vocabularies: id order (canonical, numeric, sorted) and errors for labels train never saw."""

from __future__ import annotations

import pytest

from fleettune.data.labels import vocabulary
from fleettune.errors import DataError


def test_canonical_names_come_first_in_their_order_then_the_rest_sorted() -> None:
    labels = vocabulary(["zeta", "joy", "alpha", "sadness"], canonical=["sadness", "joy", "love"])
    assert labels.names == ["sadness", "joy", "alpha", "zeta"]


def test_integer_labels_are_ordered_numerically_not_as_text() -> None:
    assert vocabulary(["10", "2", "1", "2"]).names == ["1", "2", "10"]


def test_integer_labels_match_whatever_their_padding_or_leading_zeros() -> None:
    labels = vocabulary(["1", "2"])
    assert labels.encode([" 01", "2 "], "f.csv") == [0, 1]


def test_string_labels_are_sorted_and_stripped() -> None:
    assert vocabulary([" b", "a ", "b"]).names == ["a", "b"]


def test_a_label_unseen_in_train_names_file_line_and_label() -> None:
    labels = vocabulary(["a", "b"])
    with pytest.raises(DataError, match=r"test\.csv line 7: label 'c' does not occur in the training split"):
        labels.encode(["a", "c"], "test.csv", [3, 7])
