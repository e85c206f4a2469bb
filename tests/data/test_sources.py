"""Picking a source by name: the registry and the errors for unknown names."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleettune.data import SOURCES, resolve_source
from fleettune.errors import DataError


def test_the_five_sources_are_registered() -> None:
    assert SOURCES.names() == ["ai4i", "bbc-news", "carer", "local", "ton-iot"]


def test_unknown_dataset_lists_the_known_ones() -> None:
    with pytest.raises(DataError, match=r"dataset 'imdb' is unknown; expected one of: ai4i, bbc-news, carer"):
        resolve_source("imdb")


def test_unknown_dataset_with_a_data_dir_points_at_local(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="use dataset 'local'"):
        resolve_source("mine", tmp_path)
