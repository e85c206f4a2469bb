"""The ``carer`` source: CARER text;label files, the dair-ai label order, and the offline hub fallback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fleettune.data import load_dataset
from fleettune.data.sources.carer import EMOTIONS
from fleettune.errors import DataError

Writer = Callable[..., Path]


def _carer_dir(tmp_path: Path, write_lines: Writer) -> Path:
    write_lines(
        tmp_path / "train.txt",
        ["text;label", "i feel great; truly;joy", "i am scared;fear", "so low;sadness"],
    )
    write_lines(tmp_path / "val.txt", ["text;label", "what a shock;fear"])
    write_lines(tmp_path / "test.txt", ["text;label", "lovely day;joy", "gloomy;sadness"])
    return tmp_path


def test_reads_three_splits_and_keeps_dair_ai_label_order(tmp_path: Path, write_lines: Writer) -> None:
    data = load_dataset("carer", _carer_dir(tmp_path, write_lines))
    assert data.label_names == ["sadness", "joy", "fear"]
    assert data.train.texts[0] == "i feel great; truly"
    assert data.train.labels == [1, 2, 0]
    assert data.val is not None and data.val.labels == [2]
    assert (len(data.train), len(data.test)) == (3, 2)


def test_missing_split_file_names_it(tmp_path: Path, write_lines: Writer) -> None:
    (_carer_dir(tmp_path, write_lines) / "val.txt").unlink()
    with pytest.raises(DataError, match=r"missing file .*val\.txt; expected train\.txt, val\.txt and test\.txt"):
        load_dataset("carer", tmp_path)


def test_without_data_dir_and_offline_asks_for_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match=r"dataset carer: the Hugging Face Hub is offline .*--data-dir DIR"):
        load_dataset("carer")


def test_real_carer_has_16000_2000_2000_rows_and_six_emotions(shared_data: Path) -> None:
    data = load_dataset("carer", shared_data / "carer")
    assert data.val is not None
    assert (len(data.train), len(data.val), len(data.test)) == (16000, 2000, 2000)
    assert data.label_names == list(EMOTIONS)
