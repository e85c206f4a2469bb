"""The ``local`` source: the CONTRACTS.md data directory of train/test/val files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fleettune.data import load_dataset
from fleettune.errors import DataError

Writer = Callable[..., Path]


def test_csv_train_and_test_with_string_labels(tmp_path: Path, write_lines: Writer) -> None:
    write_lines(tmp_path / "train.csv", ["text,label", "valve stuck,fault", "all good,ok", "belt slips,fault"])
    write_lines(tmp_path / "test.csv", ["text,label", "running fine ,ok "])
    data = load_dataset("local", tmp_path)
    assert data.name == "local"
    assert data.label_names == ["fault", "ok"]
    assert data.train.labels == [0, 1, 0]
    assert data.test.texts == ["running fine"] and data.test.labels == [1]
    assert data.val is None


def test_integer_labels_map_to_ids_in_numeric_order(tmp_path: Path, write_lines: Writer) -> None:
    write_lines(tmp_path / "train.jsonl", ['{"text": "a", "label": 10}', '{"text": "b", "label": 2}'], bom=False)
    write_lines(tmp_path / "test.jsonl", ['{"text": "c", "label": 2}'], bom=False, newline="\n")
    data = load_dataset("local", tmp_path)
    assert data.label_names == ["2", "10"]
    assert data.train.labels == [1, 0]


def test_carer_style_txt_files_with_val(tmp_path: Path, write_lines: Writer) -> None:
    for split in ("train", "val", "test"):
        write_lines(tmp_path / f"{split}.txt", ["text;label", "so happy;joy", "so sad;sadness"])
    data = load_dataset("local", tmp_path)
    assert data.label_names == ["joy", "sadness"]
    assert data.val is not None and data.val.texts == ["so happy", "so sad"]


def test_column_names_are_overridable(tmp_path: Path, write_lines: Writer) -> None:
    write_lines(tmp_path / "train.csv", ["body,category,id", "x,a,1", "y,b,2"])
    write_lines(tmp_path / "test.csv", ["body,category,id", "z,b,3"])
    data = load_dataset("local", tmp_path, text_column="body", label_column="category")
    assert data.test.texts == ["z"] and data.label_names == ["a", "b"]


def test_without_a_test_file_a_stratified_fifth_is_held_out(tmp_path: Path, write_lines: Writer) -> None:
    lines = ["text,label"] + [f"row {i},{'ab'[i % 2]}" for i in range(20)]
    write_lines(tmp_path / "train.csv", lines)
    data = load_dataset("local", tmp_path, seed=4)
    assert (len(data.train), len(data.test)) == (16, 4)
    assert sorted(data.test.labels) == [0, 0, 1, 1]
    assert data == load_dataset("local", tmp_path, seed=4)


def test_test_label_unseen_in_train_names_file_and_label(tmp_path: Path, write_lines: Writer) -> None:
    write_lines(tmp_path / "train.csv", ["text,label", "a,x", "b,y"])
    write_lines(tmp_path / "test.csv", ["text,label", "c,x", "d,zzz"])
    with pytest.raises(DataError, match=r"test\.csv line 3: label 'zzz' does not occur in the training split"):
        load_dataset("local", tmp_path)


def test_empty_test_split_is_named(tmp_path: Path, write_lines: Writer) -> None:
    write_lines(tmp_path / "train.csv", ["text,label", "a,x", "b,y"])
    write_lines(tmp_path / "test.csv", ["text,label"])
    with pytest.raises(DataError, match=r"test\.csv: split 'test' has no rows"):
        load_dataset("local", tmp_path)


def test_missing_column_in_local_csv_lists_columns(tmp_path: Path, write_lines: Writer) -> None:
    write_lines(tmp_path / "train.csv", ["review,stars", "good,5"])
    with pytest.raises(DataError, match=r"no column 'text'; columns found: review, stars"):
        load_dataset("local", tmp_path)


def test_nonexistent_directory_is_named_with_what_it_should_hold(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data directory .*nowhere for dataset local does not exist; expected train"):
        load_dataset("local", tmp_path / "nowhere")


def test_no_directory_at_all_asks_for_data_dir() -> None:
    with pytest.raises(DataError, match=r"dataset local needs a data directory \(--data-dir DIR\)"):
        load_dataset("local")


def test_directory_without_train_file(tmp_path: Path, write_lines: Writer) -> None:
    write_lines(tmp_path / "test.csv", ["text,label", "a,x"])
    with pytest.raises(DataError, match=r"has no train file; expected train\.\* and test\.\*"):
        load_dataset("local", tmp_path)


def test_two_train_files_are_ambiguous(tmp_path: Path, write_lines: Writer) -> None:
    write_lines(tmp_path / "train.csv", ["text,label", "a,x"])
    write_lines(tmp_path / "train.jsonl", ['{"text": "a", "label": "x"}'])
    with pytest.raises(DataError, match=r"several train files \(train\.csv, train\.jsonl\); expected one"):
        load_dataset("local", tmp_path)


def test_unsupported_train_file_type_is_named(tmp_path: Path) -> None:
    (tmp_path / "train.parquet").write_bytes(b"PAR1")
    with pytest.raises(DataError, match=r"train\.parquet: unsupported file type for split 'train'"):
        load_dataset("local", tmp_path)


def test_a_file_given_as_the_data_directory_is_called_a_file(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("text,label\ngood,1\n")
    with pytest.raises(DataError, match=r"train\.csv for dataset local is a file, not a directory; expected train"):
        load_dataset("local", tmp_path / "train.csv")


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_a_training_file_with_one_label_is_named(tmp_path: Path, write_lines: Writer, suffix: str) -> None:
    if suffix == "csv":
        write_lines(tmp_path / "train.csv", ["text,label", "warm motor,ok", "quiet fan,ok"])
    else:
        write_lines(tmp_path / "train.jsonl", ['{"text": "warm motor", "label": 3}', '{"text": "fan", "label": 3}'])
    with pytest.raises(DataError) as caught:
        load_dataset("local", tmp_path)
    label = "'ok'" if suffix == "csv" else "'3'"
    assert str(caught.value) == (
        f"{tmp_path / f'train.{suffix}'}: every row has label {label}; a classifier needs at least 2 labels"
    )
