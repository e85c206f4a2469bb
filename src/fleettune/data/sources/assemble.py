"""Turning raw rows of split files into a TextDataset under one label vocabulary taken from train."""

from __future__ import annotations

from collections.abc import Sequence

from fleettune.data.labels import LabelVocabulary, vocabulary
from fleettune.data.sampling import hold_out
from fleettune.data.sources.text_files import RawRows
from fleettune.data.types import Split, TextDataset
from fleettune.errors import DataError


def _encode(rows: RawRows, split: str, labels: LabelVocabulary) -> Split:
    if not rows.texts:
        raise DataError(f"{rows.path}: split '{split}' has no rows; expected at least one")
    return Split(rows.texts, labels.encode(rows.labels, rows.path, rows.lines))


def assemble(
    name: str,
    train: RawRows,
    test: RawRows | None,
    val: RawRows | None,
    seed: int,
    canonical_labels: Sequence[str] = (),
) -> TextDataset:
    """The data set of these files; without a test file, a stratified share of train is held out."""
    labels = vocabulary(train.labels, canonical_labels)
    if len(labels.names) < 2:
        found = f"label {labels.names[0]!r}" if labels.names else "no label"
        raise DataError(f"{train.path}: every row has {found}; a classifier needs at least 2 labels")
    train_split = _encode(train, "train", labels)
    if test is None:
        train_split, test_split = hold_out(train_split, seed)
    else:
        test_split = _encode(test, "test", labels)
    val_split = None if val is None else _encode(val, "val", labels)
    return TextDataset(name, labels.names, train_split, test_split, val_split)
