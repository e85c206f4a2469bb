"""Named data sources and ``load_dataset``, which picks one by name."""

from __future__ import annotations

from pathlib import Path

# Importing a source module registers it in SOURCES.
from fleettune.data.sources import ai4i, bbc_news, carer, local, ton_iot  # noqa: F401
from fleettune.data.sources.registry import SOURCES, Source
from fleettune.data.types import TextDataset
from fleettune.errors import DataError

DEFAULT_DATASET = "bbc-news"


def resolve_source(dataset: str, data_dir: Path | str | None = None) -> Source:
    """The source registered as ``dataset``; an unknown name is a DataError listing the known ones."""
    if dataset in SOURCES:
        return SOURCES.get(dataset)
    known = ", ".join(SOURCES.names())
    hint = "; for your own files with --data-dir use dataset 'local'" if data_dir is not None else ""
    raise DataError(f"dataset {dataset!r} is unknown; expected one of: {known}{hint}")


def load_dataset(
    name: str = DEFAULT_DATASET,
    data_dir: Path | str | None = None,
    *,
    text_column: str = "text",
    label_column: str = "label",
    seed: int = 0,
) -> TextDataset:
    """Load data set ``name`` (from ``data_dir`` when given) with splits that depend only on ``seed``."""
    source = resolve_source(name, data_dir)
    folder = None if data_dir is None else Path(data_dir)
    return source(folder, text_column=text_column, label_column=label_column, seed=seed)


__all__ = ["DEFAULT_DATASET", "SOURCES", "Source", "load_dataset", "resolve_source"]
