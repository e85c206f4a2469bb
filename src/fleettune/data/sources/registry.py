"""The data source extension point: the Source protocol and the SOURCES registry."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from fleettune.data.types import TextDataset
from fleettune.errors import DataError
from fleettune.registry import Registry


class Source(Protocol):
    """Loads one named data set, from ``data_dir`` when given, with deterministic splits for ``seed``."""

    def __call__(
        self,
        data_dir: Path | None,
        *,
        text_column: str = "text",
        label_column: str = "label",
        seed: int = 0,
    ) -> TextDataset: ...


SOURCES: Registry[Source] = Registry("data source")


def require_dir(data_dir: Path | None, dataset: str, expected: str) -> Path:
    """``data_dir`` as an existing directory, or a DataError saying what the directory should hold."""
    if data_dir is None:
        raise DataError(f"dataset {dataset} needs a data directory (--data-dir DIR) holding {expected}")
    path = Path(data_dir)
    if not path.is_dir():
        state = "is a file, not a directory" if path.exists() else "does not exist"
        raise DataError(f"data directory {path} for dataset {dataset} {state}; expected {expected}")
    return path


def require_file(path: Path, expected: str) -> Path:
    """``path`` if it is a file, or a DataError naming it and what it should be."""
    if not path.is_file():
        raise DataError(f"missing file {path}; expected {expected}")
    return path
