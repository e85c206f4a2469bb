"""Label vocabularies: the order of label names and the mapping of raw label values to ids."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fleettune.errors import DataError

_INTEGER = re.compile(r"[+-]?\d+")


def _is_integer(value: str) -> bool:
    return _INTEGER.fullmatch(value) is not None


@dataclass(frozen=True)
class LabelVocabulary:
    """Label names in id order; integer labels are keyed by their value so "01" and "1" agree."""

    names: list[str]
    numeric: bool = False

    def key(self, raw: str) -> str:
        raw = raw.strip()
        return str(int(raw)) if self.numeric and _is_integer(raw) else raw

    def encode(self, raw: Sequence[str], path: Path | str, lines: Sequence[int] | None = None) -> list[int]:
        """Label ids of ``raw``; a label the vocabulary lacks names the file, the line and the label."""
        ids = {name: i for i, name in enumerate(self.names)}
        encoded = []
        for row, value in enumerate(raw):
            label_id = ids.get(self.key(value))
            if label_id is None:
                where = f"{path} line {lines[row]}" if lines is not None else f"{path}"
                raise DataError(
                    f"{where}: label {value.strip()!r} does not occur in the training split; "
                    f"known labels: {', '.join(self.names)}"
                )
            encoded.append(label_id)
        return encoded


def vocabulary(train_labels: Iterable[str], canonical: Sequence[str] = ()) -> LabelVocabulary:
    """The vocabulary of the training labels.

    Names listed in ``canonical`` come first in that order (so a published data set keeps its
    published label ids); the others follow, numerically when every label is an integer, else sorted.
    """
    seen = {value.strip() for value in train_labels}
    numeric = bool(seen) and all(_is_integer(value) for value in seen)
    if numeric:
        seen = {str(int(value)) for value in seen}
    first = [name for name in canonical if name in seen]
    rest = sorted(seen.difference(first), key=int if numeric else None)
    return LabelVocabulary(first + rest, numeric)
