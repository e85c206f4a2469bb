"""Reading split files (CSV, JSONL, CARER-style ``text;label`` lines) robust to BOMs, CRLF and padding."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from fleettune.errors import DataError

# Readers reached through a file's suffix.
SPLIT_SUFFIXES = (".csv", ".jsonl", ".txt")


@dataclass(frozen=True)
class RawRows:
    """Texts and raw label values read from one file, with each row's line number for error messages."""

    path: Path
    texts: list[str]
    labels: list[str]
    lines: list[int]


@dataclass(frozen=True)
class Table:
    """A CSV file's stripped header and rows of stripped values, with each row's line number."""

    path: Path
    header: list[str]
    rows: list[list[str]]
    lines: list[int]

    def column(self, name: str, *aliases: str) -> int:
        """Index of column ``name`` (or one of its aliases), or a DataError listing the columns found."""
        for candidate in (name, *aliases):
            if candidate in self.header:
                return self.header.index(candidate)
        raise DataError(f"{self.path}: no column {name!r}; columns found: {', '.join(self.header)}")


def read_text(path: Path) -> str:
    """The file's text: UTF-8 (a byte-order mark dropped), else Windows-1252/Latin-1 as older corpora use."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("cp1252")
    except UnicodeDecodeError:
        # Latin-1 maps every byte, so this cannot fail.
        return raw.decode("latin-1")


def read_table(path: Path) -> Table:
    """A CSV file; every row must have as many fields as the header; blank lines are skipped."""
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise DataError(f"{path} is empty; expected a header line") from None
    except csv.Error as err:
        raise DataError(f"{path} line 1: malformed CSV header: {err}") from None
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(header):
                raise DataError(f"{path} line {reader.line_num}: expected {len(header)} fields, found {len(row)}")
            rows.append([value.strip() for value in row])
            lines.append(reader.line_num)
    except csv.Error as err:
        raise DataError(f"{path} line {reader.line_num}: malformed CSV: {err}") from None
    return Table(path, header, rows, lines)


def read_csv(path: Path, text_column: str, label_column: str) -> RawRows:
    table = read_table(path)
    text_at, label_at = table.column(text_column), table.column(label_column)
    for row, line in zip(table.rows, table.lines, strict=True):
        if not row[label_at]:
            raise DataError(f"{path} line {line}: empty value in column {label_column!r}")
    return RawRows(path, [row[text_at] for row in table.rows], [row[label_at] for row in table.rows], table.lines)


def read_jsonl(path: Path, text_column: str, label_column: str) -> RawRows:
    """One JSON object per line; labels must be strings or integers."""
    texts: list[str] = []
    labels: list[str] = []
    lines: list[int] = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path} line {number}: malformed JSON: {err.msg}") from None
        if not isinstance(record, dict):
            raise DataError(f"{path} line {number}: expected a JSON object, found {type(record).__name__}")
        for key in (text_column, label_column):
            if key not in record:
                raise DataError(f"{path} line {number}: no key {key!r}; keys found: {', '.join(record)}")
        text = record[text_column]
        if not isinstance(text, str):
            raise DataError(f"{path} line {number}: text {_json_kind(text)} in key {text_column!r}; expected a string")
        label = record[label_column]
        # bool is an int subclass, but true/false as a class id is almost surely a mistake.
        if isinstance(label, bool) or not isinstance(label, (str, int)) or str(label).strip() == "":
            raise DataError(
                f"{path} line {number}: label {_json_kind(label)} in key {label_column!r}; expected a string or integer"
            )
        texts.append(text.strip())
        labels.append(str(label).strip())
        lines.append(number)
    return RawRows(path, texts, labels, lines)


def _json_kind(value: object) -> str:
    """How a JSON value reads in an error: null, true, a list, or the value itself."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, (list, dict)):
        return "a JSON list" if isinstance(value, list) else "a JSON object"
    return repr(value)


def read_semicolon_lines(path: Path) -> RawRows:
    """CARER style: a header line, then ``text;label`` per line, split on the last ``;``."""
    texts: list[str] = []
    labels: list[str] = []
    lines: list[int] = []
    body = read_text(path).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if not body[0].strip():
        raise DataError(f"{path} line 1: expected a header line 'text;label'")
    # Texts may themselves hold ';', but labels never do: so the last one separates them.
    for number, line in enumerate(body[1:], start=2):
        if not line.strip():
            continue
        text, separator, label = line.rpartition(";")
        if not separator or not label.strip():
            raise DataError(f"{path} line {number}: expected 'text;label'")
        texts.append(text.strip())
        labels.append(label.strip())
        lines.append(number)
    return RawRows(path, texts, labels, lines)


def read_split_file(path: Path, text_column: str, label_column: str) -> RawRows:
    """Texts and labels of a ``.csv``, ``.jsonl`` or ``.txt`` split file, chosen by its suffix."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_csv(path, text_column, label_column)
    if suffix == ".jsonl":
        return read_jsonl(path, text_column, label_column)
    if suffix == ".txt":
        return read_semicolon_lines(path)
    raise DataError(f"{path}: unsupported file type; expected one of {', '.join(SPLIT_SUFFIXES)}")
