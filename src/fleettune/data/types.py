"""The in-memory shape of a labelled text data set: splits of texts, label ids and natural groups."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fleettune.errors import DataError


@dataclass(frozen=True)
class Split:
    """One split: row i is ``texts[i]`` with label id ``labels[i]`` and natural group ``groups[i]``.

    ``groups`` names the natural partition a row belongs to (the device kind in TON_IoT, the
    product type in AI4I); ``None`` when the data set has no such notion.
    """

    texts: list[str]
    labels: list[int]
    groups: list[str] | None = None

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise DataError(f"split has {len(self.texts)} texts but {len(self.labels)} labels")
        if self.groups is not None and len(self.groups) != len(self.texts):
            raise DataError(f"split has {len(self.texts)} texts but {len(self.groups)} groups")

    def __len__(self) -> int:
        return len(self.texts)


def subset(split: Split, indices: Sequence[int] | np.ndarray) -> Split:
    """The rows of ``split`` at ``indices``, in that order."""
    rows = [int(i) for i in indices]
    groups = None if split.groups is None else [split.groups[i] for i in rows]
    return Split([split.texts[i] for i in rows], [split.labels[i] for i in rows], groups)


@dataclass(frozen=True)
class TextDataset:
    """A named classification data set with its label names and train/test (optionally val) splits."""

    name: str
    label_names: list[str]
    train: Split
    test: Split
    val: Split | None = None

    def __post_init__(self) -> None:
        if len(set(self.label_names)) != len(self.label_names):
            raise DataError(f"dataset {self.name}: label names repeat: {self.label_names}")
        for split_name, split in self.splits().items():
            if len(split) == 0:
                raise DataError(f"dataset {self.name}: split '{split_name}' is empty; expected at least one row")
            bad = [label for label in split.labels if not 0 <= label < len(self.label_names)]
            if bad:
                raise DataError(
                    f"dataset {self.name}: split '{split_name}' has label id {bad[0]} outside "
                    f"0..{len(self.label_names) - 1}"
                )

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def splits(self) -> dict[str, Split]:
        """The present splits by name: train, test and val when there is one."""
        named = {"train": self.train, "test": self.test}
        if self.val is not None:
            named["val"] = self.val
        return named
