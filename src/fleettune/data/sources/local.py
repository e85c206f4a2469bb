"""Your own data: a directory of ``train.*``, ``test.*`` and optional ``val.*`` (.csv, .jsonl or .txt)."""

from __future__ import annotations

from pathlib import Path

from fleettune.data.sources.assemble import assemble
from fleettune.data.sources.registry import SOURCES, require_dir
from fleettune.data.sources.text_files import SPLIT_SUFFIXES, RawRows, read_split_file
from fleettune.data.types import TextDataset
from fleettune.errors import DataError

EXPECTED = "train.* and test.* (optionally val.*), each .csv, .jsonl or .txt"


def split_file(folder: Path, split: str) -> Path | None:
    """The one ``<split>.csv|jsonl|txt`` of ``folder``; None if there is none."""
    found = sorted(path for path in folder.iterdir() if path.is_file() and path.stem == split)
    usable = [path for path in found if path.suffix.lower() in SPLIT_SUFFIXES]
    if len(usable) > 1:
        names = ", ".join(path.name for path in usable)
        raise DataError(f"data directory {folder} has several {split} files ({names}); expected one")
    if not usable and found:
        expected = ", ".join(SPLIT_SUFFIXES)
        raise DataError(f"{found[0]}: unsupported file type for split '{split}'; expected one of {expected}")
    return usable[0] if usable else None


@SOURCES.register("local")
def load_local(
    data_dir: Path | None, *, text_column: str = "text", label_column: str = "label", seed: int = 0
) -> TextDataset:
    """Split files of ``data_dir``; without ``test.*``, 20% of each training label is held out.

    Labels may be strings (ids follow sorted names) or integers (ids follow their numeric order).
    The column names apply to .csv and .jsonl; a .txt file is positional (text;label).
    """
    folder = require_dir(data_dir, "local", EXPECTED)
    train_path, test_path, val_path = (split_file(folder, split) for split in ("train", "test", "val"))
    if train_path is None:
        raise DataError(f"data directory {folder} has no train file; expected {EXPECTED}")

    def read(path: Path | None) -> RawRows | None:
        return None if path is None else read_split_file(path, text_column, label_column)

    return assemble(
        "local", read_split_file(train_path, text_column, label_column), read(test_path), read(val_path), seed
    )
