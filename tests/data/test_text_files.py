"""Split file readers: BOMs, CRLF, padding, encodings, and one-line errors naming file and line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fleettune.data.sources.text_files import (
    read_csv,
    read_jsonl,
    read_semicolon_lines,
    read_split_file,
    read_table,
    read_text,
)
from fleettune.errors import DataError

Writer = Callable[..., Path]


def test_csv_with_bom_crlf_and_padded_values_reads_clean(tmp_path: Path, write_lines: Writer) -> None:
    path = write_lines(tmp_path / "train.csv", [" text , label ", '"the pump hums, then stops" , broken ', "ok,  fine"])
    rows = read_csv(path, "text", "label")
    assert rows.texts == ["the pump hums, then stops", "ok"]
    assert rows.labels == ["broken", "fine"]
    assert rows.lines == [2, 3]


def test_csv_missing_column_names_file_column_and_the_columns_found(tmp_path: Path, write_lines: Writer) -> None:
    path = write_lines(tmp_path / "train.csv", ["sentence,label", "hi,a"])
    with pytest.raises(DataError) as caught:
        read_csv(path, "text", "label")
    message = str(caught.value)
    assert str(path) in message and "'text'" in message and "columns found: sentence, label" in message
    assert "\n" not in message


def test_csv_row_with_too_many_fields_names_its_line(tmp_path: Path, write_lines: Writer) -> None:
    path = write_lines(tmp_path / "train.csv", ["text,label", "a,x", "b,y,extra"])
    with pytest.raises(DataError, match=r"train\.csv line 3: expected 2 fields, found 3"):
        read_table(path)


def test_csv_empty_label_names_its_line(tmp_path: Path, write_lines: Writer) -> None:
    path = write_lines(tmp_path / "train.csv", ["text,label", "a,x", "b,  "])
    with pytest.raises(DataError, match=r"line 3: empty value in column 'label'"):
        read_csv(path, "text", "label")


def test_csv_blank_lines_are_skipped(tmp_path: Path, write_lines: Writer) -> None:
    path = write_lines(tmp_path / "train.csv", ["text,label", "a,x", "", "b,y", ""])
    assert read_csv(path, "text", "label").texts == ["a", "b"]


def test_empty_csv_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="is empty; expected a header line"):
        read_table(path)


def test_jsonl_reads_string_and_integer_labels_with_custom_keys(tmp_path: Path, write_lines: Writer) -> None:
    path = write_lines(tmp_path / "train.jsonl", ['{"body": " hello ", "y": 3}', "", '{"body": "bye", "y": "7"}'])
    rows = read_jsonl(path, "body", "y")
    assert rows.texts == ["hello", "bye"]
    assert rows.labels == ["3", "7"]
    assert rows.lines == [1, 3]


def test_jsonl_malformed_line_names_file_and_line(tmp_path: Path, write_lines: Writer) -> None:
    path = write_lines(tmp_path / "train.jsonl", ['{"text": "a", "label": 1}', '{"text": "b", "label": '])
    with pytest.raises(DataError, match=r"train\.jsonl line 2: malformed JSON"):
        read_jsonl(path, "text", "label")


def test_jsonl_missing_key_lists_the_keys_found(tmp_path: Path, write_lines: Writer) -> None:
    path = write_lines(tmp_path / "train.jsonl", ['{"text": "a", "class": 1}'])
    with pytest.raises(DataError, match=r"line 1: no key 'label'; keys found: text, class"):
        read_jsonl(path, "text", "label")


@pytest.mark.parametrize("label", ["true", "1.5", "[1]", '""'])
def test_jsonl_label_must_be_a_string_or_integer(tmp_path: Path, write_lines: Writer, label: str) -> None:
    path = write_lines(tmp_path / "train.jsonl", [f'{{"text": "a", "label": {label}}}'])
    with pytest.raises(DataError, match="expected a string or integer"):
        read_jsonl(path, "text", "label")


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ('{"text": null, "label": 1}', "line 1: text null in key 'text'; expected a string"),
        ('{"text": ["a"], "label": 1}', "line 1: text a JSON list in key 'text'; expected a string"),
        ('{"text": 7, "label": 1}', "line 1: text 7 in key 'text'; expected a string"),
        ('{"text": "a", "label": null}', "line 1: label null in key 'label'; expected a string or integer"),
        (
            '{"text": "a", "label": {"y": 1}}',
            "line 1: label a JSON object in key 'label'; expected a string or integer",
        ),
    ],
)
def test_jsonl_null_or_mistyped_values_are_named_not_called_missing(
    tmp_path: Path, write_lines: Writer, row: str, expected: str
) -> None:
    path = write_lines(tmp_path / "train.jsonl", [row])
    with pytest.raises(DataError) as caught:
        read_jsonl(path, "text", "label")
    assert str(caught.value) == f"{path} {expected}"


def test_semicolon_lines_split_on_the_last_semicolon_and_skip_the_header(tmp_path: Path, write_lines: Writer) -> None:
    path = write_lines(tmp_path / "train.txt", ["text;label", "i feel odd; then fine ;joy", "  calm ; love "])
    rows = read_semicolon_lines(path)
    assert rows.texts == ["i feel odd; then fine", "calm"]
    assert rows.labels == ["joy", "love"]


def test_semicolon_line_without_separator_names_file_and_line(tmp_path: Path, write_lines: Writer) -> None:
    path = write_lines(tmp_path / "train.txt", ["text;label", "fine;joy", "no label here"])
    with pytest.raises(DataError, match=r"train\.txt line 3: expected 'text;label'"):
        read_semicolon_lines(path)


def test_non_utf8_text_falls_back_to_windows_1252(tmp_path: Path) -> None:
    path = tmp_path / "article.txt"
    path.write_bytes("costs \u00a3600m \u2013 more".encode("cp1252"))
    assert read_text(path) == "costs \u00a3600m \u2013 more"


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cannot read .*nothing\.csv"):
        read_text(tmp_path / "nothing.csv")


def test_unsupported_suffix_lists_the_supported_ones(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unsupported file type; expected one of \.csv, \.jsonl, \.txt"):
        read_split_file(tmp_path / "train.parquet", "text", "label")
